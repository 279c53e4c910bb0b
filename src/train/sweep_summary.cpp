#include "train/sweep_summary.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "train/checkpoint.h"
#include "train/run_dir.h"

namespace speedrun {

namespace fs = std::filesystem;

bool metrics_complete(const MetricsLog& m, int64_t steps) {
  if (steps <= 0) return false;
  const bool trained = std::any_of(m.train.begin(), m.train.end(),
                                   [&](const MetricsLog::Train& t) { return t.step == steps - 1; });
  const bool validated = m.val.empty() || std::any_of(m.val.begin(), m.val.end(),
                                                      [&](const MetricsLog::Val& v) { return v.step == steps; });
  return trained && validated;
}

namespace {

// The config in a checkpoint's meta.json, read without checking the checkpoint's files
// (which would read every weight): only its step count and batch shape are wanted.
nlohmann::json checkpoint_config(const std::string& ckpt_dir) {
  std::ifstream f(fs::path(ckpt_dir) / "meta.json");
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    const auto j = nlohmann::json::parse(ss.str());
    return j.contains("config") && j["config"].is_object() ? j["config"] : nlohmann::json{};
  } catch (const nlohmann::json::exception&) {
    return {};
  }
}

// The largest N of the run's model_stepN.safetensors above 0: the final weights' step.
int64_t final_weights_step(const std::string& dir) {
  static const std::regex re("model_step([0-9]+)\\.safetensors");
  int64_t best = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    int64_t step = 0;  // (a number beyond int64 names no weights of ours)
    if (std::regex_match(name, m, re) &&
        std::from_chars(name.data() + 10, name.data() + 10 + m[1].length(), step).ec == std::errc())
      best = std::max(best, step);
  }
  return best;
}

}  // namespace

SweepRun load_sweep_run(const std::string& dir, const std::string& variant, uint64_t seed,
                        int64_t steps, int64_t tokens_per_step) {
  SweepRun r;
  r.variant = variant;
  r.seed = seed;
  r.dir = dir;
  const fs::path metrics = fs::path(dir) / "metrics.jsonl";
  std::error_code ec;
  if (fs::exists(metrics, ec) && fs::file_size(metrics, ec) > 0) {
    try {
      r.metrics = read_metrics(metrics.string());
    } catch (const Error& e) {
      r.problem = e.what();
    }
  }
  if (steps <= 0 || tokens_per_step <= 0) {
    const auto ckpts = list_checkpoints(dir);
    const nlohmann::json c = ckpts.empty() ? nlohmann::json{} : checkpoint_config(ckpts.front());
    const auto get = [&](const char* k) {
      return c.contains(k) && c[k].is_number_integer() ? c[k].get<int64_t>() : int64_t(0);
    };
    if (steps <= 0) steps = get("steps") > 0 ? get("steps") : final_weights_step(dir);
    if (tokens_per_step <= 0) tokens_per_step = get("batch") * get("seq-len");
  }
  r.steps = steps;
  r.tokens_per_step = tokens_per_step;
  const RunLaunches launches = run_launches(dir);
  r.commits = launches.commits;
  r.devices = launches.devices;
  r.finished = steps > 0 &&
               fs::exists(fs::path(dir) / fmt::format("model_step{:06d}.safetensors", steps), ec) &&
               metrics_complete(r.metrics, steps);
  return r;
}

double training_ms_before(const MetricsLog& m, int64_t s) {
  double t = 0;
  for (const auto& r : m.train)
    if (r.step < s && std::isfinite(r.ms)) t += r.ms;
  return t;
}

std::optional<TargetCrossing> target_crossing(const MetricsLog& m, double target) {
  std::vector<MetricsLog::Val> v = m.val;
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  for (size_t i = 0; i < v.size(); ++i) {
    if (!(v[i].loss <= target)) continue;
    const double ms = training_ms_before(m, v[i].step);
    if (i == 0) return TargetCrossing{double(v[i].step), ms};
    // Linear between the validation above the target and this one.
    const auto& a = v[i - 1];
    const double f = (a.loss - target) / (a.loss - v[i].loss);
    const double ms_a = training_ms_before(m, a.step);
    return TargetCrossing{double(a.step) + f * double(v[i].step - a.step), ms_a + f * (ms - ms_a)};
  }
  return std::nullopt;
}

SampleStats sample_stats(const std::vector<double>& xs) {
  SampleStats s;
  s.n = int(xs.size());
  if (xs.empty()) return s;
  for (double x : xs) s.mean += x;
  s.mean /= double(xs.size());
  if (xs.size() >= 2) {
    double ss = 0;
    for (double x : xs) ss += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(ss / double(xs.size() - 1));
  }
  return s;
}

