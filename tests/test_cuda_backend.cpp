// The CUDA backend against the CPU backend in fp64, op by op, on random inputs: the GPU
// runs the bf16 policy and the CPU the same function in double on the same (bf16-rounded)
// values. Outputs are poisoned with NaN first, so an unwritten element fails; sizes like
// 31/32/33 and T not a multiple of 128 on purpose. Then determinism (the same bits twice),
// the GEMM cache, errors, and the whole model: loss and gradients against fp64, a training
// run against the CPU's fp32 loss curve, and KV-cache decoding. Every test skips, saying
// why, where no GPU is visible; the model and training tests also need the flash-attention
// kernels (backend/cuda/attention/). In the emulated build (scripts/emulate.sh) the same
// tests run on the CPU emulator of CUDA.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <utility>
#include <optional>
#include <iterator>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/gpu_profile.h"
#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"
#endif
#include "backend/factory.h"
#include "core/arena.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "model/params.h"
#include "run_command.h"
#include "fixtures.h"
#include "tolerances.h"
#include "bf16_emulation.h"
#include "train/config.h"
#include "train/sample.h"
#include "train/trainer.h"

#ifdef SPEEDRUN_HAVE_CUDA
#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm_record.h"
#include "dist/local_comm.h"
#ifdef SPEEDRUN_HAVE_NCCL
#include "dist/nccl/nccl_comm.h"
#include "nccl_check.h"
#endif
#include "backend/cuda/math/muon.h"
#include "backend/cuda/math/reduce.h"
#include "backend/cuda/plan.h"
#endif

namespace speedrun {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<double>;
using Shape = std::vector<int64_t>;

// Tensors owned for one test, on one backend.
class Pool {
 public:
  explicit Pool(Backend& be) : be_(be) {}
  Tensor make(DType dt, const Shape& shape) {
    arenas_.emplace_back([this](size_t n) { return be_.allocate(n); },
                         [this](void* p) { be_.release(p); });
    Tensor t;
    arenas_.back().add("t", dt, shape, &t);
    arenas_.back().materialize(be_.device());
    return t;
  }
  Tensor from(const Vec& v, DType dt, const Shape& shape) {
    Tensor t = make(dt, shape);
    be_.from_host_f64(t, v);
    return t;
  }
  Tensor poisoned(DType dt, const Shape& shape) {
    Tensor t = make(dt, shape);
    be_.fill(t, NAN);
    return t;
  }

 private:
  Backend& be_;
  std::deque<Arena> arenas_;
};

Vec randn(int64_t n, uint64_t seed, double scale = 1.0, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, scale);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<int32_t> rand_tokens(int64_t n, int32_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(V));
  return t;
}

// ||got - ref||_inf / max(1, ||ref||_inf) (tests/tolerances.h); NaN never passes.
double rel_err(const Vec& got, const Vec& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 1;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    num = std::isnan(e) ? INFINITY : std::max(num, e);
    den = std::max(den, std::fabs(ref[i]));
  }
  return num / den;
}

// The same, relative to the reference's own largest magnitude (for small gradients).
double rel_to_max(const Vec& got, const Vec& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    num = std::isnan(e) ? INFINITY : std::max(num, e);
    den = std::max(den, std::fabs(ref[i]));
  }
  return den > 0 ? num / den : num;
}

std::vector<uint8_t> raw(Backend& be, const Tensor& t) {
  std::vector<uint8_t> b(t.bytes());
  be.download(b.data(), t);
  return b;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
    BackendOptions o;
    o.device = DeviceChoice::CUDA;
    gpu_ = make_backend(o);
    g_ = std::make_unique<Pool>(*gpu_);
    c_ = std::make_unique<Pool>(cpu_);
  }
  Backend& gpu() { return *gpu_; }
  // A GPU tensor of dtype dt holding v (rounded by the GPU's convert), and the CPU fp64
  // tensor holding exactly the values the GPU sees.
  std::pair<Tensor, Tensor> both(const Vec& v, DType dt, const Shape& shape) {
    Tensor g = g_->from(v, dt, shape);
    Tensor c = c_->from(gpu_->to_host_f64(g), DType::F64, shape);
    return {g, c};
  }
  Vec host(const Tensor& t) { return t.device == Device::CUDA ? gpu_->to_host_f64(t) : cpu_.to_host_f64(t); }

  CpuBackend cpu_{2};
  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Pool> g_, c_;  // declared after the backends: freed before them
};

// ---- policy, memory, conversions ------------------------------------------------------------

TEST_F(CudaBackendTest, RunsTheBf16PolicyOnly) {
  EXPECT_EQ(gpu().name(), "cuda");
  EXPECT_EQ(gpu().default_precision(), named_precision(PrecisionChoice::BF16));
  EXPECT_EQ(gpu().preferred_micro_batch_tokens(), 65536);
  EXPECT_EQ(gpu().head_chunk_logits(), cuda::kHeadChunkLogits);
  EXPECT_NO_THROW(gpu().check_precision(named_precision(PrecisionChoice::BF16)));
  try {
    gpu().check_precision(named_precision(PrecisionChoice::FP32));
    FAIL() << "fp32 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cuda backend: precision fp32 is not supported; use --dtype bf16 or auto, or --device cpu");
  }
  EXPECT_THROW(gpu().check_precision(named_precision(PrecisionChoice::FP64)), Error);
}

// The record preset on one GPU (one 65,536-token sequence per micro-batch): the parameters,
// their gradients and compute copies, the optimizer's state and the planned activations
// fit within the PyTorch anchor's peak, 30.5 GiB (docs/PERFORMANCE.md), the peak memory
// speedrun must not exceed there. The backend's scratch (Newton-Schulz work matrices,
// reduction partials, the embedding sort, cuBLASLt's workspace) comes on top of this count.
TEST_F(CudaBackendTest, RecordPresetFitsTheAnchorsPeakMemory) {
  const TrainConfig tc = preset_config("record");
  Parameters params(gpu(), tc.model, gpu().default_precision());
  Optimizer opt(gpu(), params, tc.optim);
  const size_t held = gpu().peak_bytes();  // a fresh backend: nothing was released
  const size_t acts = GPT::activation_bytes(gpu(), params, 1, tc.seq_len);
  const double gib = double(size_t(1) << 30);
  std::printf("record preset, one sequence per micro-batch: parameters and optimizer %.2f GiB, "
              "activations %.2f GiB, %.2f GiB in all\n", held / gib, acts / gib, (held + acts) / gib);
  EXPECT_GT(held, size_t(1) << 30);  // 162M parameters: masters, gradients, copies, state
  EXPECT_GT(acts, size_t(16) << 30);
  EXPECT_LE(held + acts, size_t(30.5 * gib));
  // README's recipe for a 24 GB GPU: half the sequence, one per micro-batch; 4 GiB left
  // for the backend's scratch, the CUDA context and cuBLASLt.
  const size_t half = GPT::activation_bytes(gpu(), params, 1, tc.seq_len / 2);
  std::printf("at --seq-len %lld: activations %.2f GiB, %.2f GiB in all\n",
              (long long)(tc.seq_len / 2), half / gib, (held + half) / gib);
  EXPECT_LE(held + half, size_t(20 * gib));
  EXPECT_EQ(gpu().peak_bytes(), held);  // activation_bytes allocated nothing
}

TEST_F(CudaBackendTest, MemoryIsZeroFilledAndRoundTrips) {
  const size_t before = gpu().peak_bytes();
  Tensor z = g_->make(DType::F32, {1000});
  EXPECT_GE(gpu().peak_bytes(), before + 4000);
  for (double v : host(z)) ASSERT_EQ(v, 0.0);
  // Small uploads go through the staging ring, large ones straight; the host buffer may
  // change as soon as upload returns.
  for (int64_t n : {int64_t(31), int64_t(65536), int64_t(1) << 19}) {
    Tensor t = g_->make(DType::I32, {n});
    Tensor u = g_->make(DType::I32, {n});
    std::vector<int32_t> a = rand_tokens(n, 1 << 30, uint64_t(n)), b(a.size());
    gpu().upload(t, a.data());
    const std::vector<int32_t> sent = a;
    std::fill(a.begin(), a.end(), -7);  // overwritten at once
    gpu().copy(u, t);
    gpu().download(b.data(), u);
    EXPECT_EQ(b, sent) << n;
  }
  // Many small uploads in a row, to different rows, reuse the ring's slots: each must
  // still carry its own data (a slot is refilled only after its copy has run; the
  // emulator's lazy streams run no copy before the download).
  Tensor ring = g_->make(DType::I32, {50, 64});
  std::vector<int32_t> v(64), back(50 * 64);
  for (int k = 0; k < 50; ++k) {
    for (int i = 0; i < 64; ++i) v[size_t(i)] = k * 1000 + i;
    gpu().upload(Tensor(static_cast<int32_t*>(ring.data) + k * 64, DType::I32, {64}, Device::CUDA), v.data());
  }
  gpu().download(back.data(), ring);
  for (int k = 0; k < 50; ++k)
    for (int i = 0; i < 64; ++i) ASSERT_EQ(back[size_t(k * 64 + i)], k * 1000 + i) << "row " << k;
}

TEST_F(CudaBackendTest, FillWritesEveryDtype) {
  for (int64_t n : {31, 32, 33, 100001}) {
    Tensor f = g_->make(DType::F32, {n}), d = g_->make(DType::F64, {n}), b = g_->make(DType::BF16, {n}),
           i = g_->make(DType::I32, {n});
    gpu().fill(f, 1.25);
    gpu().fill(d, -3.5);
    gpu().fill(b, 0.1);
    gpu().fill(i, 42);
    for (double x : host(f)) ASSERT_EQ(x, 1.25);
    for (double x : host(d)) ASSERT_EQ(x, -3.5);
    for (double x : host(b)) ASSERT_EQ(x, double(round_bf16(0.1f)));
    std::vector<int32_t> iv(static_cast<size_t>(n));
    gpu().download(iv.data(), i);
    for (int32_t x : iv) ASSERT_EQ(x, 42);
    gpu().fill(f, 0.0);
    for (double x : host(f)) ASSERT_EQ(x, 0.0);
  }
}

TEST_F(CudaBackendTest, ConvertRoundsLikeTheCpuBitForBit) {
  const DType types[] = {DType::F32, DType::F64, DType::BF16};
  Vec v = randn(100003, 1, 10.0);
  v[0] = NAN;
  v[1] = INFINITY;
  v[2] = -INFINITY;
  v[3] = 1.0 + 1.0 / 256;  // a bf16 tie
  v[4] = 1e-40;
  v[5] = 1e300;
  const int64_t n = int64_t(v.size());
  for (DType from : types)
    for (DType to : types) {
      Tensor gs = g_->make(from, {n}), gd = g_->poisoned(to, {n});
      Tensor cs = c_->make(from, {n}), cd = c_->make(to, {n});
      // The same source bits on both sides.
      Tensor src64 = g_->from(v, DType::F64, {n});
      gpu().convert(gs, src64);
      const auto bits = raw(gpu(), gs);
      cpu_.upload(cs, bits.data());
      gpu().convert(gd, gs);
      cpu_.convert(cd, cs);
      std::vector<uint8_t> want(cd.bytes());
      cpu_.download(want.data(), cd);
      auto got = raw(gpu(), gd);
      // NaN payloads may differ between the two; everything else must be the same bits.
      const Vec gh = host(gd), ch = host(cd);
      for (int64_t k = 0; k < n; ++k) {
        if (std::isnan(ch[size_t(k)])) {
          ASSERT_TRUE(std::isnan(gh[size_t(k)])) << k;
          continue;
        }
        const size_t w = dtype_size(to);
        ASSERT_EQ(std::memcmp(got.data() + k * w, want.data() + k * w, w), 0)
            << dtype_name(from) << " -> " << dtype_name(to) << " element " << k << ": " << v[size_t(k)];
      }
    }
}

TEST_F(CudaBackendTest, SumIntoIsTheTwoStageOrderAndDeterministic) {
  for (int64_t n : {1, 31, 4097, 1000003}) {
    const Vec v = randn(n, uint64_t(n), 1.0, 0.1);
    auto [t, tc] = both(v, DType::F32, {n});
    const Vec vals = host(t);
    Tensor acc = g_->make(DType::F64, {});
    gpu().fill(acc, 0.5);
    gpu().sum_into(acc, t);
    double got = 0;
    gpu().download(&got, acc);
#ifdef SPEEDRUN_HAVE_CUDA
    const double want =
        0.5 + cuda::math::two_stage_sum(n, [&](double a, int64_t i) { return a + vals[size_t(i)]; });
    EXPECT_EQ(got, want) << n;
#endif
    long double exact = 0.5;
    for (double x : vals) exact += x;
    EXPECT_NEAR(got, double(exact), 1e-12 * std::max(1.0, std::fabs(double(exact))));
    gpu().fill(acc, 0.5);
    gpu().sum_into(acc, t);
    double again = 0;
    gpu().download(&again, acc);
    EXPECT_EQ(std::memcmp(&got, &again, 8), 0) << n;
  }
}

TEST_F(CudaBackendTest, OutOfMemorySaysWhatToReduce) {
  try {
    gpu().allocate(size_t(1) << 50);  // 1 PiB
    FAIL() << "1 PiB allocated";
  } catch (const Error& e) {
    const std::string s = e.what();
    for (const char* piece : {"out of GPU memory", "1.00 PiB", "free of", "--seq-len",
                              "--grad-accum", "--batch"})
      EXPECT_NE(s.find(piece), std::string::npos) << piece << " in: " << s;
  }
  // Through an arena, the message also names the largest tensor of the block.
  try {
    Arena a([this](size_t n) { return gpu().allocate(n); }, [this](void* p) { gpu().release(p); });
    a.add("small", DType::F32, {16});
    a.add("h0.fc", DType::BF16, {int64_t(1) << 24, int64_t(1) << 24});
    a.materialize(gpu().device());
    FAIL() << "a 512 TiB arena allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'h0.fc'"), std::string::npos) << e.what();
  }
  // The backend still works afterwards.
  Tensor t = g_->make(DType::F32, {10});
  gpu().fill(t, 2.0);
  EXPECT_EQ(host(t)[9], 2.0);
}

