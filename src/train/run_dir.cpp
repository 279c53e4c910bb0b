#include "train/run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/utc_time.h"
#include "core/json_input.h"

namespace speedrun {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRunFile = "run.json";
constexpr const char* kLockFile = ".lock";

bool process_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM); }

std::string hostname() {
  char h[256] = {0};
  return ::gethostname(h, sizeof(h) - 1) == 0 ? std::string(h) : std::string("?");
}

// Takes OUT/.lock; throws naming the holder when another process has it.
int take_lock(const fs::path& dir) {
  const fs::path p = dir / kLockFile;
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  check(fd >= 0, "--out ", dir.string(), ": cannot create ", p.string(), ": ", std::strerror(errno),
        " (check the directory's permissions)");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    std::string holder(256, '\0');
    const ssize_t n = ::pread(fd, holder.data(), holder.size() - 1, 0);
    holder.resize(n > 0 ? size_t(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
    ::close(fd);
    fail("--out ", dir.string(), " is being written by another process (", holder.empty() ? "?" : holder,
         "): wait for it to finish, stop it, or choose another --out");
  }
  const std::string me = fmt::format("pid {} on {}\n", ::getpid(), hostname());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size())) {
    const int e = errno;
    ::close(fd);
    fail("--out ", dir.string(), ": cannot write ", p.string(), ": ", std::strerror(e));
  }
  return fd;
}

}  // namespace

void remove_write_leftovers(const std::string& dir) {
  static const std::regex ckpt("\\.ckpt_step[0-9]+\\.(tmp|trash|old)\\.([0-9]+)");
  static const std::regex file(".+\\.tmp\\.([0-9]+)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    long pid = -1;
    if (std::regex_match(name, m, ckpt))
      pid = std::stol(m[2].str());
    else if (std::regex_match(name, m, file))
      pid = std::stol(m[1].str());
    if (pid > 0 && !process_alive(pid)) fs::remove_all(e.path(), ec);
  }
}

namespace {

bool is_run_file(const std::string& name) {
  static const std::regex re("metrics\\.jsonl|run\\.json|model_step[0-9]+\\.safetensors|ckpt_step[0-9]+");
  return std::regex_match(name, re);
}

std::string new_run_id() {
  std::random_device rd;
  const uint64_t hi = (uint64_t(rd()) << 32) ^ rd();
  const uint64_t t = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
  return fmt::format("{:016x}", hi ^ (t * 0x9e3779b97f4a7c15ull) ^ uint64_t(::getpid()));
}

void prepare_dir(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec))
    check(fs::is_directory(dir, ec), "--out ", dir.string(),
          " is a file, not a directory: choose a directory for the run");
  fs::create_directories(dir, ec);
  check(!ec, "--out ", dir.string(), ": cannot create the directory: ", ec.message());
}

}  // namespace

bool holds_a_run(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_run_file(e.path().filename().string())) return true;
  return false;
}

namespace {
// dir/run.json parsed, or nullopt where there is none; throws nlohmann::json::exception
// where it is not valid JSON (each caller says what that means for it).
std::optional<nlohmann::json> read_run_file(const std::string& dir) {
  std::ifstream f(fs::path(dir) / kRunFile);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_json(ss.str());
}

// The run_id of run.json's `j`, or "" when it has none (a run of an older version); throws
// nlohmann::json::type_error where `j` is no object or its run_id no string.
std::string run_id_in(const nlohmann::json& j) { return j.value("run_id", std::string()); }
}  // namespace

RunLaunches run_launches(const std::string& dir) {
  RunLaunches out;
  auto add = [](std::vector<std::string>& list, const nlohmann::json& v) {
    if (v.is_string() && std::find(list.begin(), list.end(), v.get<std::string>()) == list.end())
      list.push_back(v.get<std::string>());
  };
  try {
    const std::optional<nlohmann::json> j = read_run_file(dir);
    if (!j || !j->is_object() || !j->contains("launches") || !(*j)["launches"].is_array()) return out;
    for (const auto& l : (*j)["launches"]) {
      if (!l.is_object()) continue;
      if (l.contains("speedrun") && l["speedrun"].is_object() && l["speedrun"].contains("commit"))
        add(out.commits, l["speedrun"]["commit"]);
      if (l.contains("device")) add(out.devices, l["device"]);
    }
  } catch (const nlohmann::json::exception&) {
    return {};
  }
  return out;
}

