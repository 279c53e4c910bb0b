#include "train/sweep.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/child_process.h"
#include "core/error.h"
#include "core/utc_time.h"
#include "core/progress.h"
#include "core/stop_signal.h"
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/run_dir.h"
#include "train/settings.h"

namespace speedrun {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kRecord = "sweep.json";
constexpr const char* kLock = ".sweep.lock";
constexpr const char* kLog = "train.log";

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text, const char* what) {
  AtomicFileWriter w(p.string(), what);
  w.write(text.data(), text.size());
  w.commit();
}

nlohmann::json read_record(const fs::path& file) {
  try {
    const auto j = nlohmann::json::parse(read_text(file));
    check(j.is_object() && j.value("format", "") == "speedrun-sweep" && j.contains("runs") &&
              j["runs"].is_array(),
          file.string(), ": not a speedrun sweep record");
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail(file.string(), ": not valid JSON (", e.what(), "): the sweep's record is damaged; "
         "rerun the sweep to rewrite it");
  }
}

// Holds OUT/.sweep.lock while the sweep runs: one sweep per directory at a time.
class SweepLock {
 public:
  explicit SweepLock(const fs::path& dir) {
    const fs::path p = dir / kLock;
    fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    check(fd_ >= 0, "sweep ", dir.string(), ": cannot create ", p.string(), ": ",
          std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const std::string holder = read_text(p);
      ::close(fd_);
      fail("sweep ", dir.string(), " is being run by another process (pid ",
           holder.empty() ? "?" : holder.substr(0, holder.find('\n')),
           "): wait for it, or stop it and rerun");
    }
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
      // The pid is only for the message of a second sweep; the lock itself holds.
    }
  }
  ~SweepLock() { ::close(fd_); }
  SweepLock(const SweepLock&) = delete;
  SweepLock& operator=(const SweepLock&) = delete;

 private:
  int fd_ = -1;
};

enum class State { New, Finished, Resume, Paused, Restart };

struct RunStatus {
  State state = State::New;
  int64_t step = 0;  // steps done: N when finished, the checkpoint's step when resumable
};

// What a run directory holds, and so what the sweep does with it.
RunStatus inspect(const SweepRunPlan& p, FILE* out) {
  const int64_t N = p.config.schedule.steps;
  if (!fs::is_directory(p.dir) || !holds_a_run(p.dir)) return {State::New, 0};
  if (load_sweep_run(p.dir, p.variant, p.seed, N, 1).finished) return {State::Finished, N};
  // (metrics that do not read back, e.g. a line cut by a crash, make a run unfinished: its
  // resume keeps the lines before its checkpoint, or it starts over)
  if (!list_checkpoints(p.dir).empty()) {
    try {
      const auto ck = find_checkpoint(p.dir, [&](const std::string& s) {
        std::fprintf(out, "%s: %s\n", p.rel.c_str(), s.c_str());
      });
      const int64_t stop = p.config.stop_after;
      if (stop > 0 && stop < N && ck.meta.step >= stop) return {State::Paused, ck.meta.step};
      return {State::Resume, ck.meta.step};
    } catch (const Error& e) {
      std::fprintf(out, "%s: no usable checkpoint (%s): it starts over\n", p.rel.c_str(), e.what());
    }
  }
  return {State::Restart, 0};
}

// The settings that would change what a run computes, between the config a run directory
// was started with and the spec's now: "--steps: 8 before, 10 now".
std::vector<std::string> changed_settings(const nlohmann::json& before, const nlohmann::json& now) {
  std::vector<std::string> out;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) {
    if (s.on_resume != OnResume::Same) return;
    const auto text = [&s](const nlohmann::json& j) {
      return j.contains(s.key) ? j.at(s.key).dump() : std::string("(absent)");
    };
    if (text(before) != text(now))
      out.push_back(fmt::format("{}: {} before, {} now", s.name(), text(before), text(now)));
  });
  return out;
}

nlohmann::json make_record(const SweepSpec& spec, const std::vector<SweepRunPlan>& plans) {
  nlohmann::json j = {{"format", "speedrun-sweep"}, {"spec_file", spec.file}};
  try {
    j["spec"] = nlohmann::ordered_json::parse(spec.text);
  } catch (const nlohmann::json::exception&) {
    j["spec"] = spec.text;
  }
  j["target_loss"] = spec.target_loss ? nlohmann::json(*spec.target_loss) : nlohmann::json(nullptr);
  j["variants"] = nlohmann::json::array();
  for (const auto& v : spec.variants) j["variants"].push_back(v.name);
  j["runs"] = nlohmann::json::array();
  for (const auto& p : plans)
    j["runs"].push_back({{"variant", p.variant},
                         {"seed", p.seed},
                         {"dir", p.rel},
                         {"steps", p.config.schedule.steps},
                         {"tokens_per_step", p.config.batch * p.config.seq_len},
                         {"config", config_to_json(p.config)}});
  return j;
}

