#include "train/sweep_spec.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/factory.h"
#include "core/error.h"
#include "train/presets.h"
#include "train/settings.h"

namespace speedrun {

namespace {

using Json = nlohmann::ordered_json;  // keeps the file's order of flags in the commands

std::string pointer_token(const std::string& key) {
  std::string t;
  for (char c : key) t += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return t;
}

// The line of every key and array element of a JSON text, by JSON pointer
// ("/variants/1/flags/steps"). Runs on text nlohmann has already parsed, so it can assume
// well-formed JSON. A key given twice in one object (which JSON parsers silently resolve
// to one of the values) is an error naming both lines.
class JsonLines {
 public:
  JsonLines(const std::string& text, const std::string& file) : t_(text), file_(file) {
    value("", 1);
  }
  int operator()(const std::string& pointer) const {
    const auto it = lines_.find(pointer);
    return it == lines_.end() ? 0 : it->second;
  }

 private:
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\r' || t_[i_] == '\n'))
      line_ += t_[i_++] == '\n';
  }
  std::string string_token() {  // at the opening quote; returns the decoded string
    const size_t start = i_++;
    while (i_ < t_.size() && t_[i_] != '"') i_ += t_[i_] == '\\' ? 2 : 1;
    ++i_;
    return nlohmann::json::parse(t_.substr(start, i_ - start)).get<std::string>();
  }
  void value(const std::string& ptr, int key_line) {
    ws();
    lines_.emplace(ptr, key_line > 0 ? key_line : line_);
    if (i_ >= t_.size()) return;
    if (t_[i_] == '{') {
      ++i_;
      std::map<std::string, int> seen;
      for (;;) {
        ws();
        if (t_[i_] == '}') break;
        const int kl = line_;
        const std::string key = string_token();
        const auto [it, fresh] = seen.emplace(key, kl);
        check(fresh, file_, " line ", kl, ": key \"", key, "\" given twice (also on line ",
              it->second, "): keep one");
        ws();
        ++i_;  // ':'
        value(ptr + "/" + pointer_token(key), kl);
        ws();
        if (t_[i_] == ',') ++i_;
      }
      ++i_;
    } else if (t_[i_] == '[') {
      ++i_;
      for (int k = 0;; ++k) {
        ws();
        if (t_[i_] == ']') break;
        value(ptr + "/" + std::to_string(k), 0);
        ws();
        if (t_[i_] == ',') ++i_;
      }
      ++i_;
    } else if (t_[i_] == '"') {
      string_token();
    } else {
      while (i_ < t_.size() && std::string_view(",}] \t\r\n").find(t_[i_]) == std::string_view::npos)
        ++i_;
    }
  }

  const std::string& t_;
  const std::string& file_;
  size_t i_ = 0;
  int line_ = 1;
  std::map<std::string, int> lines_;
};

// The line and column of byte offset `pos` (0-based) of `text`.
std::pair<int, int> line_col(const std::string& text, size_t pos) {
  int line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') line++, col = 1;
    else ++col;
  }
  return {line, col};
}

const char* json_kind(const Json& v) {
  switch (v.type()) {
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "a list";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "true/false";
    case Json::value_t::null: return "null";
    default: return "a number";
  }
}

// The flags a spec may not give, and why.
const char* reserved_flag(const std::string& key) {
  if (key == "out") return "the sweep gives each run OUT/<variant>/seed<k>; set the top-level \"out\"";
  if (key == "resume" || key == "overwrite")
    return "the sweep resumes or restarts each run itself; rerun the same sweep to continue it";
  if (key == "seed") return "each run's seed comes from the top-level \"seeds\"";
  if (key == "preset") return "give the preset at the top level (\"preset\")";
  if (key == "threads" || key == "device")
    return "where runs execute is given at the top level (\"threads\" is split between the "
           "parallel runs)";
  return nullptr;
}

