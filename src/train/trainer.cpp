#include "train/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace speedrun {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
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

  Parameters params(be_, c.model, c.dtype);
  if (!c.init.empty()) {
    params.load(c.init);
    log(fmt::format("init: weights from {}", c.init));
  } else {
    params.init(c.seed);
  }
  GPT model(be_, params, B, T);
  Optimizer opt(be_, params, c.optim);

  log(fmt::format(
      "model: {} layers, {} heads x {}, width {}, vocab {}, {:.2f}M parameters; batch {} x {} "
      "tokens; {} steps; activations {:.1f} MiB",
      c.model.layers, c.model.heads, c.model.head_dim, c.model.width(), c.model.vocab,
      double(params.numel()) / 1e6, B, T, N, double(model.activation_bytes()) / (1 << 20)));

  const std::string metrics_path = (fs::path(c.out_dir) / "metrics.jsonl").string();
  std::ofstream metrics(metrics_path, std::ios::trunc);
  check(bool(metrics), "cannot write ", metrics_path, ": check --out");
  auto emit = [&](const nlohmann::json& j) {
    metrics << j.dump() << '\n';
    metrics.flush();
  };
  auto weights_path = [&](int64_t s) {
    return (fs::path(c.out_dir) / fmt::format("model_step{:06d}.safetensors", s)).string();
  };
  auto save = [&](int64_t s) {
    params.save(weights_path(s), {{"step", std::to_string(s)}, {"preset", c.preset}});
  };
  save(0);

  TrainResult result;
  std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
  double train_ms = 0;  // training time, validation excluded, from step 10 on (as the record)
  int64_t timed = 0;
  for (int64_t s = 0; s <= N; ++s) {
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
    const double loss = model.forward_backward(x.data(), y.data(), window);
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
    log(fmt::format("step:{}/{} train_loss:{:.4f} train_time:{:.0f}ms step_avg:{:.2f}ms "
                    "window:{} lr:{:.4f} tok/s:{:.0f}",
                    s + 1, N, loss, train_ms, train_ms / double(timed), window, lr,
                    double(B * T * c.world) / (ms / 1000.0)));
    if (c.save_every > 0 && (s + 1) % c.save_every == 0 && s + 1 < N) save(s + 1);
  }
  save(N);
  result.final_weights = weights_path(N);
  log(fmt::format("saved {}", result.final_weights));
  return result;
}

}  // namespace speedrun
