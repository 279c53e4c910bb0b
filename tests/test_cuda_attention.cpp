// The CUDA attention kernels (backend/cuda/attention/) against the CPU backend in fp64, on a
// GPU: forward and backward at the awkward shapes of cuda_attention_cases.h for head dims
// 64 and 128, outputs poisoned with NaN first (every element must be written); determinism
// (the same bits twice); plans that change between calls; the record's shape (B=1,
// T=65536, H=6, D=128, windows 64 and 1792) on sampled rows. Every test skips, saying so,
// where no GPU is visible, and run on the CPU emulator of CUDA in the emulated build
// (scripts/emulate.sh). The logic these kernels share with the CPU emulation is proven
// without a GPU in test_cuda_attention_plan.cpp.
#include <gtest/gtest.h>

#include <string>

#include "backend/factory.h"

#ifdef SPEEDRUN_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "backend/cuda/attention/attention.h"
#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/attention/plan.h"
#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/gpu_profile.h"
#include "backend/cuda/emulator/ptx.h"
#include "backend/cuda/emulator/streams.h"
#endif
#include "core/error.h"
#include "cuda_attention_cases.h"
#include "scoped_env.h"
#include "tolerances.h"

namespace speedrun {
namespace {

using attn_cases::Case;

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("test_cuda_attention: ", what, ": ", cudaGetErrorString(e));
}

// A device allocation for one test.
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { cuda_ok(cudaMalloc(&p, n), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void poison() { cuda_ok(cudaMemset(p, 0xff, bytes), "cudaMemset"); }  // NaN in bf16 and fp32
};

// The tensors of one attention call on the device.
struct DeviceAttention {
  int64_t B, T, H, D, N, C;
  DeviceBuffer q, k, v, out, lse, dout, dq, dk, dv;
  DeviceAttention(int64_t B_, int64_t T_, int64_t H_, int64_t D_)
      : B(B_), T(T_), H(H_), D(D_), N(B_ * T_), C(H_ * D_),
        q(size_t(N * C) * 2), k(size_t(N * C) * 2), v(size_t(N * C) * 2), out(size_t(N * C) * 2),
        lse(size_t(B * H * T) * 4), dout(size_t(N * C) * 2), dq(size_t(N * C) * 2),
        dk(size_t(N * C) * 2), dv(size_t(N * C) * 2) {}
  Tensor rows(DeviceBuffer& b) const { return Tensor(b.p, DType::BF16, {N, C}, Device::CUDA); }
  Tensor stats() { return Tensor(lse.p, DType::F32, {B, H, T}, Device::CUDA); }
};

void upload_bf16(DeviceBuffer& dst, const std::vector<float>& x) {
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) bits[i] = bf16_bits(x[i]);
  ASSERT_EQ(bits.size() * 2, dst.bytes);
  cuda_ok(cudaMemcpy(dst.p, bits.data(), dst.bytes, cudaMemcpyHostToDevice), "upload");
}

std::vector<float> download_bf16(const DeviceBuffer& src) {
  std::vector<uint16_t> bits(src.bytes / 2);
  cuda_ok(cudaMemcpy(bits.data(), src.p, src.bytes, cudaMemcpyDeviceToHost), "download");
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_float(bits[i]);
  return x;
}

std::vector<float> download_f32(const DeviceBuffer& src) {
  std::vector<float> x(src.bytes / 4);
  cuda_ok(cudaMemcpy(x.data(), src.p, src.bytes, cudaMemcpyDeviceToHost), "download");
  return x;
}

std::vector<unsigned char> download_bytes(const DeviceBuffer& src) {
  std::vector<unsigned char> x(src.bytes);
  cuda_ok(cudaMemcpy(x.data(), src.p, src.bytes, cudaMemcpyDeviceToHost), "download");
  return x;
}

class CudaAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
    cuda_ok(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  void sync() { cuda_ok(cudaStreamSynchronize(stream_), "kernels"); }
  cudaStream_t stream_ = nullptr;
};

struct Inputs {
  std::vector<float> q, k, v, dout;
};

Inputs random_inputs(size_t n, double sd, uint64_t seed) {
  return {attn_cases::bf16_normal(n, sd, seed), attn_cases::bf16_normal(n, sd, seed + 1),
          attn_cases::bf16_normal(n, 1.0, seed + 2), attn_cases::bf16_normal(n, 1.0, seed + 3)};
}

void upload(DeviceAttention& t, const Inputs& in) {
  upload_bf16(t.q, in.q);
  upload_bf16(t.k, in.k);
  upload_bf16(t.v, in.v);
  upload_bf16(t.dout, in.dout);
}

void run_both(cuda::AttentionRunner& r, DeviceAttention& t, const std::vector<BlockMask>& masks,
              double scale) {
  r.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, t.H, scale);
  r.backward(t.rows(t.dq), t.rows(t.dk), t.rows(t.dv), t.rows(t.dout), t.rows(t.q), t.rows(t.k),
             t.rows(t.v), t.rows(t.out), t.stats(), masks, t.H, scale);
}

// out, lse, dq, dk, dv of a forward and backward against the fp64 oracle; returns out and lse.
std::pair<std::vector<float>, std::vector<float>> expect_oracle(DeviceAttention& t,
                                                                 const attn_cases::Reference& ref) {
  std::vector<float> out = download_bf16(t.out), lse = download_f32(t.lse);
  EXPECT_LT(attn_cases::rel_err(out, ref.out), tol::kBf16) << "out";
  EXPECT_LT(attn_cases::rel_err(lse, ref.lse), tol::kStat) << "lse";
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.dq), ref.dq), tol::kBf16) << "dq";
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.dk), ref.dk), tol::kBf16) << "dk";
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.dv), ref.dv), tol::kBf16) << "dv";
  return {std::move(out), std::move(lse)};
}

void poison_outputs(DeviceAttention& t) {
  for (DeviceBuffer* b : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) b->poison();
}

// Each set of kernels: both head dims, and head dim 128 in both tilings (plan.h; head dim
// 64 has one set of chunks).
struct Kernels {
  int64_t D;
  cuda::attn::Tiling tiling;
};
std::vector<Kernels> every_kernel_set() {
  return {{64, cuda::attn::Tiling::kWide},
          {128, cuda::attn::Tiling::kWide},
          {128, cuda::attn::Tiling::kNarrow}};
}

// Forward and backward on every case, both head dims and tilings, plain and peaked scores.
TEST_F(CudaAttention, MatchesTheCpuOracleOnAwkwardShapes) {
  cuda::AttentionRunner wide(stream_, cuda::attn::Tiling::kWide),
      narrow(stream_, cuda::attn::Tiling::kNarrow);
  for (const Case& c : attn_cases::cases())
    for (const auto& [D, tiling] : every_kernel_set())
      for (double sd : {1.0, std::sqrt(3.0)}) {
        cuda::AttentionRunner& runner = tiling == cuda::attn::Tiling::kWide ? wide : narrow;
        const int64_t H = D == 64 ? 3 : 2;
        const std::string what = c.name + " D=" + std::to_string(D) + " " +
                                 cuda::attn::tiling_name(tiling) + " sd=" + std::to_string(sd);
        SCOPED_TRACE(what);
        const std::vector<BlockMask> masks = attn_cases::make_masks(c, 1234);
        const double scale = 1.0 / std::sqrt(double(D));
        DeviceAttention t(c.B(), c.T, H, D);
        const Inputs in = random_inputs(size_t(t.N * t.C), sd, 99 + uint64_t(D));
        upload(t, in);
        poison_outputs(t);
        run_both(runner, t, masks, scale);
        sync();
        expect_oracle(t, attn_cases::reference(masks, c.T, H, D, scale, in.q, in.k, in.v, in.dout));
      }
}