// The last training step recorded in a metrics file, read from its tail (a running child
// appends to it); 0 when there is none yet.
int64_t steps_in_metrics(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) return 0;
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - 16384);
  f.seekg(from);
  std::string tail((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t end = tail.rfind('\n');
  while (end != std::string::npos && end > 0) {
    const size_t begin = tail.rfind('\n', end - 1);
    const std::string line = tail.substr(begin == std::string::npos ? 0 : begin + 1,
                                         end - (begin == std::string::npos ? 0 : begin + 1));
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("train_loss") && j.contains("step")) return j["step"].get<int64_t>() + 1;
    } catch (const nlohmann::json::exception&) {
      // the first line of the tail is cut: keep looking further back
    }
    if (begin == std::string::npos) break;
    end = begin;
  }
  return 0;
}

// The last "error: ..." line of a log (what `speedrun train` printed when it failed), else
// its last line.
std::string last_error(const fs::path& log) {
  std::istringstream in(read_text(log));
  std::string line, last, error;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    last = line;
    if (line.rfind("error: ", 0) == 0) error = line;
  }
  return error.empty() ? last : error;
}

std::string shell_quote(const std::string& s) {
  if (s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=./:,+") ==
      std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

void write_summary_files(const SweepSpec& spec, const SweepSummary& s) {
  if (!fs::is_directory(spec.out)) return;
  write_text(fs::path(spec.out) / "summary.json", summary_json(s).dump(2) + "\n", "summary");
  write_text(fs::path(spec.out) / "summary.md",
             "# Sweep " + spec.file + "\n\n" + summary_markdown(s), "summary");
}

SweepSummary summarize_plans(const SweepSpec& spec, const std::vector<SweepRunPlan>& plans) {
  std::vector<SweepRun> runs;
  for (const auto& p : plans)
    runs.push_back(load_sweep_run(p.dir, p.variant, p.seed, p.config.schedule.steps,
                                  p.config.batch * p.config.seq_len));
  SweepSummary s = summarize(runs, spec.target_loss);
  write_summary_files(spec, s);
  return s;
}

// The loop that keeps `parallel` children running, shows progress and handles signals.
class Runner {
 public:
  Runner(const SweepSpec& spec, const SweepOptions& o, std::vector<SweepRunPlan> plans)
      : spec_(spec), o_(o), plans_(std::move(plans)), status_(plans_.size()),
        done_(plans_.size(), 0) {}
  SweepOutcome run();

 private:
  struct Active {
    size_t run;
    ChildProcess proc;
    Clock::time_point t0;
  };
  std::vector<std::string> command(size_t i) const;
  void launch(size_t i);
  bool gated();
  void ended(Active& a);
  void say(const std::string& line);
  std::string progress_line() const;
  void draw_progress(bool force);

  const SweepSpec& spec_;
  const SweepOptions& o_;
  std::vector<SweepRunPlan> plans_;
  std::vector<RunStatus> status_;
  std::vector<int64_t> done_;  // steps done per run
  std::vector<Active> active_;
  std::vector<std::string> failed_;
  int finished_ = 0, paused_ = 0, stopped_ = 0;
  int forwarded_ = 0;  // the signal forwarded to the children, once
  // Runs on the built-in corpus prepare it under data/ on first use: the first run starts
  // alone, and the others once its log shows the model line (its data is ready), so
  // parallel runs never prepare the same files at once.
  std::optional<size_t> gate_;
  std::uintmax_t gate_offset_ = 0;
  int64_t total_steps_ = 0, base_steps_ = 0;
  Clock::time_point t0_, last_draw_;
  bool tty_ = false, drawn_ = false, first_launch_ = true;
};

std::vector<std::string> Runner::command(size_t i) const {
  const SweepRunPlan& p = plans_[i];
  std::vector<std::string> argv = {o_.train_binary, "train"};
  argv.insert(argv.end(), p.args.begin(), p.args.end());
  if (status_[i].state == State::Resume) argv.push_back("--resume=" + p.dir);
  if (status_[i].state == State::Restart) argv.push_back("--overwrite");
  return argv;
}

void Runner::say(const std::string& line) {
  write_console(o_.out, (tty_ && drawn_ ? "\r\033[K" : "") + line + "\n");
  drawn_ = false;
}

std::string Runner::progress_line() const {
  int64_t steps = 0;
  for (int64_t d : done_) steps += d;
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0_).count();
  const double rate = elapsed > 0 ? double(steps - base_steps_) / elapsed : 0;
  std::string line = fmt::format("sweep: runs {}/{} done, {} running", finished_, plans_.size(),
                                 active_.size());
  if (!failed_.empty()) line += fmt::format(", {} failed", failed_.size());
  line += fmt::format(" | steps {}/{} ({:.0f}%) | {} elapsed | eta {}", steps, total_steps_,
                      total_steps_ > 0 ? 100.0 * double(steps) / double(total_steps_) : 100.0,
                      format_duration(elapsed),
                      rate > 0 ? format_duration(double(total_steps_ - steps) / rate) : "?");
  return line;
}

// On a terminal: one line redrawn in place twice a second; in a log: a line every 30 s.
void Runner::draw_progress(bool force) {
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since < (tty_ ? 0.5 : 30.0)) return;
  last_draw_ = now;
  if (tty_) {
    write_console(o_.out, "\r\033[K" + progress_line());
    drawn_ = true;
  } else {
    write_console(o_.out, progress_line() + "\n");
  }
}