// Whether `key` is a setting of the table that has a `speedrun train` flag.
bool has_flag(const std::string& key, bool* is_setting) {
  TrainConfig probe;
  bool flag = false;
  *is_setting = false;
  visit_settings(probe, [&](const Setting& s, auto&) {
    if (key == s.key) *is_setting = true, flag = s.flag;
  });
  return flag;
}

// Whether `v` is an integer in [min, max] (JSON's integers beyond int64 included).
bool integer_in(const Json& v, int64_t min, int64_t max) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>() <= uint64_t(max) && uint64_t(std::max<int64_t>(min, 0)) <= v.get<uint64_t>();
  return v.is_number_integer() && v.get<int64_t>() >= min && v.get<int64_t>() <= max;
}

// A flag's value as its text on the command line.
std::string flag_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();  // integers as integers; doubles in the shortest text that reads back
}

}  // namespace

SweepSpec parse_sweep_spec(const std::string& text, const std::string& file) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line L, column C:
    // syntax error while parsing ...": keep what follows the position.
    const auto [line, col] = line_col(text, e.byte > 0 ? e.byte - 1 : 0);
    std::string why = e.what();
    const size_t at = why.find("column ");
    if (at != std::string::npos && why.find(": ", at) != std::string::npos)
      why = why.substr(why.find(": ", at) + 2);
    fail(file, " line ", line, ", column ", col, ": not valid JSON: ", why);
  } catch (const Json::exception& e) {
    // A number beyond a double (1e400): nlohmann says which, not where.
    std::string why = e.what();
    if (why.rfind("[json.exception.", 0) == 0 && why.find("] ") != std::string::npos)
      why = why.substr(why.find("] ") + 2);
    fail(file, ": not valid JSON: ", why);
  }
  const JsonLines lines(text, file);
  const auto at = [&](const std::string& ptr) {
    return fmt::format("{} line {}", file, std::max(1, lines(ptr)));
  };
  check(j.is_object(), file, ": a sweep spec is a JSON object {\"preset\": ..., \"variants\": "
        "[...], \"seeds\": [...], \"out\": ...} (see docs/EXPERIMENTS.md)");

  static const std::vector<std::string> keys = {"preset",      "flags",    "variants",
                                                "seeds",       "out",      "target-loss",
                                                "parallel",    "threads",  "device"};
  for (const auto& [k, v] : j.items())
    check(std::find(keys.begin(), keys.end(), k) != keys.end(), at(fmt::format("/{}", pointer_token(k))),
          ": unknown key \"", k, "\"; a sweep spec has ", choice_list(keys));
  for (const char* k : {"preset", "variants", "seeds", "out"})
    check(j.contains(k), file, ": no \"", k, "\": a sweep spec needs \"preset\", \"variants\", "
          "\"seeds\" and \"out\" (see docs/EXPERIMENTS.md)");

  SweepSpec s;
  s.file = file;
  s.text = text;
  const auto string_at = [&](const char* key) {
    const Json& v = j.at(key);
    check(v.is_string() && !v.get<std::string>().empty(), at(std::string("/") + key), ": \"", key,
          "\" must be a non-empty string, not ", json_kind(v));
    return v.get<std::string>();
  };
  const auto int_at = [&](const char* key, int64_t min, int64_t max) {
    const Json& v = j.at(key);
    check(integer_in(v, min, max), at(std::string("/") + key), ": \"", key,
          "\" must be an integer in [", min, ", ", max, "], not ", v.dump());
    return v.get<int64_t>();
  };
  s.preset = string_at("preset");
  const auto names = preset_names();
  check(std::find(names.begin(), names.end(), s.preset) != names.end(), at("/preset"),
        ": unknown preset \"", s.preset, "\"; choose ", choice_list(names));
  s.out = string_at("out");
  if (j.contains("target-loss")) {
    const Json& v = j["target-loss"];
    check(v.is_number() && v.get<double>() > 0, at("/target-loss"),
          ": \"target-loss\" must be a validation loss > 0, not ", v.dump());
    s.target_loss = v.get<double>();
  }
  if (j.contains("parallel")) s.parallel = int(int_at("parallel", 1, kMaxSweepRuns));
  if (j.contains("threads")) s.threads = int(int_at("threads", 0, kMaxSweepThreads));
  if (j.contains("device")) {
    s.device = string_at("device");
    parse_enum<DeviceChoice>(s.device, at("/device") + ": \"device\"");
  }

  // Seeds: a list of distinct integers >= 0, or a count.
  const Json& seeds = j["seeds"];
  if (seeds.is_number_integer()) {
    check(integer_in(seeds, 1, kMaxSweepRuns), at("/seeds"), ": \"seeds\" must be a count in "
          "[1, ", kMaxSweepRuns, "] or a list of seeds, not ", seeds.dump());
    for (int64_t k = 0; k < seeds.get<int64_t>(); ++k) s.seeds.push_back(uint64_t(k));
  } else {
    check(seeds.is_array() && !seeds.empty(), at("/seeds"), ": \"seeds\" must be a list of "
          "integers >= 0 ([0, 1, 2]) or a count (3), not ", json_kind(seeds));
    std::set<uint64_t> seen;
    for (size_t k = 0; k < seeds.size(); ++k) {
      const Json& v = seeds[k];
      const std::string ptr = "/seeds/" + std::to_string(k);
      check(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), at(ptr),
            ": seed ", v.dump(), " is not an integer >= 0");
      check(seen.insert(v.get<uint64_t>()).second, at(ptr), ": seed ", v.dump(),
            " is given twice");
      s.seeds.push_back(v.get<uint64_t>());
    }
  }

  // Flags: checked against the settings table one by one, with the line of each.
  const auto read_flags = [&](const Json& obj, const std::string& ptr, FlagList& out) {
    check(obj.is_object(), at(ptr), ": flags must be an object {\"steps\": 200, ...}, not ",
          json_kind(obj));
    for (const auto& [key, v] : obj.items()) {
      const std::string where = at(ptr + "/" + pointer_token(key));
      if (const char* why = reserved_flag(key))
        fail(where, ": flag \"", key, "\" cannot be given in a sweep: ", why);
      bool is_setting = false;
      const bool flag = has_flag(key, &is_setting);
      check(is_setting, where, ": \"", key, "\" is not a flag of speedrun train (speedrun "
            "train --help lists them; write them without the dashes)");
      check(flag, where, ": \"", key, "\" is a constant of the model, not a flag of speedrun train");
      check(v.is_string() || v.is_number() || v.is_boolean(), where, ": flag \"", key,
            "\" must be a string, a number or true/false, as the flag takes it, not ",
            json_kind(v));
      out.emplace_back(key, flag_text(v));
    }
  };
  FlagList common;
  if (j.contains("flags")) read_flags(j["flags"], "/flags", common);

  const Json& vs = j["variants"];
  check(vs.is_array() && !vs.empty(), at("/variants"), ": \"variants\" must be a non-empty list "
        "of {\"name\": ..., \"flags\": {...}}, not ", json_kind(vs));
  static const std::regex name_re("[A-Za-z0-9][A-Za-z0-9._-]*");
  std::map<std::string, int> seen_names;
  for (size_t k = 0; k < vs.size(); ++k) {
    const Json& v = vs[k];
    const std::string ptr = "/variants/" + std::to_string(k);
    check(v.is_object(), at(ptr), ": variant ", k + 1, " must be an object {\"name\": ..., "
          "\"flags\": {...}}, not ", json_kind(v));
    for (const auto& [key, x] : v.items())
      check(key == "name" || key == "flags", at(ptr + "/" + pointer_token(key)),
            ": unknown key \"", key, "\" in variant ", k + 1, "; a variant has \"name\" and \"flags\"");
    check(v.contains("name") && v["name"].is_string(), at(ptr), ": variant ", k + 1,
          " has no \"name\" (a string)");
    SweepVariant var;
    var.name = v["name"].get<std::string>();
    var.line = lines(ptr + "/name");
    check(std::regex_match(var.name, name_re), at(ptr + "/name"), ": variant name \"", var.name,
          "\" must be letters, digits, '.', '_' or '-' (it names the variant's directory)");
    const auto [it, fresh] = seen_names.emplace(var.name, var.line);
    check(fresh, at(ptr + "/name"), ": variant name \"", var.name, "\" is used twice (also on line ",
          it->second, "): each variant needs its own name");
    var.flags = common;
    if (v.contains("flags")) read_flags(v["flags"], ptr + "/flags", var.flags);

    // The variant's config, as `speedrun train --preset P --flags...` would build it.
    TrainConfig c = preset_config(s.preset);
    for (const auto& [key, text] : var.flags) {
      const bool own = v.contains("flags") && v["flags"].contains(key);
      const std::string where =
          at((own ? ptr + "/flags/" : std::string("/flags/")) + pointer_token(key));
      set_setting(c, key, text, where);
    }
    try {
      c.validate(1);
    } catch (const Error& e) {
      fail(at(ptr + "/name"), ": variant \"", var.name, "\": ", e.what());
    }
    var.config = c;
    s.variants.push_back(std::move(var));
  }
  const size_t runs = s.variants.size() * s.seeds.size();
  check(runs <= size_t(kMaxSweepRuns), file, ": ", s.variants.size(), " variants x ",
        s.seeds.size(), " seeds are ", runs, " runs; a sweep plans at most ", kMaxSweepRuns,
        ": split it into several sweeps");
  return s;
}