TEST_F(CudaBackendTest, WrongDtypesAreRefusedByName) {
  Tensor f = g_->make(DType::F32, {4, 8}), b = g_->make(DType::BF16, {4, 8}), r = g_->make(DType::F32, {4});
  try {
    gpu().rms_norm_forward(f, r, f, 1e-6);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rms_norm_forward"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("BF16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gpu().relu_squared_forward(b, f), Error);
  Tensor host_t(nullptr, DType::BF16, {4, 8});
  EXPECT_THROW(gpu().relu_squared_forward(b, host_t), Error);
}

// A GPU the kernels cannot run on is refused when the backend starts, naming it and the
// way out, instead of failing at its first kernel. On the emulator, as a V100 (sm_70).
#ifdef SPEEDRUN_CUDA_EMULATED  // the emulator only: a GPU run skips no test
TEST_F(CudaBackendTest, RefusesAGpuOlderThanSm80) {
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  {
    const cuda::emu::ScopedGpuProfile as_v100("v100");
    ASSERT_TRUE(as_v100.ok());
    try {
      auto be = make_backend(o);
      ADD_FAILURE() << "a backend on an sm_70 GPU";
    } catch (const Error& e) {
      const std::string m = e.what();
      for (const char* piece : {"--device cuda", "GPU 0", "V100", "sm_70", "sm_80", "--device cpu"})
        EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
    }
  }
  EXPECT_NO_THROW(make_backend(o));
}
#endif  // SPEEDRUN_CUDA_EMULATED

// speedrun devices lists every visible GPU, whether the backend runs there and with which
// attention chunks; on the emulator also as an RTX 4090 (narrow chunks) and a V100 (refused).
TEST_F(CudaBackendTest, DevicesSaysWhichGpusRunTheBackend) {
  Outcome r = run_cli("devices");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* piece : {"; CUDA backend", "GPU 0: ", "runs the CUDA backend", "attention chunks",
                            "this process would take GPU 0"})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
  // Hopper with sm_90a code (the emulator's H200, an H100 or H200 here) says the wgmma
  // attention runs there, and how to ask for it.
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  if (major == 9 && cuda::attn::forward_wgmma_binary_version() >= 90) {
    EXPECT_NE(r.out.find("Hopper's wgmma attention too, with SPEEDRUN_ATTENTION_FORWARD=wgmma"),
              std::string::npos) << r.out;
  }
#ifdef SPEEDRUN_CUDA_EMULATED
  r = run_cli("devices", "SPEEDRUN_CUDA_EMULATOR_GPU=rtx4090");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* piece : {"RTX 4090", "sm_89", "101376 bytes of shared memory per block",
                            "runs the CUDA backend (narrow attention chunks)"})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
  EXPECT_EQ(r.out.find("wgmma"), std::string::npos) << "not Hopper: " << r.out;
  r = run_cli("devices", "SPEEDRUN_CUDA_EMULATOR_GPU=v100");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* piece : {"sm_70", "cannot run the CUDA backend", "sm_80 or newer"})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
#endif
}

// --device auto takes a GPU only where the backend runs on it; elsewhere the CPU, saying
// why, where --device cuda stops with the reason. On the emulator, as a V100.
TEST_F(CudaBackendTest, DeviceAutoTakesTheCpuBesideAGpuItCannotRunOn) {
  BackendOptions o;  // auto
  EXPECT_EQ(make_backend(o)->name(), "cuda");
#ifdef SPEEDRUN_CUDA_EMULATED
  const cuda::emu::ScopedGpuProfile as_v100("v100");
  ASSERT_TRUE(as_v100.ok());
  EXPECT_EQ(make_backend(o)->name(), "cpu");
  o.device = DeviceChoice::CUDA;
  EXPECT_THROW(make_backend(o), Error);
#endif
}

TEST_F(CudaBackendTest, SyncModeStillRuns) {
  setenv("SPEEDRUN_CUDA_SYNC", "1", 1);
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  auto be = make_backend(o);
  unsetenv("SPEEDRUN_CUDA_SYNC");
  Pool p(*be);
  Tensor x = p.from(randn(64, 3), DType::BF16, {2, 32}), y = p.poisoned(DType::BF16, {2, 32});
  Tensor r = p.make(DType::F32, {2});
  be->rms_norm_forward(y, r, x, 1e-6);
  be->synchronize();
  for (double v : be->to_host_f64(y)) ASSERT_TRUE(std::isfinite(v));
}

// ---- matmul ----------------------------------------------------------------------------------

struct MM {
  int64_t M, N, K;
};

TEST_F(CudaBackendTest, MatmulMatchesFp64ForEveryTransposeAndOutput) {
  const MM shapes[] = {{31, 32, 33}, {33, 31, 32}, {200, 64, 256}, {1, 128, 64}, {257, 96, 33}};
  for (const MM& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (DType cdt : {DType::BF16, DType::F32})
          for (bool acc : {false, true}) {
            if (cdt == DType::F32 && !acc) continue;  // weight gradients accumulate
            const Shape as = ta ? Shape{s.K, s.M} : Shape{s.M, s.K};
            const Shape bs = tb ? Shape{s.N, s.K} : Shape{s.K, s.N};
            auto [A, Ac] = both(randn(s.M * s.K, 1), DType::BF16, as);
            auto [B, Bc] = both(randn(s.K * s.N, 2), DType::BF16, bs);
            auto [C, Cc] = both(randn(s.M * s.N, 3), cdt, {s.M, s.N});
            if (!acc) gpu().fill(C, NAN);
            gpu().matmul(C, A, ta, B, tb, acc);
            cpu_.matmul(Cc, Ac, ta, Bc, tb, acc);
            EXPECT_LE(rel_err(host(C), host(Cc)), cdt == DType::BF16 ? tol::kBf16 : tol::kFloat * s.K)
                << s.M << "x" << s.N << "x" << s.K << " ta " << ta << " tb " << tb << " "
                << dtype_name(cdt) << (acc ? " +=" : " =");
          }
}

// matmul_add is one cuBLASLt call with the residual as its C: the same bits as copying the
// residual into the output and accumulating, which is what the CPU backend does; the
// residual is left as it was.
TEST_F(CudaBackendTest, MatmulAddEqualsACopyAndAnAccumulatingMatmulBitForBit) {
  const MM shapes[] = {{31, 32, 33}, {200, 64, 256}, {1, 128, 64}};
  for (const MM& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        auto [A, Ac] = both(randn(s.M * s.K, 1), DType::BF16, ta ? Shape{s.K, s.M} : Shape{s.M, s.K});
        auto [B, Bc] = both(randn(s.K * s.N, 2), DType::BF16, tb ? Shape{s.N, s.K} : Shape{s.K, s.N});
        auto [R, Rc] = both(randn(s.M * s.N, 3), DType::BF16, {s.M, s.N});
        const std::vector<double> r0 = host(R);
        Tensor fused = g_->make(DType::BF16, {s.M, s.N}), apart = g_->make(DType::BF16, {s.M, s.N});
        gpu().fill(fused, NAN);
        gpu().matmul_add(fused, A, ta, B, tb, R);
        gpu().copy(apart, R);
        gpu().matmul(apart, A, ta, B, tb, true);
        const std::string what = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" +
                                 std::to_string(s.K) + " ta " + std::to_string(ta) + " tb " +
                                 std::to_string(tb);
        EXPECT_EQ(host(fused), host(apart)) << what;
        EXPECT_EQ(host(R), r0) << what << ": the residual changed";
        cpu_.matmul_add(Rc, Ac, ta, Bc, tb, Rc);  // in place, as matmul's +=
        EXPECT_LE(rel_err(host(fused), host(Rc)), tol::kBf16) << what;
      }
}

#ifdef SPEEDRUN_HAVE_CUDA
TEST_F(CudaBackendTest, MatmulChoosesItsAlgorithmOncePerProblem) {
  auto [A, Ac] = both(randn(64 * 96, 1), DType::BF16, {64, 96});
  auto [B, Bc] = both(randn(96 * 128, 2), DType::BF16, {96, 128});
  Tensor C = g_->make(DType::BF16, {64, 128});
  gpu().matmul(C, A, false, B, false, false);
  const cuda::GemmCacheInfo first = cuda::gemm_cache_info(gpu());
  gpu().from_host_f64(A, randn(64 * 96, 5));  // other data, same problem
  cpu_.from_host_f64(Ac, randn(64 * 96, 5));
  gpu().matmul(C, A, false, B, false, false);
  const cuda::GemmCacheInfo second = cuda::gemm_cache_info(gpu());
  EXPECT_EQ(second.entries, first.entries);
  EXPECT_EQ(second.misses, first.misses);
  EXPECT_EQ(second.lookups, first.lookups + 1);
  EXPECT_EQ(second.last_algo, first.last_algo);
  // The same shape 16 bytes off a 256-byte boundary is another problem: its alignment
  // differs, and the product is still right.
  Tensor flat = g_->make(DType::BF16, {64 * 128 + 8});
  Tensor C2 = flat.slice(8, 8 + 64 * 128).view({64, 128});
  gpu().matmul(C2, A, false, B, false, false);
  EXPECT_EQ(cuda::gemm_cache_info(gpu()).misses, first.misses + 1);
  Tensor Cc = c_->make(DType::F64, {64, 128});
  cpu_.matmul(Cc, Ac, false, Bc, false, false);
  EXPECT_LE(rel_err(host(C2), host(Cc)), tol::kBf16);
  EXPECT_THROW(cuda::gemm_cache_info(cpu_), Error);
}

// One backend's GEMMs on fixed operands: C = A B, S = A B + R (R read only), G += A^T C in
// place, R += A B in place. Three problems (R += A B is S's: the same shape, dtypes and
// alignment), two of them accumulations.
std::vector<Vec> gemm_products(Backend& be, Pool& pool) {
  Tensor A = pool.from(randn(64 * 96, 1), DType::BF16, {64, 96});
  Tensor B = pool.from(randn(96 * 128, 2), DType::BF16, {96, 128});
  Tensor R = pool.from(randn(64 * 128, 3), DType::BF16, {64, 128});
  Tensor C = pool.poisoned(DType::BF16, {64, 128}), S = pool.poisoned(DType::BF16, {64, 128});
  Tensor G = pool.from(randn(96 * 128, 4), DType::F32, {96, 128});
  be.matmul(C, A, false, B, false, false);
  be.matmul_add(S, A, false, B, false, R);
  be.matmul(G, A, true, C, false, true);
  be.matmul_add(R, A, false, B, false, R);
  return {be.to_host_f64(C), be.to_host_f64(S), be.to_host_f64(G), be.to_host_f64(R)};
}

// A CUDA backend with these environment variables set while it is made (and unset after).
std::unique_ptr<Backend> cuda_backend_with(const std::vector<std::pair<const char*, std::string>>& env,
                                           std::optional<std::string> gemm_algos = {}) {
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  o.gemm_algos = std::move(gemm_algos);
  for (const auto& [k, v] : env) setenv(k, v.c_str(), 1);
  std::unique_ptr<Backend> be;
  try {
    be = make_backend(o);
  } catch (...) {
    for (const auto& [k, v] : env) unsetenv(k);
    throw;
  }
  for (const auto& [k, v] : env) unsetenv(k);
  return be;
}

// SPEEDRUN_GEMM_TUNE=N times the heuristic's candidates on a problem's first call and keeps
// the fastest, and the GEMM algorithm record keeps each choice: a backend reading it runs
// every GEMM with the tuned backend's algorithm, untimed, and gets its bits, which shows
// too that an accumulation in place added its product once while it was timed (the
// candidates' runs write a scratch output). Under the emulator, whose algorithms sum K in
// 1, 2 or 3 slices as split-K kernels do, the heuristic's first gives other bits. Bad
// values are refused naming the variable.
TEST_F(CudaBackendTest, GemmTuningKeepsTheFastestCandidateAndTheRecordRepeatsIt) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_gemm_tune";
  fs::remove_all(dir);
  const std::string record = (dir / "algos.tsv").string();
  std::vector<std::pair<const char*, std::string>> env = {{"SPEEDRUN_GEMM_TUNE", "4"}};
#ifdef SPEEDRUN_CUDA_EMULATED
  env.push_back({"SPEEDRUN_EMU_SLOW_GEMM_ALGO", "0"});  // the heuristic's first is the slow one
#endif
  std::unique_ptr<Backend> tuned = cuda_backend_with(env, record);
#ifdef SPEEDRUN_CUDA_EMULATED
  setenv("SPEEDRUN_EMU_SLOW_GEMM_ALGO", "0", 1);  // slow while it runs, too
#endif
  Pool p(*tuned);
  const std::vector<Vec> got = gemm_products(*tuned, p);
#ifdef SPEEDRUN_CUDA_EMULATED
  unsetenv("SPEEDRUN_EMU_SLOW_GEMM_ALGO");
#endif
  const cuda::GemmCacheInfo info = cuda::gemm_cache_info(*tuned);
  EXPECT_EQ(info.misses, 3u);
  EXPECT_EQ(info.tuned, info.misses);  // every problem had candidates to time
  EXPECT_GT(info.tune_ms, 0.0);
  EXPECT_EQ(info.tune, 4);
  EXPECT_EQ(info.record, record);
  EXPECT_EQ(info.record_read, 0u);
  EXPECT_EQ(info.record_entries, 3u);  // each timed choice, written as it was made
  EXPECT_EQ(cuda::gemm_cache_info(gpu()).tuned, 0u);  // untuned by default
  EXPECT_EQ(cuda::gemm_cache_info(gpu()).record, "");
  cuda::GemmRecord file;
  ASSERT_TRUE(cuda::read_gemm_record(record, file));
  EXPECT_EQ(file.entries.size(), 3u);
  EXPECT_EQ(file.tune, 4);
  for (const cuda::GemmRecordEntry& e : file.entries) {
    EXPECT_GE(e.candidates, 2) << cuda::gemm_key_str(e.key);
    EXPECT_GT(e.first_ms, 0.0) << cuda::gemm_key_str(e.key);
#ifdef SPEEDRUN_CUDA_EMULATED
    // The first was slowed by 50 ms a run (a sleep: at least that), the others were not.
    EXPECT_GE(e.first_ms, 50.0) << cuda::gemm_key_str(e.key);
    EXPECT_GT(e.chosen, 0) << cuda::gemm_key_str(e.key);
    EXPECT_LT(e.ms, e.first_ms) << cuda::gemm_key_str(e.key);
#endif
  }

  // The record repeats the choices, untimed, without SPEEDRUN_GEMM_TUNE: the same bits.
  std::unique_ptr<Backend> replay = cuda_backend_with({}, record);
  Pool rp(*replay);
  const std::vector<Vec> again = gemm_products(*replay, rp);
  const cuda::GemmCacheInfo ri = cuda::gemm_cache_info(*replay);
  EXPECT_EQ(ri.record_read, 3u);
  EXPECT_EQ(ri.recorded, 3u);
  EXPECT_EQ(ri.tuned, 0u);
  EXPECT_EQ(ri.tune, 4);  // problems it has not met would be timed as the record's run did
  EXPECT_EQ(ri.last_algo, info.last_algo);
  const std::vector<Vec> want = gemm_products(gpu(), *g_);  // the heuristic's first
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(again[i], got[i]) << "product " << i;
    EXPECT_LE(rel_err(got[i], want[i]), tol::kBf16) << "product " << i;
  }