// Whether this GPU and build run the wgmma kernels (an sm_90 GPU, code built for sm_90a).
bool runs_wgmma(int binary_version) {
  int dev = 0, major = 0;
  cuda_ok(cudaGetDevice(&dev), "cudaGetDevice");
  cuda_ok(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "capability");
  return major == 9 && binary_version >= 90;
}

// The wgmma forward (forward_wgmma.cu, Hopper only, SPEEDRUN_ATTENTION_FORWARD=wgmma): on
// every case and both head dims, out and lse against the CPU oracle as the mma.sync forward
// is held, lse within fp32 rounding of the mma.sync forward's (the products sum in another
// order), the backward after it against the oracle, and the same bits twice. Where the GPU
// is not sm_90 (or the build has no sm_90a code), the runner must refuse it, saying why.
TEST_F(CudaAttention, WgmmaForwardMatchesTheCpuOracleAndTheMmaForward) {
  if (!runs_wgmma(cuda::attn::forward_wgmma_binary_version())) {
    try {
      cuda::AttentionRunner r(stream_, std::nullopt, cuda::attn::ForwardKernel::kWgmma);
      ADD_FAILURE() << "the wgmma forward was accepted on a GPU that cannot run it";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("SPEEDRUN_ATTENTION_FORWARD"), std::string::npos) << e.what();
    }
    RecordProperty("checked", "the refusal only: this GPU or build cannot run wgmma");
    return;
  }
  cuda::AttentionRunner wg(stream_, cuda::attn::Tiling::kWide, cuda::attn::ForwardKernel::kWgmma),
      mma(stream_, cuda::attn::Tiling::kWide, cuda::attn::ForwardKernel::kMma);
  EXPECT_EQ(wg.forward_kernel(), cuda::attn::ForwardKernel::kWgmma);
  for (const Case& c : attn_cases::cases())
    for (int64_t D : {64, 128})
      for (double sd : {1.0, std::sqrt(3.0)}) {
        const int64_t H = D == 64 ? 3 : 2;
        SCOPED_TRACE(c.name + " D=" + std::to_string(D) + " sd=" + std::to_string(sd));
        const std::vector<BlockMask> masks = attn_cases::make_masks(c, 1234);
        const double scale = 1.0 / std::sqrt(double(D));
        DeviceAttention t(c.B(), c.T, H, D);
        const Inputs in = random_inputs(size_t(t.N * t.C), sd, 99 + uint64_t(D));
        upload(t, in);
        poison_outputs(t);
        run_both(wg, t, masks, scale);
        sync();
        const auto [out, lse] =
            expect_oracle(t, attn_cases::reference(masks, c.T, H, D, scale, in.q, in.k, in.v, in.dout));
        poison_outputs(t);
        wg.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
        sync();
        EXPECT_EQ(download_bf16(t.out), out) << "the same bits twice";
        mma.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
        sync();
        EXPECT_LT(attn_cases::rel_err(download_f32(t.lse), lse), tol::kFloat) << "lse against mma.sync's";
      }
}

// The wgmma backward (backward_wgmma.cu, Hopper only, SPEEDRUN_ATTENTION_BACKWARD=wgmma): on
// every case and both head dims, after the mma.sync forward and after the wgmma one, dq, dk
// and dv against the CPU oracle as the mma.sync backward is held, within one bf16 ulp of the
// largest value of the mma.sync backward's (each kernel rounds nearly the same fp32 sums to
// the nearest bf16, half an ulp each way at most: the products sum in another order), and
// the same bits twice. Where the GPU is not
// sm_90 (or the build has no sm_90a code), the runner must refuse it, saying why.
TEST_F(CudaAttention, WgmmaBackwardMatchesTheCpuOracleAndTheMmaBackward) {
  using cuda::attn::BackwardKernel;
  using cuda::attn::ForwardKernel;
  if (!runs_wgmma(cuda::attn::backward_wgmma_binary_version())) {
    try {
      cuda::AttentionRunner r(stream_, std::nullopt, ForwardKernel::kMma, BackwardKernel::kWgmma);
      ADD_FAILURE() << "the wgmma backward was accepted on a GPU that cannot run it";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("SPEEDRUN_ATTENTION_BACKWARD"), std::string::npos) << e.what();
    }
    RecordProperty("checked", "the refusal only: this GPU or build cannot run wgmma");
    return;
  }
  constexpr double kOneBf16Ulp = 1.0 / 128;  // bf16's ulp is at most 2^-7 of its value
  cuda::AttentionRunner wg(stream_, cuda::attn::Tiling::kWide, ForwardKernel::kMma, BackwardKernel::kWgmma),
      all_wg(stream_, cuda::attn::Tiling::kWide, ForwardKernel::kWgmma, BackwardKernel::kWgmma),
      mma(stream_, cuda::attn::Tiling::kWide, ForwardKernel::kMma, BackwardKernel::kMma);
  EXPECT_EQ(wg.backward_kernel(), BackwardKernel::kWgmma);
  EXPECT_EQ(mma.backward_kernel(), BackwardKernel::kMma);
  for (const Case& c : attn_cases::cases())
    for (int64_t D : {64, 128})
      for (double sd : {1.0, std::sqrt(3.0)}) {
        const int64_t H = D == 64 ? 3 : 2;
        SCOPED_TRACE(c.name + " D=" + std::to_string(D) + " sd=" + std::to_string(sd));
        const std::vector<BlockMask> masks = attn_cases::make_masks(c, 1234);
        const double scale = 1.0 / std::sqrt(double(D));
        DeviceAttention t(c.B(), c.T, H, D);
        const Inputs in = random_inputs(size_t(t.N * t.C), sd, 99 + uint64_t(D));
        const attn_cases::Reference ref = attn_cases::reference(masks, c.T, H, D, scale, in.q, in.k, in.v, in.dout);
        upload(t, in);
        poison_outputs(t);
        run_both(mma, t, masks, scale);
        sync();
        expect_oracle(t, ref);
        const std::vector<float> dq = download_bf16(t.dq), dk = download_bf16(t.dk), dv = download_bf16(t.dv);
        auto backward = [&](cuda::AttentionRunner& r) {
          for (DeviceBuffer* b : {&t.dq, &t.dk, &t.dv}) b->poison();
          r.backward(t.rows(t.dq), t.rows(t.dk), t.rows(t.dv), t.rows(t.dout), t.rows(t.q), t.rows(t.k),
                     t.rows(t.v), t.rows(t.out), t.stats(), masks, t.H, scale);
          sync();
        };
        backward(wg);
        expect_oracle(t, ref);
        const std::vector<float> wdq = download_bf16(t.dq), wdk = download_bf16(t.dk), wdv = download_bf16(t.dv);
        EXPECT_LE(attn_cases::rel_err(wdq, dq), kOneBf16Ulp) << "dq against mma.sync's";
        EXPECT_LE(attn_cases::rel_err(wdk, dk), kOneBf16Ulp) << "dk against mma.sync's";
        EXPECT_LE(attn_cases::rel_err(wdv, dv), kOneBf16Ulp) << "dv against mma.sync's";
        backward(wg);
        EXPECT_EQ(download_bf16(t.dq), wdq) << "the same bits twice";
        EXPECT_EQ(download_bf16(t.dk), wdk) << "the same bits twice";
        EXPECT_EQ(download_bf16(t.dv), wdv) << "the same bits twice";
        poison_outputs(t);
        run_both(all_wg, t, masks, scale);  // both directions on wgmma
        sync();
        expect_oracle(t, ref);
      }
}

