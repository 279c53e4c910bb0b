// QK norm then rotary (SPEC "Attention"), fused. x, y, dx, dy [N, H, D] (N = B*T rows, row n at
// position n % seq_len); rstd [N*H]; cos, sin [seq_len, D/2]; D even. Assigns (=) y and dx;
// y may alias x, dx may alias dy. With x1|x2 the halves of a normed head:
// y1 = x1*cos + x2*sin, y2 = -x1*sin + x2*cos.
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/cpu/reduce.h"
#include "core/error.h"

namespace speedrun::cpu {

// cos, sin [seq_len, D/2] (=) for positions t = start .. start+seq_len-1:
// inv_freq_j = (1/base)^(2j/D) and angle = t*inv_freq_j, both rounded to T as PyTorch
// computes them in the tensor's dtype; cos/sin of that angle in double.
template <class T>
void rotary_tables(T* cos, T* sin, int64_t seq_len, int64_t D, double base, int64_t start = 0) {
  check(D > 0 && D % 2 == 0, "rotary_tables: head dim ", D, " must be even and positive");
  const int64_t half = D / 2;
  for (int64_t j = 0; j < half; ++j) {
    const T inv = std::pow(T(1) / T(base), T(2 * j) / T(D));
    for (int64_t t = 0; t < seq_len; ++t) {
      const T angle = T(start + t) * inv;
      cos[t * half + j] = T(std::cos(double(angle)));
      sin[t * half + j] = T(std::sin(double(angle)));
    }
  }
}

// Row-strided form, for heads inside a wider row (the stacked q/k/v projection): row n of
// x starts at x + n*ldx, of y at y + n*ldy; head h of a row at + h*D. ldx = ldy = H*D is
// the dense form below, with the same bits.
template <class T>
void head_norm_rotary_forward_strided(T* y, int64_t ldy, T* rstd, const T* x, int64_t ldx,
                                      const T* cos, const T* sin, int64_t N, int64_t seq_len,
                                      int64_t H, int64_t D, T eps) {
  check(D > 0 && D % 2 == 0, "head_norm_rotary_forward: head dim ", D, " must be even");
  const int64_t half = D / 2;
  const int64_t rows = N * H;
#pragma omp parallel for schedule(static) if (parallel: rows * D >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = r / H, h = r % H, t = n % seq_len;
    const T* c = cos + t * half;
    const T* s = sin + t * half;
    const T* xr = x + n * ldx + h * D;
    T* yr = y + n * ldy + h * D;
    const T rs = T(1.0 / std::sqrt(sumsq_serial(xr, D) / double(D) + double(eps)));
    rstd[r] = rs;
    for (int64_t j = 0; j < half; ++j) {
      const T a = xr[j] * rs, b = xr[j + half] * rs;
      yr[j] = a * c[j] + b * s[j];
      yr[j + half] = -a * s[j] + b * c[j];
    }
  }
}

template <class T>
void head_norm_rotary_forward(T* y, T* rstd, const T* x, const T* cos, const T* sin, int64_t N,
                              int64_t seq_len, int64_t H, int64_t D, T eps) {
  head_norm_rotary_forward_strided(y, H * D, rstd, x, H * D, cos, sin, N, seq_len, H, D, eps);
}

// Row-strided as the forward: dx rows at dx + n*lddx, dy's at dy + n*lddy, x's at x + n*ldx.
template <class T>
void head_norm_rotary_backward_strided(T* dx, int64_t lddx, const T* dy, int64_t lddy,
                                       const T* x, int64_t ldx, const T* rstd, const T* cos,
                                       const T* sin, int64_t N, int64_t seq_len, int64_t H,
                                       int64_t D) {
  check(D > 0 && D % 2 == 0, "head_norm_rotary_backward: head dim ", D, " must be even");
  const int64_t half = D / 2;
  const int64_t rows = N * H;
#pragma omp parallel for schedule(static) if (parallel: rows * D >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = r / H, h = r % H, t = n % seq_len;
    const T* c = cos + t * half;
    const T* s = sin + t * half;
    const T* xr = x + n * ldx + h * D;
    const T* dyr = dy + n * lddy + h * D;
    T* dxr = dx + n * lddx + h * D;
    // dx first holds the gradient w.r.t. the normed head (dy rotated back); both halves are
    // read before either is written, so dx may alias dy. Then the rms_norm backward in place.
    for (int64_t j = 0; j < half; ++j) {
      const T d1 = dyr[j], d2 = dyr[j + half];
      dxr[j] = d1 * c[j] - d2 * s[j];
      dxr[j + half] = d1 * s[j] + d2 * c[j];
    }
    const double rsd = double(rstd[r]);
    const T k = T(rsd * rsd * rsd * dot_serial(dxr, xr, D) / double(D));
    const T rs = rstd[r];
    for (int64_t j = 0; j < D; ++j) dxr[j] = rs * dxr[j] - k * xr[j];
  }
}

template <class T>
void head_norm_rotary_backward(T* dx, const T* dy, const T* x, const T* rstd, const T* cos,
                               const T* sin, int64_t N, int64_t seq_len, int64_t H, int64_t D) {
  head_norm_rotary_backward_strided(dx, H * D, dy, H * D, x, H * D, rstd, cos, sin, N, seq_len,
                                    H, D);
}

}  // namespace speedrun::cpu
