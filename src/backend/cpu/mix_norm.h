// A block's input mix and its rms_norm, fused (backend.h: mix_norm_forward/backward). Row
// by row with the arithmetic of scaled_sum.h then rms_norm.h, so results are theirs bit for
// bit, but for the backward's coefficient dots: summed per row, then over the rows in
// order (deterministic, whatever the threads). x, y, xmix, n, dres, dn, dx, dy [rows, dim];
// rstd [rows].
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "backend/cpu/reduce.h"

namespace speedrun::cpu {

// xmix = a*x + b*y (=); n = xmix * rstd (=), rstd = 1/sqrt(mean(xmix^2) + eps) (=).
template <class T>
void mix_norm_forward(T* xmix, T* n, T* rstd, const T* x, T a, const T* y, T b, int64_t rows,
                      int64_t dim, T eps) {
#pragma omp parallel for schedule(static) if (parallel: rows * dim >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* m = xmix + r * dim;
    const T* xr = x + r * dim;
    const T* yr = y + r * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) m[i] = a * xr[i] + b * yr[i];
    const T s = T(1.0 / std::sqrt(sumsq_serial(m, dim) / double(dim) + double(eps)));
    rstd[r] = s;
    T* nr = n + r * dim;
    for (int64_t i = 0; i < dim; ++i) nr[i] = m[i] * s;
  }
}

// g = dres + (rstd*dn - rstd^3/dim * xmix * sum(dn*xmix)); dx = a*g (=), dy += b*g;
// returns {sum g*x, sum g*y}. dx may alias dres (g is built in dx).
template <class T>
std::pair<double, double> mix_norm_backward(T* dx, T* dy, const T* dres, const T* dn,
                                            const T* xmix, const T* rstd, const T* x, T a,
                                            const T* y, T b, int64_t rows, int64_t dim) {
  std::vector<double> part(size_t(2 * rows), 0.0);
#pragma omp parallel for schedule(static) if (parallel: rows * dim >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dnr = dn + r * dim;
    const T* mr = xmix + r * dim;
    const T* rr = dres + r * dim;
    T* g = dx + r * dim;
    T* dyr = dy + r * dim;
    const double s = double(rstd[r]);
    const T k = T(s * s * s * dot_serial(dnr, mr, dim) / double(dim));
    const T st = rstd[r];
    for (int64_t i = 0; i < dim; ++i) g[i] = rr[i] + (st * dnr[i] - k * mr[i]);
    dot2_serial(g, x + r * dim, y + r * dim, dim, &part[size_t(2 * r)], &part[size_t(2 * r + 1)]);
    for (int64_t i = 0; i < dim; ++i) {
      const T d = g[i];
      g[i] = a * d;
      dyr[i] += b * d;
    }
  }
  return sum_pairs_in_order(part);
}

}  // namespace speedrun::cpu
