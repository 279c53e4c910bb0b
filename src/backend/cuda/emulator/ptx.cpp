#include "backend/cuda/emulator/ptx.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

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

std::atomic<uint64_t> g_wgmma_count{0};

constexpr int kMaxWgmmaN = 256;

struct WgmmaIn {
  uint32_t a[4];
  float d[kMaxWgmmaN / 2];
};

// A no-swizzle descriptor's fields, in bytes from the block's dynamic shared memory.
struct Desc {
  uint32_t start, lbo, sbo;
};

struct WgmmaCtx {
  int n;
  const unsigned char* smem;  // the block's dynamic shared memory
  Desc b;
  bool a_in_smem;  // A through a descriptor (K-major) instead of registers
  Desc a;
  int warp_rank;  // the calling warp's place in its warpgroup: its rows of A are 16 x rank on
  bool trans_b, scale_d;
  std::vector<std::pair<uint32_t, uint16_t>>* reads;  // filled: the shared memory read
  WarpgroupProduct product;  // what the warpgroup's four warps must agree on
};

// One bf16 element of an operand in shared memory, refused outside the dynamic shared memory.
float smem_element(const WgmmaCtx& c, uint32_t off, const char* operand, int row, int col) {
  if (!in_dynamic_smem(c.smem + off, 2))
    kernel_fail(std::string("wgmma.mma_async: the descriptor reaches ") + operand + "'s element (" +
                std::to_string(row) + ", " + std::to_string(col) +
                ") outside the block's dynamic shared memory (byte " + std::to_string(off) + ")");
  uint16_t bits;
  std::memcpy(&bits, c.smem + off, 2);
  c.reads->emplace_back(off, bits);
  return bf16_value(bits);
}

void wgmma_fn(const unsigned char* ins, unsigned char* outs, const void* ctx_ptr) {
  const WgmmaCtx& c = *static_cast<const WgmmaCtx*>(ctx_ptr);
  g_wgmma_count.fetch_add(1, std::memory_order_relaxed);
  warpgroup_product(c.product);
  const WgmmaIn* in = reinterpret_cast<const WgmmaIn*>(ins);
  float A[16][16];
  if (c.a_in_smem) {
    // K-major A[m][k] of the warpgroup's 64 rows: (m/8)*SBO + (k/8)*LBO + 16(m%8) + 2(k%8).
    for (int row = 0; row < 16; ++row)
      for (int k = 0; k < 16; ++k) {
        const int m = 16 * c.warp_rank + row;
        A[row][k] = smem_element(c, c.a.start + (m / 8) * c.a.sbo + (k / 8) * c.a.lbo + 16 * (m % 8) + 2 * (k % 8),
                                 "A", m, k);
      }
  } else {
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      for (int e = 0; e < 8; ++e) {  // as mma.sync's A fragment (mma_fn above)
        const int row = g + ((e / 2) % 2) * 8, col = 2 * t + (e % 2) + (e / 4) * 8;
        A[row][col] = bf16_value(half_of(in[lane].a[e / 2], e % 2));
      }
    }
  }
  std::vector<float> B(size_t(16) * size_t(c.n));
  const Desc& b = c.b;
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < c.n; ++j) {
      const uint32_t off = c.trans_b ? b.start + (k / 8) * b.lbo + (j / 8) * b.sbo + 16 * (k % 8) + 2 * (j % 8)
                                     : b.start + (j / 8) * b.sbo + (k / 8) * b.lbo + 16 * (j % 8) + 2 * (k % 8);
      B[size_t(k) * size_t(c.n) + size_t(j)] = smem_element(c, off, "B", k, j);
    }
  float* out = reinterpret_cast<float*>(outs);
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < c.n / 2; ++i) {
      const int row = g + ((i / 2) % 2) * 8, col = 8 * (i / 4) + 2 * t + (i % 2);
      double s = c.scale_d ? double(in[lane].d[i]) : 0.0;
      for (int k = 0; k < 16; ++k) s += double(A[row][k]) * double(B[size_t(k) * size_t(c.n) + size_t(col)]);
      out[lane * (kMaxWgmmaN / 2) + i] = float(s);
    }
  }
}

}  // namespace