// The runner's kernels by default come from SPEEDRUN_ATTENTION_FORWARD and
// SPEEDRUN_ATTENTION_BACKWARD, each on its own: unset or mma gives mma.sync, wgmma the
// warpgroup kernels where the GPU and build run them (an error naming the variable
// elsewhere: on the emulator also as an A100), anything else an error naming the value and
// the choices.
TEST_F(CudaAttention, KernelsComeFromTheEnvironmentAndBadValuesAreRefused) {
  using Env = test::ScopedEnv;
  using cuda::attn::BackwardKernel;
  using cuda::attn::ForwardKernel;
  const char* kForward = "SPEEDRUN_ATTENTION_FORWARD";
  const char* kBackward = "SPEEDRUN_ATTENTION_BACKWARD";
  auto refusal = [&](const char* variable, const char* value) -> std::string {
    Env env(variable, value);
    try {
      cuda::AttentionRunner r(stream_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  for (const char* v : {static_cast<const char*>(nullptr), "", "mma"}) {
    Env f(kForward, v), b(kBackward, v);
    cuda::AttentionRunner r(stream_);
    EXPECT_EQ(r.forward_kernel(), ForwardKernel::kMma) << (v ? v : "unset");
    EXPECT_EQ(r.backward_kernel(), BackwardKernel::kMma) << (v ? v : "unset");
  }
  for (const char* variable : {kForward, kBackward}) {
    SCOPED_TRACE(variable);
    const std::string bad = refusal(variable, "wgmma2");
    EXPECT_NE(bad.find(std::string(variable) + "=wgmma2"), std::string::npos) << bad;
    EXPECT_NE(bad.find("mma"), std::string::npos) << bad;
  }
  if (runs_wgmma(cuda::attn::forward_wgmma_binary_version())) {
    Env env(kForward, "wgmma");
    const cuda::AttentionRunner r(stream_);
    EXPECT_EQ(r.forward_kernel(), ForwardKernel::kWgmma);
    EXPECT_EQ(r.backward_kernel(), BackwardKernel::kMma);
  } else {
    const std::string why = refusal(kForward, "wgmma");
    EXPECT_NE(why.find(kForward), std::string::npos) << why;
  }
  if (runs_wgmma(cuda::attn::backward_wgmma_binary_version())) {
    Env env(kBackward, "wgmma");
    const cuda::AttentionRunner r(stream_);
    EXPECT_EQ(r.forward_kernel(), ForwardKernel::kMma);
    EXPECT_EQ(r.backward_kernel(), BackwardKernel::kWgmma);
  } else {
    const std::string why = refusal(kBackward, "wgmma");
    EXPECT_NE(why.find(kBackward), std::string::npos) << why;
  }
  {  // the work items' order
    const char* kOrder = "SPEEDRUN_ATTENTION_ORDER";
    for (const char* v : {static_cast<const char*>(nullptr), "", "longest"}) {
      Env o(kOrder, v);
      EXPECT_EQ(cuda::AttentionRunner(stream_).item_order(), cuda::attn::ItemOrder::kLongestFirst)
          << (v ? v : "unset");
    }
    {
      Env o(kOrder, "tiles");
      EXPECT_EQ(cuda::AttentionRunner(stream_).item_order(), cuda::attn::ItemOrder::kTiles);
    }
    const std::string bad = refusal(kOrder, "shortest");
    EXPECT_NE(bad.find("SPEEDRUN_ATTENTION_ORDER=shortest"), std::string::npos) << bad;
    EXPECT_NE(bad.find("longest"), std::string::npos) << bad;
  }
#ifdef SPEEDRUN_CUDA_EMULATED
  {
    const cuda::emu::ScopedGpuProfile as_a100("a100");
    ASSERT_TRUE(as_a100.ok());
    for (const char* variable : {kForward, kBackward}) {
      const std::string why = refusal(variable, "wgmma");
      EXPECT_NE(why.find("Hopper GPUs (sm_90) only, and GPU 0 is sm_80"), std::string::npos) << why;
      EXPECT_NE(why.find(std::string("unset ") + variable), std::string::npos) << why;
    }
  }
#endif
}

// The same inputs give the same bits, also after calls with other masks in between (the
// plan is re-uploaded) and in a second runner.
TEST_F(CudaAttention, IsDeterministicAcrossCallsPlansAndRunners) {
  const std::vector<Case> all = attn_cases::cases();
  const Case& a = all[5];  // T513_w200, two sequences
  const Case& b = all[0];  // T300_w37_docs, two sequences: other masks, other T
  for (const auto& [D, tiling] : every_kernel_set()) {
    SCOPED_TRACE("D=" + std::to_string(D) + " " + cuda::attn::tiling_name(tiling));
    const int64_t H = D == 64 ? 3 : 2;
    const double scale = 1.0 / std::sqrt(double(D));
    const std::vector<BlockMask> ma = attn_cases::make_masks(a, 5), mb = attn_cases::make_masks(b, 6);
    DeviceAttention ta(a.B(), a.T, H, D), tb(b.B(), b.T, H, D);
    upload(ta, random_inputs(size_t(ta.N * ta.C), 1.0, 7));
    upload(tb, random_inputs(size_t(tb.N * tb.C), 1.0, 8));
    cuda::AttentionRunner runner(stream_, tiling);

    auto results = [&](DeviceAttention& t) {
      std::vector<std::vector<unsigned char>> r;
      for (const DeviceBuffer* x : {&t.out, &t.lse, &t.dq, &t.dk, &t.dv}) r.push_back(download_bytes(*x));
      return r;
    };
    poison_outputs(ta);
    run_both(runner, ta, ma, scale);
    sync();
    const auto first = results(ta);

    poison_outputs(ta);
    run_both(runner, ta, ma, scale);  // cached plan
    sync();
    EXPECT_TRUE(results(ta) == first) << "second call, same plan";

    run_both(runner, tb, mb, scale);  // another plan in between
    poison_outputs(ta);
    // forward of a, forward of b, backward of a: the backward must see a's plan again.
    runner.forward(ta.rows(ta.out), ta.stats(), ta.rows(ta.q), ta.rows(ta.k), ta.rows(ta.v), ma, H, scale);
    runner.forward(tb.rows(tb.out), tb.stats(), tb.rows(tb.q), tb.rows(tb.k), tb.rows(tb.v), mb, H, scale);
    runner.backward(ta.rows(ta.dq), ta.rows(ta.dk), ta.rows(ta.dv), ta.rows(ta.dout), ta.rows(ta.q),
                    ta.rows(ta.k), ta.rows(ta.v), ta.rows(ta.out), ta.stats(), ma, H, scale);
    sync();
    EXPECT_TRUE(results(ta) == first) << "after plans changed in between";

    cuda::AttentionRunner other(stream_, tiling);
    poison_outputs(ta);
    run_both(other, ta, ma, scale);
    sync();
    EXPECT_TRUE(results(ta) == first) << "another runner";
    EXPECT_GT(runner.device_bytes(), 0u);

    // The work items in (sequence, tile) order: other CTAs first, the same bits.
    cuda::AttentionRunner tiles(stream_, tiling, std::nullopt, std::nullopt,
                                cuda::attn::ItemOrder::kTiles);
    poison_outputs(ta);
    run_both(tiles, ta, ma, scale);
    sync();
    EXPECT_TRUE(results(ta) == first) << "work items in tile order";
  }
}

// Three plans queued with no wait in between: the third reuses the first's staging buffer
// (two are kept), so the runner must wait for the first upload before overwriting it. Each
// call must still see its own work lists. On the emulator's lazy streams
// (SPEEDRUN_CUDA_EMULATOR_ORDER=...,lazy) nothing runs before the final sync, so a missing
// wait gives the first call the third's plan.
TEST_F(CudaAttention, PlansQueuedWithoutAWaitKeepTheirOwnWorkLists) {
  const std::vector<Case> all = attn_cases::cases();
  // Largest plan first, so neither buffer grows (growing waits for the stream).
  const Case* cs[3] = {&all[5], &all[3], &all[2]};  // T513_w200, T64_w5, T129_w128
  const int64_t H = 2, D = 64;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<std::unique_ptr<DeviceAttention>> ts;
  std::vector<std::vector<BlockMask>> masks;
  std::vector<std::vector<float>> alone;
  cuda::AttentionRunner runner(stream_);
  for (int i = 0; i < 3; ++i) {
    ts.push_back(std::make_unique<DeviceAttention>(cs[i]->B(), cs[i]->T, H, D));
    masks.push_back(attn_cases::make_masks(*cs[i], 20 + uint64_t(i)));
    upload(*ts.back(), random_inputs(size_t(ts.back()->N * ts.back()->C), 1.0, 30 + uint64_t(i)));
  }
  for (int i = 0; i < 3; ++i) {
    poison_outputs(*ts[size_t(i)]);
    run_both(runner, *ts[size_t(i)], masks[size_t(i)], scale);
    sync();
    alone.push_back(download_bf16(ts[size_t(i)]->dq));
  }
  for (auto& t : ts) poison_outputs(*t);
  for (int i = 0; i < 3; ++i) run_both(runner, *ts[size_t(i)], masks[size_t(i)], scale);
  sync();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(download_bf16(ts[size_t(i)]->dq), alone[size_t(i)]) << cs[i]->name;
}

// The runner sizes its work lists for the largest masks of a (B, T) the first time it sees
// it (plan_bytes_bound): masks that list more tiles later (over a run the window grows from
// 64 to 1728 tokens, and the lists with it) fit the same buffers, so no step allocates or
// waits for the GPU to release a buffer. First the fewest tiles (window 1: the diagonal),
// then the most (one document, window T: every tile at or below it).
TEST_F(CudaAttention, SizesItsWorkListsForTheLargestMasksOfTheirShape) {
  const int64_t B = 2, T = 1024, H = 1, D = 64;  // 8 tiles: 8 listed per sequence, then 36
  const double scale = 1.0 / std::sqrt(double(D));
  const std::vector<int32_t> tokens(size_t(T), 1);  // no EOT: one document
  const std::vector<BlockMask> fewest(size_t(B), build_block_mask(tokens.data(), T, attn_cases::kEot, 1, 128));
  const std::vector<BlockMask> most(size_t(B), build_block_mask(tokens.data(), T, attn_cases::kEot, T, 128));
  ASSERT_EQ(fewest[0].q_kv.size(), 8u);
  ASSERT_EQ(most[0].q_kv.size(), 36u);
  DeviceAttention t(B, T, H, D);
  upload(t, random_inputs(size_t(t.N * t.C), 1.0, 11));
  cuda::AttentionRunner runner(stream_);
  run_both(runner, t, fewest, scale);
  sync();
  const size_t held = runner.device_bytes();
  EXPECT_EQ(held, cuda::attn::plan_bytes_bound(B, T) + size_t(B * H * T) * sizeof(float))
      << "the work lists' bound and the backward's row statistics";
#ifdef SPEEDRUN_CUDA_EMULATED
  const cuda::emu::HostCalls before = cuda::emu::host_calls();
#endif
  run_both(runner, t, most, scale);
  run_both(runner, t, fewest, scale);
  sync();
  EXPECT_EQ(runner.device_bytes(), held);
#ifdef SPEEDRUN_CUDA_EMULATED
  const cuda::emu::HostCalls after = cuda::emu::host_calls();
  EXPECT_EQ(after.device_allocs, before.device_allocs);
  EXPECT_EQ(after.device_frees, before.device_frees);
  EXPECT_EQ(after.pinned_allocs, before.pinned_allocs);
  EXPECT_EQ(after.pinned_frees, before.pinned_frees);
#endif
  // The bound is the plan of the most tiles masks of that shape can list.
  EXPECT_EQ(cuda::attn::plan_bytes_bound(B, T), cuda::attn::plan_layout("test", most).bytes);
  EXPECT_LT(cuda::attn::plan_layout("test", fewest).bytes, cuda::attn::plan_bytes_bound(B, T));
}

#ifdef SPEEDRUN_CUDA_EMULATED
// The mma.sync instructions the kernels issue per (item, chunk, warp) of work, from
// common.cuh's products: gemm_abt<K, N> and gemm_cb<K, N> issue K/16 * N/8 each; and the
// ldmatrix.x4 that feed them: N/16 per k-step for B, and for A in gemm_abt K/16 per product
// unless the kernel holds A in registers (dQ, and the forward where plan.h's fwd_keeps_q:
// K/16 once per warp and item).
struct MmaCount {
  uint64_t forward = 0, backward = 0, unskipped_forward = 0, unskipped_backward = 0;
  uint64_t ldsm_forward = 0, ldsm_backward = 0;
};

// What the kernels issue when a warp skips exactly the chunks of its 16-row sub-tile that
// hold no visible pair, by the dense rule (BlockMask::visible; rows and keys < T), and what
// they would issue without skipping (every valid chunk of every listed tile, all 8 warps).
MmaCount expected_mma(const std::vector<BlockMask>& masks, int64_t H, int D, cuda::attn::Tiling tl) {
  const int fc = cuda::attn::fwd_chunk(D, tl), qc = cuda::attn::dq_chunk(D, tl),
            kc = cuda::attn::dkv_chunk(D, tl);
  const uint64_t per_fwd = 2 * uint64_t(D / 16) * uint64_t(fc / 8);  // S = Q K^T, O += P V
  const uint64_t per_dq = 3 * uint64_t(D / 16) * uint64_t(qc / 8);   // S, dP, dQ += dS K
  const uint64_t per_dkv = 4 * uint64_t(D / 16) * uint64_t(kc / 8);  // S^T, dP^T, dV, dK
  const bool keep_q = cuda::attn::fwd_keeps_q(D);
  const uint64_t k16 = uint64_t(D / 16);
  // Per live chunk and warp: B of S (and dP) and of the gemm_cb products, A where re-read.
  const uint64_t ldsm_fwd = 2 * k16 * uint64_t(fc / 16) + (keep_q ? 0 : k16);
  const uint64_t ldsm_dq = 3 * k16 * uint64_t(qc / 16);
  const uint64_t ldsm_dkv = 4 * k16 * uint64_t(kc / 16) + 2 * k16;
  MmaCount n;
  for (const BlockMask& m : masks) {
    const int64_t T = m.T, tile = m.tile;
    // Whether rows [r0, r0 + 16) and keys [j0, j0 + len) hold a visible pair.
    auto any = [&](int64_t r0, int64_t j0, int64_t len) {
      for (int64_t i = r0; i < std::min(T, r0 + 16); ++i)
        for (int64_t j = j0; j < std::min(T, j0 + len); ++j)
          if (m.visible(i, j)) return true;
      return false;
    };
    for (int64_t qb = 0; qb < m.num_blocks(); ++qb) {
      if (m.q_ptr[size_t(qb) + 1] > m.q_ptr[size_t(qb)]) {  // A held in registers: loaded once
        n.ldsm_forward += cuda::attn::kWarps * (keep_q ? k16 : 0);
        n.ldsm_backward += cuda::attn::kWarps * 2 * k16;
      }
      for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
        const int64_t kb = m.q_kv[size_t(e)];
        for (int w = 0; w < cuda::attn::kWarps; ++w) {
          for (int64_t j0 = kb * tile; j0 < (kb + 1) * tile; j0 += fc)
            if (j0 < T) {
              n.unskipped_forward += per_fwd;
              if (any(qb * tile + 16 * w, j0, fc)) {
                n.forward += per_fwd;
                n.ldsm_forward += ldsm_fwd;
              }
            }
          for (int64_t j0 = kb * tile; j0 < (kb + 1) * tile; j0 += qc)
            if (j0 < T) {
              n.unskipped_backward += per_dq;
              if (any(qb * tile + 16 * w, j0, qc)) {
                n.backward += per_dq;
                n.ldsm_backward += ldsm_dq;
              }
            }
          // dK/dV: warp w owns keys kb * tile + 16w.. and walks query chunks of qb.
          for (int64_t i0 = qb * tile; i0 < (qb + 1) * tile; i0 += kc)
            if (i0 < T) {
              n.unskipped_backward += per_dkv;
              bool seen = false;
              for (int64_t i = i0; i < std::min(T, i0 + kc) && !seen; ++i)
                for (int64_t j = kb * tile + 16 * w; j < std::min(T, kb * tile + 16 * w + 16) && !seen; ++j)
                  seen = m.visible(i, j);
              if (seen) {
                n.backward += per_dkv;
                n.ldsm_backward += ldsm_dkv;
              }
            }
        }
      }
    }
  }
  n.ldsm_forward *= uint64_t(H);
  n.ldsm_backward *= uint64_t(H);
  n.forward *= uint64_t(H);
  n.backward *= uint64_t(H);
  n.unskipped_forward *= uint64_t(H);
  n.unskipped_backward *= uint64_t(H);
  return n;
}
#endif

#ifdef SPEEDRUN_CUDA_EMULATED
// The shared-memory bytes the kernels' cp.async fill: each CTA's own tile(s), and every
// valid chunk of its listed partner tiles in which some pair of the tile and the chunk is
// visible by the dense rule (a partial chunk with none is not loaded), with what loading
// every valid chunk would take.
struct CopyCount {
  uint64_t forward = 0, backward = 0, unskipped_forward = 0, unskipped_backward = 0;
};

CopyCount expected_copies(const std::vector<BlockMask>& masks, int64_t H, int D,
                          cuda::attn::Tiling tl) {
  const int fc = cuda::attn::fwd_chunk(D, tl), qc = cuda::attn::dq_chunk(D, tl),
            kc = cuda::attn::dkv_chunk(D, tl);
  const uint64_t rows = uint64_t(D) * 2;  // bytes of one row of one head
  CopyCount n;
  for (const BlockMask& m : masks) {
    const int64_t T = m.T, tile = m.tile;
    auto any = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
      for (int64_t i = i0; i <= std::min(i1, T - 1); ++i)
        for (int64_t j = j0; j <= std::min(j1, i); ++j)
          if (m.visible(i, j)) return true;
      return false;
    };
    for (int64_t qb = 0; qb < m.num_blocks(); ++qb) {
      n.forward += tile * rows;                 // Q
      n.unskipped_forward += tile * rows;
      n.backward += 2 * tile * rows;            // dQ's Q and dO
      n.unskipped_backward += 2 * tile * rows;
      const int64_t q0 = qb * tile, q1 = q0 + tile - 1;
      for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
        const int64_t kb = m.q_kv[size_t(e)];
        for (int64_t j0 = kb * tile; j0 < std::min(T, (kb + 1) * tile); j0 += fc) {
          n.unskipped_forward += 2 * fc * rows;  // K and V
          if (any(q0, q1, j0, j0 + fc - 1)) n.forward += 2 * fc * rows;
        }
        for (int64_t j0 = kb * tile; j0 < std::min(T, (kb + 1) * tile); j0 += qc) {
          n.unskipped_backward += 2 * qc * rows;
          if (any(q0, q1, j0, j0 + qc - 1)) n.backward += 2 * qc * rows;
        }
      }
    }
    for (int64_t kb = 0; kb < m.num_blocks(); ++kb) {
      n.backward += 2 * tile * rows;  // dK/dV's K and V
      n.unskipped_backward += 2 * tile * rows;
      const int64_t k0 = kb * tile, k1 = k0 + tile - 1;
      for (int32_t e = m.k_ptr[size_t(kb)]; e < m.k_ptr[size_t(kb) + 1]; ++e) {
        const int64_t qb = m.k_q[size_t(e)];
        for (int64_t i0 = qb * tile; i0 < std::min(T, (qb + 1) * tile); i0 += kc) {
          const uint64_t bytes = 2 * kc * rows + 3 * uint64_t(kc) * 4;  // Q, dO; lse, delta, lo
          n.unskipped_backward += bytes;
          if (any(i0, i0 + kc - 1, k0, k1)) n.backward += bytes;
        }
      }
    }
  }
  for (uint64_t* x : {&n.forward, &n.backward, &n.unskipped_forward, &n.unskipped_backward}) *x *= uint64_t(H);
  return n;
}
#endif