#ifdef SPEEDRUN_CUDA_EMULATED
  // Every candidate but the first ran fast: each problem kept a later one, which sums in
  // slices: G (F32, K = 64) shows it.
  EXPECT_EQ(info.retuned, info.misses);
  EXPECT_NE(info.last_algo, cuda::gemm_cache_info(gpu()).last_algo);
  EXPECT_NE(got[2], want[2]);
#endif
  for (const char* bad : {"0", "17", "x", "4x", "-1"}) {
    try {
      cuda_backend_with({{"SPEEDRUN_GEMM_TUNE", bad}});
      ADD_FAILURE() << "SPEEDRUN_GEMM_TUNE=" << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("SPEEDRUN_GEMM_TUNE"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

// A record cuBLASLt cannot honour is refused naming the file and the fix: one made on
// another GPU (or cuBLASLt) when the backend starts, one whose algorithm does not run for
// its problem when the problem comes; a damaged one names its line. A record that cannot
// be written is reported once, and the run goes on.
TEST_F(CudaBackendTest, GemmRecordFromElsewhereIsRefusedAndAnUnwritableOneReported) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_gemm_record";
  fs::remove_all(dir);
  const std::string made = (dir / "made.tsv").string();
  std::vector<std::pair<const char*, std::string>> env = {{"SPEEDRUN_GEMM_TUNE", "3"}};
  {
    std::unique_ptr<Backend> tuned = cuda_backend_with(env, made);
    Pool p(*tuned);
    gemm_products(*tuned, p);
  }
  cuda::GemmRecord r;
  ASSERT_TRUE(cuda::read_gemm_record(made, r));
  ASSERT_FALSE(r.entries.empty());
  auto expect_refused = [&](const std::string& path, std::vector<std::string> pieces,
                            bool at_start) {
    try {
      std::unique_ptr<Backend> be = cuda_backend_with({}, path);
      ASSERT_FALSE(at_start) << "a backend started on " << path;
      Pool p(*be);
      gemm_products(*be, p);
      ADD_FAILURE() << "the GEMMs ran with " << path;
    } catch (const Error& e) {
      pieces.push_back(path);
      pieces.push_back("remove the file");
      for (const std::string& piece : pieces)
        EXPECT_NE(std::string(e.what()).find(piece), std::string::npos)
            << "'" << piece << "' not in: " << e.what();
    }
  };
  cuda::GemmRecord other = r;
  other.origin.gpu = "Imaginary GPU 9000";
  const std::string elsewhere = (dir / "elsewhere.tsv").string();
  cuda::write_gemm_record(elsewhere, other);
  expect_refused(elsewhere, {"was made on Imaginary GPU 9000", "this process runs on"}, true);
  other = r;
  other.origin.cublaslt += 1;
  cuda::write_gemm_record(elsewhere, other);
  expect_refused(elsewhere, {"with cuBLASLt " + std::to_string(other.origin.cublaslt)}, true);
#ifdef SPEEDRUN_CUDA_EMULATED
  // The emulated cuBLASLt knows its own three algorithms only (a real one's opaque words
  // may name a configuration that happens to exist).
  other = r;
  for (cuda::GemmRecordEntry& e : other.entries) e.algo = {};
  const std::string foreign = (dir / "foreign.tsv").string();
  cuda::write_gemm_record(foreign, other);
  expect_refused(foreign, {"holds an algorithm for", "does not run here"}, false);
#endif
  const std::string damaged = (dir / "damaged.tsv").string();
  std::ofstream(damaged) << "format\t1\ngpu\tX\n";
  expect_refused(damaged, {"line 2"}, true);

  // Unwritable: the folder is a file. Reported once; every GEMM still runs and is right.
  std::ofstream((dir / "plain").string()) << "x";
  const std::string unwritable = (dir / "plain" / "algos.tsv").string();
  testing::internal::CaptureStderr();
  std::unique_ptr<Backend> be = cuda_backend_with(env, unwritable);
  Pool p(*be);
  const std::vector<Vec> got = gemm_products(*be, p);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find(unwritable), std::string::npos) << err;
  EXPECT_NE(err.find("the run goes on"), std::string::npos) << err;
  size_t warnings = 0;
  for (size_t at = err.find("warning:"); at != std::string::npos; at = err.find("warning:", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << err;
  EXPECT_EQ(cuda::gemm_cache_info(*be).tuned, 3u);
  const std::vector<Vec> want = gemm_products(gpu(), *g_);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(rel_err(got[i], want[i]), tol::kBf16) << "product " << i;
  fs::remove_all(dir);
}

// A training run that times its GEMM algorithms keeps them in its folder, and resuming it
// (without SPEEDRUN_GEMM_TUNE) runs every GEMM as it did: the checkpoint it writes is the
// uninterrupted run's, bit for bit. Under the emulator, resuming without the record (the
// heuristic's first algorithm, which sums K in one slice) gives other bits.
TEST_F(CudaBackendTest, TunedRunResumesWithItsGemmAlgorithms) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_gemm_resume";
  fs::remove_all(dir);
  const test::ShardFiles data = test::synthetic_shards(dir / "data", 100000, 4000);
  const fs::path run = dir / "run";
  const std::string train =
      "train --device cuda --layers 2 --heads 2 --head-dim 64 --vocab 128 --eot 0 --seq-len 128 "
      "--batch 2 --window-end 128 --steps 4 --cooldown 1 --val-tokens 256 --save-every 2 "
      "--no-sample --train " + data.train[0] + " --val " + data.val[0];
  std::string env = "SPEEDRUN_GEMM_TUNE=3";
#ifdef SPEEDRUN_CUDA_EMULATED
  env += " SPEEDRUN_EMU_SLOW_GEMM_ALGO=0";
#endif
  const Outcome first = run_cli(train + " --out " + run.string(), env);
  ASSERT_EQ(first.code, 0) << first.out;
  const std::string record = (run / "gemm_algos.tsv").string();
  EXPECT_NE(first.out.find("gemm algorithms: " + record + " (0 recorded, SPEEDRUN_GEMM_TUNE=3"),
            std::string::npos) << first.out;
  cuda::GemmRecord r;
  ASSERT_TRUE(cuda::read_gemm_record(record, r));
  ASSERT_FALSE(r.entries.empty());
  const fs::path last = run / "ckpt_step000004";
  auto bytes = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string model = bytes(last / "model.safetensors"), state = bytes(last / "state.safetensors");
  ASSERT_FALSE(model.empty());

  const std::string resume = "train --device cuda --resume " + (run / "ckpt_step000002").string();
  const Outcome second = run_cli(resume);
  ASSERT_EQ(second.code, 0) << second.out;
  EXPECT_NE(second.out.find("gemm algorithms: " + record + " (" + std::to_string(r.entries.size()) +
                            " recorded"),
            std::string::npos) << second.out;
  EXPECT_TRUE(bytes(last / "model.safetensors") == model) << "the resumed run's weights differ";
  EXPECT_TRUE(bytes(last / "state.safetensors") == state) << "the resumed run's optimizer differs";
#ifdef SPEEDRUN_CUDA_EMULATED
  fs::rename(record, dir / "moved.tsv");
  const Outcome third = run_cli(resume);
  ASSERT_EQ(third.code, 0) << third.out;
  EXPECT_EQ(third.out.find("gemm algorithms:"), std::string::npos) << third.out;
  EXPECT_FALSE(bytes(last / "model.safetensors") == model)
      << "the heuristic's algorithms gave the tuned ones' bits: the test shows nothing";
#endif
  if (!HasFailure()) fs::remove_all(dir);
}
#endif

// NCCL at world 1 against the LocalComm, which is what MPI gives a job of one rank: NCCL
// refuses two ranks on one GPU, so on a one-GPU machine this is how NcclComm's calls, its
// side stream, events and tickets meet real NCCL (tests/nccl_check.h; test_mpi runs the
// same checks against MPI over several ranks).
TEST_F(CudaBackendTest, NcclAtWorldOneAgreesWithTheLocalComm) {
#ifndef SPEEDRUN_HAVE_NCCL
  GTEST_SKIP() << "this build has no NCCL (the CUDA toolkit's nccl.h was not found)";
#else
  if (const std::string why = nccl_library_problem(); !why.empty()) GTEST_SKIP() << why;
  LocalComm host(&gpu());
  NcclComm nccl(gpu(), std::make_unique<LocalComm>(&gpu()));
  EXPECT_EQ(nccl.name(), "nccl");
  int checks = 0;
  test::check_nccl(nccl, host, gpu(), [&](bool ok, const std::string& what) {
    ++checks;
    EXPECT_TRUE(ok) << what;
  });
  EXPECT_GE(checks, 10);
#endif
}

// ---- embedding -------------------------------------------------------------------------------

TEST_F(CudaBackendTest, EmbeddingForwardCopiesRowsAndBackwardIsDeterministic) {
  for (int64_t C : {31, 32, 64}) {
    const int64_t V = 37, N = 1000;  // many repeats of each token
    auto [wte, wtec] = both(randn(V * C, uint64_t(C)), DType::BF16, {V, C});
    const std::vector<int32_t> tok = rand_tokens(N, int32_t(V), uint64_t(C));
    Tensor tg = g_->make(DType::I32, {N}), tc = c_->make(DType::I32, {N});
    gpu().upload(tg, tok.data());
    cpu_.upload(tc, tok.data());
    Tensor out = g_->poisoned(DType::BF16, {N, C}), outc = c_->make(DType::F64, {N, C});
    gpu().embedding_forward(out, tg, wte);
    cpu_.embedding_forward(outc, tc, wtec);
    EXPECT_EQ(rel_err(host(out), host(outc)), 0.0) << C;

    auto [dout, doutc] = both(randn(N * C, 9), DType::BF16, {N, C});
    const Vec start = randn(V * C, 10);
    auto [dw, dwc] = both(start, DType::F32, {V, C});
    gpu().embedding_backward(dw, tg, dout);
    cpu_.embedding_backward(dwc, tc, doutc);
    EXPECT_LE(rel_err(host(dw), host(dwc)), tol::kFloat * 30) << C;  // up to ~60 fp32 adds a row
    const auto first = raw(gpu(), dw);
    gpu().from_host_f64(dw, start);
    gpu().embedding_backward(dw, tg, dout);
    EXPECT_EQ(raw(gpu(), dw), first) << "embedding backward is not deterministic, C " << C;
  }
}

// A token of web text can fill ~4% of a batch (" the"); its run is one block's, whose rows
// are loaded many at a time. The sums must still be the CPU's: the starting gradient plus
// each occurrence's row in position order, one fp32 addition each, replayed here bit for
// bit. Runs of 1, 15-17 and 300 rows (the loads' batch is 16), 16-byte columns (C 768, 40)
// and single ones (C 31).
TEST_F(CudaBackendTest, EmbeddingBackwardAddsATokensRowsInPositionOrder) {
  for (int64_t C : {768, 40, 31}) {
    const int64_t V = 50, N = 1200;
    std::vector<int32_t> tok = rand_tokens(N, int32_t(V), uint64_t(C) + 1);
    std::mt19937_64 pick{uint64_t(C)};
    for (int i = 0; i < 300; ++i) tok[size_t(pick() % uint64_t(N))] = 3;  // ~300 of token 3
    // Tokens 7, 9 and 11 exactly 15, 16 and 17 times; 49 once, last in the sorted keys.
    for (int32_t& t : tok)
      if (t == 7 || t == 9 || t == 11 || t == 49) t = 12;
    for (int k = 0; k < 15 + 16 + 17; ++k)
      tok[size_t(5 + 19 * k)] = k < 15 ? 7 : k < 31 ? 9 : 11;
    tok[N - 1] = 49;
    Tensor tg = g_->make(DType::I32, {N});
    gpu().upload(tg, tok.data());
    Tensor dout = g_->from(randn(N * C, 21), DType::BF16, {N, C});
    Tensor dw = g_->from(randn(V * C, 22), DType::F32, {V, C});
    std::vector<uint16_t> d(size_t(N * C));
    std::vector<float> ref(size_t(V * C));
    gpu().download(d.data(), dout);
    gpu().download(ref.data(), dw);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        uint32_t bits = uint32_t(d[size_t(n * C + c)]) << 16;
        float x;
        std::memcpy(&x, &bits, 4);
        ref[size_t(tok[size_t(n)] * C + c)] += x;
      }
    gpu().embedding_backward(dw, tg, dout);
    std::vector<float> got(ref.size());
    gpu().download(got.data(), dw);
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) differ += std::memcmp(&got[i], &ref[i], 4) != 0;
    EXPECT_EQ(differ, 0) << "values of dwte differ from the position-order sums, C " << C;
  }
}

