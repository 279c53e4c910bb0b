#include "core/host_memory.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace speedrun {

namespace {

std::string proc_file_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The value in kB of /proc/meminfo's line "<key>:   123 kB", in bytes; nullopt if absent.
std::optional<size_t> meminfo_bytes(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    char* end = nullptr;
    const unsigned long long kb = std::strtoull(line.c_str() + key.size() + 1, &end, 10);
    if (end == line.c_str() + key.size() + 1) return std::nullopt;
    return size_t(kb) * 1024;
  }
  return std::nullopt;
}

// A cgroup file holding one number, or nullopt ("max", empty, malformed).
std::optional<size_t> cgroup_number(const std::string& text) {
  if (text.empty() || text.rfind("max", 0) == 0) return std::nullopt;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str()) return std::nullopt;
  return size_t(v);
}

}  // namespace

std::string host_oom_message(size_t asked, std::optional<size_t> room) {
  auto gib = [](size_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(size_t(1) << 30));
    return std::string(buf);
  };
  std::string m = "cpu: out of memory allocating " + gib(asked) + " (" + std::to_string(asked) + " bytes)";
  if (room)
    m += ": this process has " + gib(*room) +
         " left (the free memory and swap, within its cgroup's limit)";
  return m + ". " + kMemoryAdvice;
}

std::optional<size_t> host_memory_available(const std::string& meminfo,
                                            const std::vector<CgroupLevel>& cgroups) {
  const auto avail = meminfo_bytes(meminfo, "MemAvailable");
  if (!avail) return std::nullopt;
  size_t room = *avail + meminfo_bytes(meminfo, "SwapFree").value_or(0);
  for (const CgroupLevel& c : cgroups) {
    const auto max = cgroup_number(c.max);
    if (!max) continue;
    const size_t used = cgroup_number(c.current).value_or(0);
    room = std::min(room, *max > used ? *max - used : size_t(0));
  }
  return room;
}

std::optional<size_t> host_memory_available() {
  // This process's cgroup (v2: the line "0::/path" of /proc/self/cgroup) and its ancestors.
  std::vector<CgroupLevel> levels;
  std::istringstream in(proc_file_text("/proc/self/cgroup"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    std::string path = line.substr(3);
    while (true) {
      const std::string dir = "/sys/fs/cgroup" + (path == "/" ? std::string() : path);
      levels.push_back({proc_file_text(dir + "/memory.max"), proc_file_text(dir + "/memory.current")});
      if (path.empty() || path == "/") break;
      const size_t slash = path.rfind('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  }
  return host_memory_available(proc_file_text("/proc/meminfo"), levels);
}

}  // namespace speedrun
