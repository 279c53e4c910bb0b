// Checkpoints and exact resume: a run of 2K steps and a run stopped after K and resumed
// for K more give bit-identical losses and weights; --keep; damaged, truncated and foreign
// checkpoints; a resume whose config or data differ; export to bf16/fp32 and back through
// --init (and into the PyTorch reference's state_dict when python3-torch is there).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "core/bf16.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/synthetic.h"
#include "model/gpt.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/config_io.h"
#include "train/trainer.h"
#include "fixtures.h"
#include "run_command.h"

using namespace speedrun;
using namespace speedrun::test;
namespace fs = std::filesystem;

namespace {

class Resume : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("speedrun_test_resume_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    ShardFiles s = synthetic_shards(dir / "data", 30000, 3000);
    train = std::move(s.train);
    val = std::move(s.val);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }
  // A micro run of 8 steps whose window, LR and momentum all move during the run.
  TrainConfig config(const std::string& out, DType dtype = DType::F32) const {
    return micro_run(dir / out, dtype == DType::F64 ? PrecisionChoice::FP64 : PrecisionChoice::FP32);
  }
  TrainResult train_run(const TrainConfig& c, std::vector<std::string>* log = nullptr,
                        int threads = 2) {
    CpuBackend be(threads);
    Trainer t(be, c, train, val);
    t.log = [log](const std::string& l) {
      if (log) log->push_back(l);
    };
    return t.run();
  }
  fs::path dir;
  std::vector<std::string> train, val;
};

}  // namespace

// ---------------------------------------------------------------- exact resume

class ResumeExact : public Resume, public ::testing::WithParamInterface<DType> {};

TEST_P(ResumeExact, StoppedAndResumedRunIsBitIdenticalToAnUninterruptedOne) {
  const DType dt = GetParam();
  TrainConfig a = config("full", dt);
  a.save_every = 4;
  const TrainResult ra = train_run(a);

  TrainConfig b = config("split", dt);
  b.save_every = 4;
  b.stop_after = 4;
  const TrainResult rb1 = train_run(b);
  ASSERT_EQ(rb1.train_losses.size(), 4u);
  ASSERT_TRUE(fs::exists(dir / "split" / "ckpt_step000004" / "meta.json"));
  EXPECT_FALSE(fs::exists(dir / "split" / "model_step000008.safetensors"));
  // A crash after the checkpoint: the metrics already hold later lines, the last one cut.
  {
    std::ofstream m(dir / "split" / "metrics.jsonl", std::ios::app);
    m << "{\"step\":4,\"val_loss\":1.0,\"window\":160}\n{\"step\":4,\"train_loss\":9.0,\"lr\":1}\n"
      << "{\"step\":5,\"train_lo";
  }
  b.stop_after = 0;
  b.resume = (dir / "split").string();
  std::vector<std::string> log;
  const TrainResult rb2 = train_run(b, &log);
  EXPECT_EQ(rb2.start_step, 4);
  ASSERT_EQ(rb2.train_losses.size(), 4u);

  // Losses: bit-identical, step by step.
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(rb1.train_losses[i], ra.train_losses[i]) << "step " << i;
    EXPECT_EQ(rb2.train_losses[i], ra.train_losses[4 + i]) << "step " << 4 + i;
  }
  EXPECT_EQ(rb2.final_val_loss, ra.final_val_loss);
  // metrics.jsonl: the same lines (wall times aside), none duplicated, the cut one gone.
  EXPECT_EQ(metrics_without_times(dir / "split" / "metrics.jsonl"),
            metrics_without_times(dir / "full" / "metrics.jsonl"));
  // Weights and optimizer state: the same bytes.
  EXPECT_EQ(read_bytes(dir / "split" / "model_step000008.safetensors"),
            read_bytes(dir / "full" / "model_step000008.safetensors"));
  for (const char* f : {"model.safetensors", "state.safetensors"})
    EXPECT_EQ(read_bytes(dir / "split" / "ckpt_step000008" / f),
              read_bytes(dir / "full" / "ckpt_step000008" / f))
        << f;
  // The log continues the step count and names the checkpoint.
  bool saw_resume = false, saw_step5 = false;
  for (const auto& l : log) {
    saw_resume |= l.find("resume: ") == 0 && l.find("ckpt_step000004") != std::string::npos;
    saw_step5 |= l.rfind("step:5/8 train_loss:", 0) == 0 && l.find(" eta:") != std::string::npos;
  }
  EXPECT_TRUE(saw_resume);
  EXPECT_TRUE(saw_step5);
  for (const auto& l : log) EXPECT_EQ(l.find("last bits"), std::string::npos) << l;
  // The state really is used: resuming with a zeroed optimizer state would diverge.
  const auto ck = read_checkpoint((dir / "full" / "ckpt_step000004").string());
  EXPECT_EQ(ck.step, 4);
  EXPECT_EQ(ck.optimizer_steps, 4);
  EXPECT_GT(ck.loaders.at(0).pos, 0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ResumeExact, ::testing::Values(DType::F32, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST_F(Resume, KeepsTheNewestKCheckpoints) {
  TrainConfig c = config("keep");
  c.save_every = 1;
  c.keep = 3;
  const TrainResult r = train_run(c);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "keep")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "ckpt_step000006", "ckpt_step000007",
                                             "ckpt_step000008", "metrics.jsonl",
                                             "model_step000000.safetensors",
                                             "model_step000008.safetensors", "run.json"}));
  EXPECT_EQ(r.last_checkpoint, (dir / "keep" / "ckpt_step000008").string());
  // The checkpoint's weights are the final weights.
  auto a = SafetensorsFile::open((dir / "keep" / "model_step000008.safetensors").string());
  auto b = SafetensorsFile::open((dir / "keep" / "ckpt_step000008" / "model.safetensors").string());
  for (const auto& n : a.names())
    EXPECT_EQ(0, std::memcmp(a.get(n).data, b.get(n).data, a.get(n).bytes)) << n;
  EXPECT_EQ(b.metadata().at("window"), "256");
  EXPECT_EQ(b.metadata().at("step"), "8");
}