// A warp skips the products of a chunk in which its 16 rows (or keys) see nothing, and a
// CTA does not load a chunk in which none of its tile's do: counted by the emulator's
// mma.sync and cp.async counters against the dense rule, on every case (results are
// checked by MatchesTheCpuOracleOnAwkwardShapes). The ldmatrix counter holds the shared-
// memory reads to the products' (the kernels that keep Q, or Q and dO, in registers read
// them once per item). A GPU has no such counters here: the emulated build only.
#ifdef SPEEDRUN_CUDA_EMULATED  // the emulator only: a GPU run skips no test
TEST_F(CudaAttention, SkipsTheProductsOfChunksAWarpSeesNothingOf) {
  cuda::AttentionRunner wide(stream_, cuda::attn::Tiling::kWide),
      narrow(stream_, cuda::attn::Tiling::kNarrow);
  uint64_t skipped = 0, not_loaded = 0;
  for (const Case& c : attn_cases::cases())
    for (const auto& [D, tiling] : every_kernel_set()) {
      cuda::AttentionRunner& runner = tiling == cuda::attn::Tiling::kWide ? wide : narrow;
      SCOPED_TRACE(c.name + " D=" + std::to_string(D) + " " + cuda::attn::tiling_name(tiling));
      const int64_t H = 2;
      const std::vector<BlockMask> masks = attn_cases::make_masks(c, 77);
      DeviceAttention t(c.B(), c.T, H, D);
      upload(t, random_inputs(size_t(t.N * t.C), 1.0, 5));
      const double scale = 1.0 / std::sqrt(double(D));
      const uint64_t n0 = cuda::emu::mma_count(), b0 = cuda::emu::async_copy_bytes(),
                     l0 = cuda::emu::ldmatrix_count();
      runner.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
      sync();
      const uint64_t n1 = cuda::emu::mma_count(), b1 = cuda::emu::async_copy_bytes(),
                     l1 = cuda::emu::ldmatrix_count();
      runner.backward(t.rows(t.dq), t.rows(t.dk), t.rows(t.dv), t.rows(t.dout), t.rows(t.q),
                      t.rows(t.k), t.rows(t.v), t.rows(t.out), t.stats(), masks, H, scale);
      sync();
      const uint64_t n2 = cuda::emu::mma_count(), b2 = cuda::emu::async_copy_bytes(),
                     l2 = cuda::emu::ldmatrix_count();
      const CopyCount copies = expected_copies(masks, H, D, tiling);
      EXPECT_EQ(b1 - b0, copies.forward) << "forward loads (" << copies.unskipped_forward << " loading every chunk)";
      EXPECT_EQ(b2 - b1, copies.backward) << "backward loads (" << copies.unskipped_backward << " loading every chunk)";
      not_loaded += copies.unskipped_forward - copies.forward + copies.unskipped_backward - copies.backward;
      const MmaCount want = expected_mma(masks, H, D, tiling);
      EXPECT_EQ(n1 - n0, want.forward) << "forward (" << want.unskipped_forward << " without skipping)";
      EXPECT_EQ(n2 - n1, want.backward) << "backward (" << want.unskipped_backward << " without skipping)";
      EXPECT_EQ(l1 - l0, want.ldsm_forward) << "forward ldmatrix";
      EXPECT_EQ(l2 - l1, want.ldsm_backward) << "backward ldmatrix";
      skipped += want.unskipped_forward - want.forward + want.unskipped_backward - want.backward;
    }
  EXPECT_GT(skipped, 0u) << "the cases must hold chunks a warp sees nothing of";
  EXPECT_GT(not_loaded, 0u) << "the cases must hold chunks a whole tile sees nothing of";
}
#endif  // SPEEDRUN_CUDA_EMULATED

