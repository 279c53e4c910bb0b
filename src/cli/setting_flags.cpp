#include "cli/setting_flags.h"

#include <algorithm>
#include <cctype>
#include <type_traits>

#include "cli/backend_flags.h"
#include "train/presets.h"
#include "train/settings.h"

namespace speedrun::cli {

std::string preset_in_args(int argc, char** argv) {
  const std::string fallback = TrainConfig{}.preset;
  CLI::App pre;
  pre.set_help_flag();  // --help belongs to the full parse
  pre.allow_extras();
  std::string name = fallback;
  pre.add_option("--preset", name)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  try {
    pre.parse(argc, argv);
  } catch (const CLI::ParseError&) {
    return fallback;  // e.g. --preset without a value: the full parse reports it
  }
  const auto names = preset_names();
  return std::find(names.begin(), names.end(), name) != names.end() ? name : fallback;
}

void add_setting_flags(CLI::App* app, TrainConfig& cfg) {
  visit_settings(cfg, [app, &cfg](const Setting& s, auto& x) {
    using T = std::decay_t<decltype(x)>;
    if (!s.flag) return;
    const std::string flag = "--" + std::string(s.key);
    std::string help = s.help;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
      if (s.range.bounded()) help += "; " + s.range.describe();
    if constexpr (std::is_enum_v<T>) {
      add_enum_option(app, flag, x, help);
    } else if constexpr (std::is_same_v<T, bool>) {
      app->add_flag(flag, x, help + (x ? " (default: on)" : " (default: off)"));
    } else {
      CLI::Option* o;
      if constexpr (std::is_arithmetic_v<T>) {
        // Read as a preset or a sweep spec reads it (decimal: "010" is ten), not by
        // CLI11's strtoll(s, 0, 0) (octal eight); beyond the type, the range is named.
        o = app->add_option_function<std::string>(
            flag, [&cfg, key = s.key](const std::string& text) { set_setting(cfg, key, text, ""); },
            help);
        o->type_name(CLI::detail::type_name<T>());
      } else {
        o = app->add_option(flag, x, help);
        // An empty value would read as the flag left out (a glob, a path): a script's unset
        // variable would then train on the built-in corpus, from scratch, somewhere else.
        o->check(CLI::Validator(
            [](std::string& v) {
              return v.empty() ? "the value is empty: give one, or leave the flag out" : "";
            },
            "", ""));
      }
      // As the config JSON writes it; empty: none shown.
      const std::string shown = setting_text(x);
      o->default_str(shown.empty() ? shown : shown + s.default_suffix);
      if (*s.unit) {
        std::string name = s.unit;
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char ch) { return char(std::toupper(ch)); });
        o->type_name(name);
      }
      if (s.choices) o->check(CLI::IsMember(s.choices()));
    }
  });
}

std::string presets_help() {
  std::string out = "Presets (--preset):\n";
  for (const Preset& p : presets()) out += "  " + std::string(p.name) + ": " + p.description + "\n";
  return out;
}

}  // namespace speedrun::cli
