// speedrun bench: the work it counts (FLOPs against hand-computed values, visible pairs of
// hand-built masks), the TimingBackend decorator (forwards every op the model and the
// optimizer call, same bits as the wrapped backend), and the command's JSON. No test reads
// a time value: times depend on the machine; the counts and the plumbing do not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/block_mask.h"
#include "backend/factory.h"
#include "bf16_emulation.h"
#include "core/error.h"
#include "data/shard.h"
#include "fixtures.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "run_command.h"
#include "train/benchmark.h"
#include "train/op_work.h"
#include "train/timing_backend.h"

namespace speedrun {
namespace {

using test::micro_gpt;

std::unique_ptr<Backend> cpu() { return make_backend(BackendOptions{DeviceChoice::CPU, 0, -1, {}}); }

// Brute force over every (query, key) pair: the definition the counts must equal.
int64_t pairs_by_definition(const BlockMask& m) {
  int64_t n = 0;
  for (int64_t i = 0; i < m.T; ++i)
    for (int64_t j = 0; j < m.T; ++j) n += m.visible(i, j);
  return n;
}

TEST(OpWork, VisiblePairsOfAHandBuiltMask) {
  // EOT 0 at positions 2 and 6: documents [0, 2), [2, 6), [6, 8); window 3.
  //   query:   0  1  2  3  4  5  6  7
  //   keys:    1  2  1  2  3  3  1  2   (i - j < 3, same document, j <= i)  = 15
  const std::vector<int32_t> tokens = {5, 5, 0, 5, 5, 5, 0, 5};
  const BlockMask m = build_block_mask(tokens.data(), 8, 0, 3, 4);
  EXPECT_EQ(visible_pairs(m), 15);
  EXPECT_EQ(pairs_by_definition(m), 15);
  // One document, no window limit: T (T + 1) / 2.
  const std::vector<int32_t> plain(8, 5);
  EXPECT_EQ(visible_pairs(build_block_mask(plain.data(), 8, 0, 100, 4)), 36);
  // Window 1: each query sees itself only.
  EXPECT_EQ(visible_pairs(build_block_mask(tokens.data(), 8, 0, 1, 4)), 8);
}

TEST(OpWork, VisiblePairsOfRandomMasksEqualTheDefinition) {
  Rng rng(7);
  for (int64_t T : {31, 32, 33, 257}) {
    std::vector<int32_t> t(static_cast<size_t>(T));
    for (auto& v : t) v = rng.uniform() < 0.05 ? 0 : 1 + int32_t(rng.below(9));
    for (int64_t window : {1, 5, 16, 64, 1000}) {
      const BlockMask m = build_block_mask(t.data(), T, 0, window, 16);
      EXPECT_EQ(visible_pairs(m), pairs_by_definition(m)) << "T " << T << " window " << window;
    }
  }
}

TEST(OpWork, MatmulAndNewtonSchulzFlops) {
  float buf[1];
  const Tensor C(buf, DType::F32, {6, 5}), A(buf, DType::F32, {6, 7}), At(buf, DType::F32, {7, 6});
  EXPECT_EQ(matmul_flops(C, A, false), 2.0 * 6 * 5 * 7);
  EXPECT_EQ(matmul_flops(C, At, true), 2.0 * 6 * 5 * 7);
  // Per iteration on [m, k], m the short side: X X^T 2 m m k, A A 2 m^3, B X 2 m m k.
  const Tensor wide(buf, DType::F32, {3, 32, 128}), tall(buf, DType::F32, {128, 32});
  EXPECT_EQ(newton_schulz_flops(wide, 5), 3.0 * 5 * (4.0 * 32 * 32 * 128 + 2.0 * 32 * 32 * 32));
  EXPECT_EQ(newton_schulz_flops(tall, 5), 5.0 * (4.0 * 32 * 32 * 128 + 2.0 * 32 * 32 * 32));
  EXPECT_EQ(attention_forward_flops(15, 2, 16), 4.0 * 15 * 2 * 16);
  EXPECT_EQ(attention_backward_flops(15, 2, 16), 10.0 * 15 * 2 * 16);
}

// One training step as the trainer runs it: zero_grad, a micro-batch, the optimizer, the
// loss read; ops filed under the phases the benchmark uses.
double one_step(TimingBackend* timed, Parameters& p, GPT& model, Optimizer& opt,
                const std::vector<int32_t>& x, const std::vector<int32_t>& y, int64_t window) {
  if (timed) timed->set_phase("step");
  p.zero_grad();
  if (timed) timed->set_phase("fwd+bwd");
  model.train_micro_batch(x.data(), y.data(), window, 1.0);
  if (timed) timed->set_phase("optimizer");
  opt.step(1.0, 0.9);
  if (timed) timed->set_phase("step");
  return model.take_mean_loss();
}

const OpStat* find(const std::vector<OpStat>& s, const std::string& phase, const std::string& op) {
  for (const OpStat& t : s)
    if (t.phase == phase && t.op == op) return &t;
  return nullptr;
}

TEST(TimingBackend, CountsTheStepsFlopsExactly) {
  auto inner = cpu();
  TimingBackend be(*inner);
  const GPTConfig c = micro_gpt(2);  // C 32, F 128, V 37, 2 heads x 16, tile 16
  const int64_t B = 2, T = 48, window = 20;
  Parameters p(be, c, DType::F64);
  test::randomize(p, 1);
  GPT model(be, p, B, T);
  Optimizer opt(be, p, OptimConfig{});
  std::vector<int32_t> x, y;
  test::batch_with_documents(B, T, c, x, y, 2);
  be.set_timing(true);
  one_step(&be, p, model, opt, x, y, window);

  // Matmuls: forward 2 P N, backward 4 P N (dx and dW) for every matmul parameter, the head
  // included: 6 x (12 C^2 L + V C) x tokens.
  const double P = 12.0 * 32 * 32 * 2 + 37.0 * 32;
  EXPECT_EQ(matmul_param_count(c), int64_t(P));
  const OpStat* mm = find(be.stats(), "fwd+bwd", "matmul");
  const OpStat* mma = find(be.stats(), "fwd+bwd", "matmul_add");  // c_proj, mlp's c_proj
  ASSERT_NE(mm, nullptr);
  ASSERT_NE(mma, nullptr);
  EXPECT_EQ(mm->flops + mma->flops, 6.0 * P * double(B * T));
  // Per layer 2 forward (q/k/v stacked as one, c_fc), 8 backward (dx and dW of q/k/v,
  // c_proj, c_fc, mlp's c_proj); the head 3.
  EXPECT_EQ(mm->calls, 2 * 10 + 3);
  EXPECT_EQ(mma->calls, 2 * 2);      // per layer 2 forward, onto the residual stream

  // Attention: the masks' visible pairs, 4 D per pair per head forward, 10 D backward.
  int64_t pairs = 0;
  for (int64_t b = 0; b < B; ++b)
    pairs += pairs_by_definition(build_block_mask(x.data() + b * T, T, c.eot, window, 128));
  const OpStat* af = find(be.stats(), "fwd+bwd", "attention_forward");
  const OpStat* ab = find(be.stats(), "fwd+bwd", "attention_backward");
  ASSERT_NE(af, nullptr);
  ASSERT_NE(ab, nullptr);
  EXPECT_EQ(af->flops, 2.0 * 4 * double(pairs) * 2 * 16);
  EXPECT_EQ(ab->flops, 2.0 * 10 * double(pairs) * 2 * 16);

  // Newton-Schulz: 8 [32, 32] matrices (c_q, c_k, c_v, c_proj of 2 layers) and 4 of
  // [128, 32] / [32, 128], 5 iterations each, m = 32 and k = 32 or 128.
  const double sq = 4.0 * 32 * 32 * 32 + 2.0 * 32 * 32 * 32, rect = 4.0 * 32 * 32 * 128 + 2.0 * 32 * 32 * 32;
  // One stack per shape ([32, 32], [128, 32], [32, 128]), one call each.
  const OpStat* ns = find(be.stats(), "optimizer", "muon_stack");
  ASSERT_NE(ns, nullptr);
  EXPECT_EQ(ns->calls, 3);
  EXPECT_EQ(ns->flops, 5.0 * (8 * sq + 4 * rect));

  // Memory-bound work: Adam reads g and p, m, v and writes p, m, v: 7 x its bytes (fp64:
  // no compute copies to write), all its parameters in one call.
  double adam_elems = 0, matrix_elems = 0;
  for (int i = 0; i < p.count(); ++i)
    (p.group(i) != ParamGroup::Matrix ? adam_elems : matrix_elems) += double(p.value(i).numel());
  const OpStat* adam = find(be.stats(), "optimizer", "adam_steps");
  ASSERT_NE(adam, nullptr);
  EXPECT_EQ(adam->calls, 1);
  EXPECT_EQ(adam->bytes, 7.0 * 8 * adam_elems);
  // Muon's updates land in one call: each reads its update and reads and writes its master.
  const OpStat* apply = find(be.stats(), "optimizer", "muon_apply");
  ASSERT_NE(apply, nullptr);
  EXPECT_EQ(apply->calls, 1);
  EXPECT_EQ(apply->bytes, 3.0 * 8 * matrix_elems);
}

// The ops a step of the model and the optimizer calls, by name. A new op in the model or
// the optimizer shows up here first: add it to this list and to TimingBackend.
const std::set<std::string> kStepOps = {
    "upload", "download", "fill", "sum_into", "matmul", "matmul_add",
    "embedding_forward", "embedding_backward", "rms_norm_forward", "rms_norm_backward",
    "mix_norm_forward", "mix_norm_backward", "skip_mix_norm_forward", "skip_mix_norm_backward",
    "qkv_forward", "qkv_backward", "attention_forward",
    "attention_backward", "relu_squared_forward", "relu_squared_backward",
    "softcap_cross_entropy", "adam_steps",
    "muon_stack", "muon_apply"};

std::set<std::string> names(const std::vector<OpStat>& s) {
  std::set<std::string> n;
  for (const OpStat& t : s) n.insert(t.op);
  return n;
}

TEST(TimingBackend, ForwardsEveryOpOfAStepUnderItsOwnName) {
  // Two decorators stacked: what the outer one files under a name is what reached the
  // inner one under that name, call for call. bf16 (emulated), so that the optimizer's
  // refresh of the compute copies runs too.
  conformance::Bf16Emulation bf16;
  TimingBackend inner(bf16), outer(static_cast<Backend&>(inner));
  const GPTConfig c = micro_gpt(2);
  Parameters p(outer, c, outer.default_precision());
  test::randomize(p, 3);
  GPT model(outer, p, 2, 48);
  Optimizer opt(outer, p, OptimConfig{});
  std::vector<int32_t> x, y;
  test::batch_with_documents(2, 48, c, x, y, 4);
  inner.set_timing(true);
  outer.set_timing(true);
  one_step(&outer, p, model, opt, x, y, 20);
  EXPECT_EQ(names(outer.stats()), kStepOps);
  std::map<std::string, int64_t> seen_outer, seen_inner;
  for (const OpStat& s : outer.stats()) seen_outer[s.op] += s.calls;
  for (const OpStat& s : inner.stats()) seen_inner[s.op] += s.calls;
  seen_inner.erase("synchronize");  // the outer one's own, around each op it times
  EXPECT_EQ(seen_outer, seen_inner);
  for (const char* phase : {"fwd+bwd", "optimizer", "step"}) {
    bool any = false;
    for (const OpStat& s : outer.stats()) any |= s.phase == phase;
    EXPECT_TRUE(any) << phase;
  }
  // The optimizer's three calls; the compute copies' refresh (bf16 here) is inside two of
  // them, so no convert is left in a step.
  for (const char* op : {"adam_steps", "muon_stack", "muon_apply"})
    EXPECT_NE(find(outer.stats(), "optimizer", op), nullptr) << op;
  EXPECT_EQ(find(outer.stats(), "optimizer", "convert"), nullptr);
}

// What a step does on the host side: it uploads each micro-batch's tokens and reads its
// loss once, at the end (take_mean_loss, the timing point). Nothing else: no allocation or
// release, no synchronisation, no other download, so a step runs ahead of the host on a
// GPU and can be captured as a CUDA graph. (What a backend does inside one op, such as
// growing its own scratch, is the backend's; this is what the model and optimizer ask.)
TEST(TimingBackend, AStepAllocatesNothingAndWaitsOnlyForItsLoss) {
  conformance::Bf16Emulation bf16;  // bf16 over fp32 masters, as on a GPU
  TimingBackend be(bf16);
  const GPTConfig c = micro_gpt(2);
  const int64_t K = 2, T = 48;  // two micro-batches of one sequence each
  Parameters p(be, c, be.default_precision());
  test::randomize(p, 5);
  GPT model(be, p, 1, T);
  Optimizer opt(be, p, OptimConfig{});
  std::vector<int32_t> x, y;
  test::batch_with_documents(K, T, c, x, y, 6);
  const auto step = [&] {
    be.set_phase("step");
    p.zero_grad();
    be.set_phase("fwd+bwd");
    for (int64_t k = 0; k < K; ++k)
      model.train_micro_batch(x.data() + k * T, y.data() + k * T, 20, 1.0 / double(K));
    be.set_phase("optimizer");
    opt.step(1.0, 0.9);
    be.set_phase("step");
    return model.take_mean_loss();
  };
  step();
  be.set_timing(true);
  const int steps = 3;
  for (int s = 0; s < steps; ++s) EXPECT_TRUE(std::isfinite(step()));
  for (const OpStat& s : be.stats()) {
    EXPECT_TRUE(s.op != "allocate" && s.op != "release" && s.op != "synchronize")
        << s.op << " x" << s.calls << " in " << s.phase;
    if (s.op == "download") {
      EXPECT_EQ(s.phase, "step") << "a download waits for the device mid-step";
      EXPECT_EQ(s.calls, steps) << "one loss read per step";
      EXPECT_LE(s.bytes, double(steps * 8)) << "the loss is one number";
    }
    if (s.op == "upload") {  // per micro-batch its tokens and targets, int32
      EXPECT_EQ(s.phase, "fwd+bwd");
      EXPECT_EQ(s.calls, steps * K * 2);
      EXPECT_EQ(s.bytes, double(steps * K * 2 * T * 4));
    }
  }
  EXPECT_NE(find(be.stats(), "step", "download"), nullptr);
  EXPECT_NE(find(be.stats(), "fwd+bwd", "upload"), nullptr);
}

TEST(TimingBackend, ForwardsTheOpsWithDefaults) {
  // The virtuals with a default in Backend must reach the wrapped backend, not the default
  // (which throws, or answers 0/nullptr).
  auto inner = cpu();
  TimingBackend be(*inner);
  be.set_timing(true);
  EXPECT_EQ(be.name(), inner->name());
  EXPECT_EQ(be.device(), inner->device());
  EXPECT_EQ(be.stream(), inner->stream());
  EXPECT_EQ(be.device_index(), inner->device_index());
  EXPECT_EQ(be.peak_bytes(), inner->peak_bytes());
  EXPECT_EQ(be.preferred_micro_batch_tokens(), inner->preferred_micro_batch_tokens());
  EXPECT_EQ(be.head_chunk_logits(), inner->head_chunk_logits());
  std::vector<float> cos(8), sin(8), q(8, 0.5f), k(3 * 8, 0.25f), v(3 * 8, 1.0f), out(8);
  be.rotary_tables_at(Tensor(cos.data(), DType::F32, {2, 4}), Tensor(sin.data(), DType::F32, {2, 4}),
                      10000.0, 5);
  be.attention_decode(Tensor(out.data(), DType::F32, {1, 8}), Tensor(q.data(), DType::F32, {1, 8}),
                      Tensor(k.data(), DType::F32, {3, 8}), Tensor(v.data(), DType::F32, {3, 8}),
                      {0, 2}, 1, 0.5);
  EXPECT_EQ(out[0], 1.0f);  // the average of ones
  EXPECT_EQ(names(be.stats()), (std::set<std::string>{"rotary_tables_at", "attention_decode"}));
}

// Every parameter's bits after one step.
std::vector<std::vector<double>> weights(const Parameters& p) {
  std::vector<std::vector<double>> w;
  for (int i = 0; i < p.count(); ++i) w.push_back(p.to_host_f64(i));
  return w;
}

void expect_same_bits_through_decorator(Backend& plain, Backend& wrapped_inner, const Precision& prec) {
  TimingBackend timed(wrapped_inner);
  timed.set_timing(true);
  const GPTConfig c = micro_gpt(2);
  std::vector<int32_t> x, y;
  test::batch_with_documents(2, 48, c, x, y, 6);
  double loss[2];
  std::vector<std::vector<double>> after[2];
  for (int run = 0; run < 2; ++run) {
    Backend& be = run == 0 ? plain : static_cast<Backend&>(timed);
    Parameters p(be, c, prec);
    test::randomize(p, 5);
    GPT model(be, p, 2, 48);
    Optimizer opt(be, p, OptimConfig{});
    one_step(run == 0 ? nullptr : &timed, p, model, opt, x, y, 20);
    loss[run] = one_step(run == 0 ? nullptr : &timed, p, model, opt, x, y, 20);
    after[run] = weights(p);
  }
  EXPECT_EQ(std::memcmp(&loss[0], &loss[1], sizeof(double)), 0) << loss[0] << " vs " << loss[1];
  ASSERT_EQ(after[0].size(), after[1].size());
  for (size_t i = 0; i < after[0].size(); ++i)
    EXPECT_EQ(std::memcmp(after[0][i].data(), after[1][i].data(), after[0][i].size() * sizeof(double)), 0)
        << "parameter " << i;
}

TEST(TimingBackend, ResultsAreTheWrappedBackendsBitForBit) {
  auto a = cpu(), b = cpu();
  expect_same_bits_through_decorator(*a, *b, named_precision(PrecisionChoice::FP32));
  conformance::Bf16Emulation c, d;
  expect_same_bits_through_decorator(c, d, named_precision(PrecisionChoice::BF16));
}

TEST(Benchmark, StepFlopsOfTheTinyPreset) {
  auto be = cpu();
  BenchOptions o;
  o.preset = "tiny";
  o.batch = 2;      // two micro-batches of one sequence: the step counts both
  o.seq_len = 512;
  o.reps = 1;
  o.warmup = 0;
  o.windows = {64, 128};
  o.gemm_size = 64;
  o.copy_mib = 1;
  const BenchResult r =
      run_benchmark(*be, o, LaunchTime{std::chrono::steady_clock::now(), "main"});
  ASSERT_EQ(r.windows.size(), 2u);
  EXPECT_EQ(r.micro_batches, 2);
  const GPTConfig c = preset_config("tiny").model;
  const double tokens = 2.0 * 512, P = double(matmul_param_count(c));
  for (const WindowBench& w : r.windows) {
    EXPECT_EQ(w.matmul_flops, 6.0 * P * tokens) << w.window;
    EXPECT_EQ(w.attention_flops, double(c.layers) * 14.0 * double(w.attention_pairs) *
                                     double(c.heads * c.head_dim));
    // Every query sees itself, and at most `window` keys.
    EXPECT_GE(w.attention_pairs, int64_t(tokens));
    EXPECT_LE(w.attention_pairs, int64_t(tokens) * w.window);
    double share = 0;
    for (const OpRow& row : w.ops) share += row.share;
    EXPECT_NEAR(share, 1.0, 1e-9);
  }
  // A wider window sees more pairs.
  EXPECT_GT(r.windows[1].attention_pairs, r.windows[0].attention_pairs);
  // The masks are the backend's for each window, as the trainer's.
  for (const WindowBench& w : r.windows) EXPECT_EQ(w.attention_tile, be->attention_tile(w.window));
}

// --data: the step's tokens are the shards' first step. Every token is 5: one document per
// sequence, so each query sees min(i + 1, window) keys; with --eot 5 each token is its own
// document and sees itself alone. Ids beyond the vocabulary are refused, naming --vocab.
TEST(Benchmark, DataShardsGiveTheStepsTokens) {
  test::TempDir dir("bench_data");
  const std::vector<uint16_t> tokens(4096, 5);
  write_shard((dir / "d_train_000000.bin").string(), tokens.data(), int64_t(tokens.size()));
  auto be = cpu();
  BenchOptions o;
  o.preset = "tiny";
  o.batch = 2;
  o.seq_len = 256;
  o.reps = 1;
  o.warmup = 0;
  o.windows = {64};
  o.gemm_size = 64;
  o.copy_mib = 1;
  o.data = (dir / "d_train_*.bin").string();
  const auto now = LaunchTime{std::chrono::steady_clock::now(), "main"};
  ASSERT_NE(preset_config("tiny").model.eot, 5);
  int64_t one_document = 0;
  for (int64_t i = 0; i < o.seq_len; ++i) one_document += std::min<int64_t>(i + 1, 64);
  const BenchResult r = run_benchmark(*be, o, now);
  EXPECT_EQ(r.windows.at(0).attention_pairs, 2 * one_document);
  EXPECT_EQ(r.data, o.data);
  EXPECT_NE(format_bench(r).find("tokens: the first step of " + o.data), std::string::npos);
  EXPECT_EQ(bench_json(r)["config"]["data"], o.data);
  o.eot = 5;
  const BenchResult every = run_benchmark(*be, o, now);
  EXPECT_EQ(every.windows.at(0).attention_pairs, 2 * o.seq_len);
  EXPECT_EQ(bench_json(every)["config"]["eot"], 5);
  // The random documents otherwise: no more pairs than one document per sequence.
  o.data.clear();
  o.eot = -1;
  const BenchResult random = run_benchmark(*be, o, now);
  EXPECT_LE(random.windows.at(0).attention_pairs, 2 * one_document);
  EXPECT_TRUE(bench_json(random)["config"]["data"].is_null());
  // Ids the vocabulary lacks.
  const std::vector<uint16_t> wide(4096, 600);
  write_shard((dir / "w_train_000000.bin").string(), wide.data(), int64_t(wide.size()));
  o.data = (dir / "w_train_*.bin").string();
  try {
    run_benchmark(*be, o, now);
    ADD_FAILURE() << "ids of 600 in a vocabulary of 512 ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--vocab of at least 601"), std::string::npos) << e.what();
  }
  o.vocab = 601;
  EXPECT_EQ(run_benchmark(*be, o, now).vocab, 601);
}