#ifdef SPEEDRUN_CUDA_EMULATED
// What the wgmma kernels issue, counted per warp as emu::wgmma_count does, when a warpgroup
// skips exactly the chunks of kWgmmaChunk partner rows its 64 rows see nothing of by the
// dense rule (BlockMask::visible; rows and keys < T), and what they would issue without
// skipping (every valid chunk of every listed tile, both warpgroups).
struct WgmmaCount {
  uint64_t forward = 0, backward = 0, unskipped_forward = 0, unskipped_backward = 0;
};

WgmmaCount expected_wgmma(const std::vector<BlockMask>& masks, int64_t H, int D) {
  const int64_t c = cuda::attn::kWgmmaChunk;
  const uint64_t k16 = uint64_t(D / 16), c16 = uint64_t(c / 16);
  const uint64_t per_fwd = 4 * (k16 + c16);         // 4 warps x (S = Q K^T, O += P V)
  const uint64_t per_dq = 4 * (2 * k16 + c16);      // S, dP, dQ += dS K
  const uint64_t per_dkv = 4 * (2 * k16 + 2 * c16);  // S^T, dP^T, dV += P^T dO, dK += dS^T Q
  WgmmaCount n;
  for (const BlockMask& m : masks) {
    const int64_t T = m.T, tile = m.tile;
    // Whether queries [i0, i0 + ni) and keys [j0, j0 + nj) hold a visible pair.
    auto any = [&](int64_t i0, int64_t ni, int64_t j0, int64_t nj) {
      for (int64_t i = i0; i < std::min(T, i0 + ni); ++i)
        for (int64_t j = j0; j < std::min(T, j0 + nj); ++j)
          if (m.visible(i, j)) return true;
      return false;
    };
    for (int64_t qb = 0; qb < m.num_blocks(); ++qb)
      for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
        const int64_t kb = m.q_kv[size_t(e)];  // the pair (qb, kb) is in kb's list too
        for (int64_t g = 0; g < 2; ++g) {
          for (int64_t j0 = kb * tile; j0 < std::min(T, (kb + 1) * tile); j0 += c) {  // forward, dQ
            n.unskipped_forward += per_fwd;
            n.unskipped_backward += per_dq;
            if (any(qb * tile + 64 * g, 64, j0, c)) {
              n.forward += per_fwd;
              n.backward += per_dq;
            }
          }
          for (int64_t i0 = qb * tile; i0 < std::min(T, (qb + 1) * tile); i0 += c) {  // dK/dV
            n.unskipped_backward += per_dkv;
            if (any(i0, c, kb * tile + 64 * g, 64)) n.backward += per_dkv;
          }
        }
      }
  }
  for (uint64_t* x : {&n.forward, &n.backward, &n.unskipped_forward, &n.unskipped_backward}) *x *= uint64_t(H);
  return n;
}