SweepSummary summarize(const std::vector<SweepRun>& runs, std::optional<double> target_loss) {
  SweepSummary out;
  out.target_loss = target_loss;
  auto count = [](std::vector<std::pair<std::string, int>>& tally, const std::string& v) {
    for (auto& [name, n] : tally)
      if (name == v) return void(++n);
    tally.emplace_back(v, 1);
  };
  for (const SweepRun& r : runs) {
    for (const auto& x : r.commits) count(out.commits, x);
    for (const auto& x : r.devices) count(out.devices, x);
  }
  std::map<std::string, size_t> index;
  std::vector<std::vector<const SweepRun*>> groups;
  for (const SweepRun& r : runs) {
    const auto [it, fresh] = index.emplace(r.variant, groups.size());
    if (fresh) groups.emplace_back();
    groups[it->second].push_back(&r);
  }
  for (const auto& g : groups) {
    VariantSummary v;
    v.variant = g.front()->variant;
    v.seeds = int(g.size());
    std::vector<double> finals, steps, secs, toks, seen;
    for (const SweepRun* r : g) {
      VariantSummary::Run x;
      x.seed = r->seed;
      x.dir = r->dir;
      x.finished = r->finished;
      x.steps_done = r->metrics.train.empty() ? 0 : r->metrics.train.back().step + 1;
      if (r->finished) {
        ++v.finished;
        for (const auto& val : r->metrics.val)
          if (val.step == r->steps) x.final_val_loss = val.loss;
        if (x.final_val_loss) finals.push_back(*x.final_val_loss);
        if (r->tokens_per_step > 0) seen.push_back(double(x.steps_done) * double(r->tokens_per_step));
        if (target_loss) {
          x.crossing = target_crossing(r->metrics, *target_loss);
          if (x.crossing) {
            ++v.reached;
            steps.push_back(x.crossing->step);
            secs.push_back(x.crossing->ms / 1e3);
            if (r->tokens_per_step > 0) toks.push_back(x.crossing->step * double(r->tokens_per_step));
          }
        }
      }
      v.runs.push_back(x);
    }
    v.final_val_loss = sample_stats(finals);
    v.steps_to_target = sample_stats(steps);
    v.seconds_to_target = sample_stats(secs);
    v.tokens_to_target = sample_stats(toks);
    if (!seen.empty()) v.tokens_seen = sample_stats(seen).mean;
    out.variants.push_back(std::move(v));
  }
  return out;
}

namespace {

std::string stat_cell(const SampleStats& s, const char* fmt_spec, const char* unit = "") {
  if (s.n == 0) return "-";
  const std::string mean = fmt::format(fmt::runtime(fmt_spec), s.mean);
  if (!s.std) return mean + unit;
  return mean + " ± " + fmt::format(fmt::runtime(fmt_spec), *s.std) + unit;
}

std::string count_cell(const SampleStats& s) {
  if (s.n == 0) return "-";
  return s.std ? format_count(s.mean) + " ± " + format_count(*s.std) : format_count(s.mean);
}

// A target column's cell: "-" before any run finished, "not reached" when none of the
// finished runs reached it, and how many did when only some did.
std::string target_cell(const VariantSummary& v, const std::string& value) {
  if (v.finished == 0) return "-";
  if (v.reached == 0) return "not reached";
  return v.reached < v.finished ? fmt::format("{} ({}/{})", value, v.reached, v.finished) : value;
}

size_t display_width(const std::string& s) {  // UTF-8 code points ("±" is one column)
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

nlohmann::ordered_json stats_json(const SampleStats& s) {
  nlohmann::ordered_json j = {{"n", s.n}};
  j["mean"] = s.n > 0 ? nlohmann::ordered_json(s.mean) : nlohmann::ordered_json(nullptr);
  j["std"] = s.std ? nlohmann::ordered_json(*s.std) : nlohmann::ordered_json(nullptr);
  return j;
}

}  // namespace

std::string summary_note(const SweepSummary& s) {
  std::string e = "Mean ± sample standard deviation (n - 1) over the finished seeds; seeds: "
                  "finished / given.";
  if (s.target_loss)
    e += fmt::format(" Steps and training time (validation excluded) to validation loss {:g}: "
                     "interpolated linearly between the validations either side of the "
                     "crossing, over the seeds that reached it.",
                     *s.target_loss);
  auto tally = [](const std::vector<std::pair<std::string, int>>& t) {
    std::string out;
    for (const auto& [name, n] : t) out += fmt::format("{}{}: {} run{}", out.empty() ? "" : "; ", name, n, n == 1 ? "" : "s");
    return out;
  };
  if (s.commits.size() > 1)
    e += fmt::format(" Warning: the runs were made by {} builds of speedrun ({}): a difference "
                     "between variants may come from the code.",
                     s.commits.size(), tally(s.commits));
  if (s.devices.size() > 1)
    e += fmt::format(" Warning: the runs ran on {} devices ({}): their times compare only as "
                     "the devices do, and their losses differ in the last bits.",
                     s.devices.size(), tally(s.devices));
  return e;
}

std::vector<std::vector<std::string>> summary_cells(const SweepSummary& s) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"variant", "seeds", "final val loss"};
  if (s.target_loss) {
    const std::string t = fmt::format("{:g}", *s.target_loss);
    head.insert(head.end(), {"steps to " + t, "time to " + t, "tokens to " + t});
  }
  head.push_back("tokens seen");
  rows.push_back(head);
  for (const VariantSummary& v : s.variants) {
    std::vector<std::string> row = {v.variant, fmt::format("{}/{}", v.finished, v.seeds),
                                    stat_cell(v.final_val_loss, "{:.4f}")};
    if (s.target_loss) {
      row.push_back(target_cell(v, stat_cell(v.steps_to_target, "{:.1f}")));
      row.push_back(target_cell(v, stat_cell(v.seconds_to_target, "{:.1f}", " s")));
      row.push_back(target_cell(v, count_cell(v.tokens_to_target)));
    }
    row.push_back(v.tokens_seen ? format_count(*v.tokens_seen) : "-");
    rows.push_back(row);
  }
  return rows;
}

