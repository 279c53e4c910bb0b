// speedrun sweep: runs every (variant, seed) as a train child and skips them when rerun;
// a stopped or interrupted run resumes and ends as an uninterrupted one; Ctrl-C stops the
// children with checkpoints and a rerun continues; a failing run does not stop the others;
// the summary's statistics against values computed by hand from hand-written metrics; bad
// specs refused naming the line and the key before anything runs; the report of a sweep
// holds its table and one band per variant. Micro runs of a few steps on synthetic shards.
#include <gtest/gtest.h>

#include <signal.h>

#include <cmath>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "core/child_process.h"
#include "core/error.h"
#include "fixtures.h"
#include "run_command.h"
#include "train/checkpoint.h"
#include "train/report.h"
#include "train/sweep.h"
#include "train/sweep_spec.h"
#include "train/sweep_summary.h"

using namespace speedrun;
using namespace speedrun::test;
using Json = nlohmann::ordered_json;

namespace {

class Sweep : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::make_unique<TempDir>(std::string("sweep_") +
                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    synthetic_shards(*dir / "data", 30000, 3000);
  }
  void TearDown() override {
    if (HasFailure()) dir->keep = true;
  }

  // The micro run of fixtures.h's micro_run as flags: 8 steps of 2 x 256 tokens, window
  // 64 -> 256, validation every 4 steps; one thread per run.
  Json micro_flags() const {
    return Json{{"train", (*dir / "data" / "synthetic_train_*.bin").string()},
                {"val", (*dir / "data" / "synthetic_val_*.bin").string()},
                {"layers", 2}, {"heads", 2}, {"head-dim", 16}, {"vocab", 128}, {"eot", 0},
                {"seq-len", 256}, {"batch", 2}, {"steps", 8}, {"cooldown", 4},
                {"window-end", 256}, {"momentum-warmup", 6}, {"val-every", 4},
                {"val-tokens", 512}};
  }
  Json spec(Json variants, Json seeds, Json flags = nullptr) const {
    return Json{{"preset", "tiny"},
                {"flags", flags.is_null() ? micro_flags() : flags},
                {"variants", variants},
                {"seeds", seeds},
                {"out", (*dir / "out").string()},
                {"parallel", 2},
                {"threads", 2}};
  }
  std::string write_spec(const Json& j, const std::string& name = "spec.json") const {
    const fs::path p = *dir / name;
    write_bytes(p, j.dump(2) + "\n");
    return p.string();
  }
  fs::path run_dir(const std::string& variant, int seed) const {
    return *dir / "out" / variant / ("seed" + std::to_string(seed));
  }
  std::unique_ptr<TempDir> dir;
};

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The windows a run's metrics record, in order.
std::vector<int> windows(const fs::path& metrics) {
  std::vector<int> w;
  for (const auto& line : metrics_without_times(metrics)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("train_loss")) w.push_back(j["window"].get<int>());
  }
  return w;
}

}  // namespace

// ---------------------------------------------------------------- running

