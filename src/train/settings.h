// The settings of a training run, each declared once, in the table of settings.cpp: for
// every TrainConfig field a run records, its key (the `speedrun train` flag without dashes,
// and the key in a checkpoint's config JSON), help, unit, valid range and what a resume
// may do with it. Everything else is derived from that table by visiting it:
//   - the flags of `speedrun train`, with the preset's values as defaults (cli/setting_flags.h);
//   - the config JSON of checkpoints, the resume merge and comparison (train/config_io.h);
//   - the presets, written as text values parsed by the table (train/presets.h);
//   - the range check of each setting and the flag names in every config error (flag_of).
// Cross-field rules (warmup + cooldown <= steps, ...) stay in TrainConfig::validate, which
// takes its flag names from here.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/enum_names.h"
#include "core/error.h"
#include "train/config.h"

namespace speedrun {

// The values a numeric setting accepts; every numeric setting must also be finite.
struct Range {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;  // > min / < max instead of >= / <=
  int64_t multiple = 1;                     // integers: a multiple of this
  const char* why = nullptr;                // the reason, for errors

  bool bounded() const;           // anything beyond "finite"
  bool contains(double v) const;  // finite, within min and max (not the multiple)
  std::string describe() const;   // ">= 1", "in [0, 1)", "even, >= 2", "a multiple of 64, >= 64"
};

constexpr Range at_least(double min) { return Range{.min = min}; }
constexpr Range above(double min) { return Range{.min = min, .min_open = true}; }
constexpr Range fraction() { return Range{.min = 0, .max = 1, .max_open = true}; }  // [0, 1)
constexpr Range multiple_of(int64_t k, double min, const char* why) {
  return Range{.min = min, .multiple = k, .why = why};
}

// What a resume does with a setting given on its command line.
enum class OnResume {
  Same,       // must equal the checkpoint's: it changes what the run computes
  MayChange,  // the flag's value when given, else the checkpoint's (files, cadence, data paths)
  ThisRun,    // always this invocation's: it describes the invocation (--resume, --stop-after)
};

struct Setting {
  const char* key;          // the flag without dashes; the key in the config JSON
  const char* help;
  const char* unit = "";    // what the value counts ("tokens", "steps"): the flag's value name
  OnResume on_resume = OnResume::Same;
  Range range = {};
  bool flag = true;         // false: recorded in the config JSON only (model constants)
  std::vector<std::string> (*choices)() = nullptr;  // strings: the accepted values
  // Added to the value where --help shows it as the default: "-N" where train numbers the
  // preset's directory (runs/tiny-1, runs/tiny-2, ...) when the flag is not given.
  const char* default_suffix = "";

  std::string name() const;  // "--seq-len" in messages; the bare key where there is no flag
};

// The field types settings have; adding a field of another type fails to compile until it
// gets an overload here and a case in each visitor.
static_assert(std::is_same_v<int32_t, int>, "eot (int32_t) and ns_steps (int) share an overload");
class SettingVisitor {
 public:
  virtual ~SettingVisitor() = default;
  virtual void operator()(const Setting&, int64_t&) = 0;
  virtual void operator()(const Setting&, int&) = 0;
  virtual void operator()(const Setting&, uint64_t&) = 0;
  virtual void operator()(const Setting&, double&) = 0;
  virtual void operator()(const Setting&, bool&) = 0;
  virtual void operator()(const Setting&, std::string&) = 0;
  virtual void operator()(const Setting&, WindowSchedule&) = 0;
  virtual void operator()(const Setting&, PrecisionChoice&) = 0;
};

// The table: calls v(setting, field) for every setting of `c`, in --help order.
void visit_setting_table(TrainConfig& c, SettingVisitor& v);

// visit_setting_table with a generic callable f(const Setting&, auto& field).
template <class F> void visit_settings(TrainConfig& c, F&& f) {
  struct Adapter final : SettingVisitor {
    explicit Adapter(F& f) : f(f) {}
    F& f;
    void operator()(const Setting& s, int64_t& x) override { f(s, x); }
    void operator()(const Setting& s, int& x) override { f(s, x); }
    void operator()(const Setting& s, uint64_t& x) override { f(s, x); }
    void operator()(const Setting& s, double& x) override { f(s, x); }
    void operator()(const Setting& s, bool& x) override { f(s, x); }
    void operator()(const Setting& s, std::string& x) override { f(s, x); }
    void operator()(const Setting& s, WindowSchedule& x) override { f(s, x); }
    void operator()(const Setting& s, PrecisionChoice& x) override { f(s, x); }
  } adapter(f);
  visit_setting_table(c, adapter);
}
// The same over a const config: f gets const fields.
template <class F> void visit_settings(const TrainConfig& c, F&& f) {
  visit_settings(const_cast<TrainConfig&>(c),
                 [&f](const Setting& s, auto& x) { f(s, std::as_const(x)); });
}

// A value as the flag takes it and --help shows it: "1024", "0.05", "linear", "true".
template <class T> std::string setting_text(const T& v) {
  if constexpr (std::is_enum_v<T>) return enum_name(v);
  else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, std::string>) return v;
  else return fmt::format("{}", v);  // the shortest text that reads back the same value
}

// "a, b or c": accepted values, for messages.
std::string choice_list(const std::vector<std::string>& names);

// Sets the setting `key` of `c` from its text, read the same way from the command line, a
// preset or a sweep spec (core/number_text.h: decimal numbers, "010" is ten); `where` names
// the source in errors (unknown key, text that does not parse; empty: the command line,
// the flag alone: "--steps '1.5': not an integer").
void set_setting(TrainConfig& c, std::string_view key, std::string_view text,
                 std::string_view where);

// The flag of a field of `c` ("--val-tokens" for c.val_tokens), for error messages.
template <class T> std::string flag_of(const TrainConfig& c, const T& field) {
  std::string name;
  visit_settings(c, [&](const Setting& s, const auto& x) {
    if constexpr (std::is_same_v<std::decay_t<decltype(x)>, T>)
      if (&x == &field) name = s.name();
  });
  check(!name.empty(), "flag_of: the field is not a setting of this TrainConfig");
  return name;
}

// Each setting on its own: numbers finite and in their range, strings one of their choices.
// Throws naming the flag: "--seq-len 0: must be >= 1".
void check_setting_ranges(const TrainConfig& c);

}  // namespace speedrun
