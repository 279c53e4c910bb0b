// Muon's arithmetic: Nesterov momentum per element, and the quintic Newton-Schulz
// iteration (SPEC "Optimizers") as the sequence of three GEMMs that muon.cu runs as
// strided-batched cuBLASLt calls in bf16 and tests/test_cuda_math.cpp replays with host
// loops: the same coefficients, the same order, the same bf16 roundings.
#pragma once
#include <math.h>

#include <cstdint>

#include "backend/cuda/math/bf16.h"
#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

// buf = mu*buf + g; out = g + mu*buf, each rounded once (fma_rn).
SR_HD inline float muon_momentum_update(float g, float& buf, float mu) {
  const float b = fma_rn(mu, buf, g);
  buf = b;
  return fma_rn(mu, b, g);
}

// y + alpha*x rounded once: axpy, and Muon's update of its F32 masters.
SR_HD inline float axpy_value(float y, float alpha, float x) { return fma_rn(alpha, x, y); }

struct NsCoefficients {
  float a, b, c;
};
inline constexpr NsCoefficients kNs{3.4445f, -4.7750f, 2.0315f};

// The record normalises X (bf16) by its norm, itself a bf16 scalar, plus 1e-7 (again
// bf16): the divisor from the sum of squares of X's bf16 values.
SR_HD inline float ns_divisor(double sumsq) {
  const float norm = round_bf16(float(sqrt(sumsq)));
  return round_bf16(float(double(norm) + 1e-7));
}

// One orthogonalisation in Newton-Schulz form over a work matrix X [m, k] (m <= k):
//   ops.xxt()                    A = X X^T                    [m, m]
//   ops.aa(alpha=c, beta=b)      B = c * A A + b * A          [m, m]
//   ops.bx(alpha=1, beta=a)      X' = B X + a * X             [m, k], then X <- X'
// `steps` times. Every result is stored in bf16 by the caller.
template <class Ops>
void newton_schulz_iterations(Ops& ops, int steps) {
  for (int it = 0; it < steps; ++it) {
    ops.xxt();
    ops.aa(kNs.c, kNs.b);
    ops.bx(1.0f, kNs.a);
  }
}

}  // namespace speedrun::cuda::math
