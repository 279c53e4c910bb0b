// RMS norm over the last dim, no weight. x, y, dx, dy [rows, dim]; rstd [rows].
// forward: y = x * rstd (=), rstd[r] = 1/sqrt(mean(x_r^2) + eps); y may alias x.
// backward: dx (= or += when accumulate) = rstd*dy - rstd^3/dim * x * sum(dy*x); dx may alias dy.
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/cpu/reduce.h"

namespace speedrun::cpu {

template <class T>
void rms_norm_forward(T* y, T* rstd, const T* x, int64_t rows, int64_t dim, T eps) {
#pragma omp parallel for schedule(static) if (parallel: rows * dim >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    const T s = T(1.0 / std::sqrt(sumsq_serial(xr, dim) / double(dim) + double(eps)));
    rstd[r] = s;
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * s;
  }
}

template <class T>
void rms_norm_backward(T* dx, const T* dy, const T* x, const T* rstd, int64_t rows, int64_t dim,
                       bool accumulate) {
#pragma omp parallel for schedule(static) if (parallel: rows * dim >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const double s = double(rstd[r]);
    const T k = T(s * s * s * dot_serial(dyr, xr, dim) / double(dim));
    const T st = rstd[r];
    if (accumulate) {
      for (int64_t i = 0; i < dim; ++i) dxr[i] += st * dyr[i] - k * xr[i];
    } else {
      for (int64_t i = 0; i < dim; ++i) dxr[i] = st * dyr[i] - k * xr[i];
    }
  }
}

}  // namespace speedrun::cpu
