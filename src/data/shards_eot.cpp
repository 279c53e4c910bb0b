#include "data/shards_eot.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/shard.h"

namespace speedrun {

namespace fs = std::filesystem;

std::optional<RecordedEot> recorded_eot(const std::string& shard) {
  const fs::path dir = fs::path(shard).parent_path();
  for (const char* name : {"prepare.json", "synthetic.json"}) {
    const fs::path manifest = dir / name;
    std::error_code ec;
    if (!fs::is_regular_file(manifest, ec)) continue;
    std::ifstream in(manifest);
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_object() && j.contains("eot") && j.at("eot").is_number_integer())
      return RecordedEot{j.at("eot").get<int64_t>(), manifest.string()};
  }
  return std::nullopt;
}

std::optional<RecordedEot> recorded_eot_of(const std::vector<std::string>& files) {
  std::set<std::string> dirs;
  for (const std::string& f : files)
    if (dirs.insert(fs::path(f).parent_path().string()).second)
      if (std::optional<RecordedEot> r = recorded_eot(f)) return r;
  return std::nullopt;
}

std::string check_shards_eot(const std::vector<std::string>& files, int64_t eot,
                             const std::function<std::string(int64_t)>& fix, bool refuse) {
  if (files.empty()) return "";
  std::set<std::string> dirs;
  bool any_manifest = false;
  for (const std::string& f : files) {
    const std::string dir = fs::path(f).parent_path().string();
    if (!dirs.insert(dir).second) continue;
    const std::optional<RecordedEot> r = recorded_eot(f);
    if (!r) continue;
    any_manifest = true;
    if (r->eot == eot) continue;
    const std::string what = "EOT " + std::to_string(eot) + ": the shards in " +
                             (dir.empty() ? "." : dir) + " delimit their documents with " +
                             std::to_string(r->eot) + " (" + r->manifest + "); " + fix(r->eot);
    if (refuse) fail(what);
    return "warning: " + what;
  }
  if (any_manifest) return "";
  const Shard first = Shard::open(files.front());
  if (first.size() == 0 || first.tokens()[0] == eot) return "";
  const int64_t t = first.tokens()[0];
  return "warning: " + files.front() + " begins with token " + std::to_string(t) +
         ", not the EOT " + std::to_string(eot) + " that opens each document of shards " +
         "written by speedrun prepare or for the record; if " + std::to_string(t) +
         " is their delimiter, " + fix(t);
}

}  // namespace speedrun