// ---------------------------------------------------------------- damaged checkpoints

// A run directory stands for its latest weights (eval, sample, export): after a stop with a
// checkpoint and a resume that finished without another, those are model_step000008's,
// not the older checkpoint's.
TEST_F(Resume, ARunDirectoryStandsForItsLatestWeights) {
  TrainConfig c = config("latest");
  c.stop_after = 6;
  train_run(c);
  const std::string run = (dir / "latest").string();
  const auto quiet = [](const std::string&) {};
  EXPECT_EQ(resolve_weights(run, quiet), (dir / "latest" / "ckpt_step000006" / "model.safetensors").string());
  c.stop_after = 0;
  c.resume = run;
  train_run(c);
  EXPECT_EQ(resolve_weights(run, quiet), (dir / "latest" / "model_step000008.safetensors").string());
  // A checkpoint at the last step too: the checkpoint's (the same weights, validated).
  c = config("both");
  c.save_every = 4;
  train_run(c);
  EXPECT_EQ(resolve_weights((dir / "both").string(), quiet),
            (dir / "both" / "ckpt_step000008" / "model.safetensors").string());
}

TEST_F(Resume, DamagedNewestCheckpointFallsBackToTheOlderOne) {
  TrainConfig full = config("ref");
  const TrainResult ref = train_run(full);

  TrainConfig c = config("dmg");
  c.save_every = 2;
  c.stop_after = 6;
  train_run(c);
  const fs::path newest = dir / "dmg" / "ckpt_step000006";
  // Flip one byte in the middle of the newest weights (same size: only the checksum sees it).
  std::string w = read_bytes(newest / "model.safetensors");
  w[w.size() / 2] ^= 0x40;
  write_bytes(newest / "model.safetensors", w);
  const std::string metrics_before = read_bytes(dir / "dmg" / "metrics.jsonl");

  c.stop_after = 0;
  c.resume = (dir / "dmg").string();
  std::vector<std::string> log;
  const TrainResult r = train_run(c, &log);
  EXPECT_EQ(r.start_step, 4);
  bool warned = false;
  for (const auto& l : log)
    warned |= l.find("skipping a damaged checkpoint") != std::string::npos &&
              l.find("ckpt_step000006") != std::string::npos && l.find("checksum") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_EQ(read_bytes(dir / "dmg" / "model_step000008.safetensors"),
            read_bytes(dir / "ref" / "model_step000008.safetensors"));
  // The steps after the older checkpoint are trained again: the reference run's losses,
  // and the log holds each step once (the lines of steps 4-5 the damaged run wrote are cut).
  ASSERT_EQ(r.train_losses.size(), 4u);
  for (size_t i = 0; i < r.train_losses.size(); ++i)
    EXPECT_EQ(r.train_losses[i], ref.train_losses[4 + i]) << "step " << 4 + i;
  EXPECT_NE(metrics_before.find("\"step\":5,"), std::string::npos) << "the damaged run logged step 5";
  EXPECT_EQ(metrics_without_times(dir / "dmg" / "metrics.jsonl"),
            metrics_without_times(dir / "ref" / "metrics.jsonl"));
  // The damaged checkpoint was replaced by a good one at the same step.
  EXPECT_NO_THROW(read_checkpoint(newest.string()));
}

