#include "train/config_io.h"

#include <algorithm>
#include <type_traits>

#include "train/settings.h"

namespace speedrun {

nlohmann::json config_to_json(const TrainConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  visit_settings(c, [&j](const Setting& s, const auto& x) {
    if constexpr (std::is_enum_v<std::decay_t<decltype(x)>>)
      j[s.key] = enum_name(x);
    else
      j[s.key] = x;
  });
  return j;
}

TrainConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  check(j.is_object(), where, ": the config is not a JSON object");
  TrainConfig c;
  visit_settings(c, [&](const Setting& s, auto& x) {
    if (!j.contains(s.key)) return;
    const nlohmann::json& v = j.at(s.key);
    using T = std::decay_t<decltype(x)>;
    try {
      if constexpr (std::is_enum_v<T>)
        x = parse_enum<T>(v.get<std::string>(), where + ": config " + s.key);
      else
        v.get_to(x);
    } catch (const nlohmann::json::exception&) {
      fail(where, ": config key '", s.key, "' has the wrong type (", v.dump(),
           "): the file was not written by this version of speedrun");
    }
  });
  return c;
}

nlohmann::json merge_resume_config(const nlohmann::json& checkpoint, const nlohmann::json& flags,
                                   const std::vector<std::string>& given) {
  nlohmann::json out = checkpoint;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) {
    const bool from_flags = s.on_resume == OnResume::ThisRun ||
                            std::find(given.begin(), given.end(), s.key) != given.end();
    if (from_flags && flags.contains(s.key)) out[s.key] = flags.at(s.key);
  });
  return out;
}

std::vector<std::string> config_differences(const nlohmann::json& checkpoint,
                                            const nlohmann::json& now) {
  std::vector<std::string> out;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) {
    if (s.on_resume != OnResume::Same) return;
    const auto text = [&s](const nlohmann::json& j) {
      return j.contains(s.key) ? j.at(s.key).dump() : std::string("(absent)");
    };
    const std::string a = text(checkpoint), b = text(now);
    if (a != b) out.push_back(s.name() + ": checkpoint " + a + ", now " + b);
  });
  return out;
}

}  // namespace speedrun