TEST_F(Sweep, TwoVariantsTwoSeedsRunFourRunsAndARerunSkipsThem) {
  const Json variants = Json::array({Json{{"name", "warmup"}},
                                     Json{{"name", "fixed"}, {"flags", {{"window-schedule", "fixed"}}}}});
  const std::string file = write_spec(spec(variants, Json::array({1, 2})));
  Outcome r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "4 to start")) << r.out;
  for (const char* v : {"warmup", "fixed"})
    for (int seed : {1, 2}) {
      const fs::path d = run_dir(v, seed);
      EXPECT_TRUE(fs::exists(d / "model_step000008.safetensors")) << d;
      EXPECT_TRUE(fs::exists(d / "train.log")) << d;
      EXPECT_TRUE(metrics_complete(read_metrics((d / "metrics.jsonl").string()), 8)) << d;
      EXPECT_FALSE(list_checkpoints(d.string()).empty()) << "no --save-every given to " << d;
    }
  // Each run is what its flags say: the variant's window schedule, the seed's initialisation.
  EXPECT_EQ(windows(run_dir("fixed", 1) / "metrics.jsonl"), std::vector<int>(8, 256));
  EXPECT_EQ(windows(run_dir("warmup", 1) / "metrics.jsonl").front(), 64);
  EXPECT_NE(metrics_without_times(run_dir("warmup", 1) / "metrics.jsonl"),
            metrics_without_times(run_dir("warmup", 2) / "metrics.jsonl"));
  // The table, printed and written.
  EXPECT_TRUE(has(r.out, "final val loss")) << r.out;
  const auto summary = nlohmann::json::parse(read_bytes(*dir / "out" / "summary.json"));
  ASSERT_EQ(summary["variants"].size(), 2u);
  EXPECT_EQ(summary["variants"][0]["name"], "warmup");
  EXPECT_EQ(summary["variants"][1]["finished"], 2);
  EXPECT_EQ(summary["variants"][1]["final_val_loss"]["n"], 2);
  EXPECT_TRUE(has(read_bytes(*dir / "out" / "summary.md"), "| fixed | 2/2 |"));
  EXPECT_EQ(nlohmann::json::parse(read_bytes(*dir / "out" / "sweep.json"))["runs"].size(), 4u);

  // Rerun: all four skipped, nothing rewritten.
  const std::string before = read_bytes(run_dir("fixed", 2) / "metrics.jsonl");
  r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "(4 finished)")) << r.out;
  EXPECT_FALSE(has(r.out, "start ")) << r.out;
  EXPECT_EQ(read_bytes(run_dir("fixed", 2) / "metrics.jsonl"), before);

  // The report of the sweep's directory: the table and one band per variant and loss series.
  const std::string html_file = (*dir / "report.html").string();
  r = run_cli("report " + (*dir / "out").string() + " -o " + html_file);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string html = read_bytes(html_file);
  EXPECT_TRUE(has(html, "<table class=\"summary\">")) << html.substr(0, 3000);
  EXPECT_TRUE(has(html, "final val loss"));
  EXPECT_TRUE(has(html, "</span>fixed</td><td>2/2</td>"));
  for (const char* series : {"train_loss", "val_loss", "train_loss_time", "val_loss_time"})
    for (int v : {0, 1})
      EXPECT_EQ(count(html, fmt::format("data-variant=\"{}\" data-series=\"{}\" data-band=\"min-max\"",
                                        v, series)), 1u)
          << series << " of variant " << v;
  EXPECT_EQ(count(html, "data-band="), 8u);
  EXPECT_FALSE(has(html, "data-variant=\"2\""));
  EXPECT_FALSE(has(html, "data-run="));  // runs are drawn by variant, not one line each

  // The same runs given as run directories are grouped the same way, by their parent.
  r = run_cli("report " + run_dir("warmup", 1).string() + " " + run_dir("warmup", 2).string() +
              " " + run_dir("fixed", 1).string() + " -o " + html_file);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string html2 = read_bytes(html_file);
  EXPECT_EQ(count(html2, "data-band="), 8u);
  EXPECT_TRUE(has(html2, "</span>warmup</td><td>2/2</td>"));
  EXPECT_TRUE(has(html2, "</span>fixed</td><td>1/1</td>"));

  // A spec whose settings changed is refused before anything runs, naming what changed.
  Json changed = spec(variants, Json::array({1, 2}));
  changed["flags"]["steps"] = 10;
  r = run_cli("sweep " + write_spec(changed));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "--steps: 8 before, 10 now")) << r.out;
  EXPECT_EQ(read_bytes(run_dir("fixed", 2) / "metrics.jsonl"), before);
}