// The wgmma kernels multiply only the chunks a warpgroup's rows see something of: the
// emulator's count of wgmma instructions equals the count of (item, chunk, warpgroup)
// holding a visible pair times the products per chunk, on every case and both head dims
// (the oracle test fails if they skip too much). The cases must hold chunks a warpgroup
// skips (the diagonal tile's second chunk is never seen by its first 64 queries).
TEST_F(CudaAttention, WgmmaSkipsTheChunksAWarpgroupSeesNothingOf) {
  using cuda::attn::BackwardKernel;
  using cuda::attn::ForwardKernel;
  cuda::AttentionRunner wg(stream_, cuda::attn::Tiling::kWide, ForwardKernel::kWgmma, BackwardKernel::kWgmma);
  uint64_t skipped = 0;
  for (const Case& c : attn_cases::cases())
    for (int64_t D : {64, 128}) {
      SCOPED_TRACE(c.name + " D=" + std::to_string(D));
      const int64_t H = 2;
      const std::vector<BlockMask> masks = attn_cases::make_masks(c, 77);
      DeviceAttention t(c.B(), c.T, H, D);
      upload(t, random_inputs(size_t(t.N * t.C), 1.0, 5));
      const double scale = 1.0 / std::sqrt(double(D));
      const uint64_t n0 = cuda::emu::wgmma_count();
      wg.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
      sync();
      const uint64_t n1 = cuda::emu::wgmma_count();
      wg.backward(t.rows(t.dq), t.rows(t.dk), t.rows(t.dv), t.rows(t.dout), t.rows(t.q), t.rows(t.k),
                  t.rows(t.v), t.rows(t.out), t.stats(), masks, H, scale);
      sync();
      const uint64_t n2 = cuda::emu::wgmma_count();
      const WgmmaCount want = expected_wgmma(masks, H, int(D));
      EXPECT_EQ(n1 - n0, want.forward) << "forward (" << want.unskipped_forward << " without skipping)";
      EXPECT_EQ(n2 - n1, want.backward) << "backward (" << want.unskipped_backward << " without skipping)";
      skipped += want.unskipped_forward - want.forward + want.unskipped_backward - want.backward;
    }
  EXPECT_GT(skipped, 0u) << "the cases must hold chunks a warpgroup sees nothing of";
}
#endif  // SPEEDRUN_CUDA_EMULATED

