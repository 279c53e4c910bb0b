// A child process for commands that run other commands (speedrun sweep runs each training
// run as `speedrun train` in a child, so a crash or a signal in one run never takes the
// others down). The child:
//   - runs in a process group of its own, so a Ctrl-C on the terminal reaches the parent
//     alone, which decides what to forward (one signal, not the terminal's plus the
//     parent's, which `speedrun train` would take as "stop at once");
//   - gets SIGTERM when the parent dies (Linux's parent-death signal), so a killed parent
//     leaves no orphan training on;
//   - reads /dev/null and appends its stdout and stderr to a log file.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace speedrun {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with argv; output appended to log_file (created if missing).
  // Throws Error when the log file cannot be opened or the fork fails; a failed exec is
  // reported in the log and as exit status 127.
  static ChildProcess start(const std::vector<std::string>& argv, const std::string& log_file);

  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // a child still running is left running (its parent-death signal ends it)

  // Whether it has ended (does not wait).
  bool poll();
  // Waits until it ends.
  void wait();
  // Sends a signal (nothing once it has ended).
  void signal(int sig) const;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !ended_; }
  // Once ended: its exit status, or 128 + the signal that killed it (as a shell reports it).
  int exit_code() const { return code_; }
  // Once ended: the signal that killed it, or 0 when it exited.
  int killed_by() const { return killed_by_; }

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  void settle(int status);
  pid_t pid_ = -1;
  bool ended_ = false;
  int code_ = 0, killed_by_ = 0;
};

}  // namespace speedrun
