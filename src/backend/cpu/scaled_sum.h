// Scalar-weighted sum of two [n] tensors (block lambdas, value residual, U-net skips).
// forward: out = a*x + b*y (=); out may alias x or y.
// backward: dx (= or += per acc_x) a*dout; dy (= or += per acc_y) b*dout; returns
// {sum dout*x, sum dout*y} = {dL/da, dL/db}, summed deterministically in double.
// dx or dy nullptr: that output is skipped; x or y nullptr: that dot is 0.
// dx may alias dout when !acc_x (likewise dy when !acc_y). dx and dy may alias each other
// only when both accumulate: per element dx[i] += a*dout[i], then dy[i] += b*dout[i].
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "backend/cpu/reduce.h"
#include "core/error.h"

namespace speedrun::cpu {

template <class T>
void scaled_sum_forward(T* out, const T* x, T a, const T* y, T b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i] + b * y[i];
}

namespace detail {
// One chunk of the gradient writes; MX/MY: 0 skip, 1 assign, 2 accumulate. Element i reads
// dout[i] before writing, so dx == dout (assign) and dx == dy (both accumulate) are safe.
template <int MX, int MY, class T>
inline void scaled_sum_grads(T* dx, T* dy, const T* dout, T a, T b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = dout[i];
    if constexpr (MX == 1) dx[i] = a * d;
    if constexpr (MX == 2) dx[i] += a * d;
    if constexpr (MY == 1) dy[i] = b * d;
    if constexpr (MY == 2) dy[i] += b * d;
  }
}

template <int MX, class T>
inline void scaled_sum_grads_y(int my, T* dx, T* dy, const T* dout, T a, T b, int64_t n) {
  if (my == 0) scaled_sum_grads<MX, 0>(dx, dy, dout, a, b, n);
  if (my == 1) scaled_sum_grads<MX, 1>(dx, dy, dout, a, b, n);
  if (my == 2) scaled_sum_grads<MX, 2>(dx, dy, dout, a, b, n);
}
}  // namespace detail

template <class T>
std::pair<double, double> scaled_sum_backward(T* dx, bool acc_x, T* dy, bool acc_y, const T* dout,
                                              T a, const T* x, T b, const T* y, int64_t n) {
  check(dx == nullptr || dx != dy || (acc_x && acc_y),
        "scaled_sum_backward: dx and dy are the same buffer, which needs acc_x and acc_y");
  const int mx = dx == nullptr ? 0 : acc_x ? 2 : 1;
  const int my = dy == nullptr ? 0 : acc_y ? 2 : 1;
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  // Partial dots per fixed chunk, combined below in chunk order: deterministic.
  std::vector<double> part(size_t(2 * chunks), 0.0);
#pragma omp parallel for schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t i0 = k * kReduceChunk;
    const int64_t len = n - i0 < kReduceChunk ? n - i0 : kReduceChunk;
    // Dots first: the writes below may overwrite dout (dx == dout).
    if (x && y) {
      dot2_serial(dout + i0, x + i0, y + i0, len, &part[size_t(2 * k)], &part[size_t(2 * k + 1)]);
    } else if (x) {
      part[size_t(2 * k)] = dot_serial(dout + i0, x + i0, len);
    } else if (y) {
      part[size_t(2 * k + 1)] = dot_serial(dout + i0, y + i0, len);
    }
    T* dxk = dx ? dx + i0 : nullptr;
    T* dyk = dy ? dy + i0 : nullptr;
    if (mx == 0) detail::scaled_sum_grads_y<0>(my, dxk, dyk, dout + i0, a, b, len);
    if (mx == 1) detail::scaled_sum_grads_y<1>(my, dxk, dyk, dout + i0, a, b, len);
    if (mx == 2) detail::scaled_sum_grads_y<2>(my, dxk, dyk, dout + i0, a, b, len);
  }
  return sum_pairs_in_order(part);
}

// Row-strided forms, for column blocks of wider rows (v_raw inside the stacked q/k/v
// projection): `rows` rows of `cols` elements; row r of a tensor p starts at p + r*ld_p.
// Rules and aliasing as above. The backward's dots are summed per row, then over the rows
// in order: deterministic, whatever the threads.
template <class T>
void scaled_sum_forward_rows(T* out, int64_t ldo, const T* x, int64_t ldx, T a, const T* y,
                             int64_t ldy, T b, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (parallel: rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* o = out + r * ldo;
    const T* xr = x + r * ldx;
    const T* yr = y + r * ldy;
#pragma omp simd
    for (int64_t i = 0; i < cols; ++i) o[i] = a * xr[i] + b * yr[i];
  }
}

template <class T>
std::pair<double, double> scaled_sum_backward_rows(T* dx, int64_t lddx, bool acc_x, T* dy,
                                                   int64_t lddy, bool acc_y, const T* dout,
                                                   int64_t ldd, T a, const T* x, int64_t ldx,
                                                   T b, const T* y, int64_t ldy, int64_t rows,
                                                   int64_t cols) {
  check(dx == nullptr || dx != dy || (acc_x && acc_y),
        "scaled_sum_backward: dx and dy are the same buffer, which needs acc_x and acc_y");
  const int mx = dx == nullptr ? 0 : acc_x ? 2 : 1;
  const int my = dy == nullptr ? 0 : acc_y ? 2 : 1;
  std::vector<double> part(size_t(2 * rows), 0.0);
#pragma omp parallel for schedule(static) if (parallel: rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* d = dout + r * ldd;
    const T* xr = x ? x + r * ldx : nullptr;
    const T* yr = y ? y + r * ldy : nullptr;
    if (xr && yr) {
      dot2_serial(d, xr, yr, cols, &part[size_t(2 * r)], &part[size_t(2 * r + 1)]);
    } else if (xr) {
      part[size_t(2 * r)] = dot_serial(d, xr, cols);
    } else if (yr) {
      part[size_t(2 * r + 1)] = dot_serial(d, yr, cols);
    }
    T* dxr = dx ? dx + r * lddx : nullptr;
    T* dyr = dy ? dy + r * lddy : nullptr;
    if (mx == 0) detail::scaled_sum_grads_y<0>(my, dxr, dyr, d, a, b, cols);
    if (mx == 1) detail::scaled_sum_grads_y<1>(my, dxr, dyr, d, a, b, cols);
    if (mx == 2) detail::scaled_sum_grads_y<2>(my, dxr, dyr, d, a, b, cols);
  }
  return sum_pairs_in_order(part);
}

}  // namespace speedrun::cpu