// A runner takes the widest chunks the GPU's shared memory per block holds (plan.h,
// tiling_for). On the emulator, also as an RTX 4090 (99 KiB per block): the narrow chunks,
// which run, where the wide ones' shared memory is refused.
TEST_F(CudaAttention, TakesTheWidestChunksTheGpuHolds) {
  int dev = 0, optin = 0;
  cuda_ok(cudaGetDevice(&dev), "cudaGetDevice");
  cuda_ok(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "attribute");
  EXPECT_EQ(cuda::AttentionRunner(stream_).tiling(), cuda::attn::tiling_for(size_t(optin), "this GPU"));
#ifdef SPEEDRUN_CUDA_EMULATED
  const cuda::emu::ScopedGpuProfile as_rtx4090("rtx4090");
  ASSERT_TRUE(as_rtx4090.ok());
  const Case c = attn_cases::cases()[5];  // T513_w200, two sequences
  const int64_t H = 2, D = 128;
  const double scale = 1.0 / std::sqrt(double(D));
  const std::vector<BlockMask> masks = attn_cases::make_masks(c, 9);
  DeviceAttention t(c.B(), c.T, H, D);
  const Inputs in = random_inputs(size_t(t.N * t.C), 1.0, 10);
  upload(t, in);
  cuda::AttentionRunner own(stream_);
  EXPECT_EQ(own.tiling(), cuda::attn::Tiling::kNarrow);
  poison_outputs(t);
  run_both(own, t, masks, scale);
  sync();
  const attn_cases::Reference ref = attn_cases::reference(masks, c.T, H, D, scale, in.q, in.k, in.v, in.dout);
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.out), ref.out), tol::kBf16) << "out";
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.dq), ref.dq), tol::kBf16) << "dq";
  EXPECT_LT(attn_cases::rel_err(download_bf16(t.dk), ref.dk), tol::kBf16) << "dk";
  cuda::AttentionRunner wide(stream_, cuda::attn::Tiling::kWide);
  try {
    wide.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
    ADD_FAILURE() << "105 KB of shared memory per block granted on a 99 KiB GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cudaFuncSetAttribute"), std::string::npos) << e.what();
  }
#endif
}

TEST_F(CudaAttention, RefusesWhatItCannotRun) {
  cuda::AttentionRunner runner(stream_);
  const Case c = attn_cases::cases()[0];
  const std::vector<BlockMask> masks = attn_cases::make_masks(c, 1);
  {
    DeviceAttention t(c.B(), c.T, 2, 96);  // head dim 96: no instance
    EXPECT_THROW(runner.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v),
                                masks, 2, 0.1),
                 Error);
  }
  DeviceAttention t(c.B(), c.T, 2, 64);
  std::vector<BlockMask> m64;
  for (int64_t b = 0; b < c.B(); ++b) {
    const std::vector<int32_t> tok = attn_cases::make_tokens(c.T, attn_cases::Docs::kOne, 3);
    m64.push_back(build_block_mask(tok.data(), c.T, attn_cases::kEot, 37, 64));
  }
  EXPECT_THROW(runner.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), m64,
                              2, 0.1),
               Error);
  Tensor f32(t.q.p, DType::F32, {t.N, t.C / 2}, Device::CUDA);
  EXPECT_THROW(runner.forward(t.rows(t.out), t.stats(), f32, t.rows(t.k), t.rows(t.v), masks, 2, 0.1),
               Error);
  EXPECT_THROW(runner.forward(t.rows(t.q), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks,
                              2, 0.1),
               Error)
      << "out aliasing q";
}

// ---- the record's shape ------------------------------------------------------------------------

// Naive double attention of query i (head h) over the keys the mask shows it, and the
// backward rows from the GPU's own out and lse (the backward is a function of q, k, v, out,
// lse and dout): out_i, lse_i; dq_i; dk_j, dv_j.
struct Sampled {
  const BlockMask& m;
  const Inputs& in;
  const std::vector<float>& out;  // GPU
  const std::vector<float>& lse;  // GPU
  int64_t T, H, D;
  double scale;
  const float* row(const std::vector<float>& x, int64_t t, int64_t h) const {
    return &x[size_t((t * H + h) * D)];
  }
  double dot(const float* a, const float* b) const {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += double(a[d]) * b[d];
    return s;
  }
  int64_t first_key(int64_t i) const {
    int64_t j = i;
    while (j > 0 && m.visible(i, j - 1)) --j;
    return j;
  }
  void forward_row(int64_t i, int64_t h, std::vector<double>& o, double& l) const {
    const int64_t j0 = first_key(i);
    double mx = -INFINITY;
    for (int64_t j = j0; j <= i; ++j) mx = std::max(mx, scale * dot(row(in.q, i, h), row(in.k, j, h)));
    double sum = 0;
    o.assign(size_t(D), 0.0);
    for (int64_t j = j0; j <= i; ++j) {
      const double p = std::exp(scale * dot(row(in.q, i, h), row(in.k, j, h)) - mx);
      sum += p;
      for (int64_t d = 0; d < D; ++d) o[size_t(d)] += p * row(in.v, j, h)[d];
    }
    for (double& x : o) x /= sum;
    l = mx + std::log(sum);
  }
  double p_gpu(int64_t i, int64_t j, int64_t h) const {
    return std::exp(scale * dot(row(in.q, i, h), row(in.k, j, h)) - lse[size_t(h * T + i)]);
  }
  double delta(int64_t i, int64_t h) const { return dot(row(in.dout, i, h), row(out, i, h)); }
  void dq_row(int64_t i, int64_t h, std::vector<double>& g) const {
    g.assign(size_t(D), 0.0);
    const double di = delta(i, h);
    for (int64_t j = first_key(i); j <= i; ++j) {
      const double ds = p_gpu(i, j, h) * (dot(row(in.dout, i, h), row(in.v, j, h)) - di);
      for (int64_t d = 0; d < D; ++d) g[size_t(d)] += scale * ds * row(in.k, j, h)[d];
    }
  }
  void dkv_row(int64_t j, int64_t h, std::vector<double>& gk, std::vector<double>& gv) const {
    gk.assign(size_t(D), 0.0);
    gv.assign(size_t(D), 0.0);
    for (int64_t i = j; i < T && m.visible(i, j); ++i) {
      const double p = p_gpu(i, j, h);
      const double ds = p * (dot(row(in.dout, i, h), row(in.v, j, h)) - delta(i, h));
      for (int64_t d = 0; d < D; ++d) {
        gv[size_t(d)] += p * row(in.dout, i, h)[d];
        gk[size_t(d)] += scale * ds * row(in.q, i, h)[d];
      }
    }
  }
};

// Documents of lognormal lengths, mean ~970 tokens (the anchor benchmark's synthetic data).
std::vector<int32_t> record_tokens(int64_t T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> len(6.5, 0.9);
  std::uniform_int_distribution<int32_t> id(0, 50000);
  std::vector<int32_t> t(static_cast<size_t>(T));
  int64_t next = 0;
  for (int64_t i = 0; i < T; ++i) {
    if (i == next) {
      t[size_t(i)] = attn_cases::kEot;
      next = i + std::max<int64_t>(1, int64_t(len(rng)));
    } else {
      t[size_t(i)] = id(rng);
    }
  }
  return t;
}