void Runner::launch(size_t i) {
  const SweepRunPlan& p = plans_[i];
  fs::create_directories(p.dir);
  const fs::path log = fs::path(p.dir) / kLog;
  const auto argv = command(i);
  std::string cmd;
  for (size_t k = 1; k < argv.size(); ++k) cmd += fmt::format(" {}", shell_quote(argv[k]));
  {
    std::ofstream f(log, std::ios::app);
    f << "\n=== speedrun sweep " << spec_.file << ", " << utc_now("%Y-%m-%d %H:%M:%S UTC") << ": speedrun" << cmd << "\n";
  }
  const RunStatus& st = status_[i];
  say(st.state == State::Resume    ? fmt::format("resume {} from step {}", p.rel, st.step)
      : st.state == State::Restart ? fmt::format("restart {} (no usable checkpoint)", p.rel)
                                   : fmt::format("start {}", p.rel));
  std::error_code ec;
  const std::uintmax_t offset = fs::file_size(log, ec);
  active_.push_back({i, ChildProcess::start(argv, log.string()), Clock::now()});
  if (first_launch_ && p.config.train_glob.empty()) gate_ = i, gate_offset_ = ec ? 0 : offset;
  first_launch_ = false;
}

bool Runner::gated() {
  if (!gate_) return false;
  const size_t i = *gate_;
  const bool running = std::any_of(active_.begin(), active_.end(),
                                   [&](const Active& a) { return a.run == i; });
  std::ifstream f(fs::path(plans_[i].dir) / kLog, std::ios::binary);
  f.seekg(std::streamoff(gate_offset_));
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (!running || text.rfind("model: ", 0) == 0 || text.find("\nmodel: ") != std::string::npos)
    gate_.reset();
  return gate_.has_value();
}

void Runner::ended(Active& a) {
  const size_t i = a.run;
  const SweepRunPlan& p = plans_[i];
  const int code = a.proc.exit_code();
  const fs::path log = fs::path(p.dir) / kLog;
  const std::string took =
      format_duration(std::chrono::duration<double>(Clock::now() - a.t0).count());
  const RunStatus now = inspect(p, o_.out);
  done_[i] = now.state == State::Finished ? p.config.schedule.steps
                                          : steps_in_metrics(fs::path(p.dir) / "metrics.jsonl");
  const bool signalled = code == 128 + SIGINT || code == 128 + SIGTERM || code == 128 + SIGHUP ||
                         code == 128 + SIGPIPE;
  if (now.state == State::Finished) {
    ++finished_;
    const MetricsLog m = load_sweep_run(p.dir, p.variant, p.seed, p.config.schedule.steps).metrics;
    say(m.val.empty() ? fmt::format("done {} ({})", p.rel, took)
                      : fmt::format("done {}: val_loss {:.4f} at step {} ({})", p.rel,
                                    m.val.back().loss, m.val.back().step, took));
  } else if (code == 0 && now.state == State::Paused) {
    ++paused_;
    say(fmt::format("paused {} at step {}: the spec's stop-after {}", p.rel, now.step,
                    p.config.stop_after));
  } else if (signalled && (now.state == State::Resume || now.state == State::Paused)) {
    ++stopped_;
    say(fmt::format("stopped {} at step {} with a checkpoint", p.rel, now.step));
  } else if (forwarded_ != 0 && a.proc.killed_by() == forwarded_) {
    ++stopped_;  // the signal came before the run had set up its graceful stop
    say(fmt::format("stopped {} before its first checkpoint: it starts over next time", p.rel));
  } else {
    const std::string why =
        a.proc.killed_by() ? fmt::format("killed by signal {}", a.proc.killed_by())
        : code == 0        ? std::string("ended without finishing")
                           : fmt::format("exit status {}", code);
    failed_.push_back(p.rel);
    say(fmt::format("FAILED {} ({}): {}\n  its log: {}", p.rel, why, last_error(log), log.string()));
  }
}