TEST_F(Resume, TruncatedForeignAndMissingCheckpointsGiveClearErrors) {
  TrainConfig c = config("bad");
  c.save_every = 2;
  c.stop_after = 2;
  train_run(c);
  const fs::path ck = dir / "bad" / "ckpt_step000002";
  const std::string state = read_bytes(ck / "state.safetensors");
  const std::string meta = read_bytes(ck / "meta.json");
  auto expect_error = [&](const std::string& what, const std::vector<std::string>& words) {
    try {
      read_checkpoint(ck.string());
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      for (const auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << what << ": " << e.what();
    }
  };
  write_bytes(ck / "state.safetensors", state.substr(0, state.size() - 100));
  expect_error("truncated state", {"state.safetensors", "truncated", "older checkpoint"});
  write_bytes(ck / "state.safetensors", state);
  write_bytes(ck / "meta.json", meta.substr(0, meta.size() / 2));
  expect_error("cut meta.json", {"meta.json", "not valid JSON"});
  write_bytes(ck / "meta.json", "{\"hello\": 1}");
  expect_error("foreign meta.json", {"not a speedrun checkpoint"});
  fs::remove(ck / "meta.json");
  expect_error("no meta.json", {"no meta.json"});
  write_bytes(ck / "meta.json", meta);
  EXPECT_NO_THROW(read_checkpoint(ck.string()));

  // Resume when every checkpoint is broken: a clear error, and nothing on disk changes.
  write_bytes(ck / "state.safetensors", state.substr(0, 64));
  const std::string metrics = read_bytes(dir / "bad" / "metrics.jsonl");
  c.stop_after = 0;
  c.resume = (dir / "bad").string();
  try {
    train_run(c);
    ADD_FAILURE() << "resumed from a truncated checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no complete checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(dir / "bad" / "metrics.jsonl"), metrics);
  EXPECT_EQ(read_bytes(ck / "state.safetensors"), state.substr(0, 64));
  // A weights file or an empty directory is not a checkpoint.
  c.resume = (dir / "bad" / "model_step000000.safetensors").string();
  EXPECT_THROW(train_run(c), Error);
  fs::create_directories(dir / "empty");
  c.resume = (dir / "empty").string();
  try {
    train_run(c);
    ADD_FAILURE() << "resumed from an empty directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--save-every"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- config and data checks

TEST_F(Resume, ConfigMismatchListsEveryDifference) {
  TrainConfig c = config("cfg");
  c.save_every = 2;
  c.stop_after = 2;
  train_run(c);
  const std::string metrics = read_bytes(dir / "cfg" / "metrics.jsonl");
  TrainConfig d = c;
  d.stop_after = 0;
  d.resume = (dir / "cfg").string();
  d.schedule.steps = 10;
  d.seq_len = 512;
  d.val_tokens = 1024;
  d.optim.muon_lr = 0.04;
  d.save_every = 3;       // may differ
  try {
    train_run(d);
    ADD_FAILURE() << "resumed with another config";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* k : {"--steps: checkpoint 8, now 10", "--seq-len: checkpoint 256, now 512",
                          "--muon-lr: checkpoint 0.05, now 0.04", "--val-tokens"})
      EXPECT_NE(m.find(k), std::string::npos) << k << " missing in: " << m;
    size_t lines = 0;  // exactly the four settings that differ and must not
    for (size_t at = m.find("\n  --"); at != std::string::npos; at = m.find("\n  --", at + 1))
      ++lines;
    EXPECT_EQ(lines, 4u) << m;
    EXPECT_EQ(m.find("--threads"), std::string::npos) << m;
    EXPECT_EQ(m.find("--save-every"), std::string::npos) << m;
  }
  EXPECT_EQ(read_bytes(dir / "cfg" / "metrics.jsonl"), metrics);
  // Other training data.
  d = c;
  d.stop_after = 0;
  d.resume = (dir / "cfg").string();
  auto other = write_synthetic_shards((dir / "other").string(), 40000, 3000, 128, 0, 5);
  std::vector<std::string> tr;
  for (auto& f : other)
    if (f.find("_train_") != std::string::npos) tr.push_back(f);
  CpuBackend be(2);
  Trainer t(be, d, tr, val);
  t.log = [](const std::string&) {};
  try {
    t.run();
    ADD_FAILURE() << "resumed on other shards";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("same training data"), std::string::npos) << e.what();
  }
}

// A checkpoint whose config holds keys that are no longer settings ("threads", "rank",
// "world" of older versions) resumes: they are neither read nor compared.
TEST_F(Resume, OlderCheckpointsKeysThatAreNoSettingsDoNotStopAResume) {
  TrainConfig c = config("old");
  c.save_every = 4;
  c.stop_after = 4;
  train_run(c);
  const fs::path meta = dir / "old" / "ckpt_step000004" / "meta.json";
  auto j = nlohmann::json::parse(read_bytes(meta));
  j["config"]["threads"] = 2;
  j["config"]["rank"] = 0;
  j["config"]["world"] = 1;
  write_bytes(meta, j.dump());
  c.stop_after = 0;
  c.resume = (dir / "old").string();
  const TrainResult r = train_run(c);
  EXPECT_EQ(r.start_step, 4);
  EXPECT_TRUE(fs::exists(dir / "old" / "model_step000008.safetensors"));
}

TEST(ConfigIo, RoundTripsEveryField) {
  TrainConfig c = preset_config("previous-record");
  c.optim.ns_bf16 = true;
  c.dtype = PrecisionChoice::FP64;
  c.keep = 3;
  c.train_glob = "a/*.bin";
  c.optim.muon_lr = 0.1 + 0.2;  // not a short decimal
  const auto j = config_to_json(c);
  const TrainConfig d = config_from_json(j, "test");
  EXPECT_EQ(config_to_json(d), j);
  EXPECT_EQ(d.optim.muon_lr, c.optim.muon_lr);
  EXPECT_TRUE(config_differences(j, config_to_json(d)).empty());
  // Flags given on the command line override the checkpoint; the rest come from it.
  auto flags = config_to_json(preset_config("tiny"));
  flags["out"] = "elsewhere";
  flags["resume"] = "runs/x";
  const auto m = merge_resume_config(j, flags, {"out"});
  EXPECT_EQ(m["out"], "elsewhere");
  EXPECT_EQ(m["resume"], "runs/x");
  EXPECT_EQ(m["steps"], 1875);
  EXPECT_THROW(config_from_json(nlohmann::json{{"steps", "many"}}, "meta.json"), Error);
}

TEST(ConfigIo, ValuesMustHoldTheSettingsTypeAndFitIt) {
  // nlohmann's get<> would convert these (1e30 to int64 with undefined behaviour).
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"steps", 1e30},
                                                           {"steps", 2.5},
                                                           {"steps", true},
                                                           {"steps", 18446744073709551615u},
                                                           {"eot", 4294967297},
                                                           {"seed", -1},
                                                           {"overwrite", 1},
                                                           {"muon-lr", "0.1"}}) {
    SCOPED_TRACE(key + " = " + value.dump());
    try {
      config_from_json(nlohmann::json{{key, value}}, "dir/meta.json");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dir/meta.json: config key '" + key + "'"),
                std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(config_from_json(nlohmann::json{{"muon-lr", 1}}, "m").optim.muon_lr, 1.0);
  EXPECT_EQ(config_from_json(nlohmann::json{{"seed", 18446744073709551615u}}, "m").seed,
            18446744073709551615u);
}

TEST(CheckpointMeta, DamagedFieldsAreErrorsNamingTheCheckpoint) {
  nlohmann::json good = {
      {"format", "speedrun-checkpoint"}, {"version", 1}, {"step", 4}, {"optimizer_steps", 4},
      {"loaders", {{{"shard", 0}, {"pos", 64}}}}, {"world", 1}, {"run_id", "r"},
      {"log", {{"train_ms", 1.5}, {"timed_steps", 0}}}, {"config", nlohmann::json::object()},
      {"train_shards", {{{"file", "a.bin"}, {"tokens", 100}}}},
      {"files", {{"model.safetensors", {{"bytes", 8}, {"checksum", "00"}}},
                 {"state.safetensors", {{"bytes", 8}, {"checksum", "00"}}}}}};
  const CheckpointMeta m = parse_checkpoint_meta(good.dump(), "ck");
  EXPECT_EQ(m.loaders[0].pos, 64);
  EXPECT_EQ(m.files.at("state.safetensors").bytes, 8u);
  EXPECT_EQ(m.numerics, "");  // older checkpoints do not record it
  // Each once let a json type_error escape or converted a value with undefined behaviour.
  const std::vector<std::pair<nlohmann::json::json_pointer, nlohmann::json>> bad = {
      {"/version"_json_pointer, {{"a", 1}}},
      {"/format"_json_pointer, 7},
      {"/world"_json_pointer, "one"},
      {"/world"_json_pointer, 0},
      {"/step"_json_pointer, -1},
      {"/step"_json_pointer, 1.5},
      {"/loaders/0/pos"_json_pointer, 4.9e24},
      {"/loaders"_json_pointer, {{"x", {{"shard", 0}, {"pos", 0}}}}},
      {"/log/train_ms"_json_pointer, "slow"},
      {"/config"_json_pointer, 5},
      {"/files/model.safetensors/bytes"_json_pointer, -8},
      {"/train_shards/0/tokens"_json_pointer, 18446744073709551615u},
      {"/numerics"_json_pointer, 2},
  };
  for (const auto& [where, value] : bad) {
    nlohmann::json j = good;
    j[where] = value;
    SCOPED_TRACE(where.to_string() + " = " + value.dump());
    try {
      parse_checkpoint_meta(j.dump(), "runs/x/ckpt_step000004");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("checkpoint runs/x/ckpt_step000004"), std::string::npos)
          << e.what();
    }
  }
}

