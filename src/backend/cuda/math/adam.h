// PyTorch's Adam on one element in fp32, in the order of src/backend/cpu/adam.h: the step
// size and bias corrections in double on the host, rounded to fp32 once per step.
#pragma once
#include <math.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

struct AdamScalars {
  float b1, omb1, b2, omb2, step_size, bc2_sqrt, eps;
};

// Host: step counts from 1 (checked by the caller).
inline AdamScalars adam_scalars(double lr, double beta1, double beta2, double eps, int64_t step) {
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  return {float(beta1),     float(1.0 - beta1),          float(beta2), float(1.0 - beta2),
          float(lr / bc1), float(std::sqrt(bc2)), float(eps)};
}

// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= step_size * m / (sqrt(v)/sqrt(bc2) + eps).
// The moments fuse their first product (fma_rn): every kernel rounds them alike.
SR_HD inline void adam_update(float& p, float g, float& m, float& v, const AdamScalars& s) {
  const float mi = fma_rn(s.b1, m, s.omb1 * g);
  const float vi = fma_rn(s.b2, v, s.omb2 * g * g);
  m = mi;
  v = vi;
  const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
  p -= s.step_size * mi / denom;
}

}  // namespace speedrun::cuda::math
