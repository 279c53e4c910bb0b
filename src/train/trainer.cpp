#include "train/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/metrics_file.h"

namespace speedrun {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
// "42s", "3m05s", "2h07m".
std::string format_eta(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
}
}  // namespace

Trainer::Trainer(Backend& backend, TrainConfig config, std::vector<std::string> train_files,
                 std::vector<std::string> val_files)
    : be_(backend),
      cfg_(std::move(config)),
      train_files_(std::move(train_files)),
      val_files_(std::move(val_files)) {
  log = [](const std::string& s) {
    std::fputs((s + "\n").c_str(), stdout);
    std::fflush(stdout);
  };
  cfg_.validate();
}

TrainResult Trainer::run() {
  namespace fs = std::filesystem;
  const TrainConfig& c = cfg_;
  const ScheduleConfig& sc = c.schedule;
  const int64_t N = sc.steps, B = c.batch, T = c.seq_len;
  fs::create_directories(c.out_dir);

  DataLoader train(train_files_, B, T, c.rank, c.world, c.model.vocab);
  std::unique_ptr<DataLoader> val;
  int64_t val_batches = 0;
  if (!val_files_.empty() && c.val_tokens > 0) {
    val = std::make_unique<DataLoader>(val_files_, B, T, c.rank, c.world, c.model.vocab);
    val_batches = c.val_tokens / (B * T * c.world);
  }
  std::vector<ShardInfo> shards;
  for (size_t i = 0; i < train_files_.size(); ++i)
    shards.push_back({fs::path(train_files_[i]).filename().string(), train.shard_tokens(int64_t(i))});

  Parameters params(be_, c.model, c.dtype);
  Optimizer opt(be_, params, c.optim);
  TrainResult result;
  const std::string metrics_path = (fs::path(c.out_dir) / "metrics.jsonl").string();
  int64_t start = 0;
  double train_ms = 0;  // training time, validation excluded, from step 10 on (as the record)
  int64_t timed = 0;
  if (!c.resume.empty()) {
    const FoundCheckpoint ck = find_checkpoint(c.resume, log);
    const auto diffs = config_differences(ck.meta.config, config_to_json(c));
    if (!diffs.empty()) {
      std::string list;
      for (const auto& d : diffs) list += "\n  " + d;
      fail("--resume ", ck.dir, ": this run's config differs from the checkpoint's:", list,
           "\nresume with the checkpoint's values (leave those flags out) or start a new run");
    }
    auto shard_list = [](const std::vector<ShardInfo>& v) {
      std::string t;
      for (const auto& s : v) t += fmt::format(" {} ({} tokens)", s.file, s.tokens);
      return t;
    };
    bool same = ck.meta.train_shards.size() == shards.size();
    for (size_t i = 0; same && i < shards.size(); ++i)
      same = shards[i].file == ck.meta.train_shards[i].file &&
             shards[i].tokens == ck.meta.train_shards[i].tokens;
    check(same, "--resume ", ck.dir, ": the checkpoint was trained on shards",
          shard_list(ck.meta.train_shards), " but --train now gives", shard_list(shards),
          ": resume with the same training data");
    check(ck.meta.step <= N, "--resume ", ck.dir, ": checkpoint step ", ck.meta.step,
          " is past --steps ", N);
    check(c.stop_after == 0 || c.stop_after > ck.meta.step, "--stop-after ", c.stop_after,
          " is not after the checkpoint's step ", ck.meta.step, ": give a later step or none");
    load_checkpoint(ck.dir, ck.meta, be_, params, opt);
    train.seek(ck.meta.loader);
    start = ck.meta.step;
    train_ms = ck.meta.train_ms;
    timed = ck.meta.timed_steps;
    result.start_step = start;
    const std::string src = (fs::path(ck.dir).parent_path() / "metrics.jsonl").string();
    const int64_t kept = keep_metrics_before(src, metrics_path, start);
    log(fmt::format("resume: {} at step {}/{}; metrics.jsonl keeps {} lines before it", ck.dir,
                    start, N, kept));
  } else if (!c.init.empty()) {
    params.load(c.init);
    log(fmt::format("init: weights from {}", c.init));
  } else {
    params.init(c.seed);
  }
  GPT model(be_, params, B, T);

  log(fmt::format(
      "model: {} layers, {} heads x {}, width {}, vocab {}, {:.2f}M parameters; batch {} x {} "
      "tokens; {} steps; activations {:.1f} MiB",
      c.model.layers, c.model.heads, c.model.head_dim, c.model.width(), c.model.vocab,
      double(params.numel()) / 1e6, B, T, N, double(model.activation_bytes()) / (1 << 20)));

  std::ofstream metrics(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
  check(bool(metrics), "cannot write ", metrics_path, ": check --out");
  auto emit = [&](const nlohmann::json& j) {
    metrics << j.dump() << '\n';
    metrics.flush();
  };
  auto weights_path = [&](int64_t s) {
    return (fs::path(c.out_dir) / fmt::format("model_step{:06d}.safetensors", s)).string();
  };
  auto weights_meta = [&](int64_t s) {
    return std::map<std::string, std::string>{{"step", std::to_string(s)},
                                              {"preset", c.preset},
                                              {"window", std::to_string(attention_window(sc, s))}};
  };
  auto save = [&](int64_t s) { params.save(weights_path(s), weights_meta(s)); };
  auto checkpoint = [&](int64_t s) {
    CheckpointMeta m;
    m.step = s;
    m.optimizer_steps = opt.steps_taken();
    m.loader = train.position();
    m.train_ms = train_ms;
    m.timed_steps = timed;
    m.config = config_to_json(c);
    m.train_shards = shards;
    result.last_checkpoint = write_checkpoint(c.out_dir, be_, m, params, opt, weights_meta(s));
    prune_checkpoints(c.out_dir, c.keep);
    log(fmt::format("checkpoint: {}", result.last_checkpoint));
  };
  if (start == 0) save(0);

  std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
  const auto run_t0 = Clock::now();  // for the ETA: wall time of this process, validation included
  for (int64_t s = start; s <= N; ++s) {
    const int64_t window = attention_window(sc, s);
    if (val && (s == N || (c.val_every > 0 && s % c.val_every == 0))) {
      val->reset();
      double sum = 0;
      for (int64_t k = 0; k < val_batches; ++k) {
        val->next_batch(x.data(), y.data());
        sum += model.forward_loss(x.data(), y.data(), window);
      }
      const double vl = sum / double(val_batches);
      result.val_losses.emplace_back(s, vl);
      if (s == N) result.final_val_loss = vl;
      emit({{"step", s}, {"val_loss", vl}, {"window", window}});
      log(fmt::format("step:{}/{} val_loss:{:.4f} train_time:{:.0f}ms step_avg:{:.2f}ms", s, N,
                      vl, train_ms, timed ? train_ms / double(timed) : 0.0));
    }
    if (s == N) break;

    const auto t0 = Clock::now();
    const double lr = lr_multiplier(sc, s);
    const double mu = muon_momentum_at(sc, s);
    train.next_batch(x.data(), y.data());
    params.zero_grad();
    double loss = 0;
    try {
      loss = model.forward_backward(x.data(), y.data(), window);
    } catch (const Error& e) {
      fail("training step ", s, ": ", e.what(), " (weights saved so far are in ", c.out_dir,
           ")");
    }
    opt.step(lr, mu);
    const double ms = ms_since(t0);
    if (s == 10) {  // the record times from step 10 on (compilation and warm-up excluded)
      train_ms = 0;
      timed = 0;
    }
    train_ms += ms;
    ++timed;
    result.train_losses.push_back(loss);
    emit({{"step", s}, {"train_loss", loss}, {"lr", lr}, {"window", window}, {"momentum", mu},
          {"ms", ms}});
    const int64_t done = s + 1;
    const double eta_s = ms_since(run_t0) / 1000.0 / double(done - start) * double(N - done);
    log(fmt::format("step:{}/{} train_loss:{:.4f} train_time:{:.0f}ms step_avg:{:.2f}ms "
                    "window:{} lr:{:.4f} tok/s:{:.0f} eta:{}",
                    done, N, loss, train_ms, train_ms / double(timed), window, lr,
                    double(B * T * c.world) / (ms / 1000.0), format_eta(eta_s)));
    const bool stop = c.stop_after > 0 && done == c.stop_after && done < N;
    if ((c.save_every > 0 && (done % c.save_every == 0 || done == N)) || stop) checkpoint(done);
    if (stop) {
      log(fmt::format("stopped after step {}/{} (--stop-after): continue with --resume {}", done,
                      N, c.out_dir));
      result.final_weights = (std::filesystem::path(result.last_checkpoint) / "model.safetensors").string();
      return result;
    }
  }
  save(N);
  result.final_weights = weights_path(N);
  log(fmt::format("saved {}", result.final_weights));
  return result;
}

}  // namespace speedrun