SweepOutcome Runner::run() {
  tty_ = ::isatty(::fileno(o_.out));
  std::optional<SweepLock> lock;  // a dry run writes nothing and takes no lock
  if (!o_.dry_run) {
    std::error_code ec;
    fs::create_directories(spec_.out, ec);
    check(!ec && fs::is_directory(spec_.out), "sweep: cannot use ", spec_.out,
          " as the sweep's directory (", ec ? ec.message() : "it is not a directory",
          "): give another with --out or the spec's \"out\"");
    lock.emplace(spec_.out);
  }
  const fs::path record = fs::path(spec_.out) / kRecord;
  const nlohmann::json before = fs::exists(record) ? read_record(record) : nlohmann::json{};
  std::map<std::string, nlohmann::json> before_config;
  if (!before.is_null())
    for (const auto& r : before["runs"])
      if (r.contains("dir") && r.contains("config")) before_config[r["dir"]] = r["config"];

  // Every run's state, and every started run checked against the spec, before anything runs.
  int counts[5] = {0, 0, 0, 0, 0};
  for (size_t i = 0; i < plans_.size(); ++i) {
    const SweepRunPlan& p = plans_[i];
    status_[i] = inspect(p, o_.out);
    ++counts[int(status_[i].state)];
    done_[i] = status_[i].step;
    total_steps_ += p.config.schedule.steps;
    if (status_[i].state == State::New) continue;
    const auto it = before_config.find(p.rel);
    check(it != before_config.end(), "sweep: ", p.dir, " holds a run this sweep did not start (",
          record.string(), " has no record of it): move it away or give the sweep another \"out\"");
    const auto diffs = changed_settings(it->second, config_to_json(p.config));
    if (!diffs.empty()) {
      std::string list;
      for (const auto& d : diffs) list += "\n  " + d;
      fail("sweep: ", p.dir, " holds a run started with other settings than the spec (with its preset) now gives:",
           list, "\nrestore the spec, or move that directory away to run it anew with these "
           "settings (or give the sweep another \"out\")");
    }
  }
  base_steps_ = 0;
  for (int64_t d : done_) base_steps_ += d;
  finished_ = counts[int(State::Finished)];
  paused_ = counts[int(State::Paused)];

  const int threads_each = [&] {
    for (const auto& a : plans_.front().args)
      if (a.rfind("--threads=", 0) == 0) return std::stoi(a.substr(10));
    return 0;
  }();
  std::string states;
  static const char* kStateNames[] = {"to start", "finished", "to resume", "paused at stop-after",
                                      "to start over"};
  for (int k : {1, 2, 4, 0, 3})
    if (counts[k] > 0) states += fmt::format("{}{} {}", states.empty() ? "" : ", ", counts[k], kStateNames[k]);
  std::fprintf(o_.out, "sweep %s: %zu variant(s) x %zu seed(s) = %zu runs in %s (%s); %d at a time%s\n",
               spec_.file.c_str(), spec_.variants.size(), spec_.seeds.size(), plans_.size(),
               spec_.out.c_str(), states.c_str(), spec_.parallel,
               threads_each > 0 ? fmt::format(", {} thread(s) each", threads_each).c_str() : "");
  SweepOutcome out;
  out.total = int(plans_.size());
  if (o_.dry_run) {
    static const char* names[] = {"start", "finished", "resume", "paused", "start over"};
    std::fprintf(o_.out, "(dry run: nothing is started)\n");
    for (size_t i = 0; i < plans_.size(); ++i) {
      std::string cmd = "speedrun";
      const auto argv = command(i);
      for (size_t k = 1; k < argv.size(); ++k) cmd += fmt::format(" {}", shell_quote(argv[k]));
      std::fprintf(o_.out, "%-12s %s\n  %s\n", names[int(status_[i].state)], plans_[i].rel.c_str(),
                   cmd.c_str());
    }
    out.finished = finished_;
    out.paused = paused_;
    return out;
  }
  write_text(record, make_record(spec_, plans_).dump(2) + "\n", "sweep record");

  std::deque<size_t> queue;
  for (size_t i = 0; i < plans_.size(); ++i)
    if (status_[i].state != State::Finished && status_[i].state != State::Paused) queue.push_back(i);
  install_stop_handlers();
  t0_ = last_draw_ = Clock::now();
  for (;;) {
    while (forwarded_ == 0 && !queue.empty() && int(active_.size()) < spec_.parallel && !gated()) {
      launch(queue.front());
      queue.pop_front();
    }
    if (active_.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (const int sig = stop_requested(); sig != 0 && forwarded_ == 0) {
      forwarded_ = sig;
      say(fmt::format("sweep: {}: asking the {} running run(s) to stop after their current step "
                      "with a checkpoint (signal again to stop them at once)",
                      signal_name(sig), active_.size()));
      // (A run writes to its own log, so the sweep's closed output or terminal is not its:
      // it is asked as a scheduler asks, SIGINT's Ctrl-C aside.)
      for (const auto& a : active_) a.proc.signal(sig == SIGINT ? SIGINT : SIGTERM);
    }
    for (size_t k = 0; k < active_.size();) {
      if (active_[k].proc.poll()) {
        ended(active_[k]);
        active_.erase(active_.begin() + long(k));
        if (!tty_) draw_progress(true);
      } else {
        done_[active_[k].run] = steps_in_metrics(fs::path(plans_[active_[k].run].dir) / "metrics.jsonl");
        ++k;
      }
    }
    draw_progress(false);
  }
  if (tty_ && drawn_) std::fputs("\r\033[K", o_.out);

  out.summary = summarize_plans(spec_, plans_);
  std::fprintf(o_.out, "\n%s\n", summary_text(out.summary).c_str());
  out.finished = finished_;
  out.paused = paused_;
  out.failed = int(failed_.size());
  out.stopped_by_signal = forwarded_;
  if (forwarded_ != 0)
    std::fprintf(o_.out, "sweep stopped by %s: %d/%zu runs finished, %d stopped with a checkpoint, "
                 "%zu never started. Continue with: %s (finished runs are skipped, stopped ones "
                 "resume)\n",
                 signal_name(forwarded_), finished_, plans_.size(), stopped_, queue.size(),
                 o_.rerun_command.c_str());
  if (!failed_.empty()) {
    std::string list;
    for (const auto& f : failed_) list += " " + f;
    std::fprintf(o_.out, "sweep: %zu run(s) failed:%s; see their train.log, fix the cause and "
                 "rerun %s (finished runs are skipped)\n",
                 failed_.size(), list.c_str(), o_.rerun_command.c_str());
  }
  if (paused_ > 0)
    std::fprintf(o_.out, "sweep: %d run(s) paused at the spec's stop-after: remove it from the "
                 "spec and rerun to finish them\n", paused_);
  std::fprintf(o_.out, "sweep: %d/%zu runs finished; summary in %s\n", finished_, plans_.size(),
               (fs::path(spec_.out) / "summary.md").string().c_str());
  std::fflush(o_.out);
  return out;
}

}  // namespace

