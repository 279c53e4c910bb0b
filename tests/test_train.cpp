// End to end: a micro model trained on the synthetic corpus learns far below the data's
// unigram entropy; the trainer's files and log follow SPEC.md.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "core/safetensors.h"
#include "data/shard.h"
#include "data/synthetic.h"
#include "optim/schedule.h"
#include "train/config.h"
#include "train/trainer.h"
#include "fixtures.h"

using namespace speedrun;
namespace fs = std::filesystem;

TEST(Train, MicroModelLearnsFarBelowUnigramEntropy) {
  const fs::path dir = test::process_temp("test_train");
  fs::remove_all(dir);
  const TrainConfig c = test::learning_run(dir / "run");
  const auto [tr, va] = test::synthetic_shards(dir / "data", 400000, 40000);
  ASSERT_FALSE(tr.empty());
  ASSERT_FALSE(va.empty());
  Shard s = Shard::open(tr[0]);
  const double unigram = unigram_entropy(s.tokens(), s.size());

  CpuBackend be;
  Trainer trainer(be, c, tr, va);
  std::vector<std::string> lines;
  trainer.log = [&](const std::string& l) { lines.push_back(l); };
  TrainResult r = trainer.run();

  ASSERT_EQ(r.train_losses.size(), 100u);
  EXPECT_NEAR(r.train_losses[0], std::log(128.0), 1e-4);  // zero head: uniform prediction
  ASSERT_EQ(r.val_losses.size(), 3u);  // steps 0, 50, 100
  EXPECT_EQ(r.val_losses[2].first, 100);
  EXPECT_LT(r.final_val_loss, 0.75 * unigram) << "unigram entropy " << unigram;

  // metrics.jsonl: one train record per step, one val record per evaluation.
  std::ifstream m(dir / "run" / "metrics.jsonl");
  int train_lines = 0, val_lines = 0;
  std::set<double> lrs, momenta;
  std::set<int64_t> windows;
  for (std::string line; std::getline(m, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train_loss")) {
      EXPECT_EQ(j["step"].get<int64_t>(), train_lines);
      EXPECT_DOUBLE_EQ(j["train_loss"].get<double>(), r.train_losses[size_t(train_lines)]);
      for (const char* k : {"lr", "window", "momentum", "ms"}) EXPECT_TRUE(j.contains(k)) << k;
      // The step ran with the schedule's values (the trainer logs the ones it passed on).
      const int64_t s = train_lines;
      EXPECT_EQ(j["lr"].get<double>(), lr_multiplier(c.schedule, s)) << "step " << s;
      EXPECT_EQ(j["momentum"].get<double>(), muon_momentum_at(c.schedule, s)) << "step " << s;
      EXPECT_EQ(j["window"].get<int64_t>(), attention_window(c.schedule, s)) << "step " << s;
      lrs.insert(j["lr"].get<double>());
      momenta.insert(j["momentum"].get<double>());
      windows.insert(j["window"].get<int64_t>());
      ++train_lines;
    } else {
      EXPECT_TRUE(j.contains("val_loss"));
      ++val_lines;
    }
  }
  EXPECT_EQ(train_lines, 100);
  EXPECT_EQ(val_lines, 3);
  // The schedule moved: the cooldown's 30 LRs (its first is 1), the warmup's 20 momenta and
  // the end's, windows from 64 up.
  EXPECT_EQ(lrs.size(), 30u);
  EXPECT_EQ(momenta.size(), 21u);
  EXPECT_GT(windows.size(), 1u);
  // Weights at step 0 and the end, loadable, with the config in the metadata.
  for (const char* f : {"model_step000000.safetensors", "model_step000100.safetensors"}) {
    auto w = SafetensorsFile::open((dir / "run" / f).string());
    EXPECT_EQ(w.metadata().at("layers"), "2");
    EXPECT_TRUE(w.has("transformer.h.1.mlp.c_proj.weight"));
  }
  // The record's log lines.
  bool saw_step = false, saw_val = false;
  for (auto& l : lines) {
    saw_step |= l.rfind("step:1/100 train_loss:", 0) == 0;
    saw_val |= l.rfind("step:100/100 val_loss:", 0) == 0;
  }
  EXPECT_TRUE(saw_step);
  EXPECT_TRUE(saw_val);
  fs::remove_all(dir);
}