TEST(CheckpointMeta, ChecksumOfAnEmptyFileIsDefined) {
  const fs::path dir = fs::temp_directory_path() / ("speedrun_cksum_" + std::to_string(getpid()));
  fs::create_directories(dir);
  write_bytes(dir / "empty", "");
  write_bytes(dir / "one", std::string(1, '\0'));
  EXPECT_EQ(file_checksum((dir / "empty").string()), file_checksum((dir / "empty").string()));
  EXPECT_NE(file_checksum((dir / "empty").string()), file_checksum((dir / "one").string()));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- through the binary

// The checkpoint records what decides a result's bits beyond its inputs (the device, the
// CPU's threads); a resume on other threads goes on, saying it will not be bit-identical.
TEST_F(Resume, ResumeOnOtherThreadsSaysItIsNotBitIdentical) {
  TrainConfig c = config("threads");
  c.save_every = 4;
  c.stop_after = 4;
  train_run(c, nullptr, 2);
  EXPECT_EQ(read_checkpoint((dir / "threads" / "ckpt_step000004").string()).numerics,
            "cpu, 2 threads");
  c.stop_after = 0;
  c.resume = (dir / "threads").string();
  std::vector<std::string> log;
  const TrainResult r = train_run(c, &log, 1);
  EXPECT_EQ(r.train_losses.size(), 4u);
  bool said = false;
  for (const auto& l : log)
    said |= l.find("resume: the checkpoint was computed on cpu, 2 threads, this run on cpu, 1 "
                   "thread:") == 0 && l.find("last bits") != std::string::npos;
  EXPECT_TRUE(said);
}

// A training shard prepared again under the same name and size (another tokenizer, another
// order) would resume silently on other data: the checkpoint's fingerprint of each shard
// (16 samples of 4 KiB) refuses it, naming the shard; the same data resumes.
TEST_F(Resume, AShardWithOtherContentUnderTheSameNameIsRefused) {
  TrainConfig c = config("data_changed");
  c.save_every = 4;
  c.stop_after = 4;
  train_run(c);
  const CheckpointMeta m = read_checkpoint((dir / "data_changed" / "ckpt_step000004").string());
  ASSERT_EQ(m.train_shards.size(), train.size());
  EXPECT_EQ(m.train_shards[0].sample_hash, shard_sample_hash(train[0]));
  EXPECT_EQ(m.train_shards[0].sample_hash.size(), 16u);
  // The same count of other tokens: one token changed near the end, in the last sample.
  const std::string kept = read_bytes(train[0]);
  std::string changed = kept;
  changed[changed.size() - 2] ^= 1;
  write_bytes(train[0], changed);
  EXPECT_NE(shard_sample_hash(train[0]), m.train_shards[0].sample_hash);
  c.stop_after = 0;
  c.resume = (dir / "data_changed").string();
  try {
    train_run(c);
    ADD_FAILURE() << "resumed on a changed shard";
  } catch (const Error& e) {
    const std::string w = e.what();
    for (const std::string& piece :
         std::vector<std::string>{fs::path(train[0]).filename().string(), "other content",
                                  "sample hash", "resume with the data the run was trained on"})
      EXPECT_NE(w.find(piece), std::string::npos) << piece << " in: " << w;
  }
  write_bytes(train[0], kept);
  EXPECT_EQ(train_run(c).train_losses.size(), 4u);
}

TEST_F(Resume, CommandLineResumeTakesTheCheckpointsConfig) {
  const std::string bin = SPEEDRUN_BINARY;
  const std::string data = " --train '" + (dir / "data" / "synthetic_train_*.bin").string() +
                           "' --val '" + (dir / "data" / "synthetic_val_*.bin").string() + "'";
  const std::string run = (dir / "cli").string();
  auto r = run_shell(bin + " train" + data +
                   " --layers 2 --heads 2 --head-dim 16 --vocab 128 --eot 0 --seq-len 128 --batch 2"
                   " --window-end 128"
                   " --steps 6 --cooldown 2 --val-every 3 --val-tokens 512 --threads 2 --no-sample"
                   " --save-every 3 --stop-after 3 --out " + run);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  // No flag but --resume: everything else from the checkpoint.
  r = run_shell(bin + " train --resume " + run + " --no-sample");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step:6/6 val_loss:"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(fs::path(run) / "model_step000006.safetensors"));
  // A flag that changes the run: refused, listing it.
  r = run_shell(bin + " train --resume " + (fs::path(run) / "ckpt_step000003").string() +
              " --batch 4 --val-tokens 1024 --no-sample");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--batch: checkpoint 2, now 4"), std::string::npos) << r.out;
}

// ---------------------------------------------------------------- export and --init

TEST_F(Resume, ExportRoundTripsThroughInit) {
  TrainConfig c = config("exp");
  c.save_every = 4;
  train_run(c);
  const std::string bin = SPEEDRUN_BINARY;
  const fs::path ck = dir / "exp" / "ckpt_step000008";
  const std::string bf = (dir / "w_bf16.safetensors").string(), fp = (dir / "w_fp32.safetensors").string();
  auto r = run_shell(bin + " export " + ck.string() + " --dtype bf16 -o " + bf);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("load_state_dict"), std::string::npos) << r.out;
  r = run_shell(bin + " export " + (dir / "exp").string() + " --dtype fp32 -o " + fp);
  ASSERT_EQ(r.code, 0) << r.out;

  // fp32: the checkpoint's values exactly; bf16: each rounded to nearest even.
  const auto src = SafetensorsFile::open((ck / "model.safetensors").string());
  const auto f32 = SafetensorsFile::open(fp), b16 = SafetensorsFile::open(bf);
  EXPECT_EQ(b16.names(), src.names());
  EXPECT_EQ(b16.metadata().at("layers"), "2");
  size_t changed = 0;
  for (const auto& n : src.names()) {
    const auto s = src.get(n), x = f32.get(n), y = b16.get(n);
    ASSERT_EQ(x.dtype, DType::F32);
    ASSERT_EQ(y.dtype, DType::BF16) << n;
    ASSERT_EQ(y.shape, s.shape) << n;
    EXPECT_EQ(0, std::memcmp(x.data, s.data, s.bytes)) << n;
    for (size_t k = 0; k < s.bytes / 4; ++k) {
      const float v = static_cast<const float*>(s.data)[k];
      ASSERT_EQ(static_cast<const uint16_t*>(y.data)[k], bf16_bits(v)) << n << "[" << k << "]";
      changed += round_bf16(v) != v;
    }
  }
  EXPECT_GT(changed, 0u);  // trained weights are not all bf16 already

  // --init with the bf16 file: step 0's loss is the loss of the bf16-rounded weights.
  TrainConfig d = config("init");
  d.init = bf;
  d.schedule.steps = 1;
  d.schedule.cooldown = 1;
  d.val_every = 0;
  const TrainResult ri = train_run(d);
  CpuBackend be(2);
  Parameters p(be, d.model, DType::F32);
  p.load(bf);
  DataLoader loader(train, d.batch, d.seq_len, 0, 1, d.model.vocab);
  std::vector<int32_t> x(size_t(d.batch * d.seq_len)), y(x.size());
  loader.next_batch(x.data(), y.data());
  GPT model(be, p, d.batch, d.seq_len);
  ASSERT_EQ(ri.train_losses.size(), 1u);
  EXPECT_EQ(ri.train_losses[0], model.forward_loss(x.data(), y.data(), 64));

  r = run_shell(bin + " export " + ck.string() + " --dtype fp16 -o " + bf);
  EXPECT_NE(r.code, 0);
  r = run_shell(bin + " export " + (dir / "nothing").string() + " -o " + bf);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("nothing"), std::string::npos) << r.out;
}

