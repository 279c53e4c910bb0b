// Many ranks in one process (ThreadComm): the collectives, and the trainer's multi-rank
// logic against a single rank: W ranks x 1 sequence train as 1 rank x W sequences (and as
// 1 rank x W micro-batches, which reads exactly the W ranks' batches), Muon split over W
// ranks equals Muon on one, only rank 0 writes, validation is averaged over ranks, a
// failing rank ends every rank with its message, and a resumed multi-rank run continues
// bit-identically.
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <cmath>
#include <mutex>

#include "backend/cpu/cpu_backend.h"
#include "core/build_info.h"
#include "core/safetensors.h"
#include "core/stop_signal.h"
#include "data/shard.h"
#include "dist/local_comm.h"
#include "dist/thread_comm.h"
#include "fixtures.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "tolerances.h"
#include "train/config_io.h"
#include "train/trainer.h"

using namespace speedrun;
using namespace speedrun::test;

namespace {

// Runs a config on `world` thread ranks (each with a one-thread CPU backend); returns
// rank 0's result and checks every rank saw the same losses.
TrainResult run_ranks(int world, const TrainConfig& c, const ShardFiles& data) {
  std::vector<TrainResult> results(static_cast<size_t>(world));
  run_thread_ranks(world, [&](Comm& comm) {
    CpuBackend be(1);
    Trainer t(be, comm, c, data.train, data.val);
    t.log = [](const std::string&) {};
    results[size_t(comm.rank())] = t.run();
  });
  for (int r = 1; r < world; ++r) {
    EXPECT_EQ(results[size_t(r)].train_losses, results[0].train_losses) << "rank " << r;
    EXPECT_EQ(results[size_t(r)].val_losses, results[0].val_losses) << "rank " << r;
  }
  return results[0];
}

TrainResult run_single(const TrainConfig& c, const ShardFiles& data) {
  CpuBackend be(1);
  Trainer t(be, c, data.train, data.val);
  t.log = [](const std::string&) {};
  return t.run();
}

std::vector<double> weights_of(const std::string& file) {
  std::vector<double> out;
  const SafetensorsFile f = SafetensorsFile::open(file);
  for (const auto& n : f.names()) {
    const auto v = f.get(n);
    const float* p = static_cast<const float*>(v.data);
    if (v.dtype == DType::F64) {
      const double* d = static_cast<const double*>(v.data);
      out.insert(out.end(), d, d + v.bytes / 8);
    } else {
      out.insert(out.end(), p, p + v.bytes / 4);
    }
  }
  return out;
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / den;
}

}  // namespace

// ---------------------------------------------------------------- collectives