// A run stopped by the spec's stop-after waits until the spec stops asking; a run killed
// after a checkpoint (lines past it in its metrics) resumes; both end exactly as the same
// run done in one go.
TEST_F(Sweep, StoppedAndInterruptedRunsResumeToTheUninterruptedResult) {
  Json variants = Json::array({Json{{"name", "stopped"}, {"flags", {{"stop-after", 4}}}},
                               Json{{"name", "killed"}, {"flags", {{"save-every", 3}}}},
                               Json{{"name", "whole"}}});
  Json s = spec(variants, Json::array({7}));
  s["parallel"] = 3;
  s["threads"] = 3;  // one thread each, as the killed run's rerun below
  const std::string file = write_spec(s);
  Outcome r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "paused stopped/seed7 at step 4")) << r.out;
  EXPECT_TRUE(fs::exists(run_dir("stopped", 7) / "ckpt_step000004"));
  EXPECT_FALSE(fs::exists(run_dir("stopped", 7) / "model_step000008.safetensors"));
  // The same spec again: still paused, nothing runs.
  r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "1 paused at stop-after")) << r.out;
  EXPECT_FALSE(has(r.out, "resume stopped")) << r.out;

  // "killed": as if killed at step 7, after its checkpoint at step 6: its final weights
  // and last checkpoint gone, metrics lines past step 6 and one cut mid-write.
  const fs::path k = run_dir("killed", 7);
  fs::remove(k / "model_step000008.safetensors");
  fs::remove_all(k / "ckpt_step000008");
  const std::string whole_metrics = read_bytes(k / "metrics.jsonl");
  const size_t step7 = whole_metrics.find("\"step\":7,\"train_loss\"");
  ASSERT_NE(step7, std::string::npos) << whole_metrics;
  const size_t line7 = whole_metrics.rfind('\n', step7) + 1;
  write_bytes(k / "metrics.jsonl", whole_metrics.substr(0, line7 + 12));

  variants[0]["flags"] = Json::object();
  s["variants"] = variants;
  r = run_cli("sweep " + write_spec(s));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "resume stopped/seed7 from step 4")) << r.out;
  EXPECT_TRUE(has(r.out, "resume killed/seed7 from step 6")) << r.out;
  EXPECT_TRUE(has(r.out, "(1 finished, 2 to resume)")) << r.out;
  const auto whole = metrics_without_times(run_dir("whole", 7) / "metrics.jsonl");
  EXPECT_EQ(metrics_without_times(run_dir("stopped", 7) / "metrics.jsonl"), whole);
  EXPECT_EQ(metrics_without_times(k / "metrics.jsonl"), whole);
  EXPECT_TRUE(fs::exists(k / "model_step000008.safetensors"));
  EXPECT_EQ(nlohmann::json::parse(read_bytes(*dir / "out" / "summary.json"))["variants"][0]["finished"], 1);
}

// Ctrl-C: the sweep forwards the signal once, each child stops after its step with a
// checkpoint, the sweep says how to continue; running it again finishes the run.
TEST_F(Sweep, InterruptStopsTheRunsWithACheckpointAndARerunFinishes) {
  Json flags = micro_flags();
  flags["steps"] = 200;
  flags["cooldown"] = 50;
  flags["val-every"] = 100;
  Json s = spec(Json::array({Json{{"name", "long"}}}), 1, flags);
  s["parallel"] = 1;
  s["threads"] = 1;
  const std::string file = write_spec(s);
  const fs::path metrics = run_dir("long", 0) / "metrics.jsonl";
  const fs::path log = *dir / "sweep.log";
  ChildProcess sweep = ChildProcess::start({SPEEDRUN_BINARY, "sweep", file}, log.string());
  // Wait for the run's third step (the guard only keeps a broken build from hanging).
  for (int i = 0; i < 6000 && !sweep.poll(); ++i) {
    if (fs::exists(metrics) && count(read_bytes(metrics), "train_loss") >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(sweep.poll()) << read_bytes(log);
  sweep.signal(SIGINT);
  sweep.wait();
  const std::string out = read_bytes(log);
  EXPECT_EQ(sweep.exit_code(), 128 + SIGINT) << out;
  EXPECT_TRUE(has(out, "stopped long/seed0 at step")) << out;
  EXPECT_TRUE(has(out, "Continue with: speedrun sweep " + file)) << out;
  EXPECT_FALSE(list_checkpoints(run_dir("long", 0).string()).empty());
  EXPECT_FALSE(fs::exists(run_dir("long", 0) / "model_step000200.safetensors"));
  EXPECT_TRUE(has(read_bytes(run_dir("long", 0) / "train.log"), "stopped after step")) << "the child "
      "stopped gracefully (SIGINT once), not at once";

  Outcome r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "resume long/seed0 from step")) << r.out;
  EXPECT_TRUE(metrics_complete(read_metrics(metrics.string()), 200));
}

