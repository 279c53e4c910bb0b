// Rotary embedding arithmetic (SPEC "Attention"): the tables and the rotation of one pair
// (x1, x2) = (x[j], x[j + D/2]) of a normed head, forward and backward.
// Tables: inv_freq_j = (1/base)^(2j/D) in fp32 is computed on the host with the CPU
// backend's expression (std::pow on floats: the device's powf may differ by an ulp);
// angle = float(t) * inv_freq_j in fp32, and cos/sin of it in double rounded to fp32,
// as cpu::rotary_tables<float> does.
#pragma once
#include <math.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

// Host only (see above).
inline float rotary_inv_freq(int64_t j, int64_t D, double base) {
  return std::pow(1.0f / float(base), float(2 * j) / float(D));
}

struct CosSin {
  float c, s;
};

SR_HD inline CosSin rotary_entry(int64_t t, float inv_freq) {
  const float angle = float(t) * inv_freq;
  return {float(cos(double(angle))), float(sin(double(angle)))};
}

// y1 = x1*cos + x2*sin, y2 = -x1*sin + x2*cos; each the cos product fused with the other
// (fma_rn), so that rotary.cu and qkv.cu round alike.
SR_HD inline void rotate(float x1, float x2, CosSin cs, float& y1, float& y2) {
  y1 = fma_rn(x1, cs.c, x2 * cs.s);
  y2 = fma_rn(x2, cs.c, -(x1 * cs.s));
}

// The transpose: the gradient w.r.t. (x1, x2) given dy1, dy2 (the cos product fused).
SR_HD inline void rotate_back(float d1, float d2, CosSin cs, float& g1, float& g2) {
  g1 = fma_rn(d1, cs.c, -(d2 * cs.s));
  g2 = fma_rn(d2, cs.c, d1 * cs.s);
}

}  // namespace speedrun::cuda::math