TEST(ThreadComm, ReductionsGatherBroadcastInRankOrder) {
  const int W = 3;
  std::vector<std::vector<float>> sums(W), means(W), gathered(W), bcast(W);
  std::vector<double> dsum(W);
  std::vector<std::vector<int64_t>> ints(W);
  std::vector<std::vector<float>> in_place(W);
  std::vector<std::vector<uint16_t>> bf16s(W);
  run_thread_ranks(W, [&](Comm& comm) {
    const int r = comm.rank();
    EXPECT_EQ(comm.size(), W);
    std::vector<float> a = {float(r + 1), 0.1f * float(r), -float(r)};
    comm.all_reduce(Tensor(a.data(), DType::F32, {3}), ReduceOp::Sum);
    sums[size_t(r)] = a;
    std::vector<float> m = {float(r), 3.0f};
    comm.all_reduce(Tensor(m.data(), DType::F32, {2}), ReduceOp::Mean);
    means[size_t(r)] = m;
    std::vector<float> in = {float(10 * r), float(10 * r + 1)}, out(6, NAN);
    comm.all_gather(Tensor(out.data(), DType::F32, {6}), Tensor(in.data(), DType::F32, {2}));
    gathered[size_t(r)] = out;
    std::vector<float> b = {float(r), float(r)};
    comm.broadcast(Tensor(b.data(), DType::F32, {2}), 2);
    bcast[size_t(r)] = b;
    dsum[size_t(r)] = comm.all_reduce(0.5 * r, ReduceOp::Sum);
    ints[size_t(r)] = comm.all_gather(std::vector<int64_t>{r, 100 + r});
    // In place: this rank's part in, the others' parts (NaN here) overwritten, in any dtype.
    std::vector<float> whole(6, NAN);
    whole[size_t(2 * r)] = float(10 * r);
    whole[size_t(2 * r + 1)] = float(10 * r + 1);
    comm.all_gather_in_place(Tensor(whole.data(), DType::F32, {6}));
    in_place[size_t(r)] = whole;
    std::vector<uint16_t> halves(3, 0xFFFF);
    halves[size_t(r)] = uint16_t(0x3F80 + r);
    comm.all_gather_in_place(Tensor(halves.data(), DType::BF16, {3}));
    bf16s[size_t(r)] = halves;
    comm.barrier();
  });
  const float third = (0.0f + 0.1f) + 0.2f;  // rank order, in float
  for (int r = 0; r < W; ++r) {
    EXPECT_EQ(sums[size_t(r)], (std::vector<float>{6, third, -3}));
    EXPECT_EQ(means[size_t(r)], (std::vector<float>{1, 3}));
    EXPECT_EQ(gathered[size_t(r)], (std::vector<float>{0, 1, 10, 11, 20, 21}));
    EXPECT_EQ(bcast[size_t(r)], (std::vector<float>{2, 2}));
    EXPECT_EQ(dsum[size_t(r)], 1.5);
    EXPECT_EQ(ints[size_t(r)], (std::vector<int64_t>{0, 100, 1, 101, 2, 102}));
    EXPECT_EQ(in_place[size_t(r)], (std::vector<float>{0, 1, 10, 11, 20, 21}));
    EXPECT_EQ(bf16s[size_t(r)], (std::vector<uint16_t>{0x3F80, 0x3F81, 0x3F82}));
  }
}

