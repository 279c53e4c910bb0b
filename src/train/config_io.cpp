#include "train/config_io.h"

#include <algorithm>
#include <limits>
#include <map>
#include <type_traits>

#include "core/build_info.h"
#include "train/settings.h"

namespace speedrun {

namespace {

// True when `v` holds a value of T exactly: nlohmann's get<> would convert a float to an
// integer (with undefined behaviour out of range), wrap an integer too big for T, and read
// a boolean as a number.
template <class T>
bool json_holds(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v.is_boolean();
  } else if constexpr (std::is_integral_v<T>) {
    constexpr uint64_t max = uint64_t(std::numeric_limits<T>::max());
    if (v.is_number_unsigned()) return v.get<uint64_t>() <= max;
    if (!v.is_number_integer()) return false;
    const int64_t x = v.get<int64_t>();
    if (x >= 0) return uint64_t(x) <= max;
    return std::is_signed_v<T> && x >= int64_t(std::numeric_limits<T>::min());
  } else if constexpr (std::is_floating_point_v<T>) {
    return v.is_number();
  } else {
    return v.is_string();  // strings and enums (by name)
  }
}

}  // namespace

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
    check(json_holds<T>(v), where, ": config key '", s.key, "' has the wrong type or is out of "
          "range (", v.dump(), "): the file was not written by this version of speedrun");
    if constexpr (std::is_enum_v<T>)
      x = parse_enum<T>(v.get<std::string>(), where + ": config " + s.key);
    else
      v.get_to(x);
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

namespace {
// A key's value as JSON text, for comparing and printing; "(absent)" where j lacks it.
std::string key_text(const nlohmann::json& j, const std::string& key) {
  return j.contains(key) ? j.at(key).dump() : std::string("(absent)");
}
}  // namespace

std::vector<std::string> config_differences(const nlohmann::json& checkpoint,
                                            const nlohmann::json& now) {
  std::vector<std::string> out;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) {
    if (s.on_resume != OnResume::Same) return;
    const std::string a = key_text(checkpoint, s.key), b = key_text(now, s.key);
    if (a != b) out.push_back(s.name() + ": checkpoint " + a + ", now " + b);
  });
  return out;
}

nlohmann::json rank_terms(const TrainConfig& c, int64_t micro_batches, const std::string& precision,
                          const std::vector<std::string>& train_shards,
                          const std::vector<std::string>& val_shards) {
  nlohmann::json j = config_to_json(c);
  for (const char* own : {"stall-timeout", "train", "val"}) j.erase(own);
  j["grad-accum"] = micro_batches;
  j["dtype"] = precision;
  j["train-shards"] = train_shards;
  j["val-shards"] = val_shards;
  j["speedrun"] = build_id();
  return j;
}

std::vector<std::string> rank_differences(const std::vector<nlohmann::json>& ranks) {
  std::vector<std::string> out;
  if (ranks.empty()) return out;
  // The flag's name where the key is a setting's ("--batch"), else the key.
  std::map<std::string, std::string> names;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) { names[s.key] = s.name(); });
  const auto name = [&](const std::string& key) {
    const auto it = names.find(key);
    return it == names.end() ? key : it->second;
  };
  const nlohmann::json& root = ranks[0];
  for (size_t r = 1; r < ranks.size(); ++r) {
    std::vector<std::string> keys;
    for (const auto& [key, v] : root.items()) keys.push_back(key);
    for (const auto& [key, v] : ranks[r].items())
      if (!root.contains(key)) keys.push_back(key);
    for (const std::string& key : keys) {
      const std::string a = key_text(root, key), b = key_text(ranks[r], key);
      if (a != b) out.push_back(fmt::format("rank {}: {} {} (rank 0: {})", r, name(key), b, a));
    }
  }
  return out;
}

}  // namespace speedrun