// ---- rms_norm --------------------------------------------------------------------------------

TEST_F(CudaBackendTest, RmsNormForwardAndBackward) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t rows : {1, 33, 1025})
    for (int64_t dim : {31, 32, 33, 768}) {
      auto [x, xc] = both(randn(rows * dim, uint64_t(rows + dim), 2.0), DType::BF16, {rows, dim});
      Tensor y = g_->poisoned(DType::BF16, {rows, dim}), r = g_->poisoned(DType::F32, {rows});
      Tensor yc = c_->make(DType::F64, {rows, dim}), rc = c_->make(DType::F64, {rows});
      gpu().rms_norm_forward(y, r, x, eps);
      cpu_.rms_norm_forward(yc, rc, xc, eps);
      EXPECT_LE(rel_err(host(y), host(yc)), tol::kBf16) << rows << "x" << dim;
      EXPECT_LE(rel_err(host(r), host(rc)), tol::kFloat * 10) << rows << "x" << dim;
      // Backward, with the CPU fed the GPU's rstd (F32) so only the pass differs.
      auto [dy, dyc] = both(randn(rows * dim, 77), DType::BF16, {rows, dim});
      Tensor rc2 = c_->from(host(r), DType::F64, {rows});
      for (bool acc : {false, true}) {
        auto [dx, dxc] = both(randn(rows * dim, 78), DType::BF16, {rows, dim});
        if (!acc) gpu().fill(dx, NAN);
        gpu().rms_norm_backward(dx, dy, x, r, acc);
        cpu_.rms_norm_backward(dxc, dyc, xc, rc2, acc);
        EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << rows << "x" << dim << " acc " << acc;
      }
      // y may alias x.
      Tensor xa = g_->from(host(x), DType::BF16, {rows, dim});
      gpu().rms_norm_forward(xa, r, xa, eps);
      EXPECT_EQ(host(xa), host(y));
    }
}

// ---- QK norm + rotary ------------------------------------------------------------------------

TEST_F(CudaBackendTest, RotaryTablesMatchTheCpu) {
  for (int64_t D : {64, 128}) {
    const int64_t T = 300, half = D / 2;
    // Against the CPU's fp32 tables, computed the same way (fp32 frequencies and angles):
    // only the device's double cos/sin may round a last bit differently.
    Tensor c = g_->poisoned(DType::F32, {T, half}), s = g_->poisoned(DType::F32, {T, half});
    Tensor cc = c_->make(DType::F32, {T, half}), sc = c_->make(DType::F32, {T, half});
    gpu().rotary_tables(c, s, 10000.0);
    cpu_.rotary_tables(cc, sc, 10000.0);
    EXPECT_LE(rel_err(host(c), host(cc)), tol::kFloat);
    EXPECT_LE(rel_err(host(s), host(sc)), tol::kFloat);
    // Rows from `start` are the same bits as those rows of the full table.
    Tensor c1 = g_->poisoned(DType::F32, {7, half}), s1 = g_->poisoned(DType::F32, {7, half});
    gpu().rotary_tables_at(c1, s1, 10000.0, 123);
    const Vec full = host(c), part = host(c1);
    for (int64_t k = 0; k < 7 * half; ++k) ASSERT_EQ(part[size_t(k)], full[size_t(123 * half + k)]);
  }
}

TEST_F(CudaBackendTest, QkvForwardAndBackward) {
  // The stacked projection's heads against the fp64 CPU, with v1 another layer's and (layer
  // 0) qkv's own; (1 - lamb) and lamb get separate gradient scalars so that each dot shows.
  // Head dims for 1 to 4 pairs per lane (the kernels' template), halves not a multiple of 32.
  const double eps = 1.1920928955078125e-07;
  for (int64_t D : {2, 64, 96, 128, 192, 256})
    for (bool layer0 : {false, true}) {
      const int64_t T = 200, B = 2, N = B * T, H = 3, C = H * D, half = D / 2;  // T % 128 != 0
      Tensor cs = g_->make(DType::F32, {T, half}), sn = g_->make(DType::F32, {T, half});
      gpu().rotary_tables(cs, sn, 10000.0);
      Tensor csc = c_->from(host(cs), DType::F64, {T, half});
      Tensor snc = c_->from(host(sn), DType::F64, {T, half});
      auto [qkv, qkvc] = both(randn(N * 3 * C, uint64_t(D), 3.0), DType::BF16, {N, 3 * C});
      auto [other, otherc] = both(randn(N * 3 * C, uint64_t(D) + 1), DType::BF16, {N, 3 * C});
      const Tensor v1 = layer0 ? qkv : other, v1c = layer0 ? qkvc : otherc;
      auto [lv, lvc] = both(Vec{0.3}, DType::F32, {1});
      auto [ga, gac] = both(Vec{0.125}, DType::F32, {1});
      auto [gb, gbc] = both(Vec{-2.0}, DType::F32, {1});
      const Coef a = Coef::one_minus(lv.element(0), ga.element(0));
      const Coef b = Coef::param(lv.element(0), gb.element(0));
      const Coef ac = Coef::one_minus(lvc.element(0), gac.element(0));
      const Coef bc = Coef::param(lvc.element(0), gbc.element(0));
      Tensor q = g_->poisoned(DType::BF16, {N, C}), k = g_->poisoned(DType::BF16, {N, C});
      Tensor v = g_->poisoned(DType::BF16, {N, C}), r = g_->poisoned(DType::F32, {2, N * H});
      Tensor qc = c_->make(DType::F64, {N, C}), kc = c_->make(DType::F64, {N, C});
      Tensor vc = c_->make(DType::F64, {N, C}), rc = c_->make(DType::F64, {2, N * H});
      gpu().qkv_forward(q, k, v, r, qkv, v1, a, b, cs, sn, T, H, eps);
      cpu_.qkv_forward(qc, kc, vc, rc, qkvc, v1c, ac, bc, csc, snc, T, H, eps);
      const std::string at = "D " + std::to_string(D) + (layer0 ? ", layer 0" : ", layer 1");
      EXPECT_LE(rel_err(host(q), host(qc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(k), host(kc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(v), host(vc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(r), host(rc)), tol::kFloat * 10) << at;

      auto [dq, dqc] = both(randn(N * C, 5), DType::BF16, {N, C});
      auto [dk, dkc] = both(randn(N * C, 6), DType::BF16, {N, C});
      auto [dv, dvc] = both(randn(N * C, 7), DType::BF16, {N, C});
      const Vec dv1_start = randn(N * C, 8);
      auto [dv1, dv1c] = both(dv1_start, DType::BF16, {N, C});
      Tensor rc2 = c_->from(host(r), DType::F64, {2, N * H});
      Tensor dqkv = g_->poisoned(DType::BF16, {N, 3 * C}), dqkvc = c_->make(DType::F64, {N, 3 * C});
      gpu().qkv_backward(dqkv, dv1, dq, dk, dv, qkv, r, v1, a, b, cs, sn, T, H);
      cpu_.qkv_backward(dqkvc, dv1c, dqc, dkc, dvc, qkvc, rc2, v1c, ac, bc, csc, snc, T, H);
      EXPECT_LE(rel_err(host(dqkv), host(dqkvc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(dv1), host(dv1c)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(ga), host(gac)), tol::kFloat * 10) << at;
      EXPECT_LE(rel_err(host(gb), host(gbc)), tol::kFloat * 10) << at;
      // Deterministic: the same bits from the same start.
      const auto bits = raw(gpu(), dqkv), bits_a = raw(gpu(), ga), bits_b = raw(gpu(), gb);
      gpu().from_host_f64(dv1, dv1_start);
      gpu().from_host_f64(ga, {0.125});
      gpu().from_host_f64(gb, {-2.0});
      gpu().qkv_backward(dqkv, dv1, dq, dk, dv, qkv, r, v1, a, b, cs, sn, T, H);
      EXPECT_EQ(raw(gpu(), dqkv), bits) << at;
      EXPECT_EQ(raw(gpu(), ga), bits_a) << at;
      EXPECT_EQ(raw(gpu(), gb), bits_b) << at;
    }
}

TEST_F(CudaBackendTest, MixNormForwardAndBackward) {
  // Against the fp64 CPU, rows read 8 at a time (C 768) and one by one (C 33), dx over dres
  // as the model calls it, and the same bits from a second run.
  const double eps = 1.1920928955078125e-07;
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    auto [x, xc] = both(randn(R * C, 1, 2.0), DType::BF16, {R, C});
    auto [y, yc] = both(randn(R * C, 2), DType::BF16, {R, C});
    auto [l0, l0c] = both(Vec{0.9}, DType::F32, {1});
    auto [l1, l1c] = both(Vec{0.2}, DType::F32, {1});
    auto [ga, gac] = both(Vec{0.125}, DType::F32, {1});
    auto [gb, gbc] = both(Vec{-2.0}, DType::F32, {1});
    const Coef a = Coef::param(l0.element(0), ga.element(0)), b = Coef::param(l1.element(0), gb.element(0));
    const Coef ac = Coef::param(l0c.element(0), gac.element(0));
    const Coef bc = Coef::param(l1c.element(0), gbc.element(0));
    Tensor m = g_->poisoned(DType::BF16, {R, C}), n = g_->poisoned(DType::BF16, {R, C});
    Tensor r = g_->poisoned(DType::F32, {R});
    Tensor mc = c_->make(DType::F64, {R, C}), nc = c_->make(DType::F64, {R, C});
    Tensor rc = c_->make(DType::F64, {R});
    gpu().mix_norm_forward(m, n, r, x, a, y, b, eps);
    cpu_.mix_norm_forward(mc, nc, rc, xc, ac, yc, bc, eps);
    EXPECT_LE(rel_err(host(m), host(mc)), tol::kBf16) << C;
    EXPECT_LE(rel_err(host(n), host(nc)), tol::kBf16) << C;
    EXPECT_LE(rel_err(host(r), host(rc)), tol::kBf16) << C;  // of the rounded xmix

    // The backward from the GPU's own xmix and rstd, on both sides.
    Tensor mc2 = c_->from(host(m), DType::F64, {R, C}), rc2 = c_->from(host(r), DType::F64, {R});
    auto [dn, dnc] = both(randn(R * C, 3), DType::BF16, {R, C});
    const Vec dres_start = randn(R * C, 4), dy_start = randn(R * C, 5);
    auto [dh, dhc] = both(dres_start, DType::BF16, {R, C});
    auto [dy, dyc] = both(dy_start, DType::BF16, {R, C});
    gpu().mix_norm_backward(dh, dy, dh, dn, m, r, x, a, y, b, Tensor{});
    cpu_.mix_norm_backward(dhc, dyc, dhc, dnc, mc2, rc2, xc, ac, yc, bc, Tensor{});
    EXPECT_LE(rel_err(host(dh), host(dhc)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(dy), host(dyc)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(ga), host(gac)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(gb), host(gbc)), tol::kBf16 * 4) << C;
    const auto bits = raw(gpu(), dh), bits_y = raw(gpu(), dy), bits_a = raw(gpu(), ga);
    gpu().from_host_f64(dh, dres_start);
    gpu().from_host_f64(dy, dy_start);
    gpu().from_host_f64(ga, {0.125});
    gpu().from_host_f64(gb, {-2.0});
    gpu().mix_norm_backward(dh, dy, dh, dn, m, r, x, a, y, b, Tensor{});
    EXPECT_EQ(raw(gpu(), dh), bits) << C;
    EXPECT_EQ(raw(gpu(), dy), bits_y) << C;
    EXPECT_EQ(raw(gpu(), ga), bits_a) << C;
  }
}

// The U-net skip folded in gives the values of the ops it replaces, run on the GPU:
// scaled_sum_forward into xin, then mix_norm_forward; backward mix_norm_backward from that
// xin, then scaled_sum_backward for the skip. The same bits but for the coefficients'
// gradients (other summation orders); rows 8 at a time and one by one; deterministic.
TEST_F(CudaBackendTest, SkipMixNormIsTheSeparateOps) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    Tensor h = g_->from(randn(R * C, 1, 2.0), DType::BF16, {R, C});
    Tensor skip = g_->from(randn(R * C, 2), DType::BF16, {R, C});
    Tensor y = g_->from(randn(R * C, 3), DType::BF16, {R, C});
    Tensor lam = g_->from(Vec{0.9, 0.2, 0.7}, DType::F32, {3});
    const Vec g0 = {0.125, -2.0, 0.5};
    Tensor gf = g_->from(g0, DType::F32, {3}), gs = g_->from(g0, DType::F32, {3});
    auto coefs = [&](const Tensor& g) {
      return std::array<Coef, 3>{Coef::param(lam.element(0), g.element(0)),
                                 Coef::param(lam.element(1), g.element(1)),
                                 Coef::param(lam.element(2), g.element(2))};
    };
    const auto cf = coefs(gf), cs = coefs(gs);  // a, b, c: fused, separate
    Tensor m = g_->poisoned(DType::BF16, {R, C}), n = g_->poisoned(DType::BF16, {R, C});
    Tensor r = g_->poisoned(DType::F32, {R});
    Tensor xin = g_->poisoned(DType::BF16, {R, C}), ms = g_->poisoned(DType::BF16, {R, C});
    Tensor ns = g_->poisoned(DType::BF16, {R, C}), rs = g_->poisoned(DType::F32, {R});
    gpu().skip_mix_norm_forward(m, n, r, h, skip, cf[2], cf[0], y, cf[1], eps);
    gpu().scaled_sum_forward(xin, h, Coef::constant(1.0), skip, cs[2]);
    gpu().mix_norm_forward(ms, ns, rs, xin, cs[0], y, cs[1], eps);
    EXPECT_EQ(raw(gpu(), m), raw(gpu(), ms)) << C;
    EXPECT_EQ(raw(gpu(), n), raw(gpu(), ns)) << C;
    EXPECT_EQ(raw(gpu(), r), raw(gpu(), rs)) << C;

    const Vec dn_v = randn(R * C, 4), dres_v = randn(R * C, 5), dy_v = randn(R * C, 6);
    Tensor dn = g_->from(dn_v, DType::BF16, {R, C});
    Tensor dh = g_->from(dres_v, DType::BF16, {R, C}), dhs = g_->from(dres_v, DType::BF16, {R, C});
    Tensor dy = g_->from(dy_v, DType::BF16, {R, C}), dys = g_->from(dy_v, DType::BF16, {R, C});
    Tensor dskip = g_->poisoned(DType::BF16, {R, C}), dskips = g_->poisoned(DType::BF16, {R, C});
    gpu().skip_mix_norm_backward(dh, dskip, dy, dh, dn, m, r, h, skip, cf[2], cf[0], y, cf[1]);
    gpu().mix_norm_backward(dhs, dys, dhs, dn, ms, rs, xin, cs[0], y, cs[1], Tensor{});
    gpu().scaled_sum_backward(Tensor{}, false, dskips, false, dhs, Tensor{}, Coef::constant(1.0),
                              skip, cs[2]);
    EXPECT_EQ(raw(gpu(), dh), raw(gpu(), dhs)) << C;
    EXPECT_EQ(raw(gpu(), dskip), raw(gpu(), dskips)) << C;
    EXPECT_EQ(raw(gpu(), dy), raw(gpu(), dys)) << C;
    // The three dots, in another order: within fp32 summation (<g, xin> the same but for
    // the order; <dx, skip> over the same rounded dx).
    EXPECT_LE(rel_err(host(gf), host(gs)), tol::kFloat) << C;
    // Deterministic.
    const auto bits = raw(gpu(), gf);
    gpu().from_host_f64(gf, g0);
    gpu().from_host_f64(dh, dres_v);
    gpu().from_host_f64(dy, dy_v);
    gpu().skip_mix_norm_backward(dh, dskip, dy, dh, dn, m, r, h, skip, cf[2], cf[0], y, cf[1]);
    EXPECT_EQ(raw(gpu(), gf), bits) << C;
    EXPECT_EQ(raw(gpu(), dskip), raw(gpu(), dskips)) << C;
  }
}

// What the backward adds where it writes dx gives the separate ops' bits: mix_norm_backward
// with dadd is mix_norm_backward then axpy(dx, dadd, 1) (an encoder output's skip share);
// skip_mix_norm_backward with skip = h and no dskip is the op writing dskip then
// axpy(dx, dskip, 1) (the first decoder block); mix_norm_backward with x = y and no dx is
// the op writing dx then axpy(dy, dx, 1) (the first block). The coefficients' gradients
// too: the same dots in the same order. Rows 8 at a time and one by one.
TEST_F(CudaBackendTest, MixNormBackwardAddsWhereItWrites) {
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    Tensor x = g_->from(randn(R * C, 11, 2.0), DType::BF16, {R, C});
    Tensor y = g_->from(randn(R * C, 12), DType::BF16, {R, C});
    Tensor m = g_->from(randn(R * C, 13, 3.0), DType::BF16, {R, C});
    Tensor r = g_->from(Vec(size_t(R), 0.4), DType::F32, {R});
    Tensor dn = g_->from(randn(R * C, 14), DType::BF16, {R, C});
    Tensor dadd = g_->from(randn(R * C, 15), DType::BF16, {R, C});
    Tensor lam = g_->from(Vec{0.9, 0.2, 0.7}, DType::F32, {3});
    const Vec g0 = {0.125, -2.0, 0.5}, dres_v = randn(R * C, 16), dy_v = randn(R * C, 17);
    struct Side {
      Tensor g, dh, dy;
      std::array<Coef, 3> c;  // a, b, c
    };
    auto side = [&] {
      Side s{g_->from(g0, DType::F32, {3}), g_->from(dres_v, DType::BF16, {R, C}),
             g_->from(dy_v, DType::BF16, {R, C}), {}};
      for (int k = 0; k < 3; ++k) s.c[size_t(k)] = Coef::param(lam.element(k), s.g.element(k));
      return s;
    };
    auto same = [&](const Side& f, const Side& s) {
      EXPECT_EQ(raw(gpu(), f.dh), raw(gpu(), s.dh)) << C;
      EXPECT_EQ(raw(gpu(), f.dy), raw(gpu(), s.dy)) << C;
      EXPECT_EQ(raw(gpu(), f.g), raw(gpu(), s.g)) << C;
    };
    Side f = side(), s = side();
    gpu().mix_norm_backward(f.dh, f.dy, f.dh, dn, m, r, x, f.c[0], y, f.c[1], dadd);
    gpu().mix_norm_backward(s.dh, s.dy, s.dh, dn, m, r, x, s.c[0], y, s.c[1], Tensor{});
    gpu().axpy(s.dh, dadd, 1.0);
    same(f, s);
    EXPECT_NE(raw(gpu(), f.dh), raw(gpu(), side().dh)) << C;  // it wrote

    // The skip is h itself.
    f = side(), s = side();
    Tensor dskip = g_->poisoned(DType::BF16, {R, C});
    gpu().skip_mix_norm_backward(f.dh, Tensor{}, f.dy, f.dh, dn, m, r, x, x, f.c[2], f.c[0], y,
                                 f.c[1]);
    gpu().skip_mix_norm_backward(s.dh, dskip, s.dy, s.dh, dn, m, r, x, x, s.c[2], s.c[0], y,
                                 s.c[1]);
    gpu().axpy(s.dh, dskip, 1.0);
    same(f, s);

    // x is y (the first block): no dx, its share into dy, as mix_norm_backward writing dx
    // then axpy(dy, dx, 1). dres (dh) is only read.
    f = side(), s = side();
    gpu().mix_norm_backward(Tensor{}, f.dy, f.dh, dn, m, r, y, f.c[0], y, f.c[1], Tensor{});
    gpu().mix_norm_backward(s.dh, s.dy, s.dh, dn, m, r, y, s.c[0], y, s.c[1], Tensor{});
    gpu().axpy(s.dy, s.dh, 1.0);
    EXPECT_EQ(raw(gpu(), f.dy), raw(gpu(), s.dy)) << C;
    EXPECT_EQ(raw(gpu(), f.g), raw(gpu(), s.g)) << C;
    EXPECT_EQ(raw(gpu(), f.dh), raw(gpu(), side().dh)) << C;  // not written
  }
  // Refusals: dadd over an output (dy); no dskip where skip is not h; no dx where x is not y.
  const int64_t R = 4, C = 8;
  Tensor a = g_->from(randn(R * C, 1), DType::BF16, {R, C});
  Tensor b = g_->from(randn(R * C, 2), DType::BF16, {R, C});
  Tensor d = g_->from(randn(R * C, 3), DType::BF16, {R, C});
  Tensor r = g_->from(Vec(size_t(R), 1.0), DType::F32, {R});
  const Coef one = Coef::constant(1.0);
  EXPECT_THROW(gpu().mix_norm_backward(d, b, d, a, a, r, a, one, a, one, b), Error);
  EXPECT_THROW(gpu().skip_mix_norm_backward(d, Tensor{}, b, d, a, a, r, a, b, one, one, a, one),
               Error);
  EXPECT_THROW(gpu().mix_norm_backward(Tensor{}, b, d, a, a, r, a, one, d, one, Tensor{}), Error);
}