// A run that fails does not stop the others; the sweep names it and exits 1.
TEST_F(Sweep, AFailingRunLeavesTheOthersAndIsNamed) {
  // More validation tokens than the validation shards hold: found by the run, not the spec.
  const Json variants = Json::array({Json{{"name", "bad"}, {"flags", {{"val-tokens", 512 * 1000}}}},
                                     Json{{"name", "good"}}});
  Outcome r = run_cli("sweep " + write_spec(spec(variants, Json::array({0}))));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "FAILED bad/seed0 (exit status 1): error: --val-tokens")) << r.out;
  EXPECT_TRUE(has(r.out, "1 run(s) failed: bad/seed0")) << r.out;
  EXPECT_TRUE(fs::exists(run_dir("good", 0) / "model_step000008.safetensors"));
}

// A flag given as text in the spec is read by the run as the sweep read it when it checked
// and recorded the config: "010" is ten steps in both (the run's command line once read it
// as octal eight).
TEST_F(Sweep, FlagsGivenAsTextRunAsTheSweepRecordsThem) {
  Json flags = micro_flags();
  flags["steps"] = "010";
  flags["cooldown"] = "+4";
  const std::string file = write_spec(spec(Json::array({Json{{"name", "text"}}}), Json::array({0}), flags));
  const Outcome r = run_cli("sweep " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto record = nlohmann::json::parse(read_bytes(*dir / "out" / "sweep.json"));
  EXPECT_EQ(record["runs"][0]["steps"], 10);
  EXPECT_TRUE(metrics_complete(read_metrics((run_dir("text", 0) / "metrics.jsonl").string()), 10))
      << read_bytes(run_dir("text", 0) / "metrics.jsonl");
  EXPECT_TRUE(fs::exists(run_dir("text", 0) / "model_step000010.safetensors"));
}

// ---------------------------------------------------------------- the summary, by hand

namespace {

// A run's metrics: validations at `val_steps` with `losses`, training steps 0..trained-1
// of `ms` each; final weights when finished.
void write_run(const fs::path& d, const std::vector<int>& val_steps,
               const std::vector<double>& losses, int trained, double ms, bool finished) {
  fs::create_directories(d);
  std::string text;
  size_t v = 0;
  for (int s = 0; s <= trained; ++s) {
    if (v < val_steps.size() && val_steps[v] == s)
      text += fmt::format("{{\"step\":{},\"val_loss\":{},\"window\":64}}\n", s, losses[v++]);
    if (s < trained)
      text += fmt::format("{{\"step\":{},\"train_loss\":5.0,\"lr\":1,\"window\":64,\"momentum\":0.9,"
                          "\"ms\":{}}}\n", s, ms);
  }
  write_bytes(d / "metrics.jsonl", text);
  write_bytes(d / "model_step000000.safetensors", "");
  if (finished) write_bytes(d / "model_step000010.safetensors", "");
}

}  // namespace

TEST_F(Sweep, SummaryStatisticsMatchHandComputedValues) {
  const fs::path out = *dir / "out";
  // Variant A, 10 steps, validations at 0, 5, 10; target 3.5.
  //   seed 1: 5.0, 4.0, 3.0 at 100 ms/step: crosses between 5 and 10 at f = 0.5: step 7.5,
  //           time 500 + 0.5 * 500 = 750 ms
  //   seed 2: 5.0, 3.8, 3.2 at 200 ms/step: f = 0.3 / 0.6 = 0.5: step 7.5, 1500 ms
  //   seed 3: 5.0, 3.4, 3.1 at 100 ms/step: between 0 and 5, f = 1.5 / 1.6: step 4.6875,
  //           468.75 ms
  write_run(out / "A" / "seed1", {0, 5, 10}, {5.0, 4.0, 3.0}, 10, 100, true);
  write_run(out / "A" / "seed2", {0, 5, 10}, {5.0, 3.8, 3.2}, 10, 200, true);
  write_run(out / "A" / "seed3", {0, 5, 10}, {5.0, 3.4, 3.1}, 10, 100, true);
  // Variant B: seed 1 finished above the target, seed 2 stopped at step 6, seed 3 never ran.
  write_run(out / "B" / "seed1", {0, 5, 10}, {5.0, 4.5, 4.0}, 10, 100, true);
  write_run(out / "B" / "seed2", {0, 5}, {5.0, 3.0}, 6, 100, false);

  std::vector<SweepRun> runs;
  for (const char* v : {"A", "B"})
    for (int seed : {1, 2, 3})
      runs.push_back(load_sweep_run((out / v / ("seed" + std::to_string(seed))).string(), v,
                                    uint64_t(seed), 10, 1000));
  EXPECT_FALSE(runs[4].finished);  // B/seed2: no final weights, metrics stop at step 6
  EXPECT_FALSE(runs[5].finished);
  const SweepSummary s = summarize(runs, 3.5);
  ASSERT_EQ(s.variants.size(), 2u);
  const VariantSummary& a = s.variants[0];
  EXPECT_EQ(a.variant, "A");
  EXPECT_EQ(a.seeds, 3);
  EXPECT_EQ(a.finished, 3);
  EXPECT_EQ(a.reached, 3);
  // Final losses 3.0, 3.2, 3.1: mean 3.1, deviations -0.1, 0.1, 0: sample variance 0.02 / 2.
  EXPECT_NEAR(a.final_val_loss.mean, 3.1, 1e-12);
  ASSERT_TRUE(a.final_val_loss.std);
  EXPECT_NEAR(*a.final_val_loss.std, 0.1, 1e-12);
  // Steps 7.5, 7.5, 4.6875: mean 6.5625, squared deviations 0.87890625 x 2 + 3.515625.
  EXPECT_NEAR(a.steps_to_target.mean, 6.5625, 1e-12);
  EXPECT_NEAR(*a.steps_to_target.std, std::sqrt(5.2734375 / 2), 1e-12);
  // Seconds 0.75, 1.5, 0.46875: mean 0.90625, squared deviations sum to 0.568359375.
  EXPECT_NEAR(a.seconds_to_target.mean, 0.90625, 1e-12);
  EXPECT_NEAR(*a.seconds_to_target.std, std::sqrt(0.568359375 / 2), 1e-12);
  EXPECT_NEAR(a.tokens_to_target.mean, 6562.5, 1e-9);
  ASSERT_TRUE(a.tokens_seen);
  EXPECT_EQ(*a.tokens_seen, 10000.0);  // 10 steps x 1000 tokens
  const VariantSummary& b = s.variants[1];
  EXPECT_EQ(b.finished, 1);
  EXPECT_EQ(b.reached, 0);  // B/seed2 crossed, but only finished runs count
  EXPECT_EQ(b.final_val_loss.n, 1);
  EXPECT_EQ(b.final_val_loss.mean, 4.0);
  EXPECT_FALSE(b.final_val_loss.std);  // no spread from one run

  const auto cells = summary_cells(s);
  ASSERT_EQ(cells.size(), 3u);
  EXPECT_EQ(cells[0], (std::vector<std::string>{"variant", "seeds", "final val loss", "steps to 3.5",
                                                "time to 3.5", "tokens to 3.5", "tokens seen"}));
  EXPECT_EQ(cells[1], (std::vector<std::string>{"A", "3/3", "3.1000 ± 0.1000", "6.6 ± 1.6",
                                                "0.9 ± 0.5 s", "6.56K ± 1.62K", "10.00K"}));
  EXPECT_EQ(cells[2], (std::vector<std::string>{"B", "1/3", "4.0000", "not reached", "not reached",
                                                "not reached", "10.00K"}));

  // Made by one build on one device (or with no run.json): the note warns of nothing.
  EXPECT_EQ(summary_note(s).find("Warning"), std::string::npos) << summary_note(s);
  // Runs of one sweep made by two builds, or on two devices, confound its comparisons: the
  // summary counts each and its note says so.
  auto launched = [&](const char* run, const char* commit, const char* device) {
    std::ofstream(out / run / "run.json")
        << nlohmann::json{{"format", "speedrun-run"}, {"run_id", "1"},
                          {"launches", {{{"step", 0}, {"speedrun", {{"commit", commit}}},
                                         {"device", device}}}}}.dump();
  };
  launched("A/seed1", "0123456789ab", "cpu, 2 threads");
  launched("A/seed2", "0123456789ab", "cpu, 2 threads");
  launched("B/seed1", "ba9876543210", "cuda, NVIDIA H200, sm_90");
  std::vector<SweepRun> mixed;
  for (const char* v : {"A", "B"})
    for (int seed : {1, 2})
      mixed.push_back(load_sweep_run((out / v / ("seed" + std::to_string(seed))).string(), v,
                                     uint64_t(seed), 10, 1000));
  const SweepSummary ms = summarize(mixed, 3.5);
  EXPECT_EQ(ms.commits, (std::vector<std::pair<std::string, int>>{{"0123456789ab", 2}, {"ba9876543210", 1}}));
  EXPECT_EQ(ms.devices.size(), 2u);
  const std::string note = summary_note(ms);
  for (const char* piece : {"made by 2 builds of speedrun (0123456789ab: 2 runs; ba9876543210: 1 run)",
                            "may come from the code", "ran on 2 devices",
                            "cuda, NVIDIA H200, sm_90: 1 run"})
    EXPECT_NE(note.find(piece), std::string::npos) << piece << " in: " << note;
  EXPECT_EQ(summary_json(ms)["commits"]["0123456789ab"], 2);
  for (const char* run : {"A/seed1", "A/seed2", "B/seed1"}) fs::remove(out / run / "run.json");

  // Where the target is met: at the first validation already, or exactly at one.
  MetricsLog m = read_metrics((out / "A" / "seed1" / "metrics.jsonl").string());
  auto c = target_crossing(m, 6.0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->step, 0.0);
  EXPECT_EQ(c->ms, 0.0);
  c = target_crossing(m, 4.0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->step, 5.0);
  EXPECT_EQ(c->ms, 500.0);
  EXPECT_FALSE(target_crossing(m, 2.9));
  EXPECT_EQ(sample_stats({}).n, 0);

  // The same through `speedrun sweep SPEC --summary` on a spec of that shape (10 steps of
  // 2 x 500 tokens), and the files it writes.
  Json flags = {{"steps", 10}, {"cooldown", 4}, {"seq-len", 500}, {"batch", 2},
                {"window-end", 448}, {"val-tokens", 1000}};
  Json sp = spec(Json::array({Json{{"name", "A"}}, Json{{"name", "B"}}}), Json::array({1, 2, 3}), flags);
  sp["target-loss"] = 3.5;
  const Outcome r = run_cli("sweep " + write_spec(sp) + " --summary");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "3.1000 ± 0.1000")) << r.out;
  const auto j = nlohmann::json::parse(read_bytes(out / "summary.json"));
  EXPECT_NEAR(j["variants"][0]["target"]["steps"]["mean"].get<double>(), 6.5625, 1e-12);
  EXPECT_NEAR(j["variants"][0]["target"]["seconds"]["std"].get<double>(), std::sqrt(0.568359375 / 2), 1e-12);
  EXPECT_EQ(j["variants"][1]["runs"][0]["steps_to_target"], nullptr);
  EXPECT_TRUE(has(read_bytes(out / "summary.md"), "| A | 3/3 | 3.1000 ± 0.1000 | 6.6 ± 1.6 |"));

  // The report of these run directories: grouped by variant, the table, the target line.
  const ReportInputs in = load_report_inputs(
      {(out / "A" / "seed1").string(), (out / "A" / "seed2").string(), (out / "A" / "seed3").string(),
       (out / "B" / "seed1").string(), (out / "B" / "seed2").string()});
  EXPECT_TRUE(in.grouped);
  ReportOptions o;
  o.target_loss = 3.5;
  o.summary = summarize(in.records, o.target_loss);
  const std::string html = render_report(in.runs, o);
  EXPECT_TRUE(has(html, "<td>6.6 ± 1.6</td>"));
  EXPECT_TRUE(has(html, "data-target=\"3.5\""));
  EXPECT_EQ(count(html, "data-series=\"val_loss\" data-band=\"min-max\""), 2u);
  // The band spans the runs: variant A's val band at step 10 runs from 3.0 to 3.2, its
  // mean line passes 3.1 there, inside it.
  const std::regex band("data-variant=\"0\" data-series=\"val_loss\" data-band=\"min-max\" d=\"([^\"]*)\"");
  std::smatch mm;
  ASSERT_TRUE(std::regex_search(html, mm, band));
  EXPECT_EQ(count(mm[1].str(), "L") + 1, 6u);  // 3 steps along the top, 3 back along the bottom
}