namespace {

Desc decode(const char* operand, uint64_t desc) {
  if ((desc >> 62) != 0)
    kernel_fail(std::string("wgmma.mma_async: a swizzled ") + operand + " descriptor (mode " +
                std::to_string(desc >> 62) + "); the emulator has the no-swizzle layouts only");
  return {uint32_t(desc & 0x3fff) << 4, uint32_t((desc >> 16) & 0x3fff) << 4,
          uint32_t((desc >> 32) & 0x3fff) << 4};
}

void wgmma_issue(float* d, int n, const uint32_t* a, const uint64_t* desc_a, uint64_t desc_b,
                 bool trans_b, bool scale_d) {
  if (n < 8 || n > kMaxWgmmaN || n % 8)
    kernel_fail("wgmma.mma_async: n = " + std::to_string(n) + " is not one of 8, 16, ..., 256");
  WgmmaCtx ctx{};
  ctx.n = n;
  ctx.smem = dynamic_smem();
  ctx.b = decode("B", desc_b);
  ctx.a_in_smem = desc_a != nullptr;
  if (desc_a) ctx.a = decode("A", *desc_a);
  ctx.warp_rank = warp_id() % 4;
  ctx.trans_b = trans_b;
  ctx.scale_d = scale_d;
  ctx.product = {n, desc_a != nullptr, trans_b, scale_d, desc_a ? *desc_a : 0, desc_b};
  AsyncResult r;
  ctx.reads = &r.smem;
  WgmmaIn in{};
  if (a)
    for (int i = 0; i < 4; ++i) in.a[i] = a[i];
  // The accumulators as they will be when this product runs: an earlier product of the same
  // accumulators still in flight (a chain over k) hands its result on, as the tensor cores do.
  const std::vector<float>* in_flight = pending_result(d);
  if (!in_flight && !registers_fenced())
    kernel_fail("wgmma.mma_async starts an accumulator chain with no wgmma.fence since the thread "
                "started or last waited (wgmma.wait_group): registers it reads or writes may have been "
                "touched by ordinary instructions since; issue wgmma.fence first");
  const std::vector<float>* chained = scale_d ? in_flight : nullptr;
  if (chained && chained->size() != size_t(n / 2))
    kernel_fail("wgmma.mma_async: accumulators still in flight from a product of another shape");
  for (int i = 0; i < n / 2; ++i) in.d[i] = chained ? (*chained)[size_t(i)] : d[i];
  float out[kMaxWgmmaN / 2];
  // Every lane of the warp passes the same descriptors and shape (the ISA asks the same of
  // the whole warpgroup); one lane's are the ones used, and that lane records the shared
  // memory the product read.
  warp_collective("wgmma.mma_async", 0xffffffffu, &in, sizeof in, out, sizeof out, wgmma_fn, &ctx);
  // The result lands at the wgmma.wait_group that completes its group; d reads NaN until then.
  r.d = d;
  r.values.assign(out, out + n / 2);
  if (a) {
    r.a = a;
    std::copy(a, a + 4, r.a_bits);
  }
  async_result(std::move(r));
}

}  // namespace

void wgmma_m64nNk16_bf16(float* d, int n, const uint32_t (&a)[4], uint64_t desc_b, bool trans_b,
                         bool scale_d) {
  wgmma_issue(d, n, a, nullptr, desc_b, trans_b, scale_d);
}

void wgmma_m64nNk16_bf16_ss(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool trans_b,
                            bool scale_d) {
  wgmma_issue(d, n, nullptr, &desc_a, desc_b, trans_b, scale_d);
}

uint64_t wgmma_count() { return g_wgmma_count.load(std::memory_order_relaxed); }

void wgmma_commit_group() { async_result_commit(); }

void wgmma_wait_group(int pending) { async_result_wait(pending); }

void wgmma_fence() { register_fence(); }

void fence_proxy_async() { proxy_fence(); }

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