// ---- elementwise -----------------------------------------------------------------------------

TEST_F(CudaBackendTest, ReluSquaredForwardAndBackward) {
  for (int64_t n : {31, 32, 33, 8000, 8001}) {
    auto [x, xc] = both(randn(n, uint64_t(n)), DType::BF16, {n});
    auto [dy, dyc] = both(randn(n, uint64_t(n) + 1), DType::BF16, {n});
    Tensor y = g_->poisoned(DType::BF16, {n}), dx = g_->poisoned(DType::BF16, {n});
    Tensor yc = c_->make(DType::F64, {n}), dxc = c_->make(DType::F64, {n});
    gpu().relu_squared_forward(y, x);
    gpu().relu_squared_backward(dx, dy, y);  // from the bf16 output: its rounding included
    cpu_.relu_squared_forward(yc, xc);
    cpu_.relu_squared_backward(dxc, dyc, yc);
    EXPECT_LE(rel_err(host(y), host(yc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << n;
    gpu().relu_squared_forward(x, x);  // in place, as the model forms it
    EXPECT_EQ(host(x), host(y)) << n;
  }
}

TEST_F(CudaBackendTest, ScaledSumForwardBackwardAndCoefficientGradients) {
  for (int64_t n : {31, 32, 33, 40000, 40001}) {
    auto [x, xc] = both(randn(n, 1), DType::BF16, {n});
    auto [y, yc] = both(randn(n, 2), DType::BF16, {n});
    auto [dout, doutc] = both(randn(n, 3), DType::BF16, {n});
    auto [lv, lvc] = both(Vec{0.3}, DType::F32, {1});
    auto [lg, lgc] = both(Vec{0.125}, DType::F32, {1});
    auto [sv, svc] = both(Vec{1.7}, DType::F32, {1});
    auto [sg, sgc] = both(Vec{-2.0}, DType::F32, {1});
    const Coef a = Coef::one_minus(lv.element(0), lg.element(0)), b = Coef::param(sv.element(0), sg.element(0));
    const Coef ac = Coef::one_minus(lvc.element(0), lgc.element(0)), bc = Coef::param(svc.element(0), sgc.element(0));
    Tensor out = g_->poisoned(DType::BF16, {n}), outc = c_->make(DType::F64, {n});
    gpu().scaled_sum_forward(out, x, a, y, b);
    cpu_.scaled_sum_forward(outc, xc, ac, yc, bc);
    EXPECT_LE(rel_err(host(out), host(outc)), tol::kBf16) << n;
    // dx assigned, dy accumulated, both coefficient gradients.
    auto [dy, dyc] = both(randn(n, 4), DType::BF16, {n});
    Tensor dx = g_->poisoned(DType::BF16, {n}), dxc = c_->make(DType::F64, {n});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, a, y, b);
    cpu_.scaled_sum_backward(dxc, false, dyc, true, doutc, xc, ac, yc, bc);
    EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(dy), host(dyc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(lg), host(lgc)), tol::kFloat * 10) << n;
    EXPECT_LE(rel_err(host(sg), host(sgc)), tol::kFloat * 10) << n;
    // Deterministic: the same gradient bits from the same start.
    const auto g1 = raw(gpu(), lg);
    gpu().from_host_f64(lg, {0.125});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, a, y, b);
    EXPECT_EQ(raw(gpu(), lg), g1) << n;
    // Aliases backend.h allows: dx == dout (assign); dx == dy (both accumulate).
    Tensor d2 = g_->from(host(dout), DType::BF16, {n});
    gpu().scaled_sum_backward(d2, false, Tensor{}, false, d2, Tensor{}, a, Tensor{}, b);
    Tensor d2c = c_->from(host(doutc), DType::F64, {n});
    cpu_.scaled_sum_backward(d2c, false, Tensor{}, false, d2c, Tensor{}, ac, Tensor{}, bc);
    EXPECT_LE(rel_err(host(d2), host(d2c)), tol::kBf16) << n;
    // The value residual: (1 - lamb) and lamb share one gradient scalar.
    const Coef va = Coef::one_minus(lv.element(0), lg.element(0)), vb = Coef::param(lv.element(0), lg.element(0));
    const Coef vac = Coef::one_minus(lvc.element(0), lgc.element(0)), vbc = Coef::param(lvc.element(0), lgc.element(0));
    gpu().from_host_f64(lg, {0.125});
    cpu_.from_host_f64(lgc, {0.125});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, va, y, vb);
    cpu_.scaled_sum_backward(dxc, false, dyc, true, doutc, xc, vac, yc, vbc);
    EXPECT_LE(rel_err(host(lg), host(lgc)), tol::kFloat * 10) << n;
    auto [acc, accc] = both(randn(n, 6), DType::BF16, {n});
    gpu().scaled_sum_backward(acc, true, acc, true, dout, x, a, x, b);
    cpu_.scaled_sum_backward(accc, true, accc, true, doutc, xc, ac, xc, bc);
    EXPECT_LE(rel_err(host(acc), host(accc)), tol::kBf16) << n;
  }
}

// ---- head: softcap + cross entropy ----------------------------------------------------------

