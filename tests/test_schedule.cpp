// Schedules at SPEC.md's landmarks, presets' values and config validation.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/schedule.h"
#include "train/config.h"

using namespace speedrun;

TEST(Schedule, RecordLrIsConstantThenLinearCooldown) {
  const ScheduleConfig c = preset_config("record").schedule;
  EXPECT_EQ(c.steps, 1750);
  EXPECT_EQ(lr_multiplier(c, 0), 1.0);
  EXPECT_EQ(lr_multiplier(c, 1109), 1.0);
  for (int64_t s = 1110; s < 1750; ++s)
    EXPECT_DOUBLE_EQ(lr_multiplier(c, s), double(1750 - s) / 640.0) << "step " << s;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1110), 640.0 / 640.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1749), 1.0 / 640.0);
}

TEST(Schedule, WarmupPhase) {
  ScheduleConfig c;
  c.steps = 100;
  c.warmup = 10;
  c.cooldown = 20;
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 79), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 80), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 81), 19.0 / 20.0);
}

TEST(Schedule, RecordWindowGrowsFrom64To1792InMultiplesOf64) {
  const ScheduleConfig c = preset_config("record").schedule;
  EXPECT_EQ(attention_window(c, 0), 64);
  EXPECT_EQ(attention_window(c, 1749), 1728);
  EXPECT_EQ(attention_window(c, 1750), 1792);
  int64_t prev = 64;
  for (int64_t s = 0; s <= 1750; ++s) {
    const int64_t w = attention_window(c, s);
    EXPECT_EQ(w % 64, 0);
    EXPECT_GE(w, prev);
    EXPECT_LE(w - prev, 64);
    // The record's Python expression: 64*((step/N * (1792 - 64) + 64)//64).
    const double x = double(s) / 1750.0 * 1728.0 + 64.0;
    EXPECT_EQ(w, 64 * int64_t(std::floor(x / 64.0)));
    prev = w;
  }
  // The window first reaches 128 when s/N*1728 >= 64, i.e. s >= 64.81...
  EXPECT_EQ(attention_window(c, 64), 64);
  EXPECT_EQ(attention_window(c, 65), 128);
}

TEST(Schedule, FixedWindowAndPreviousRecord) {
  const TrainConfig p = preset_config("previous-record");
  EXPECT_EQ(p.schedule.steps, 1875);
  EXPECT_EQ(p.schedule.cooldown, 562);
  EXPECT_EQ(p.schedule.momentum_warmup, 500);
  EXPECT_DOUBLE_EQ(p.optim.beta1, 0.9);
  EXPECT_DOUBLE_EQ(p.optim.muon_lr, 0.04);
  for (int64_t s : {0, 100, 1874, 1875}) EXPECT_EQ(attention_window(p.schedule, s), 1024);
}

TEST(Schedule, MuonMomentumWarmup) {
  const ScheduleConfig c = preset_config("record").schedule;
  EXPECT_DOUBLE_EQ(muon_momentum_at(c, 0), 0.85);
  EXPECT_NEAR(muon_momentum_at(c, 150), 0.90, 1e-15);
  EXPECT_DOUBLE_EQ(muon_momentum_at(c, 300), 0.95);
  EXPECT_DOUBLE_EQ(muon_momentum_at(c, 1000), 0.95);
}

TEST(Schedule, RecordPresetMatchesSpec) {
  const TrainConfig r = preset_config("record");
  EXPECT_EQ(r.model.layers, 12);
  EXPECT_EQ(r.model.heads, 6);
  EXPECT_EQ(r.model.head_dim, 128);
  EXPECT_EQ(r.model.vocab, 50304);
  EXPECT_EQ(r.model.eot, 50256);
  EXPECT_EQ(r.seq_len * r.batch, 524288);
  EXPECT_DOUBLE_EQ(r.optim.lr_embed, 0.6);
  EXPECT_DOUBLE_EQ(r.optim.lr_head, 0.008);
  EXPECT_DOUBLE_EQ(r.optim.lr_scalar, 0.04);
  EXPECT_DOUBLE_EQ(r.optim.muon_lr, 0.05);
  EXPECT_DOUBLE_EQ(r.optim.beta1, 0.8);
  EXPECT_DOUBLE_EQ(r.optim.beta2, 0.95);
  EXPECT_EQ(r.val_every, 125);
  EXPECT_EQ(r.val_tokens, 10485760);
  EXPECT_NO_THROW(r.validate());
}

TEST(Schedule, InvalidConfigsAreRejectedNamingTheFlag) {
  auto expect_error = [](TrainConfig c, const std::string& needle) {
    try {
      c.validate();
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TrainConfig c = preset_config("tiny");
  c.model.layers = 3;
  expect_error(c, "--layers");
  c = preset_config("tiny");
  c.schedule.window_start = 100;
  expect_error(c, "--window-start");
  c = preset_config("tiny");
  c.schedule.window_end = 1000;
  expect_error(c, "--window-end");
  c = preset_config("tiny");
  c.model.eot = int32_t(c.model.vocab);
  expect_error(c, "--eot");
  c = preset_config("tiny");
  c.model.head_dim = 15;
  expect_error(c, "--head-dim");
  c = preset_config("tiny");
  c.val_tokens = c.batch * c.seq_len + 1;
  expect_error(c, "--val-tokens");
  c = preset_config("tiny");
  c.schedule.cooldown = c.schedule.steps + 1;
  expect_error(c, "--cooldown");
  EXPECT_THROW(preset_config("fastest"), Error);
}
