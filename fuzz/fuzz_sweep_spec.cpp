// A sweep spec (train/sweep_spec.h), as `speedrun sweep SPEC` reads it: parsed and checked,
// then planned. What the plan promises: a run per variant and seed, each in its own
// directory, and each run's command line giving the config the sweep checked and records
// (the flags applied in order to the preset, as `speedrun train` applies them).
#include <set>

#include <nlohmann/json.hpp>

#include "train/config_io.h"
#include "train/presets.h"
#include "train/settings.h"
#include "train/sweep_spec.h"

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = "fuzz/sweep.json";
  speedrun::SweepSpec spec;
  if (!fuzz::parses(file, [&] { spec = speedrun::parse_sweep_spec(std::string(fuzz::text(data, size)), file); }))
    return 0;
  fuzz::require(!spec.variants.empty() && !spec.seeds.empty() && spec.parallel >= 1 &&
                    spec.parallel <= speedrun::kMaxSweepRuns && spec.threads >= 0 &&
                    spec.threads <= speedrun::kMaxSweepThreads && !spec.out.empty(),
                "parse_sweep_spec accepted a spec it documents as invalid");
  fuzz::require(spec.variants.size() * spec.seeds.size() <= size_t(speedrun::kMaxSweepRuns),
                "parse_sweep_spec accepted more runs than a sweep plans");
  fuzz::require(std::set<uint64_t>(spec.seeds.begin(), spec.seeds.end()).size() == spec.seeds.size(),
                "parse_sweep_spec accepted a seed twice");

  const std::vector<speedrun::SweepRunPlan> plans = speedrun::plan_sweep(spec);
  fuzz::require(plans.size() == spec.variants.size() * spec.seeds.size(),
                "plan_sweep: not one run per variant and seed");
  std::set<std::string> dirs;
  for (const speedrun::SweepRunPlan& p : plans) {
    fuzz::require(dirs.insert(p.dir).second, "plan_sweep: two runs share the directory " + p.dir);
    // The run's command line, flag by flag onto the preset, is the config the sweep checked.
    speedrun::TrainConfig c = speedrun::preset_config(spec.preset);
    for (const std::string& a : p.args) {
      fuzz::require(a.rfind("--", 0) == 0, "plan_sweep: an argument that is no flag: " + a);
      const size_t eq = a.find('=');
      if (eq == std::string::npos) continue;  // --no-sample
      const std::string key = a.substr(2, eq - 2);
      if (key == "threads" || key == "device") continue;  // where it runs, not the config
      const bool reads = fuzz::passes([&] { speedrun::set_setting(c, key, a.substr(eq + 1), "fuzz"); });
      fuzz::require(reads, "plan_sweep: the run's flag " + a + " does not read back");
    }
    fuzz::require(speedrun::config_to_json(c) == speedrun::config_to_json(p.config),
                  "plan_sweep: the command line of " + p.rel + " is not the config the sweep records");
  }
  return 0;
}