TEST_F(CudaBackendTest, SoftcapCrossEntropyLossesAndGradients) {
  for (int64_t V : {31, 32, 33, 50304}) {
    const int64_t R = 5;
    auto [l, lc] = both(randn(R * V, uint64_t(V), 15.0), DType::BF16, {R, V});
    const std::vector<int32_t> tgt = rand_tokens(R, int32_t(V), uint64_t(V) + 1);
    Tensor tg = g_->make(DType::I32, {R}), tc = c_->make(DType::I32, {R});
    gpu().upload(tg, tgt.data());
    cpu_.upload(tc, tgt.data());
    Tensor loss = g_->poisoned(DType::F32, {R}), lossc = c_->make(DType::F64, {R});
    gpu().softcap_cross_entropy(l, loss, tg, 30.0, 0.5, true);
    cpu_.softcap_cross_entropy(lc, lossc, tc, 30.0, 0.5, true);
    EXPECT_LE(rel_err(host(loss), host(lossc)), tol::kFloat * 10) << V;
    EXPECT_LE(rel_err(host(l), host(lc)), tol::kBf16) << V;
  }
}

// Where a block can hold a row's V floats (Hopper), the backward keeps each logit's tanh in
// shared memory for the gradient's pass; elsewhere (an RTX 4090's 99 KB) it reads and
// softcaps the logits again. Both give the same bits: th is kept as computed, and t = th k
// is how the softcap forms t. Vector (V % 8 == 0) and single loads.
TEST_F(CudaBackendTest, SoftcapCrossEntropyKeepingTheRowGivesTheStreamingBits) {
#ifndef SPEEDRUN_CUDA_EMULATED
  GTEST_SKIP() << "needs the emulator's GPU profiles (a GPU with less shared memory)";
#else
  for (int64_t V : {25600, 25601}) {  // 102 KB of floats: more than an RTX 4090's block holds
    const int64_t R = 3;
    const Vec logits = randn(R * V, uint64_t(V), 15.0);
    const std::vector<int32_t> tgt = rand_tokens(R, int32_t(V), uint64_t(V) + 1);
    auto run = [&](Backend& be) {
      Pool pool(be);
      Tensor l = pool.from(logits, DType::BF16, {R, V});
      Tensor t = pool.make(DType::I32, {R});
      be.upload(t, tgt.data());
      Tensor loss = pool.poisoned(DType::F32, {R});
      be.softcap_cross_entropy(l, loss, t, 30.0, 0.5, true);
      return std::make_pair(raw(be, l), raw(be, loss));
    };
    // A backend of each GPU, made in turn: a kernel's shared-memory allowance is the
    // process's (the emulator has one GPU at a time), set by each backend as it starts.
    BackendOptions o;
    o.device = DeviceChoice::CUDA;
    const auto kept = run(*make_backend(o));
    const cuda::emu::ScopedGpuProfile as_rtx4090("rtx4090");
    ASSERT_TRUE(as_rtx4090.ok());
    const auto streamed = run(*make_backend(o));
    EXPECT_EQ(kept.first, streamed.first) << "gradients, V " << V;
    EXPECT_EQ(kept.second, streamed.second) << "losses, V " << V;
  }
#endif
}

// A vocabulary that is not a multiple of 8 runs, on the head's 2-byte paths, and says so
// once, with the padding that would give it the 16-byte ones.
TEST_F(CudaBackendTest, AVocabularyNotAMultipleOf8IsNotedOnce) {
  auto head = [&](int64_t V) {
    const int64_t R = 2;
    Tensor l = g_->from(randn(R * V, uint64_t(V), 5.0), DType::BF16, {R, V});
    Tensor t = g_->make(DType::I32, {R});
    const std::vector<int32_t> tgt = {0, int32_t(V - 1)};
    gpu().upload(t, tgt.data());
    Tensor loss = g_->poisoned(DType::F32, {R});
    gpu().softcap_cross_entropy(l, loss, t, 30.0, 1.0, true);
    for (double x : host(loss)) EXPECT_TRUE(std::isfinite(x)) << V;
  };
  testing::internal::CaptureStderr();
  head(32);
  head(33);
  head(33);
  head(57);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("a vocabulary of 33 ids is not a multiple of 8"), std::string::npos) << err;
  EXPECT_NE(err.find("--vocab 40 pads it"), std::string::npos) << err;
  size_t notes = 0;
  for (size_t at = err.find("note: a vocabulary"); at != std::string::npos;
       at = err.find("note: a vocabulary", at + 1))
    ++notes;
  EXPECT_EQ(notes, 1u) << err;
}

// ---- optimizers ------------------------------------------------------------------------------

TEST_F(CudaBackendTest, AdamMomentumAxpyMatchFp64) {
  for (int64_t n : {31, 32, 33, 100001}) {
    auto [p, pc] = both(randn(n, 1), DType::F32, {n});
    auto [m, mc] = both(randn(n, 2, 0.01), DType::F32, {n});
    auto [v, vc] = both(randn(n, 3, 0.001, 0.002), DType::F32, {n});
    gpu().fill(v, 1e-4);
    cpu_.fill(vc, double(float(1e-4)));
    for (int64_t step = 1; step <= 3; ++step) {
      auto [g, gc] = both(randn(n, uint64_t(step) + 10, 0.01), DType::F32, {n});
      AdamArgs a;
      a.lr = 0.04;
      a.step = step;
      gpu().adam_step(p, g, m, v, a);
      cpu_.adam_step(pc, gc, mc, vc, a);
    }
    EXPECT_LE(rel_err(host(p), host(pc)), tol::kFloat) << n;
    EXPECT_LE(rel_err(host(m), host(mc)), tol::kFloat) << n;
    EXPECT_LE(rel_err(host(v), host(vc)), tol::kFloat) << n;

    auto [g, gc] = both(randn(n, 20), DType::F32, {n});
    auto [buf, bufc] = both(randn(n, 21), DType::F32, {n});
    gpu().muon_momentum(g, buf, g, 0.9);  // out aliases g, as the optimizer calls it
    cpu_.muon_momentum(gc, bufc, gc, 0.9);
    EXPECT_LE(rel_err(host(g), host(gc)), tol::kFloat) << n;
    EXPECT_LE(rel_err(host(buf), host(bufc)), tol::kFloat) << n;
    gpu().axpy(p, g, -0.05);
    cpu_.axpy(pc, gc, -0.05);
    EXPECT_LE(rel_err(host(p), host(pc)), tol::kFloat) << n;
    // The model's use: activation gradients in bf16.
    auto [h, hc] = both(randn(n, 30), DType::BF16, {n});
    auto [d, dc] = both(randn(n, 31), DType::BF16, {n});
    gpu().axpy(h, d, 1.0);
    cpu_.axpy(hc, dc, 1.0);
    EXPECT_LE(rel_err(host(h), host(hc)), tol::kBf16) << n;
  }
}

// The many-tensor ops give the bits of the single-tensor ops they stand for (backend.h):
// the same arithmetic per element, the same partial sums for the Newton-Schulz norms, over
// more tensors than one launch takes (cuda::kMaxLaunchTensors).
TEST_F(CudaBackendTest, MultiTensorOptimizerOpsGiveTheSingleOpsBits) {
  std::vector<int64_t> sizes;
  // Tensors of 8k elements at aligned addresses go 8 elements at a time (TensorTable::vec),
  // the others one by one; of each kind, tensors longer than a launch's grid
  // (kMaxElementwiseBlocks x 256 items), so that their blocks loop.
  for (int k = 0; k < 52; ++k)
    sizes.push_back(k % 25 == 10 ? (1 << 20) + (k < 25 ? 3 : 0)
                    : k % 9 == 4 ? (k % 2 ? 100003 : 100000)
                                 : 1 + (k * 53) % 700);
  ASSERT_GT(int(sizes.size()), cuda::kMaxLaunchTensors);
  // One tensor of 8k elements whose parameter starts 4 bytes past an alignment: the
  // element path, beside its aligned neighbours in the same launch.
  const size_t unaligned = 22;
  ASSERT_EQ(sizes[unaligned] % 8, 0);
  std::vector<AdamTensor> fused, single;
  std::vector<MuonApply> afused, asingle;
  uint64_t seed = 100;
  for (int64_t n : sizes) {
    AdamTensor t[2];
    MuonApply u[2];
    const Vec p = randn(n, ++seed), g = randn(n, ++seed, 0.01), m = randn(n, ++seed, 0.01),
              up = randn(n, ++seed);
    Vec v = randn(n, ++seed, 0.001);
    for (double& x : v) x = x * x;  // second moments are >= 0
    for (int r = 0; r < 2; ++r) {
      if (fused.size() == unaligned) {
        Vec wider = p;
        wider.insert(wider.begin(), 7.0);
        t[r].p = g_->from(wider, DType::F32, {n + 1}).slice(1, n + 1);
        u[r].p = g_->from(wider, DType::F32, {n + 1}).slice(1, n + 1);
      } else {
        t[r].p = g_->from(p, DType::F32, {n});
        u[r].p = g_->from(p, DType::F32, {n});
      }
      t[r].g = g_->from(g, DType::F32, {n});
      t[r].m = g_->from(m, DType::F32, {n});
      t[r].v = g_->from(v, DType::F32, {n});
      if (fused.size() % 2 == 0) t[r].copy = g_->poisoned(DType::BF16, {n});
      t[r].lr = 0.001 * double(fused.size() + 1);
      u[r].update = g_->from(up, DType::F32, {n});
      if (afused.size() % 3) u[r].copy = g_->poisoned(DType::BF16, {n});
      u[r].alpha = -0.01 * double(afused.size() + 1);
    }
    // Every fourth update is a bf16 copy (another rank's, from the exchange): the single
    // ops get its exact F32 widening.
    if (afused.size() % 4 == 1) {
      u[0].update = g_->from(up, DType::BF16, {n});
      gpu().convert(u[1].update, u[0].update);
    }
    fused.push_back(t[0]);
    single.push_back(t[1]);
    afused.push_back(u[0]);
    asingle.push_back(u[1]);
  }
  for (int64_t step = 1; step <= 2; ++step) {
    AdamArgs a;
    a.step = step;
    gpu().adam_steps(fused, a);
    for (const AdamTensor& t : single) {
      a.lr = t.lr;
      gpu().adam_step(t.p, t.g, t.m, t.v, a);
      if (!t.copy.empty()) gpu().convert(t.copy, t.p);
    }
  }
  gpu().muon_apply(afused);
  for (const MuonApply& u : asingle) {
    gpu().axpy(u.p, u.update, u.alpha);
    if (!u.copy.empty()) gpu().convert(u.copy, u.p);
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    EXPECT_EQ(raw(gpu(), fused[k].p), raw(gpu(), single[k].p)) << "adam p " << k;
    EXPECT_EQ(raw(gpu(), fused[k].m), raw(gpu(), single[k].m)) << "adam m " << k;
    EXPECT_EQ(raw(gpu(), fused[k].v), raw(gpu(), single[k].v)) << "adam v " << k;
    if (!fused[k].copy.empty()) {
      EXPECT_EQ(raw(gpu(), fused[k].copy), raw(gpu(), single[k].copy)) << "adam copy " << k;
    }
    EXPECT_EQ(raw(gpu(), afused[k].p), raw(gpu(), asingle[k].p)) << "apply p " << k;
    if (!afused[k].copy.empty()) {
      EXPECT_EQ(raw(gpu(), afused[k].copy), raw(gpu(), asingle[k].copy)) << "apply copy " << k;
    }
  }

  // muon_stack against muon_momentum into a stack, then newton_schulz; a stack of 50 spans
  // two launches of the fused load.
  ASSERT_FALSE(gpu().muon_stack_needs_input());
  // Layouts (plan.h NsLayout): vectors, elements (transposed, not whole tiles), vectors,
  // tiles.
  for (const Shape& sh :
       {Shape{50, 24, 40}, Shape{3, 96, 32}, Shape{1, 64, 64}, Shape{2, 192, 128}}) {
    const int64_t n = sh[0], size = sh[1] * sh[2];
    std::vector<Tensor> bufs[2], grads[2];
    std::vector<Vec> mbuf0, mgrad0;
    for (int64_t k = 0; k < n; ++k) {
      const Vec b = randn(size, ++seed, 0.02), g = randn(size, ++seed, 0.02);
      mbuf0.push_back(b);
      mgrad0.push_back(g);
      for (int r = 0; r < 2; ++r) {
        bufs[r].push_back(g_->from(b, DType::F32, {sh[1], sh[2]}));
        grads[r].push_back(g_->from(g, DType::F32, {sh[1], sh[2]}));
      }
    }
    Tensor X = g_->poisoned(DType::F32, sh), Xs = g_->poisoned(DType::F32, sh);
    Tensor input = g_->poisoned(DType::F32, sh);
    gpu().muon_stack(X, Tensor{}, bufs[0], grads[0], 0.95, 5, true);
    for (int64_t k = 0; k < n; ++k)
      gpu().muon_momentum(input.slice(k, k + 1).view({sh[1], sh[2]}), bufs[1][size_t(k)],
                          grads[1][size_t(k)], 0.95);
    gpu().newton_schulz(Xs, input, 5, true);
    EXPECT_EQ(raw(gpu(), X), raw(gpu(), Xs)) << X.shape_str();
    // Into a BF16 stack (the optimizer's update buffer on a GPU): the same values, from
    // buffers as they were (the momentum is applied again to copies of them).
    {
      std::vector<Tensor> b16, g16;
      for (int64_t k = 0; k < n; ++k) {
        b16.push_back(g_->from(mbuf0[size_t(k)], DType::F32, {sh[1], sh[2]}));
        g16.push_back(g_->from(mgrad0[size_t(k)], DType::F32, {sh[1], sh[2]}));
      }
      Tensor Y = g_->poisoned(DType::BF16, sh);
      gpu().muon_stack(Y, Tensor{}, b16, g16, 0.95, 5, true);
      EXPECT_TRUE(host(Y) == host(X)) << X.shape_str() << " into BF16";
    }
    for (int64_t k = 0; k < n; ++k) {
      EXPECT_EQ(raw(gpu(), bufs[0][size_t(k)]), raw(gpu(), bufs[1][size_t(k)])) << k;
      EXPECT_EQ(raw(gpu(), grads[0][size_t(k)]), raw(gpu(), grads[1][size_t(k)])) << k;
    }
  }

  // muon_momenta (another rank's matrices) against muon_momentum's buffer update, over the
  // 52 sizes above (two launches, two tensors whose blocks loop).
  std::vector<Tensor> mbufs[2], mgrads;
  for (int64_t n : sizes) {
    const Vec b = randn(n, ++seed, 0.02), g = randn(n, ++seed, 0.02);
    for (int r = 0; r < 2; ++r) mbufs[r].push_back(g_->from(b, DType::F32, {n}));
    mgrads.push_back(g_->from(g, DType::F32, {n}));
  }
  gpu().muon_momenta(mbufs[0], mgrads, 0.95);
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor out = g_->poisoned(DType::F32, {sizes[k]});
    gpu().muon_momentum(out, mbufs[1][k], mgrads[k], 0.95);
    EXPECT_EQ(raw(gpu(), mbufs[0][k]), raw(gpu(), mbufs[1][k])) << "momenta buf " << k;
  }
}