TEST(BenchCommand, WritesJsonWithEveryField) {
  test::TempDir dir("bench_cmd");
  const std::string json = (dir / "bench.json").string();
  // Short sequences and small ceilings: every field, in a third of the default's time.
  const Outcome r = run_cli("bench --device cpu --preset tiny --reps 2 --warmup 1 --seq-len 256 "
                            "--gemm-size 512 --copy-mib 16 --head-logits 51200 --json " + json);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* needle : {"ceilings", "GEMM", "copy", "serialises the device", "tokens/s", "MFU",
                             "launch -> first step", "peak memory", "window 64", "window 512"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << " missing in:\n" << r.out;
  const nlohmann::json j = nlohmann::json::parse(test::read_bytes(json));
  EXPECT_EQ(j["backend"], "cpu");
  EXPECT_EQ(j["config"]["preset"], "tiny");
  EXPECT_EQ(j["config"]["reps"], 2);
  EXPECT_EQ(j["config"]["micro_batches"], 4);
  EXPECT_EQ(j["config"]["seq_len"], 256);
  EXPECT_EQ(j["config"]["head_rows"], 100);  // 51200 logits of a 512-token vocabulary
  EXPECT_NE(r.out.find("head: chunks of 100 rows (3 per micro-batch"), std::string::npos) << r.out;
  EXPECT_EQ(j["ceilings"]["gemm"]["n"], 512);
  EXPECT_EQ(j["ceilings"]["copy"]["bytes"], 2 * (16 << 20));  // read + written
  for (const char* k : {"flops_per_s", "ms", "n"}) EXPECT_TRUE(j["ceilings"]["gemm"][k].is_number()) << k;
  for (const char* k : {"bytes_per_s", "ms", "bytes"})
    EXPECT_TRUE(j["ceilings"]["copy"][k].is_number()) << k;
  for (const char* k : {"to_first_step_s", "to_backend_s", "first_step_ms"})
    EXPECT_TRUE(j["launch"][k].is_number()) << k;
  EXPECT_TRUE(j["peak_memory"]["bytes"].is_number());
  ASSERT_EQ(j["windows"].size(), 2u);
  EXPECT_EQ(j["windows"][0]["window"], 64);
  EXPECT_EQ(j["windows"][1]["window"], 512);
  EXPECT_EQ(j["windows"][0]["step"]["attention_tile"], 32);  // the CPU's at window 64
  EXPECT_EQ(j["windows"][1]["step"]["attention_tile"], 128);
  EXPECT_NE(r.out.find("window 64 (masks of 32-token tiles)"), std::string::npos) << r.out;
  for (const auto& w : j["windows"]) {
    for (const char* k : {"fwd_bwd_ms", "optimizer_ms", "step_ms", "tokens_per_s", "model_flops",
                          "matmul_flops", "attention_flops", "attention_pairs", "mfu", "floor_ms"})
      EXPECT_TRUE(w["step"][k].is_number()) << k;
    std::set<std::string> ops;
    for (const auto& row : w["ops"]) {
      for (const char* k : {"calls", "ms", "share", "flops", "bytes", "rate", "of_ceiling"})
        EXPECT_TRUE(row[k].is_number()) << k;
      ops.insert(row["phase"].get<std::string>() + "/" + row["op"].get<std::string>());
    }
    for (const char* op : {"fwd+bwd/matmul", "fwd+bwd/attention_forward", "fwd+bwd/attention_backward",
                           "optimizer/adam_steps", "optimizer/muon_stack",
                           "optimizer/muon_apply"})
      EXPECT_TRUE(ops.count(op)) << op;
  }
}

TEST(BenchCommand, RefusesBadFlagsClearly) {
  const Outcome a = run_cli("bench --device cpu --windows 64,0");
  EXPECT_EQ(a.code, 1) << a.out;
  EXPECT_NE(a.out.find("--windows"), std::string::npos) << a.out;
  const Outcome b = run_cli("bench --device cpu --preset tiny --micro-batch 3");
  EXPECT_EQ(b.code, 1) << b.out;
  EXPECT_NE(b.out.find("--micro-batch 3"), std::string::npos) << b.out;
  // A --json that cannot be written is refused before the benchmark runs, not after it.
  const Outcome c = run_cli("bench --device cpu --json /nonexistent-dir/b.json");
  EXPECT_EQ(c.code, 1) << c.out;
  EXPECT_NE(c.out.find("/nonexistent-dir/b.json"), std::string::npos) << c.out;
  EXPECT_EQ(c.out.find("ceilings"), std::string::npos) << "ran before refusing:\n" << c.out;
  // The model's vocabulary and delimiter, and shards that are not there.
  const Outcome e = run_cli("bench --device cpu --preset tiny --eot 5000");
  EXPECT_EQ(e.code, 1) << e.out;
  EXPECT_NE(e.out.find("--eot 5000 is outside the vocabulary [0, 512)"), std::string::npos) << e.out;
  const Outcome v = run_cli("bench --device cpu --preset tiny --vocab 1");
  EXPECT_EQ(v.code, 1) << v.out;
  EXPECT_NE(v.out.find("--vocab 1: must be >= 2"), std::string::npos) << v.out;
  const Outcome f = run_cli("bench --device cpu --preset tiny --data '/nonexistent-dir/*.bin'");
  EXPECT_EQ(f.code, 1) << f.out;
  EXPECT_NE(f.out.find("no files match --data"), std::string::npos) << f.out;
  // Sizes "by device" (0) or given must not be negative; the message says both.
  for (const auto& [flag, must] : {std::pair{"--head-logits", ">= 1"}, {"--gemm-size", "in [1, 65536]"},
                                   {"--copy-mib", "in [1, 1048576]"}}) {
    const Outcome d = run_cli(std::string("bench --device cpu --preset tiny ") + flag + " -1");
    EXPECT_EQ(d.code, 1) << d.out;
    EXPECT_NE(d.out.find(std::string(flag) + " -1: must be " + must + " (0: by device)"), std::string::npos)
        << d.out;
    EXPECT_EQ(d.out.find("ceilings"), std::string::npos) << "ran before refusing:\n" << d.out;
  }
  // Counts whose products would overflow are refused before anything runs: 2^31 - 1 reps
  // printed "-2 timed steps", a copy of 2^62 MiB wrapped to nothing, and an eot of 2^32
  // was read as 0.
  for (const auto& [flags, words] :
       {std::pair{"--reps 2147483647", "--reps 2147483647: must be in [1, 1000000]"},
        {"--copy-mib 4611686018427387904", "--copy-mib 4611686018427387904: must be in [1, 1048576]"},
        {"--seq-len 4611686018427387904", "is more than 2^40 tokens per step"},
        {"--eot 4294967296", "--eot 4294967296 is outside the vocabulary [0, 512)"}}) {
    const Outcome d = run_cli(std::string("bench --device cpu --preset tiny ") + flags);
    EXPECT_EQ(d.code, 1) << d.out;
    EXPECT_NE(d.out.find(words), std::string::npos) << d.out;
    EXPECT_EQ(d.out.find("ceilings"), std::string::npos) << "ran before refusing:\n" << d.out;
  }
}

}  // namespace
}  // namespace speedrun
