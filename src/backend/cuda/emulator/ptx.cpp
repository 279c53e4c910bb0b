#include "backend/cuda/emulator/ptx.h"

#include <atomic>
#include <string>

#include "backend/cuda/math/bf16.h"

namespace speedrun::cuda::emu {

namespace {

std::atomic<uint64_t> g_mma_count{0};
std::atomic<uint64_t> g_ldmatrix_count{0};

uint16_t half_of(uint32_t w, int hi) { return uint16_t(hi ? w >> 16 : w & 0xffffu); }
float bf16_value(uint16_t b) { return math::bf16_to_f32(b); }

struct LdmIn {
  const uint16_t* row;
};

template <bool Trans>
void ldmatrix_fn(const unsigned char* ins, unsigned char* outs, const void*) {
  g_ldmatrix_count.fetch_add(1, std::memory_order_relaxed);
  const LdmIn* in = reinterpret_cast<const LdmIn*>(ins);
  uint32_t* out = reinterpret_cast<uint32_t*>(outs);
  for (int lane = 0; lane < 32; ++lane)
    for (int m = 0; m < 4; ++m) {
      uint16_t lo, hi;
      if (!Trans) {
        const uint16_t* row = in[8 * m + lane / 4].row;
        lo = row[2 * (lane % 4)];
        hi = row[2 * (lane % 4) + 1];
      } else {
        lo = in[8 * m + 2 * (lane % 4)].row[lane / 4];
        hi = in[8 * m + 2 * (lane % 4) + 1].row[lane / 4];
      }
      out[lane * 4 + m] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
}

struct MmaIn {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

void mma_fn(const unsigned char* ins, unsigned char* outs, const void*) {
  g_mma_count.fetch_add(1, std::memory_order_relaxed);
  const MmaIn* in = reinterpret_cast<const MmaIn*>(ins);
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const MmaIn& x = in[lane];
    // A: a0,a1 (row g, cols 2t, 2t+1); a2,a3 (row g+8); a4,a5 (row g, cols 2t+8, 2t+9); a6,a7.
    for (int e = 0; e < 8; ++e) {
      const int row = g + ((e / 2) % 2) * 8, col = 2 * t + (e % 2) + (e / 4) * 8;
      A[row][col] = bf16_value(half_of(x.a[e / 2], e % 2));
    }
    // B: b0,b1 (rows k = 2t, 2t+1; col n = g); b2,b3 (rows 2t+8, 2t+9).
    for (int e = 0; e < 4; ++e) B[2 * t + (e % 2) + (e / 2) * 8][g] = bf16_value(half_of(x.b[e / 2], e % 2));
    // C: c0,c1 (row g, cols 2t, 2t+1); c2,c3 (row g+8).
    for (int e = 0; e < 4; ++e) C[g + (e / 2) * 8][2 * t + (e % 2)] = x.c[e];
  }
  float* out = reinterpret_cast<float*>(outs);
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e / 2) * 8, col = 2 * t + (e % 2);
      double s = C[row][col];
      for (int k = 0; k < 16; ++k) s += double(A[row][k]) * double(B[k][col]);
      out[lane * 4 + e] = float(s);
    }
  }
}

}  // namespace

void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool trans) {
  const char* what = trans ? "ldmatrix.x4.trans" : "ldmatrix.x4";
  if (reinterpret_cast<uintptr_t>(row_address) % 16)
    kernel_fail(std::string(what) + ": a row address not 16-byte aligned");
  if (!in_dynamic_smem(row_address, 16))
    kernel_fail(std::string(what) + ": a row address outside the block's dynamic shared memory");
  const LdmIn in{static_cast<const uint16_t*>(row_address)};
  uint32_t out[4];
  warp_collective(what, 0xffffffffu, &in, sizeof in, out, sizeof out,
                  trans ? ldmatrix_fn<true> : ldmatrix_fn<false>);
  for (int i = 0; i < 4; ++i) r[i] = out[i];
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  MmaIn in{};
  for (int i = 0; i < 4; ++i) in.a[i] = a[i], in.c[i] = d[i];
  in.b[0] = b0;
  in.b[1] = b1;
  float out[4];
  warp_collective("mma.sync.m16n8k16", 0xffffffffu, &in, sizeof in, out, sizeof out, mma_fn);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

uint64_t mma_count() { return g_mma_count.load(std::memory_order_relaxed); }
uint64_t ldmatrix_count() { return g_ldmatrix_count.load(std::memory_order_relaxed); }

}  // namespace speedrun::cuda::emu