// ---------------------------------------------------------------- bad specs

namespace {

// The Error parse_sweep_spec throws for `text`, or "" when it accepts it.
std::string spec_error(const std::string& text) {
  try {
    parse_sweep_spec(text, "bad.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string good_spec_with(const std::string& flags_line, const std::string& variant_lines) {
  return "{\n"                                   // 1
         "  \"preset\": \"tiny\",\n"            // 2
         "  \"flags\": {" + flags_line + "},\n"  // 3
         "  \"variants\": [\n"                   // 4
         "    {\"name\": \"a\"}" + std::string(variant_lines.empty() ? "" : ",") + "\n"  // 5
         + variant_lines +                       // 6...
         "  ],\n"
         "  \"seeds\": [0, 1],\n"
         "  \"out\": \"runs/x\"\n"
         "}\n";
}

}  // namespace

TEST(SweepSpec, BadSpecsAreRefusedNamingTheLineAndTheKey) {
  const std::string ok = good_spec_with("\"steps\": 200", "    {\"name\": \"b\", \"flags\": {\"window-schedule\": \"fixed\"}}\n");
  EXPECT_EQ(spec_error(ok), "");
  const SweepSpec s = parse_sweep_spec(ok, "ok.json");
  ASSERT_EQ(s.variants.size(), 2u);
  EXPECT_EQ(s.variants[1].config.schedule.steps, 200);
  EXPECT_EQ(s.variants[1].config.schedule.window_schedule, WindowSchedule::Fixed);
  EXPECT_EQ(s.variants[0].config.schedule.window_schedule, WindowSchedule::Linear);
  EXPECT_EQ(plan_sweep(s).size(), 4u);
  EXPECT_EQ(plan_sweep(s)[3].rel, "b/seed1");

  struct Case {
    std::string text;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      // A syntax error on line 6 (a missing comma between the variants).
      {good_spec_with("", "    {\"name\": \"b\"}\n    {\"name\": \"c\"}\n"),
       {"bad.json line 7", "not valid JSON"}},
      {"{\n  \"preset\": \"tiny\",\n  \"seed\": 3\n}\n", {"bad.json line 3", "unknown key \"seed\""}},
      {good_spec_with("", "    {\"name\": \"b\", \"flags\": {\"windw-end\": 128}}\n"),
       {"bad.json line 6", "\"windw-end\" is not a flag of speedrun train"}},
      {good_spec_with("", "    {\"name\": \"a\"}\n"), {"bad.json line 6", "variant name \"a\" is used twice", "line 5"}},
      {good_spec_with("\"steps\": 20, \"steps\": 30", ""), {"bad.json line 3", "key \"steps\" given twice"}},
      {good_spec_with("\"steps\": \"many\"", ""), {"bad.json line 3", "--steps 'many': not an integer"}},
      {good_spec_with("", "    {\"name\": \"b\", \"flags\": {\"seq-len\": 0}}\n"),
       {"bad.json line 6", "variant \"b\"", "--seq-len 0: must be >= 1"}},
      {good_spec_with("", "    {\"name\": \"b\", \"flags\": {\"warmup\": 250}}\n"),
       {"bad.json line 6", "--warmup 250 + --cooldown 110 exceed --steps 300"}},
      {good_spec_with("\"out\": \"elsewhere\"", ""), {"bad.json line 3", "\"out\" cannot be given in a sweep"}},
      {good_spec_with("\"seed\": 5", ""), {"bad.json line 3", "\"seeds\""}},
      {good_spec_with("\"rope-base\": 100", ""), {"bad.json line 3", "constant of the model"}},
      {good_spec_with("\"steps\": [1]", ""), {"bad.json line 3", "must be a string, a number or true/false"}},
      {good_spec_with("", "    {\"name\": \"../up\"}\n"), {"bad.json line 6", "letters, digits"}},
      {good_spec_with("", "    {\"name\": \"b\", \"flag\": {}}\n"), {"bad.json line 6", "unknown key \"flag\""}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\"}", {"no \"seeds\""}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\",\n \"seeds\": [1, 1]}",
       {"bad.json line 2", "seed 1 is given twice"}},
      {"{\"preset\": \"huge\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\", \"seeds\": 2}",
       {"bad.json line 1", "unknown preset \"huge\""}},
      {"{\"preset\": \"tiny\", \"variants\": [], \"out\": \"x\", \"seeds\": 2}", {"non-empty list"}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\", \"seeds\": 2,\n"
       "\"parallel\": 0}", {"bad.json line 2", "\"parallel\" must be an integer in [1, 10000]"}},
      // Numbers beyond what a sweep plans or an int holds: refused, not planned until the
      // memory runs out, nor cut to another value (2^31 runs at a time read as negative,
      // and no run ever started).
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\",\n\"seeds\": 100000000000}",
       {"bad.json line 2", "\"seeds\" must be a count in [1, 10000]"}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\", \"seeds\": 2,\n"
       "\"parallel\": 2147483648}", {"bad.json line 2", "\"parallel\" must be an integer in [1, 10000]"}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}], \"out\": \"x\", \"seeds\": 2,\n"
       "\"threads\": 4294967297}", {"bad.json line 2", "\"threads\" must be an integer in [0, 65536]"}},
      {"{\"preset\": \"tiny\", \"variants\": [{\"name\": \"a\"}, {\"name\": \"b\"}], \"out\": \"x\",\n"
       "\"seeds\": 5001}", {"2 variants x 5001 seeds are 10002 runs", "at most 10000"}},
      {"[1, 2]", {"a sweep spec is a JSON object"}},
      {"{\"preset\": \"tiny\", \"seeds\": [1e400]}", {"bad.json: not valid JSON", "number overflow"}},
  };
  for (const Case& c : cases) {
    const std::string e = spec_error(c.text);
    EXPECT_NE(e, "") << c.text;
    for (const auto& w : c.words) EXPECT_TRUE(has(e, w)) << "'" << w << "' not in: " << e << "\nspec:\n" << c.text;
  }
}

