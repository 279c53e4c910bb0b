// Muon's pieces. muon_momentum over n: buf = mu*buf + g; out = g + mu*buf (=, Nesterov);
// out may alias g. axpy over n: y += alpha*x. newton_schulz5: X [rows, cols] (=) the record's
// zeropower_via_newtonschulz5(G, steps); X may alias G; optional bf16 emulation (below).
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/reduce.h"
#include "core/bf16.h"
#include "core/error.h"

namespace speedrun::cpu {

template <class T>
void muon_momentum(T* out, T* buf, const T* g, int64_t n, T mu) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T b = mu * buf[i] + gi;
    buf[i] = b;
    out[i] = gi + mu * b;
  }
}

template <class T>
void axpy(T* y, const T* x, T alpha, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

namespace detail {
template <class T>
inline void round_bf16_inplace(T* a, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) a[i] = T(round_bf16(a[i]));
}
}  // namespace detail

// X = G/(||G||_F + 1e-7), worked on as X^T when rows > cols; `steps` times A = X X^T,
// B = b*A + c*A A, X = a*X + B X with (a,b,c) = (3.4445, -4.7750, 2.0315); transposed back.
// All products through cpu::gemm. bf16_round rounds G on entry (the record's G.bfloat16())
// and every stored intermediate (the norm, X after normalising, A, B, X after each step)
// to bf16, emulating the record's bf16 computation; without it everything stays in T.
// Workspace: per-thread buffers, grown once and reused across calls.
template <class T>
void newton_schulz5(T* X, const T* G, int64_t rows, int64_t cols, int steps, bool bf16_round) {
  check(rows > 0 && cols > 0, "newton_schulz5: empty matrix [", rows, ", ", cols, "]");
  check(steps >= 0, "newton_schulz5: steps ", steps, " must be >= 0");
  const T a = T(3.4445), b = T(-4.7750), c = T(2.0315);
  const bool tr = rows > cols;
  const int64_t m = tr ? cols : rows;  // the short side: A and B are [m, m]
  const int64_t k = tr ? rows : cols;  // the long side: the work matrix is [m, k]
  thread_local std::vector<T> wx, wy, wa, wb;
  wx.resize(size_t(m * k));
  wy.resize(size_t(m * k));
  wa.resize(size_t(m * m));
  wb.resize(size_t(m * m));
  T* x = wx.data();
  T* xn = wy.data();
  T* A = wa.data();
  T* B = wb.data();

  // x = G (or G^T), rounded to bf16 when emulating; then divided by ||x||_F + 1e-7.
  const int64_t n = rows * cols;
  if (tr) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) x[j * rows + i] = G[i * cols + j];
  } else {
    for (int64_t i = 0; i < n; ++i) x[i] = G[i];
  }
  if (bf16_round) detail::round_bf16_inplace(x, n);
  // The record's norm of a bf16 tensor is itself a bf16 scalar, and so is norm + 1e-7.
  T denom = T(std::sqrt(sumsq_serial(x, n)));
  if (bf16_round) denom = T(round_bf16(denom));
  denom = T(denom + 1e-7);
  if (bf16_round) denom = T(round_bf16(denom));
  for (int64_t i = 0; i < n; ++i) x[i] /= denom;
  if (bf16_round) detail::round_bf16_inplace(x, n);

  for (int it = 0; it < steps; ++it) {
    // A and A A are symmetric: syrk does half the work of gemm for both.
    syrk<T>(m, k, T(1), x, k, T(0), A, m);  // A = X X^T
    if (bf16_round) detail::round_bf16_inplace(A, m * m);
    for (int64_t i = 0; i < m * m; ++i) B[i] = A[i];
    syrk<T>(m, m, c, A, m, b, B, m);  // B = b*A + c*A A (= c*A A^T)
    if (bf16_round) detail::round_bf16_inplace(B, m * m);
    for (int64_t i = 0; i < n; ++i) xn[i] = x[i];
    gemm<T>(false, false, m, k, m, T(1), B, m, x, k, a, xn, k);  // X = a*X + B X
    if (bf16_round) detail::round_bf16_inplace(xn, n);
    std::swap(x, xn);
  }

  if (tr) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) X[i * cols + j] = x[j * rows + i];
  } else {
    for (int64_t i = 0; i < n; ++i) X[i] = x[i];
  }
}

}  // namespace speedrun::cpu