TEST_F(CudaBackendTest, NewtonSchulzInBf16MatchesTheCpusBf16Emulation) {
  const Shape shapes[] = {{31, 33}, {33, 31}, {64, 64}, {4, 64, 64}, {3, 96, 32}, {2, 32, 96}};
  for (const Shape& s : shapes) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    auto [G, Gc] = both(randn(n, uint64_t(n)), DType::F32, s);
    Tensor X = g_->poisoned(DType::F32, s), Xc = c_->make(DType::F64, s);
    gpu().newton_schulz(X, G, 5, true);
    cpu_.newton_schulz(Xc, Gc, 5, true);
    // Both store every intermediate in bf16; their fp32/fp64 accumulations round a few
    // elements the other way, and five iterations carry that along.
    EXPECT_LE(rel_err(host(X), host(Xc)), tol::kBf16Iterated) << G.shape_str();
    // Deterministic.
    const auto first = raw(gpu(), X);
    gpu().newton_schulz(X, G, 5, true);
    EXPECT_EQ(raw(gpu(), X), first);
    // bf16 values in the F32 output, as newton_schulz_is_bf16() promises: distributed Muon
    // exchanges a bf16 copy of them and counts on it being exact.
    ASSERT_TRUE(gpu().newton_schulz_is_bf16());
    int wide = 0;
    for (double v : host(X)) wide += double(round_bf16(float(v))) != v;
    EXPECT_EQ(wide, 0) << G.shape_str() << ": values a bf16 copy would change";
  }
}

// The three ways into and out of the bf16 work matrix (plan.h NsLayout) give the same
// values: a stack whose work matrices are transposed through shared-memory tiles, the same
// stack read from an unaligned copy (element by element, the transpose a scatter), and the
// stack of its transposes (not transposed, 16-byte vectors) transposed back. Their norms add
// the same squares in other orders (in double, rounded to bf16 after the square root), so
// the divisors agree. After no iteration X is bf16(bf16(G) / divisor), checked on the host.
TEST_F(CudaBackendTest, NewtonSchulzLayoutsGiveTheSameBits) {
  const int64_t n = 2, rows = 192, cols = 128, size = rows * cols;
  const Vec g = randn(n * size, 71, 0.02);
  Vec gt(g.size()), wider(g.size() + 1, 0.5);
  for (int64_t m = 0; m < n; ++m)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        gt[size_t(m * size + c * rows + r)] = g[size_t(m * size + r * cols + c)];
  std::copy(g.begin(), g.end(), wider.begin() + 1);
  ASSERT_EQ(cuda::newton_schulz_plan(n, rows, cols, true).layout, cuda::NsLayout::kTiles);
  ASSERT_EQ(cuda::newton_schulz_plan(n, cols, rows, true).layout, cuda::NsLayout::kVectors);
  ASSERT_EQ(cuda::newton_schulz_plan(n, rows, cols, false).layout, cuda::NsLayout::kElements);
  const Tensor G = g_->from(g, DType::F32, {n, rows, cols});
  const Tensor GT = g_->from(gt, DType::F32, {n, cols, rows});
  const Tensor Gu =
      g_->from(wider, DType::F32, {n * size + 1}).slice(1, n * size + 1).view({n, rows, cols});
  for (int steps : {0, 1, 5}) {
    Tensor X = g_->poisoned(DType::F32, {n, rows, cols});
    Tensor Xu = g_->poisoned(DType::F32, {n, rows, cols});
    Tensor XT = g_->poisoned(DType::F32, {n, cols, rows});
    gpu().newton_schulz(X, G, steps, true);
    gpu().newton_schulz(Xu, Gu, steps, true);
    gpu().newton_schulz(XT, GT, steps, true);
    const Vec x = host(X), xu = host(Xu), xt = host(XT);
    int64_t differ_u = 0, differ_t = 0;
    for (int64_t m = 0; m < n; ++m)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = size_t(m * size + r * cols + c);
          differ_u += xu[i] != x[i];
          differ_t += xt[size_t(m * size + c * rows + r)] != x[i];
        }
    EXPECT_EQ(differ_u, 0) << "tiles against elements, " << steps << " steps";
    EXPECT_EQ(differ_t, 0) << "tiles against the transposes' vectors, " << steps << " steps";
    // Into BF16 stacks (newton_schulz_is_bf16): the same values, stored by each layout, or
    // (not transposed, after an iteration) written by the last GEMM itself.
    ASSERT_TRUE(gpu().newton_schulz_is_bf16());
    for (const auto& [Gin, want] : {std::pair<const Tensor*, const Vec*>{&G, &x}, {&Gu, &xu}, {&GT, &xt}}) {
      Tensor Y = g_->poisoned(DType::BF16, Gin->shape == G.shape ? Shape{n, rows, cols}
                                                                 : Shape{n, cols, rows});
      gpu().newton_schulz(Y, *Gin, steps, true);
      EXPECT_TRUE(host(Y) == *want) << Y.shape_str() << " in BF16, " << steps << " steps";
    }
    if (steps != 0) continue;
    for (int64_t m = 0; m < n; ++m) {
      double sumsq = 0;
      for (int64_t i = 0; i < size; ++i) {
        const double b = cuda::math::round_bf16(float(g[size_t(m * size + i)]));
        sumsq += b * b;
      }
      const float d = cuda::math::ns_divisor(sumsq);
      int64_t wrong = 0;
      for (int64_t i = 0; i < size; ++i) {
        const float b = cuda::math::round_bf16(float(g[size_t(m * size + i)]));
        wrong += x[size_t(m * size + i)] != double(cuda::math::round_bf16(b / d));
      }
      EXPECT_EQ(wrong, 0) << "matrix " << m << ": bf16(bf16(G) / " << d << ")";
    }
  }
}

// ---- decoding ----------------------------------------------------------------------------------

TEST_F(CudaBackendTest, AttentionDecodeOverCacheRowsInOrder) {
  for (int64_t D : {64, 128}) {
    const int64_t H = 2, C = H * D, S = 300;
    auto [q, qc] = both(randn(C, 1), DType::BF16, {1, C});
    auto [k, kc] = both(randn(S * C, 2), DType::BF16, {S, C});
    auto [v, vc] = both(randn(S * C, 3), DType::BF16, {S, C});
    for (int64_t n : {1, 31, 257}) {
      std::vector<int32_t> rows;
      for (int64_t j = 0; j < n; ++j) rows.push_back(int32_t((j * 7 + 11) % S));  // a ring's order
      Tensor out = g_->poisoned(DType::BF16, {1, C}), outc = c_->make(DType::F64, {1, C});
      const double scale = 1.0 / std::sqrt(double(D));
      gpu().attention_decode(out, q, k, v, rows, H, scale);
      cpu_.attention_decode(outc, qc, kc, vc, rows, H, scale);
      EXPECT_LE(rel_err(host(out), host(outc)), tol::kBf16) << "D " << D << " rows " << n;
    }
  }
}

// ---- the whole model -------------------------------------------------------------------------

GPTConfig small_config() {
  GPTConfig c;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 64;  // the attention kernels take 64 or 128
  c.vocab = 256;
  c.eot = 0;
  return c;
}

// Several documents per sequence, EOT at awkward places.
std::vector<int32_t> documents(int64_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> x(static_cast<size_t>(n));
  for (auto& t : x) t = 1 + int32_t(rng.below(uint64_t(vocab - 1)));
  for (int64_t p : {int64_t(0), int64_t(37), int64_t(38), int64_t(130), int64_t(200), n - 5})
    if (p < n) x[size_t(p)] = 0;
  return x;
}

// Random weights everywhere (zero-initialised projections too) so every gradient path
// carries signal; values bf16-representable so both sides start from the same model.
void randomize(Parameters& p, uint64_t seed) {
  Rng rng(seed);
  for (int i = 0; i < p.count(); ++i) {
    std::vector<double> h(size_t(p.value(i).numel()));
    const bool scalar = p.group(i) == ParamGroup::Scalar;
    for (auto& v : h) v = round_bf16((scalar ? 0.6 : 0.0) + (scalar ? 0.3 : 0.1) * rng.normal());
    p.from_host_f64(i, h);
  }
}

// The model's loss and every parameter's gradient on a GPU backend against the CPU's in
// fp64, for the same weights and batch, within twice bf16's own floor on that batch.
void expect_model_matches_fp64(Backend& gpu, CpuBackend& cpu) {
  const GPTConfig cfg = small_config();
  const int64_t B = 1, T = 256, window = 160;
  Parameters pg(gpu, cfg, gpu.default_precision());
  Parameters pc(cpu, cfg, DType::F64);
  randomize(pc, 3);
  for (int i = 0; i < pc.count(); ++i) pg.from_host_f64(i, pc.to_host_f64(i));
  const std::vector<int32_t> x = documents(B * T, int32_t(cfg.vocab), 1),
                             y = documents(B * T, int32_t(cfg.vocab), 2);
  // The GPU's head in chunks of 100 rows (two and a remainder of 56), the CPU's in one.
  GPT mg(gpu, pg, B, T, 100 * cfg.vocab), mc(cpu, pc, B, T);
  ASSERT_EQ(mg.head_rows(), 100);
  ASSERT_EQ(mc.head_rows(), B * T);
  pg.zero_grad();
  pc.zero_grad();
  const double lg = mg.forward_backward(x.data(), y.data(), window);
  const double lc = mc.forward_backward(x.data(), y.data(), window);
  EXPECT_NEAR(lg, lc, 1e-2 * lc);
  // The noise floor of bf16, measured on the same model and batch: the CPU with bf16
  // storage (tests/bf16_emulation.h). The scalar gradients (lambdas, skip_weights) are dot
  // products over the whole batch that cancel, so bf16's 2^-9 per value becomes several
  // percent of their sum there (measured: up to 8%); a gradient may be off by twice that
  // floor, and never needs to be closer than kBf16Iterated. A wrong gradient is off by
  // its own size.
  conformance::Bf16Emulation bf16;
  Parameters pe(bf16, cfg, bf16.default_precision());
  for (int i = 0; i < pc.count(); ++i) pe.from_host_f64(i, pc.to_host_f64(i));
  GPT me(bf16, pe, B, T);
  pe.zero_grad();
  me.forward_backward(x.data(), y.data(), window);
  for (int i = 0; i < pc.count(); ++i) {
    const Vec want = cpu.to_host_f64(pc.grad(i));
    const double floor = rel_to_max(bf16.to_host_f64(pe.grad(i)), want);
    EXPECT_LE(rel_to_max(gpu.to_host_f64(pg.grad(i)), want), std::max(tol::kBf16Iterated, 2 * floor))
        << pc.name(i) << " (the bf16 storage floor: " << floor << ")";
  }
}

TEST_F(CudaBackendTest, ModelLossAndEveryGradientMatchFp64) {
  expect_model_matches_fp64(gpu(), cpu_);
  EXPECT_EQ(gpu().numerics().find("attention"), std::string::npos) << gpu().numerics();
}

// The same on Hopper's wgmma attention kernels (SPEEDRUN_ATTENTION_FORWARD and _BACKWARD),
// which a backend takes when it starts, and which its numerics name (a checkpoint records
// them: a resume on other kernels is told it will not repeat the bits); each alone is named
// too. Where the GPU or the build cannot run them, the backend refuses to start, naming
// the variable.
TEST_F(CudaBackendTest, WgmmaAttentionTrainsTheModelAndIsNamedInTheNumerics) {
  struct Env {
    const char* name;
    Env(const char* n, const char* v) : name(n) { setenv(name, v, 1); }
    ~Env() { unsetenv(name); }
  };
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  const bool runs = major == 9 && cuda::attn::forward_wgmma_binary_version() >= 90 &&
                    cuda::attn::backward_wgmma_binary_version() >= 90;
  {
    const Env f("SPEEDRUN_ATTENTION_FORWARD", "wgmma"), b("SPEEDRUN_ATTENTION_BACKWARD", "wgmma");
    if (!runs) {
      try {
        make_backend(o);
        ADD_FAILURE() << "the wgmma attention was accepted on a GPU that cannot run it";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("SPEEDRUN_ATTENTION_FORWARD"), std::string::npos) << e.what();
      }
      return;
    }
    const std::unique_ptr<Backend> wg = make_backend(o);
    EXPECT_NE(wg->numerics().find(", wgmma attention forward and backward"), std::string::npos) << wg->numerics();
    expect_model_matches_fp64(*wg, cpu_);
  }
  {
    const Env f("SPEEDRUN_ATTENTION_FORWARD", "wgmma");
    const std::string n = make_backend(o)->numerics();
    EXPECT_NE(n.find(", wgmma attention forward"), std::string::npos) << n;
    EXPECT_EQ(n.find("backward"), std::string::npos) << n;
  }
  {
    const Env b("SPEEDRUN_ATTENTION_BACKWARD", "wgmma");
    const std::string n = make_backend(o)->numerics();
    EXPECT_NE(n.find(", wgmma attention backward"), std::string::npos) << n;
  }
}