std::string summary_text(const SweepSummary& s) {
  const auto rows = summary_cells(s);
  std::vector<size_t> w(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], display_width(r[c]));
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      const std::string pad(w[c] - display_width(r[c]), ' ');
      line += c == 0 ? r[c] + pad : "  " + pad + r[c];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string summary_markdown(const SweepSummary& s) {
  const auto rows = summary_cells(s);
  std::string out;
  for (size_t i = 0; i < rows.size(); ++i) {
    out += "|";
    for (const auto& c : rows[i]) out += " " + c + " |";
    out += "\n";
    if (i == 0) {
      out += "|";
      for (size_t c = 0; c < rows[0].size(); ++c) out += c == 0 ? " --- |" : " ---: |";
      out += "\n";
    }
  }
  return out + "\n" + summary_note(s) + "\n";
}

nlohmann::ordered_json summary_json(const SweepSummary& s) {
  nlohmann::ordered_json j = {{"format", "speedrun-sweep-summary"}};
  j["target_loss"] = s.target_loss ? nlohmann::ordered_json(*s.target_loss) : nlohmann::ordered_json(nullptr);
  j["variants"] = nlohmann::ordered_json::array();
  for (const VariantSummary& v : s.variants) {
    nlohmann::ordered_json x = {{"name", v.variant},
                        {"seeds", v.seeds},
                        {"finished", v.finished},
                        {"final_val_loss", stats_json(v.final_val_loss)}};
    x["tokens_seen"] = v.tokens_seen ? nlohmann::ordered_json(*v.tokens_seen) : nlohmann::ordered_json(nullptr);
    if (s.target_loss)
      x["target"] = {{"reached", v.reached},
                     {"steps", stats_json(v.steps_to_target)},
                     {"seconds", stats_json(v.seconds_to_target)},
                     {"tokens", stats_json(v.tokens_to_target)}};
    x["runs"] = nlohmann::ordered_json::array();
    for (const auto& r : v.runs) {
      nlohmann::ordered_json y = {{"seed", r.seed}, {"dir", r.dir}, {"finished", r.finished},
                          {"steps_done", r.steps_done}};
      y["final_val_loss"] = r.final_val_loss ? nlohmann::ordered_json(*r.final_val_loss) : nlohmann::ordered_json(nullptr);
      if (s.target_loss) {
        y["steps_to_target"] = r.crossing ? nlohmann::ordered_json(r.crossing->step) : nlohmann::ordered_json(nullptr);
        y["seconds_to_target"] =
            r.crossing ? nlohmann::ordered_json(r.crossing->ms / 1e3) : nlohmann::ordered_json(nullptr);
      }
      x["runs"].push_back(y);
    }
    j["variants"].push_back(x);
  }
  auto tally_json = [](const std::vector<std::pair<std::string, int>>& t) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    for (const auto& [name, n] : t) o[name] = n;
    return o;
  };
  j["commits"] = tally_json(s.commits);
  j["devices"] = tally_json(s.devices);
  j["note"] = summary_note(s);
  return j;
}

}  // namespace speedrun