SweepOutcome run_sweep(const SweepSpec& spec, const SweepOptions& o) {
  check(!o.train_binary.empty(), "sweep: no speedrun binary to run the runs with");
  Runner r(spec, o, plan_sweep(spec));
  return r.run();
}

SweepSummary summarize_sweep(const SweepSpec& spec) { return summarize_plans(spec, plan_sweep(spec)); }

bool is_sweep_dir(const std::string& dir) { return fs::is_regular_file(fs::path(dir) / kRecord); }

SweepDirRuns load_sweep_dir(const std::string& dir) {
  const nlohmann::json j = read_record(fs::path(dir) / kRecord);
  SweepDirRuns out;
  if (j.contains("target_loss") && j["target_loss"].is_number())
    out.target_loss = j["target_loss"].get<double>();
  for (const auto& r : j["runs"]) {
    check(r.contains("variant") && r.contains("dir") && r.contains("seed"), dir, "/", kRecord,
          ": a run without variant, seed or dir: the record is damaged; rerun the sweep");
    out.runs.push_back(load_sweep_run((fs::path(dir) / r["dir"].get<std::string>()).string(),
                                      r["variant"].get<std::string>(), r["seed"].get<uint64_t>(),
                                      r.value("steps", int64_t(0)),
                                      r.value("tokens_per_step", int64_t(0))));
  }
  return out;
}

}  // namespace speedrun