// A buffer that is not W equal parts is refused on every rank, naming the shape.
TEST(ThreadComm, InPlaceGatherRefusesUnequalParts) {
  EXPECT_THROW(
      {
        try {
          run_thread_ranks(2, [&](Comm& comm) {
            std::vector<float> t(3, 0.0f);
            comm.all_gather_in_place(Tensor(t.data(), DType::F32, {3}));
          });
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("[3] is not 2 equal parts"), std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
  LocalComm one;
  std::vector<float> t(3, 1.0f);
  one.all_gather_in_place(Tensor(t.data(), DType::F32, {3}));
  EXPECT_EQ(t, (std::vector<float>{1, 1, 1}));
}

TEST(ThreadComm, AFailingRankEndsEveryRankNamingIt) {
  std::atomic<int> stopped{0};
  try {
    run_thread_ranks(3, [&](Comm& comm) {
      if (comm.rank() == 1) throw Error("shard x.bin: token 999 is >= vocab 128");
      try {
        std::vector<float> a(4, 1.0f);
        comm.all_reduce(Tensor(a.data(), DType::F32, {4}), ReduceOp::Sum);  // would wait forever
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("rank 1 failed: shard x.bin"), std::string::npos)
            << e.what();
        ++stopped;
        throw;
      }
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 999"), std::string::npos) << e.what();
  }
  EXPECT_EQ(stopped.load(), 2);
}

// The per-layer reductions of the backward (and the rest after it) cover every gradient,
// each once.
TEST(ThreadComm, LayerGradientViewsCoverEveryGradientOnce) {
  CpuBackend be(1);
  const GPTConfig cfg = micro_gpt(4);
  Parameters p(be, cfg, DType::F32);
  std::vector<std::pair<const char*, const char*>> spans;
  for (int64_t l = 0; l < cfg.layers; ++l) {
    const Tensor t = p.layer_grads(l);
    spans.emplace_back(static_cast<const char*>(t.data), static_cast<const char*>(t.data) + t.bytes());
  }
  std::vector<Tensor> outside = p.other_grads();
  outside.push_back(p.head_grads());
  for (const Tensor& t : outside)
    spans.emplace_back(static_cast<const char*>(t.data), static_cast<const char*>(t.data) + t.bytes());
  for (int i = 0; i < p.count(); ++i) {
    const char* a = static_cast<const char*>(p.grad(i).data);
    const char* b = a + p.grad(i).bytes();
    int covered = 0;
    for (const auto& [lo, hi] : spans) covered += (lo <= a && b <= hi) ? 1 : 0;
    EXPECT_EQ(covered, 1) << p.name(i);
  }
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size(); ++j)
      EXPECT_TRUE(spans[i].second <= spans[j].first || spans[j].second <= spans[i].first);
}

// ---------------------------------------------------------------- Muon split over ranks

TEST(ThreadComm, MuonSplitOverRanksEqualsMuonOnOne) {
  const GPTConfig cfg = micro_gpt(4);
  OptimConfig oc;
  auto run = [&](int world) {
    std::vector<std::vector<double>> out;
    std::mutex m;
    run_thread_ranks(world, [&](Comm& comm) {
      CpuBackend be(1);
      Parameters p(be, cfg, DType::F32);
      randomize(p, 7);
      Optimizer opt(be, p, oc, &comm);
      for (int step = 0; step < 3; ++step) {
        random_grads(be, p, step);
        opt.step(1.0, 0.9);
      }
      if (comm.rank() == 0) {
        std::lock_guard<std::mutex> lock(m);
        for (int i = 0; i < p.count(); ++i) out.push_back(p.to_host_f64(i));
      }
      // Every matrix has exactly one owner, i mod world in table order.
      int k = 0;
      for (int i = 0; i < p.count(); ++i) {
        if (p.group(i) == ParamGroup::Matrix) {
          EXPECT_EQ(opt.muon_owner(i), k++ % world);
        }
      }
    });
    return out;
  };
  const auto one = run(1);
  for (int world : {2, 3, 4, 5}) EXPECT_EQ(run(world), one) << world << " ranks";
}

// Rank 0 of two whose async collectives finish as late as a GPU's stream may finish them:
// all_reduce_async and all_gather_async take t's values and fill t with NaN; wait_async(ticket)
// writes the results back for that ticket and the ones before it. Rank 1 is a twin with
// the same gradients, and its part of a gather is what rank 0's buffer held there, so a
// collective's result is t as it was at the call (Mean of equal values). Reading a buffer
// before waiting for its ticket reads NaN, and writing one is undone when it lands.
class LateComm final : public Comm {
 public:
  explicit LateComm(Backend& be) : be_(be) {}
  std::string name() const override { return "late"; }
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void all_reduce(Tensor, ReduceOp) override {}
  void all_gather(Tensor, const Tensor&) override { ADD_FAILURE() << "not used"; }
  void all_gather_in_place(Tensor) override { ADD_FAILURE() << "not used"; }
  void broadcast(Tensor, int) override {}
  void barrier() override {}
  int64_t all_reduce_async(Tensor t, ReduceOp op) override {
    if (op == ReduceOp::Sum) ++sums_;
    return late(t);
  }
  int64_t all_gather_async(Tensor t) override {
    ++gathers_;
    return late(t);
  }
  void wait_async(int64_t ticket) override {
    while (!pending_.empty() && pending_.front().ticket <= ticket) {
      be_.from_host_f64(pending_.front().t, pending_.front().values);
      pending_.erase(pending_.begin());
    }
  }
  double all_reduce(double x, ReduceOp) override { return x; }
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override {
    std::vector<int64_t> out = mine;
    out.insert(out.end(), mine.begin(), mine.end());
    return out;
  }
  [[noreturn]] void abort(const std::string& why) override { fail(why); }
  size_t pending() const { return pending_.size(); }
  int gathers() const { return gathers_; }
  int sums() const { return sums_; }

 private:
  int64_t late(Tensor t) {
    pending_.push_back({async_started_, t, be_.to_host_f64(t)});
    be_.fill(t, std::nan(""));
    return async_started_++;
  }
  struct Pending {
    int64_t ticket;
    Tensor t;
    std::vector<double> values;
  };
  Backend& be_;
  std::vector<Pending> pending_;
  int gathers_ = 0, sums_ = 0;
};

// The optimizer given each gradient's ticket, its reductions still running, waits for each
// where it reads it and for the update exchange before applying it: the same bits as with
// every reduction done first. Two orders of arrival: the trainer's (lm_head, a span per
// block from the last, wte, skip_weights) and each gradient alone in table order (so the last matrix to arrive is one this rank does not orthogonalise).
TEST(Optimizer, WaitsForEachReductionWhereItReadsIt) {
  const GPTConfig cfg = micro_gpt(4);
  enum Arrival { Done, ByBlock, ByParameter };
  auto run = [&](Arrival arrival) {
    CpuBackend be(1);
    Parameters p(be, cfg, DType::F32);
    randomize(p, 7);
    LateComm comm(be);
    Optimizer opt(be, p, OptimConfig{}, &comm);
    for (int step = 0; step < 3; ++step) {
      random_grads(be, p, step);
      std::vector<int64_t> ready;
      if (arrival != Done) {
        ready.assign(size_t(p.count()), Comm::kAllAsync);
        std::vector<Tensor> spans;
        if (arrival == ByBlock) {
          spans.push_back(p.head_grads());
          for (int64_t l = cfg.layers - 1; l >= 0; --l) spans.push_back(p.layer_grads(l));
          for (const Tensor& t : p.other_grads()) spans.push_back(t);
        } else {
          for (int i = 0; i < p.count(); ++i) spans.push_back(p.grad(i));
        }
        for (const Tensor& t : spans) {
          const int64_t ticket = comm.all_reduce_async(t, ReduceOp::Mean);
          for (int i : p.grads_within(t)) ready[size_t(i)] = ticket;
        }
      }
      opt.step(1.0, 0.9, ready);
      EXPECT_EQ(comm.pending(), 0u) << "a reduction still running after the step";
      // The updates are exchanged by one gather per step, never summed.
      EXPECT_EQ(comm.gathers(), step + 1);
      EXPECT_EQ(comm.sums(), 0);
    }
    std::vector<std::vector<double>> out;
    for (int i = 0; i < p.count(); ++i) out.push_back(p.to_host_f64(i));
    for (const auto& [name, t] : opt.state()) out.push_back(be.to_host_f64(t));
    return out;
  };
  const auto first = run(Done);
  for (Arrival arrival : {ByBlock, ByParameter}) {
    const auto late = run(arrival);
    ASSERT_EQ(first.size(), late.size());
    for (size_t i = 0; i < first.size(); ++i) {
      for (double x : late[i])
        ASSERT_FALSE(std::isnan(x)) << "arrival " << arrival << ", tensor " << i
                                    << ": a gradient was read before its reduction";
      EXPECT_EQ(late[i], first[i]) << "arrival " << arrival << ", tensor " << i;
    }
  }
}

TEST(Optimizer, RefusesTicketsThatDoNotMatchTheParameters) {
  CpuBackend be(1);
  Parameters p(be, micro_gpt(2), DType::F32);
  LateComm comm(be);
  Optimizer opt(be, p, OptimConfig{}, &comm);
  EXPECT_THROW(opt.step(1.0, 0.9, std::vector<int64_t>(3, 0)), Error);
  Optimizer alone(be, p, OptimConfig{});
  EXPECT_THROW(alone.step(1.0, 0.9, std::vector<int64_t>(size_t(p.count()), 0)), Error);
}

// ---------------------------------------------------------------- training over ranks

class Ranks : public ::testing::Test {
 protected:
  TempDir dir{"test_dist"};
  ShardFiles data = synthetic_shards(dir / "data", 200000, 3000);
  // A train shard of 2,700 tokens: with steps of 2 x 256, the second sequence's reader
  // (first read at 256) moves on after 4 reads, the first's after 5, as the record's ranks
  // would; so a run of 8 steps changes shards at different steps per sequence.
  ShardFiles small = synthetic_shards(dir / "small", 2700, 3000);
};

TEST_F(Ranks, OneBatchOfTwoReadsTheTwoRanksSequencesAcrossShardChanges) {
  TrainConfig one = micro_run(dir / "one_small", PrecisionChoice::FP64);
  TrainConfig two = micro_run(dir / "two_small", PrecisionChoice::FP64);
  const TrainResult a = run_single(one, small);
  EXPECT_EQ(a.micro_batches, 1);
  const TrainResult b = run_ranks(2, two, small);
  ASSERT_EQ(a.train_losses.size(), b.train_losses.size());
  for (size_t s = 0; s < a.train_losses.size(); ++s)
    EXPECT_NEAR(a.train_losses[s], b.train_losses[s], 1e-10) << "step " << s;
  EXPECT_LT(max_rel_diff(weights_of(a.final_weights), weights_of(b.final_weights)), 1e-9);
}

TEST_F(Ranks, TwoRanksOfOneTrainLikeOneRankOfTwo) {
  for (PrecisionChoice dt : {PrecisionChoice::FP64, PrecisionChoice::FP32}) {
    SCOPED_TRACE(enum_name(dt));
    TrainConfig one = micro_run(dir / ("one_" + enum_name(dt)), dt);
    TrainConfig two = one;
    two.out_dir = (dir / ("two_" + enum_name(dt))).string();
    const TrainResult a = run_single(one, data);
    const TrainResult b = run_ranks(2, two, data);
    const double tol = dt == PrecisionChoice::FP64 ? 1e-10 : 1e-4;
    ASSERT_EQ(a.train_losses.size(), b.train_losses.size());
    for (size_t s = 0; s < a.train_losses.size(); ++s)
      EXPECT_NEAR(a.train_losses[s], b.train_losses[s], tol) << "step " << s;
    ASSERT_EQ(a.val_losses.size(), b.val_losses.size());
    for (size_t k = 0; k < a.val_losses.size(); ++k)
      EXPECT_NEAR(a.val_losses[k].second, b.val_losses[k].second, tol);
    EXPECT_LT(max_rel_diff(weights_of(b.final_weights), weights_of(a.final_weights)),
              dt == PrecisionChoice::FP64 ? 1e-9 : 1e-3);
  }
}

TEST_F(Ranks, MicroBatchesReadExactlyTheRanksBatches) {
  // 1 rank x 2 micro-batches and 2 ranks x 1 read the same two readers' sequences: in fp64
  // they agree to rounding; the gradient of the mean is the mean of the micro-batches'.
  TrainConfig accum = micro_run(dir / "accum", PrecisionChoice::FP64);
  accum.grad_accum = 2;
  TrainConfig ranks = micro_run(dir / "ranks", PrecisionChoice::FP64);
  const TrainResult a = run_single(accum, data);
  EXPECT_EQ(a.micro_batches, 2);
  const TrainResult b = run_ranks(2, ranks, data);
  for (size_t s = 0; s < a.train_losses.size(); ++s)
    EXPECT_NEAR(a.train_losses[s], b.train_losses[s], 1e-10) << "step " << s;
  EXPECT_LT(max_rel_diff(weights_of(a.final_weights), weights_of(b.final_weights)), 1e-9);
}

TEST_F(Ranks, OnlyRankZeroWritesAndTheLogIsOnce) {
  TrainConfig c = micro_run(dir / "w", PrecisionChoice::FP32);
  c.save_every = 4;
  std::vector<std::string> lines;
  std::mutex m;
  run_thread_ranks(2, [&](Comm& comm) {
    CpuBackend be(1);
    Trainer t(be, comm, c, data.train, data.val);
    t.log = [&](const std::string& l) {
      std::lock_guard<std::mutex> lock(m);
      lines.push_back(std::to_string(comm.rank()) + ":" + l);
    };
    t.run();
  });
  for (const auto& l : lines) EXPECT_EQ(l.substr(0, 2), "0:") << l;
  // Once: one line a step and one a validation (8 steps; validations at 0, 4 and 8).
  int steps = 0, validations = 0;
  for (const auto& l : lines) {
    steps += l.find(" train_loss:") != std::string::npos;
    validations += l.find(" val_loss:") != std::string::npos;
  }
  EXPECT_EQ(steps, 8);
  EXPECT_EQ(validations, 3);
  const auto metrics = metrics_without_times(dir / "w" / "metrics.jsonl");
  EXPECT_EQ(metrics.size(), 8u + 3u);  // 8 steps and validations at 0, 4 and 8
  EXPECT_TRUE(fs::is_directory(dir / "w" / "ckpt_step000004"));
  EXPECT_TRUE(fs::is_directory(dir / "w" / "ckpt_step000008"));
}

// A signal one rank sees stops every rank after the same step, with one checkpoint: here
// rank 0 gets SIGTERM while it logs step 3, which rank 1 may or may not have seen when it
// asks whether to stop (the ranks agree through a reduction).
TEST_F(Ranks, ASignalOnOneRankStopsEveryRankAfterTheSameStep) {
  TrainConfig c = micro_run(dir / "sig", PrecisionChoice::FP32);
  install_stop_handlers();
  clear_stop_request();
  TrainResult results[2];
  run_thread_ranks(2, [&](Comm& comm) {
    CpuBackend be(1);
    Trainer t(be, comm, c, data.train, data.val);
    t.log = [](const std::string& l) {  // rank 0's lines only
      if (l.rfind("step:3/8 train_loss:", 0) == 0) ::raise(SIGTERM);
    };
    results[comm.rank()] = t.run();
  });
  const int seen = stop_requested();
  clear_stop_request();
  EXPECT_EQ(seen, SIGTERM);
  EXPECT_EQ(results[0].stopped_by_signal, SIGTERM);
  for (const TrainResult& r : results) {
    EXPECT_EQ(r.train_losses.size(), 3u);
    EXPECT_NE(r.stopped_by_signal, 0);
  }
  EXPECT_TRUE(fs::is_directory(dir / "sig" / "ckpt_step000003"));
  EXPECT_FALSE(fs::exists(dir / "sig" / "ckpt_step000004"));
}

TEST_F(Ranks, ResumedTwoRankRunIsBitIdentical) {
  TrainConfig full = micro_run(dir / "full", PrecisionChoice::FP32);
  const TrainResult a = run_ranks(2, full, data);
  TrainConfig split = micro_run(dir / "split", PrecisionChoice::FP32);
  split.stop_after = 4;
  run_ranks(2, split, data);
  split.stop_after = 0;
  split.resume = split.out_dir;
  const TrainResult b = run_ranks(2, split, data);
  ASSERT_EQ(b.start_step, 4);
  for (size_t s = 0; s < b.train_losses.size(); ++s)
    EXPECT_EQ(b.train_losses[s], a.train_losses[s + 4]) << "step " << s + 4;
  EXPECT_EQ(read_bytes(b.final_weights), read_bytes(a.final_weights));
  EXPECT_EQ(metrics_without_times(dir / "split" / "metrics.jsonl"),
            metrics_without_times(dir / "full" / "metrics.jsonl"));
}

// Every sequence has its own reader, so a run saved by 2 ranks resumes in one process (or
// the other way round) reading what the uninterrupted run read, across shard changes.
TEST_F(Ranks, AResumeMayChangeTheRanksAndMicroBatches) {
  const TrainResult full = run_ranks(2, micro_run(dir / "full2", PrecisionChoice::FP64), small);
  TrainConfig c = micro_run(dir / "r", PrecisionChoice::FP64);
  c.stop_after = 3;
  run_ranks(2, c, small);
  c.stop_after = 0;
  c.resume = c.out_dir;
  const TrainResult b = run_single(c, small);
  ASSERT_EQ(b.start_step, 3);
  for (size_t s = 0; s < b.train_losses.size(); ++s)
    EXPECT_NEAR(b.train_losses[s], full.train_losses[s + 3], 1e-10) << "step " << s + 3;
  EXPECT_LT(max_rel_diff(weights_of(b.final_weights), weights_of(full.final_weights)), 1e-9);
}

TEST_F(Ranks, ABadShardOnOneRankEndsTheRunWithItsMessage) {
  // Rank 1's first sequence holds a token outside the vocabulary: rank 1 fails reading it,
  // rank 0 (waiting in the gradient all-reduce) stops instead of hanging.
  TrainConfig c = micro_run(dir / "bad", PrecisionChoice::FP32);
  const fs::path bad = dir / "bad_train_000000.bin";
  std::vector<uint16_t> tokens(20000, 5);
  tokens[300] = 500;  // rank 1 reads tokens [256, 513)
  write_shard(bad.string(), tokens.data(), int64_t(tokens.size()));
  ShardFiles d{{bad.string()}, data.val};
  try {
    run_ranks(2, c, d);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 500"), std::string::npos) << e.what();
  }
}

// What ranks must agree on is what they compute with: auto values as resolved, data by shard
// names and sizes, never a rank's own settings or the path its machine reads the data by.
TEST(RankTerms, CountWhatIsComputedNotHowItWasSpelled) {
  TrainConfig a = micro_run("runs/a");
  TrainConfig b = a;
  a.grad_accum = 0;  // auto, resolved to 1
  b.grad_accum = 1;
  a.dtype = PrecisionChoice::Auto;
  b.dtype = PrecisionChoice::FP32;
  a.train_glob = "/mnt/a/data/train_*.bin";  // the same shards by another mount
  b.train_glob = "/data/train_*.bin";
  b.stall_timeout = 60;
  const std::vector<std::string> shards{"train_000001.bin (100000000 tokens)"}, val{"val.bin"};
  const nlohmann::json ta = rank_terms(a, 1, "fp32", shards, val);
  const nlohmann::json tb = rank_terms(b, 1, "fp32", shards, val);
  EXPECT_TRUE(rank_differences({ta, tb, ta}).empty());
  b.batch = 16;
  const nlohmann::json tc = rank_terms(b, 2, "fp32", {"train_000002.bin (100000000 tokens)"}, val);
  EXPECT_EQ(rank_differences({ta, tb, tc}),
            (std::vector<std::string>{
                "rank 2: --batch 16 (rank 0: 2)", "rank 2: --grad-accum 2 (rank 0: 1)",
                "rank 2: train-shards [\"train_000002.bin (100000000 tokens)\"] (rank 0: "
                "[\"train_000001.bin (100000000 tokens)\"])"}));
  // A rank running another build of speedrun (a stale binary on one machine).
  nlohmann::json td = tb;
  const std::string built = build_info().version + " commit " + build_info().commit;
  EXPECT_EQ(ta["speedrun"], built);
  td["speedrun"] = build_info().version + " commit 0123456789ab";
  EXPECT_EQ(rank_differences({ta, td}),
            (std::vector<std::string>{"rank 1: speedrun \"" + build_info().version +
                                      " commit 0123456789ab\" (rank 0: \"" + built + "\")"}));
}

// Ranks started with different flags would issue collectives of different sizes or counts,
// or read overlapping data: they stop before the first step, naming what differs.
TEST_F(Ranks, RanksStartedWithDifferentSettingsStopNamingThem) {
  TrainConfig c = micro_run(dir / "differ", PrecisionChoice::FP32);
  c.batch = 3;
  c.val_tokens = 3 * 256;
  std::atomic<int> stopped{0};
  try {
    run_thread_ranks(3, [&](Comm& comm) {
      TrainConfig mine = c;
      if (comm.rank() == 2) {
        mine.schedule.steps = 9;
        mine.seed = 7;
      }
      CpuBackend be(1);
      try {
        Trainer(be, comm, mine, data.train, data.val).run();
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("the ranks do not run the same training"), std::string::npos) << m;
        EXPECT_NE(m.find("rank 2: --steps 9 (rank 0: 8)"), std::string::npos) << m;
        EXPECT_NE(m.find("rank 2: --seed 7 (rank 0: "), std::string::npos) << m;
        EXPECT_EQ(m.find("rank 1:"), std::string::npos) << m;
        ++stopped;
        throw;
      }
    });
    ADD_FAILURE() << "no error";
  } catch (const Error&) {
  }
  EXPECT_EQ(stopped.load(), 3);  // every rank, by its own check
  EXPECT_FALSE(fs::exists(dir / "differ" / "metrics.jsonl"));  // stopped before any step
}
