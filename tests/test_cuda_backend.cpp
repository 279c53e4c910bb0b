// The CUDA backend itself against the CPU backend in fp64: its precision policy, memory
// (zero-filled, round trips, out of memory), conversions and reductions bit for bit, the
// GPUs it accepts, the sync mode, and cuBLASLt's GEMMs for every transpose and output (the
// algorithm chosen once per problem, timed and recorded with SPEEDRUN_GEMM_TUNE), and NCCL
// at world 1. Outputs are poisoned with NaN first, so an unwritten element fails.
#include "cuda_backend_fixture.h"

namespace speedrun {
namespace {

using namespace cuda_test;

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
  // Uploads of up to 4 MiB go through the staging ring, a 1 MiB slot at a time (a partial
  // last slot; four whole ones), larger ones straight; the host buffer may change as soon
  // as upload returns.
  for (int64_t n : {int64_t(31), int64_t(65536), (int64_t(1) << 18) + 5, int64_t(1) << 20,
                    (int64_t(1) << 20) + 1}) {
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
#ifdef SPEEDRUN_CUDA_EMULATED
  // A micro-batch of more tokens than a slot holds (here 512K) leaves the GPU its queued
  // work: on the emulator's lazy streams a wait that drained it would count.
  Tensor tokens = g_->make(DType::I32, {int64_t(1) << 19});
  const std::vector<int32_t> ids(size_t(1) << 19, 3);
  gpu().fill(z, 1.0);  // queued before the upload
  const cuda::emu::HostCalls c0 = cuda::emu::host_calls();
  gpu().upload(tokens, ids.data());
  EXPECT_EQ(cuda::emu::host_calls().drains - c0.drains, 0);
  std::vector<int32_t> got(ids.size());
  gpu().download(got.data(), tokens);
  EXPECT_EQ(got, ids);
#endif
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
  // attention runs there, and how to ask for it; elsewhere, and from a build of plain "90"
  // (whose wgmma kernels report binaryVersion 90 but trap), it says nothing of it.
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  const bool wgmma = major == 9 && cuda::build_has_wgmma() &&
                     cuda::attn::forward_wgmma_binary_version() >= 90 &&
                     cuda::attn::backward_wgmma_binary_version() >= 90;
  EXPECT_EQ(r.out.find("Hopper's wgmma attention too, with SPEEDRUN_ATTENTION_FORWARD=wgmma") !=
                std::string::npos,
            wgmma) << r.out;
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

#ifdef SPEEDRUN_CUDA_EMULATED
// A driver older than the build's CUDA runtime, and no driver at all, which CUDA reports
// alike, are told apart, each with its fix; --device auto then takes the CPU saying so.
// The emulator plays both (SPEEDRUN_CUDA_EMULATOR_DRIVER: the driver's CUDA version).
TEST_F(CudaBackendTest, AnOldOrMissingDriverIsNamedWithItsFix) {
  Outcome r = run_cli("devices", "SPEEDRUN_CUDA_EMULATOR_DRIVER=12040");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* piece : {"no CUDA GPU visible", "supports CUDA up to 12.4", "runtime is 13.",
                            "update the driver", "CUDA 12.4 toolkit"})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
  r = run_cli("train --device cuda --steps 1", "SPEEDRUN_CUDA_EMULATOR_DRIVER=0");
  EXPECT_NE(r.code, 0) << r.out;
  for (const char* piece : {"--device cuda", "no NVIDIA driver is loaded", "libcuda.so.1",
                            "--device cpu"})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
}
#endif

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
  std::unique_ptr<Backend> be;
  {
    const ScopedEnv sync("SPEEDRUN_CUDA_SYNC", "1");
    BackendOptions o;
    o.device = DeviceChoice::CUDA;
    be = make_backend(o);
  }
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

// A bf16 output's split-K partial sums are added in fp32 and rounded once (docs/CUDA.md).
// cuBLASLt's default preference also allows reducing them in the output's type, each
// partial sum rounded to bf16 first; the backend's preference does not. Here the row
// [1, 1, 1, 1] times the column [1, 2^-9, 2^-9, 2^-9] is 1 + 3 * 2^-9, which rounds to
// 1 + 2^-7; in two slices reduced in bf16, 1 + 2^-9 rounds to 1, and 1 + 2^-8 (a tie) to 1
// again. (The emulated heuristic offers such an algorithm first where it is allowed:
// test_cuda_emulator.) With the residual as C (matmul_add) too, and for every candidate a
// tuning run times.
TEST_F(CudaBackendTest, Bf16OutputsAddSplitKPartialSumsInFp32) {
  const double e = std::ldexp(1.0, -9);
  for (const char* tune : {"1", "4"}) {
    std::unique_ptr<Backend> be = cuda_backend_with({{"SPEEDRUN_GEMM_TUNE", tune}});
    Pool p(*be);
    Tensor A = p.from({1, 1, 1, 1}, DType::BF16, {1, 4});
    Tensor B = p.from({1, e, e, e}, DType::BF16, {4, 1});
    Tensor C = p.poisoned(DType::BF16, {1, 1});
    be->matmul(C, A, false, B, false, false);
    EXPECT_EQ(be->to_host_f64(C), Vec{1 + std::ldexp(1.0, -7)}) << "SPEEDRUN_GEMM_TUNE=" << tune;
    Tensor R = p.from({0}, DType::BF16, {1, 1});
    Tensor S = p.poisoned(DType::BF16, {1, 1});
    be->matmul_add(S, A, false, B, false, R);
    EXPECT_EQ(be->to_host_f64(S), Vec{1 + std::ldexp(1.0, -7)}) << "SPEEDRUN_GEMM_TUNE=" << tune;
  }
}

// SPEEDRUN_GEMM_TUNE=N times the heuristic's candidates on a problem's first call and keeps
// the fastest, and the GEMM algorithm record keeps each choice: a backend reading it runs
// every GEMM with the tuned backend's algorithm, untimed, and gets its bits, which shows
// too that an accumulation in place added its product once while it was timed (the
// candidates' runs write a scratch output). Under the emulator, whose algorithms sum K in
// 1, 2 or 3 slices as split-K kernels do, the heuristic's first gives other bits. Bad
// values are refused naming the variable.
TEST_F(CudaBackendTest, GemmTuningKeepsTheFastestCandidateAndTheRecordRepeatsIt) {
  const fs::path dir = test::process_temp("test_gemm_tune");
  fs::remove_all(dir);
  const std::string record = (dir / "algos.tsv").string();
  std::vector<std::pair<const char*, std::string>> env = {{"SPEEDRUN_GEMM_TUNE", "4"}};
#ifdef SPEEDRUN_CUDA_EMULATED
  env.push_back({"SPEEDRUN_EMU_SLOW_GEMM_ALGO", "0"});  // the heuristic's first is the slow one
#endif
  std::unique_ptr<Backend> tuned = cuda_backend_with(env, record);
  Pool p(*tuned);
  std::vector<Vec> got;
  {
#ifdef SPEEDRUN_CUDA_EMULATED
    const ScopedEnv slow("SPEEDRUN_EMU_SLOW_GEMM_ALGO", "0");  // slow while it runs, too
#endif
    got = gemm_products(*tuned, p);
  }
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
  const fs::path dir = test::process_temp("test_gemm_record");
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
  // One that adds a bf16 output's split-K partial sums in bf16 (the emulator's algorithm
  // after its three, which cuBLASLt's default preference would allow): refused.
  other = r;
  bool bf16_output = false;
  for (cuda::GemmRecordEntry& e : other.entries)
    if (e.key.c == DType::BF16) {
      e.algo = {0x5eed + 3};
      bf16_output = true;
    }
  ASSERT_TRUE(bf16_output);
  const std::string reduced = (dir / "reduced.tsv").string();
  cuda::write_gemm_record(reduced, other);
  expect_refused(reduced, {"adds its split-K partial sums in bf16"}, false);
#endif
  const std::string damaged = (dir / "damaged.tsv").string();
  std::ofstream(damaged) << "format\t2\ngpu\tX\n";
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
  const fs::path dir = test::process_temp("test_gemm_resume");
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

}  // namespace
}  // namespace speedrun