// Through the binary: an unknown flag in a variant stops the sweep before any run starts.
TEST_F(Sweep, AnUnknownFlagIsRefusedBeforeAnythingRuns) {
  const Json variants = Json::array({Json{{"name", "ok"}},
                                     Json{{"name", "typo"}, {"flags", {{"muon-lrr", 0.1}}}}});
  const Outcome r = run_cli("sweep " + write_spec(spec(variants, Json::array({0}))));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "spec.json line ")) << r.out;
  EXPECT_TRUE(has(r.out, "\"muon-lrr\" is not a flag of speedrun train")) << r.out;
  EXPECT_FALSE(fs::exists(*dir / "out"));
}

// A directory given as the spec, or a file where the sweep's directory goes: each named,
// with what to give instead, before any run starts.
TEST_F(Sweep, ADirectorySpecOrAFileForTheOutputIsRefusedClearly) {
  Outcome r = run_cli("sweep " + dir->path.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "is a directory; give the spec's JSON file")) << r.out;
  const fs::path file = dir->path / "a_file";
  std::ofstream(file) << "x";
  r = run_cli("sweep --out " + file.string() + " " +
              write_spec(spec(Json::array({Json{{"name", "a"}}}), Json::array({0}))));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(has(r.out, "cannot use " + file.string() + " as the sweep's directory")) << r.out;
  EXPECT_FALSE(has(r.out, "filesystem error")) << r.out;
}

// The committed specs (experiments/, docs/) stay valid as the settings change: each passes
// the sweep's checks and plans its runs (dry run: nothing is started or written).
TEST(SweepSpec, EveryCommittedSpecIsValid) {
  std::vector<fs::path> specs = {fs::path(SPEEDRUN_SOURCE_DIR) / "docs" / "sweep_example.json"};
  for (const auto& e : fs::directory_iterator(fs::path(SPEEDRUN_SOURCE_DIR) / "experiments"))
    if (e.path().extension() == ".json") specs.push_back(e.path());
  ASSERT_GE(specs.size(), 3u);
  const fs::path out = fs::temp_directory_path() / ("speedrun_specs_" + std::to_string(::getpid()));
  for (const fs::path& s : specs) {
    const Outcome r = run_cli("sweep --dry-run --out " + out.string() + " " + s.string());
    EXPECT_EQ(r.code, 0) << s << ":\n" << r.out;
    EXPECT_TRUE(has(r.out, "(dry run: nothing is started)")) << s << ":\n" << r.out;
    EXPECT_FALSE(fs::exists(out)) << s;
  }
}
