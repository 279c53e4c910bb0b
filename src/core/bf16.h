// bfloat16 rounding on the CPU: round-to-nearest-even of an fp32 value to the 8-bit
// mantissa of bf16, returned as fp32 (what a bf16 store followed by a load gives).
// Used to emulate the record's bf16 Newton-Schulz and to make bf16-representable inits.
#pragma once
#include <cstdint>
#include <cstring>

namespace speedrun {

inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

inline float round_bf16(float x) { return bf16_to_float(bf16_bits(x)); }
inline double round_bf16(double x) { return round_bf16(float(x)); }

}  // namespace speedrun