SweepSpec read_sweep_spec(const std::string& path) {
  std::error_code ec;
  check(!std::filesystem::is_directory(path, ec), "sweep spec ", path,
        ": is a directory; give the spec's JSON file");
  std::ifstream f(path, std::ios::binary);
  check(bool(f), "sweep spec ", path, ": cannot read it (check the path)");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_sweep_spec(ss.str(), path);
}

int64_t default_save_every(int64_t steps) { return std::max<int64_t>(1, (steps + 9) / 10); }

std::vector<SweepRunPlan> plan_sweep(const SweepSpec& spec) {
  namespace fs = std::filesystem;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  // Threads per run: the spec's total (or every core) split between the parallel runs; one
  // run at a time with no "threads" keeps train's default (every core).
  const int threads = spec.parallel > 1 || spec.threads > 0
                          ? std::max(1, (spec.threads > 0 ? spec.threads : cores) / spec.parallel)
                          : 0;
  std::vector<SweepRunPlan> plans;
  for (const SweepVariant& v : spec.variants) {
    const auto given = [&](const char* key) {
      return std::any_of(v.flags.begin(), v.flags.end(), [&](const auto& f) { return f.first == key; });
    };
    for (uint64_t seed : spec.seeds) {
      SweepRunPlan p;
      p.variant = v.name;
      p.seed = seed;
      p.rel = v.name + "/seed" + std::to_string(seed);
      p.dir = (fs::path(spec.out) / v.name / ("seed" + std::to_string(seed))).string();
      p.config = v.config;
      p.config.seed = seed;
      p.config.out_dir = p.dir;
      if (!given("save-every")) p.config.save_every = default_save_every(p.config.schedule.steps);
      if (!given("keep")) p.config.keep = 2;  // the newest, and one more if it is damaged
      p.args.push_back("--preset=" + spec.preset);
      for (const auto& [key, text] : v.flags) p.args.push_back("--" + key + "=" + text);
      p.args.push_back(fmt::format("--seed={}", seed));
      p.args.push_back("--out=" + p.dir);
      if (!given("save-every")) p.args.push_back(fmt::format("--save-every={}", p.config.save_every));
      if (!given("keep")) p.args.push_back("--keep=2");
      p.args.push_back("--no-sample");
      if (threads > 0) p.args.push_back(fmt::format("--threads={}", threads));
      if (!spec.device.empty()) p.args.push_back("--device=" + spec.device);
      plans.push_back(std::move(p));
    }
  }
  return plans;
}

}  // namespace speedrun
