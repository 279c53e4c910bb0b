// bf16 as 16-bit patterns (the upper half of an fp32), rounded to nearest even exactly as
// core/bf16.h rounds on the CPU (a NaN stays a NaN), so both backends store the same bits.
#pragma once
#include <cstdint>
#include <cstring>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

SR_HD inline uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}

SR_HD inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

SR_HD inline float bf16_to_f32(uint16_t b) { return bits_float(uint32_t(b) << 16); }

// Round to nearest even; NaN keeps its sign and becomes a quiet NaN.
SR_HD inline uint16_t f32_to_bf16(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

SR_HD inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// F64 to bf16 goes through F32, as the CPU backend's convert does.
SR_HD inline uint16_t f64_to_bf16(double x) { return f32_to_bf16(float(x)); }

// Two bf16 in one 32-bit word (element 0 in the low half, as in memory) and back.
SR_HD inline uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(f32_to_bf16(lo)) | (uint32_t(f32_to_bf16(hi)) << 16);
}
SR_HD inline float unpack_lo(uint32_t w) { return bits_float(w << 16); }
SR_HD inline float unpack_hi(uint32_t w) { return bits_float(w & 0xffff0000u); }

}  // namespace speedrun::cuda::math