TEST_F(CudaBackendTest, DecoderLogitsMatchFp64) {
  const GPTConfig cfg = small_config();
  Parameters pg(gpu(), cfg, gpu().default_precision());
  Parameters pc(cpu_, cfg, DType::F64);
  randomize(pc, 4);
  for (int i = 0; i < pc.count(); ++i) pg.from_host_f64(i, pc.to_host_f64(i));
  Decoder dg(gpu(), pg, 8, 20), dc(cpu_, pc, 8, 20);
  const std::vector<int32_t> toks = {0, 5, 17, 99, 3, 0, 250, 7, 7, 7, 1, 2};  // EOT opens documents
  for (int32_t t : toks) {
    dg.step(t);
    dc.step(t);
    EXPECT_LE(rel_err(dg.logits(), dc.logits()), tol::kBf16Iterated) << "position " << dc.position();
  }
}

// speedrun sample --device cuda: the command's greedy tokens are the library's on the GPU.
TEST_F(CudaBackendTest, SampleCommandRunsOnTheGpu) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_cuda_sample";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const GPTConfig cfg = small_config();
  Parameters pc(cpu_, cfg, DType::F32);
  randomize(pc, 5);
  const std::string weights = (dir / "w.safetensors").string();
  pc.save(weights, {{"window", "16"}});
  const auto r = run_cli("sample --device cuda --checkpoint " + weights +
                         " --ids --prompt '5 17 99' --max-tokens 12 --temperature 0");
  ASSERT_EQ(r.code, 0) << r.out;
  Parameters pg(gpu(), cfg, gpu().default_precision());
  pg.load(weights);
  SampleOptions o;
  o.temperature = 0;
  o.window = 16;
  o.max_tokens = 12;
  const auto gen = sample_tokens(gpu(), pg, {cfg.eot, 5, 17, 99}, o);
  ASSERT_FALSE(gen.empty());
  std::string ids;
  for (int32_t t : gen) ids += " " + std::to_string(t);
  EXPECT_NE(r.out.find(ids), std::string::npos) << "expected" << ids << "\noutput:\n" << r.out;
  fs::remove_all(dir);
}

// What a training step asks of CUDA's host side, counted by the emulator under lazy streams
// (work runs only when waited for, the latest a GPU may run it), on the trainer's own loop:
// from the third step on (the first ones choose GEMM algorithms and size the scratch), a
// step allocates and releases no device or pinned memory, and drains the GPU (a host wait
// that leaves it nothing to run) once, to read its loss at the end. Its other waits (for a
// staging buffer, for an earlier plan upload) leave the GPU work queued. So the host runs a
// step ahead of the GPU, a step could be captured as a CUDA graph, and a run holds the
// memory its first steps took: it cannot run out of it hours later. The window grows every
// step and each micro-batch has other documents, so the attention plan changes throughout.
#ifdef SPEEDRUN_CUDA_EMULATED  // the emulator only: a GPU run skips no test
TEST_F(CudaBackendTest, AStepAllocatesNothingAndDrainsTheGpuOnlyForItsLoss) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_cuda_step_calls";
  fs::remove_all(dir);
  TrainConfig c = test::micro_run(dir / "run", PrecisionChoice::Auto);
  c.model.head_dim = 64;  // the attention kernels take 64 or 128
  c.seq_len = 512;        // 4 tiles of 128: lists that grow with the window
  c.batch = 4;
  c.grad_accum = 2;       // two micro-batches of two sequences
  c.schedule.steps = 6;
  c.schedule.window_start = 64;
  c.schedule.window_end = 512;
  c.val_every = 0;
  c.val_tokens = 2048;  // one validation batch, at the end
  const test::ShardFiles data = test::synthetic_shards(dir / "data", 200000, 20000);
  struct LazyStreams {
    cuda::emu::Schedule saved = cuda::emu::schedule();
    LazyStreams() {
      cuda::emu::Schedule s = saved;
      s.lazy_streams = true;
      cuda::emu::set_schedule(s);
    }
    ~LazyStreams() { cuda::emu::set_schedule(saved); }
  } lazy;
  std::vector<cuda::emu::HostCalls> at;  // after each step's log line
  std::vector<int64_t> windows;
  Trainer t(gpu(), c, data.train, data.val);
  t.log = [&](const std::string& line) {
    if (line.find(" train_loss:") == std::string::npos) return;  // a training step's line
    at.push_back(cuda::emu::host_calls());
    const size_t w = line.find("window:");
    if (w != std::string::npos) windows.push_back(std::stoll(line.substr(w + 7)));
  };
  t.run();
  ASSERT_EQ(at.size(), 6u);
  ASSERT_EQ(windows.size(), 6u);
  EXPECT_LT(windows[1], windows.back()) << "the window should grow over the steps";
  for (size_t s = 2; s < at.size(); ++s) {
    const cuda::emu::HostCalls& a = at[s - 1];
    const cuda::emu::HostCalls& b = at[s];
    EXPECT_EQ(b.device_allocs - a.device_allocs, 0) << "step " << s + 1;
    EXPECT_EQ(b.device_frees - a.device_frees, 0) << "step " << s + 1;
    EXPECT_EQ(b.pinned_allocs - a.pinned_allocs, 0) << "step " << s + 1;
    EXPECT_EQ(b.pinned_frees - a.pinned_frees, 0) << "step " << s + 1;
    EXPECT_EQ(b.drains - a.drains, 1) << "step " << s + 1 << ": drains other than the loss read";
    EXPECT_GE(b.waits - a.waits, 1) << "step " << s + 1;
  }
  if (!HasFailure()) fs::remove_all(dir);
}

// Sampling: a decoded token allocates and frees nothing on the device (a cudaFree waits
// for the GPU): the decoder's buffers are made once, and its logits come to the host
// without a staging buffer (Backend::to_host_f64).
TEST_F(CudaBackendTest, ADecodedTokenAllocatesNothing) {
  const GPTConfig cfg = small_config();
  Parameters pg(gpu(), cfg, gpu().default_precision());
  pg.init(6);
  Decoder d(gpu(), pg, 8, 40);
  d.step(1);
  const cuda::emu::HostCalls before = cuda::emu::host_calls();
  for (int32_t t : {5, 17, 99, 0, 3, 7, 7, 250, 2, 11, 4, 8})  // past the window of 8
    d.step(t);
  const cuda::emu::HostCalls after = cuda::emu::host_calls();
  EXPECT_EQ(after.device_allocs - before.device_allocs, 0);
  EXPECT_EQ(after.device_frees - before.device_frees, 0);
  EXPECT_EQ(after.pinned_allocs - before.pinned_allocs, 0);
  EXPECT_EQ(after.pinned_frees - before.pinned_frees, 0);
}
#endif  // SPEEDRUN_CUDA_EMULATED

// On a GPU the host queues a step's work and then waits for its loss: the trainer marks each
// step and validation as a wait of its watchdog, so one that never ends is a stall that ends
// the run (core/stall_watchdog.h; on the CPU it marks nothing, test_stall).
TEST_F(CudaBackendTest, TheTrainerMarksItsStepsAndValidationsAsWaits) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_cuda_waits";
  fs::remove_all(dir);
  TrainConfig c = test::micro_run(dir / "run", PrecisionChoice::Auto);
  c.model.head_dim = 64;  // the attention kernels take 64 or 128
  c.schedule.steps = 2;
  c.schedule.cooldown = 1;
  c.val_every = 1;
  const test::ShardFiles data = test::synthetic_shards(dir / "data", 60000, 3000);
  const std::vector<std::string> waits = test::waits_at_log_lines(gpu(), c, data);
  // The model line, validation 0, step 1, validation 1, step 2, validation 2, the weights.
  ASSERT_EQ(waits.size(), 7u);
  EXPECT_EQ(waits[0], "");
  const char* during[] = {"validation at step 0/2 on cuda.",
                          "step 1/2 on cuda (forward, backward, optimizer).",
                          "validation at step 1/2 on cuda.",
                          "step 2/2 on cuda (forward, backward, optimizer).",
                          "validation at step 2/2 on cuda."};
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NE(waits[i + 1].find(std::string("while waiting for: ") + during[i]), std::string::npos)
        << waits[i + 1];
  EXPECT_EQ(waits[6], "");
  if (!HasFailure()) fs::remove_all(dir);
}

// A kernel that never ends (a deadlock on the device) leaves the host waiting for the step's
// loss for good. The run's watchdog ends it with status 1, naming the step and the GPU, and
// saying that SPEEDRUN_CUDA_SYNC=1 names the kernel, which it then does. The emulator hangs
// a kernel on demand (SPEEDRUN_CUDA_EMULATOR_HANG: the embedding's forward, a step's first).
TEST_F(CudaBackendTest, AKernelThatNeverEndsEndsTheRunNamingItsStepAndWithSyncItsKernel) {
#ifndef SPEEDRUN_CUDA_EMULATED
  GTEST_SKIP() << "the CUDA emulator hangs a kernel on demand (scripts/emulate.sh)";
#else
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_cuda_hang";
  fs::remove_all(dir);
  test::synthetic_shards(dir / "data", 60000, 3000);
  const std::string data = (dir / "data").string();
  auto train = [&](const std::string& out) {
    return std::string(SPEEDRUN_BINARY) + " train --train '" + data + "/*train*.bin' --val '" +
           data + "/*val*.bin' --vocab 128 --eot 0 --layers 2 --heads 2 --head-dim 64 "
           "--seq-len 256 --batch 2 --steps 3 --cooldown 1 --window-end 256 --val-tokens 0 "
           "--no-sample --threads 1 --device cuda --stall-timeout 0.5 --out " +
           (dir / out).string();
  };
  const std::string hang = "SPEEDRUN_CUDA_EMULATOR_HANG=embedding_forward_kernel timeout 120 ";
  const std::string step = "step 1/3 on cuda (forward, backward, optimizer)";
  const Outcome plain = run_shell(hang + train("plain"));
  EXPECT_EQ(plain.code, 1) << plain.out;
  EXPECT_NE(plain.out.find("error: no progress for "), std::string::npos) << plain.out;
  EXPECT_NE(plain.out.find("(the limit is 0.5 s) while waiting for: " + step +
                           ". The GPU did not finish its work"),
            std::string::npos)
      << plain.out;
  EXPECT_NE(plain.out.find("SPEEDRUN_CUDA_SYNC=1 in the environment names the kernel a GPU "
                           "step waits for"),
            std::string::npos)
      << plain.out;
  // Lazy streams: the kernel runs (and hangs) when the host waits for it, as on a GPU.
  const Outcome sync = run_shell(
      "SPEEDRUN_CUDA_SYNC=1 SPEEDRUN_CUDA_EMULATOR_ORDER=forward,lazy " + hang + train("sync"));
  EXPECT_EQ(sync.code, 1) << sync.out;
  EXPECT_NE(sync.out.find("while waiting for: " + step + " > cuda "), std::string::npos)
      << sync.out;
  EXPECT_NE(sync.out.find(": kernel embedding_forward_kernel (SPEEDRUN_CUDA_SYNC). The GPU"),
            std::string::npos)
      << sync.out;
  if (!HasFailure()) fs::remove_all(dir);
#endif
}

TEST_F(CudaBackendTest, TrainingTracksTheCpuLossCurve) {
  const fs::path dir = fs::temp_directory_path() / "speedrun_test_cuda_train";
  fs::remove_all(dir);
  TrainConfig c = test::learning_run(dir / "run");
  c.model.head_dim = 64;  // the attention kernels take 64 or 128
  c.val_every = 0;
  c.val_tokens = 4 * 256;
  const test::ShardFiles data = test::synthetic_shards(dir / "data", 400000, 40000);
  auto run = [&](Backend& be, const std::string& name) {
    TrainConfig cc = c;
    cc.out_dir = (dir / name).string();
    Trainer t(be, cc, data.train, data.val);
    t.log = [](const std::string&) {};
    return t.run();
  };
  const TrainResult rg = run(gpu(), "cuda"), rc = run(cpu_, "cpu");
  ASSERT_EQ(rg.train_losses.size(), 100u);
  ASSERT_EQ(rc.train_losses.size(), 100u);
  // bf16 activations against fp32: the curves wander apart by bf16 noise, never by a trend.
  // Single steps differ by up to ~0.05 (a batch's loss is sensitive to rounding in the
  // weights); the mean over any 10 steps stays near zero.
  double worst_step = 0, worst_window = 0;
  for (size_t s = 0; s < 100; ++s) {
    worst_step = std::max(worst_step, std::fabs(rg.train_losses[s] - rc.train_losses[s]));
    if (s >= 9) {
      double mean = 0;
      for (size_t k = s - 9; k <= s; ++k) mean += (rg.train_losses[k] - rc.train_losses[k]) / 10;
      worst_window = std::max(worst_window, std::fabs(mean));
    }
  }
  std::printf("cuda vs cpu loss curves: worst step %.4f, worst 10-step mean %.4f\n", worst_step,
              worst_window);
  EXPECT_LT(worst_step, 0.1);
  EXPECT_LT(worst_window, 0.03);
  EXPECT_NEAR(rg.train_losses.back(), rc.train_losses.back(), 0.02 * rc.train_losses.back());
  EXPECT_NEAR(rg.final_val_loss, rc.final_val_loss, 0.02 * rc.final_val_loss);
  if (!HasFailure()) fs::remove_all(dir);
}

}  // namespace
}  // namespace speedrun