// run.json holds the run's id and its launches, written whole (never half): damage is an
// edit by hand. Without it a resume continues, only without its check that the directory
// still holds the checkpoint's run.
constexpr const char* kRunFileFix =
    "; restore it, or delete it to resume without the check that this directory still holds "
    "the checkpoint's run";

std::string run_id_of(const std::string& dir) {
  try {
    const std::optional<nlohmann::json> j = read_run_file(dir);
    return j ? run_id_in(*j) : std::string();
  } catch (const nlohmann::json::exception&) {
    fail((fs::path(dir) / kRunFile).string(), " is not valid JSON: the run directory is damaged",
         kRunFileFix);
  }
}

namespace {
// `launch` with where and when it ran: the entry run.json's "launches" gets.
nlohmann::json launch_entry(const nlohmann::json& launch, int64_t step) {
  nlohmann::json e = {{"step", step}, {"time", utc_now()}, {"host", hostname()}};
  if (launch.is_object()) e.update(launch);
  return e;
}

void write_run_file(const fs::path& d, const nlohmann::json& j) {
  const std::string text = j.dump(2) + "\n";
  AtomicFileWriter w((d / kRunFile).string(), "run file");
  w.write(text.data(), text.size());
  w.commit();
}
}  // namespace

RunDir RunDir::start(const std::string& dir, bool overwrite, const nlohmann::json& launch) {
  const fs::path d(dir);
  prepare_dir(d);
  const int fd = take_lock(d);
  RunDir r(dir, fd, new_run_id());
  remove_write_leftovers(dir);
  if (holds_a_run(dir)) {
    // --resume needs a checkpoint: without one, naming it would only lead to its refusal.
    bool checkpointed = false;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec))
      checkpointed |= e.is_directory(ec) && e.path().filename().string().rfind("ckpt_step", 0) == 0;
    check(overwrite, "--out ", dir, " already holds a run (metrics, weights or checkpoints): ",
          checkpointed ? "continue it with --resume " + dir + ", choose"
                       : std::string("it has no checkpoint to continue from (it saved none, or "
                                     "stopped before its first); choose"),
          " another --out, or pass --overwrite to delete it and start over");
    for (const auto& e : fs::directory_iterator(d, ec))
      if (is_run_file(e.path().filename().string())) fs::remove_all(e.path(), ec);
  }
  write_run_file(d, {{"format", "speedrun-run"},
                     {"run_id", r.run_id_},
                     {"created", utc_now()},
                     {"launches", nlohmann::json::array({launch_entry(launch, 0)})}});
  return r;
}

RunDir RunDir::resume(const std::string& dir, const std::string& run_id, int64_t step,
                      const nlohmann::json& launch) {
  const fs::path d(dir);
  prepare_dir(d);
  const int fd = take_lock(d);
  RunDir r(dir, fd, run_id);
  remove_write_leftovers(dir);
  std::optional<nlohmann::json> j;
  std::string here;
  try {
    j = read_run_file(dir);
    if (j) here = run_id_in(*j);
  } catch (const nlohmann::json::exception&) {
    fail((d / kRunFile).string(), " is not valid JSON: the run directory is damaged", kRunFileFix);
  }
  check(here.empty() || run_id.empty() || here == run_id, "--resume: ", dir,
        " now holds another run (run_id ", here, ", the checkpoint's is ", run_id,
        "): the checkpoint's run was replaced; resume from a copy of the old run directory");
  if (!here.empty()) {  // a run.json of this run: this launch joins its list
    if (!j->contains("launches") || !(*j)["launches"].is_array()) (*j)["launches"] = nlohmann::json::array();
    (*j)["launches"].push_back(launch_entry(launch, step));
    write_run_file(d, *j);
  }
  return r;
}

RunDir::RunDir(RunDir&& o) noexcept
    : path_(std::move(o.path_)), lock_fd_(o.lock_fd_), run_id_(std::move(o.run_id_)) {
  o.lock_fd_ = -1;
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing drops the flock
}

std::string next_run_dir(const std::string& base) {
  for (int n = 1;; ++n) {
    const std::string p = fmt::format("{}-{}", base, n);
    if (!fs::exists(p)) return p;
  }
}

}  // namespace speedrun
