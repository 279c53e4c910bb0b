// The whole model on the CUDA backend: loss and every gradient against fp64 (on the mma.sync
// and the wgmma attention kernels), the decoder's logits, sampling, a step that allocates
// nothing and waits only for its loss, the trainer's stall marks, a kernel that never ends,
// and 100 training steps against the CPU's fp32 loss curve. The model tests need the
// flash-attention kernels (backend/cuda/attention/).
#include "cuda_backend_fixture.h"

namespace speedrun {
namespace {

using namespace cuda_test;

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
  const double le = me.forward_backward(x.data(), y.data(), window);
  // The loss, a mean over the batch, is held as the gradients: twice its bf16 floor, and
  // never closer than 1e-3 of itself.
  EXPECT_NEAR(lg, lc, std::max(1e-3 * lc, 2 * std::fabs(le - lc)))
      << "the bf16 storage floor: " << std::fabs(le - lc);
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
  using Env = ScopedEnv;
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
      RecordProperty("checked", "the refusal only: this GPU or build cannot run wgmma");
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
  const fs::path dir = test::process_temp("test_cuda_sample");
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
  const fs::path dir = test::process_temp("test_cuda_step_calls");
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
  const fs::path dir = test::process_temp("test_cuda_waits");
  fs::remove_all(dir);
  TrainConfig c = test::micro_run(dir / "run", PrecisionChoice::Auto);
  c.model.head_dim = 64;  // the attention kernels take 64 or 128
  c.schedule.steps = 2;
  c.schedule.cooldown = 1;
  c.val_every = 1;
  const test::ShardFiles data = test::synthetic_shards(dir / "data", 60000, 3000);
  const std::vector<std::string> waits = test::waits_at_log_lines(gpu(), c, data);
  // The run and model lines, validation 0, step 1, validation 1, step 2, validation 2, the
  // weights.
  ASSERT_EQ(waits.size(), 8u);
  EXPECT_EQ(waits[0], "");
  EXPECT_EQ(waits[1], "");
  const char* during[] = {"validation at step 0/2 on cuda.",
                          "step 1/2 on cuda (forward, backward, optimizer).",
                          "validation at step 1/2 on cuda.",
                          "step 2/2 on cuda (forward, backward, optimizer).",
                          "validation at step 2/2 on cuda."};
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NE(waits[i + 2].find(std::string("while waiting for: ") + during[i]), std::string::npos)
        << waits[i + 2];
  EXPECT_EQ(waits[7], "");
  if (!HasFailure()) fs::remove_all(dir);
}

// A kernel that never ends (a deadlock on the device) leaves the host waiting for the step's
// loss for good. The run's watchdog ends it with status 1, naming the step and the GPU, and
// saying that SPEEDRUN_CUDA_SYNC=1 names the kernel, which it then does. The emulator hangs
// a kernel on demand (SPEEDRUN_CUDA_EMULATOR_HANG: the embedding's forward, a step's first).
// The emulator only: a GPU run skips no test.
#ifdef SPEEDRUN_CUDA_EMULATED
TEST_F(CudaBackendTest, AKernelThatNeverEndsEndsTheRunNamingItsStepAndWithSyncItsKernel) {
  const fs::path dir = test::process_temp("test_cuda_hang");
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
}
#endif

TEST_F(CudaBackendTest, TrainingTracksTheCpuLossCurve) {
  const fs::path dir = test::process_temp("test_cuda_train");
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