// The PyTorch reference (tools/reference) loads the bf16 export as its state_dict with
// strict=True and computes the same loss as speedrun on the same tokens.
TEST_F(Resume, ExportLoadsIntoThePyTorchReference) {
  if (run_shell("/usr/bin/python3 -c 'import torch, numpy'").code != 0)
    GTEST_SKIP() << "python3-torch is not installed (scripts/setup.sh installs it): the export "
                    "was not loaded into PyTorch";
  TrainConfig c = config("torch");
  c.save_every = 8;
  train_run(c);
  const std::string bf = (dir / "w.safetensors").string();
  auto r = run_shell(std::string(SPEEDRUN_BINARY) + " export " + (dir / "torch").string() +
                   " --dtype bf16 -o " + bf);
  ASSERT_EQ(r.code, 0) << r.out;
  // The loss of the bf16 weights (loaded as fp32) on 128 tokens under window 256.
  CpuBackend be(2);
  Parameters p(be, c.model, DType::F32);
  p.load(bf);
  DataLoader loader(val, 1, 128, 0, 1, c.model.vocab);
  std::vector<int32_t> x(128), y(128);
  loader.next_batch(x.data(), y.data());
  GPT model(be, p, 1, 128);
  const double ours = model.forward_loss(x.data(), y.data(), 256);
  std::string xs, ys;
  for (size_t i = 0; i < 128; ++i) xs += (i ? "," : "") + std::to_string(x[i]), ys += (i ? "," : "") + std::to_string(y[i]);
  const fs::path script = dir / "load.py";
  write_bytes(script,
              "import sys, torch\n"
              "sys.path.insert(0, '" + std::string(SPEEDRUN_SOURCE_DIR) + "/tools/reference')\n"
              "import data, model as m\n"
              "sd, meta = data.load_safetensors('" + bf + "')\n"
              "cfg = m.GPTConfig(layers=int(meta['layers']), heads=int(meta['heads']),\n"
              "                  head_dim=int(meta['head_dim']), vocab=int(meta['vocab']), eot=int(meta['eot']))\n"
              "net = m.GPT(cfg)\n"
              "net.load_state_dict(sd, strict=True)\n"
              "x = torch.tensor([" + xs + "]); y = torch.tensor([" + ys + "])\n"
              "with torch.no_grad():\n"
              "    print('loss %.8f' % net(x, y, 256).item())\n");
  r = run_shell("/usr/bin/python3 " + script.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto at = r.out.find("loss ");
  ASSERT_NE(at, std::string::npos) << r.out;
  // fp32 on both sides, different summation orders: agreement to ~1e-6 relative.
  EXPECT_NEAR(std::stod(r.out.substr(at + 5)), ours, 1e-4) << r.out;
}