TEST_F(CudaAttention, RecordShapeIsFiniteAndMatchesSampledRows) {
  const int64_t T = 65536, H = 6, D = 128;
  const double scale = 1.0 / std::sqrt(double(D));
  DeviceAttention t(1, T, H, D);
  const Inputs in = random_inputs(size_t(T * H * D), 1.0, 2024);
  upload(t, in);
  const std::vector<int32_t> tokens = record_tokens(T, 11);
  std::mt19937_64 rng(3);
  std::vector<int64_t> rows = {0, 1, 127, 128, 129, 4095, 4096, 32767, T - 129, T - 2, T - 1};
  for (int k = 0; k < 21; ++k) rows.push_back(int64_t(rng() % uint64_t(T)));

  // This GPU's tiling first (what training runs), then the other where it fits (its time
  // tells what the chunks cost), then on Hopper the wgmma kernels (SPEEDRUN_ATTENTION_FORWARD
  // and _BACKWARD).
  using cuda::attn::BackwardKernel;
  using cuda::attn::ForwardKernel;
  const cuda::attn::Tiling own =
      cuda::AttentionRunner(stream_, std::nullopt, ForwardKernel::kMma, BackwardKernel::kMma).tiling();
  struct Run {
    cuda::attn::Tiling tiling;
    int64_t window;
    bool wgmma;
  };
  std::vector<Run> runs;
  for (int64_t window : {64, 1792}) runs.push_back({own, window, false});
  if (own == cuda::attn::Tiling::kWide)
    for (int64_t window : {64, 1792}) runs.push_back({cuda::attn::Tiling::kNarrow, window, false});
  if (runs_wgmma(std::min(cuda::attn::forward_wgmma_binary_version(), cuda::attn::backward_wgmma_binary_version())))
    for (int64_t window : {64, 1792}) runs.push_back({own, window, true});
  for (const auto& [tiling, window, wgmma] : runs) {
    const std::string kernels =
        std::string(cuda::attn::tiling_name(tiling)) + " chunks" + (wgmma ? ", wgmma forward and backward" : "");
    SCOPED_TRACE("window " + std::to_string(window) + " " + kernels);
    cuda::AttentionRunner runner(stream_, tiling, wgmma ? ForwardKernel::kWgmma : ForwardKernel::kMma,
                                 wgmma ? BackwardKernel::kWgmma : BackwardKernel::kMma);
    const std::vector<BlockMask> masks = {build_block_mask(tokens.data(), T, attn_cases::kEot, window)};
    poison_outputs(t);
    run_both(runner, t, masks, scale);
    sync();

    // Time fwd and bwd (warm, median of 5) for the record: not a pass/fail criterion.
    cudaEvent_t e0, e1, e2;
    cuda_ok(cudaEventCreate(&e0), "event");
    cuda_ok(cudaEventCreate(&e1), "event");
    cuda_ok(cudaEventCreate(&e2), "event");
    std::vector<float> fwd_ms, bwd_ms;
    for (int rep = 0; rep < 5; ++rep) {
      cuda_ok(cudaEventRecord(e0, stream_), "event");
      runner.forward(t.rows(t.out), t.stats(), t.rows(t.q), t.rows(t.k), t.rows(t.v), masks, H, scale);
      cuda_ok(cudaEventRecord(e1, stream_), "event");
      runner.backward(t.rows(t.dq), t.rows(t.dk), t.rows(t.dv), t.rows(t.dout), t.rows(t.q),
                      t.rows(t.k), t.rows(t.v), t.rows(t.out), t.stats(), masks, H, scale);
      cuda_ok(cudaEventRecord(e2, stream_), "event");
      sync();
      float a = 0, b = 0;
      cudaEventElapsedTime(&a, e0, e1);
      cudaEventElapsedTime(&b, e1, e2);
      fwd_ms.push_back(a);
      bwd_ms.push_back(b);
    }
    for (cudaEvent_t e : {e0, e1, e2}) cudaEventDestroy(e);
    std::sort(fwd_ms.begin(), fwd_ms.end());
    std::sort(bwd_ms.begin(), bwd_ms.end());
    int64_t pairs = 0;
    for (int64_t i = 0; i < T; ++i) {
      int64_t j = i;
      while (j > 0 && masks[0].visible(i, j - 1)) --j;
      pairs += i - j + 1;
    }
    const double tiles = double(masks[0].q_kv.size()) * H;
    std::printf("[ record    ] %s, window %lld: fwd %.3f ms, bwd %.3f ms (median of 5); %lld visible "
                "pairs per head, %lld listed tiles; exact-FLOP rate fwd %.0f / bwd %.0f TFLOP/s, "
                "tile-FLOP rate fwd %.0f / bwd %.0f TFLOP/s\n",
                kernels.c_str(), (long long)window, fwd_ms[2], bwd_ms[2], (long long)pairs,
                (long long)masks[0].q_kv.size(), 4.0 * pairs * D * H / (fwd_ms[2] * 1e9),
                10.0 * pairs * D * H / (bwd_ms[2] * 1e9),
                4.0 * tiles * 128 * 128 * D / (fwd_ms[2] * 1e9),
                14.0 * tiles * 128 * 128 * D / (bwd_ms[2] * 1e9));

    const std::vector<float> out = download_bf16(t.out), lse = download_f32(t.lse),
                             dq = download_bf16(t.dq), dk = download_bf16(t.dk),
                             dv = download_bf16(t.dv);
    for (const std::vector<float>* x : {&out, &lse, &dq, &dk, &dv}) {
      size_t bad = 0;
      for (float y : *x) bad += !std::isfinite(y);
      EXPECT_EQ(bad, 0u) << "non-finite values (unwritten or NaN)";
    }

    const Sampled s{masks[0], in, out, lse, T, H, D, scale};
    std::vector<double> ref_o, got_o, ref_l, got_l, ref_dq, got_dq, ref_dk, got_dk, ref_dv, got_dv;
    std::vector<double> o, gk, gv;
    for (int64_t i : rows)
      for (int64_t h = 0; h < H; ++h) {
        double l = 0;
        s.forward_row(i, h, o, l);
        ref_l.push_back(l);
        got_l.push_back(lse[size_t(h * T + i)]);
        for (int64_t d = 0; d < D; ++d) {
          ref_o.push_back(o[size_t(d)]);
          got_o.push_back(out[size_t((i * H + h) * D + d)]);
        }
        s.dq_row(i, h, o);
        s.dkv_row(i, h, gk, gv);
        for (int64_t d = 0; d < D; ++d) {
          const size_t at = size_t((i * H + h) * D + d);
          ref_dq.push_back(o[size_t(d)]);
          got_dq.push_back(dq[at]);
          ref_dk.push_back(gk[size_t(d)]);
          got_dk.push_back(dk[at]);
          ref_dv.push_back(gv[size_t(d)]);
          got_dv.push_back(dv[at]);
        }
      }
    EXPECT_LT(attn_cases::rel_err(got_o, ref_o), tol::kBf16) << "out";
    EXPECT_LT(attn_cases::rel_err(got_l, ref_l), tol::kStat) << "lse";
    EXPECT_LT(attn_cases::rel_err(got_dq, ref_dq), tol::kBf16) << "dq";
    EXPECT_LT(attn_cases::rel_err(got_dk, ref_dk), tol::kBf16) << "dk";
    EXPECT_LT(attn_cases::rel_err(got_dv, ref_dv), tol::kBf16) << "dv";
  }
}

}  // namespace
}  // namespace speedrun

#else

TEST(CudaAttention, NeedsTheCudaBuild) {
  std::string why;
  speedrun::cuda_device_count(&why);
  GTEST_SKIP() << "no CUDA GPU visible: " << why;
}

#endif
