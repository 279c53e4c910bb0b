#include "core/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace speedrun {

ChildProcess ChildProcess::start(const std::vector<std::string>& argv,
                                 const std::string& log_file) {
  check(!argv.empty(), "child process: no command");
  const int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  check(log >= 0, "child process: cannot open its log ", log_file, ": ", std::strerror(errno),
        " (check the directory's permissions and free space)");
  // Everything the child needs, prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(log);
    fail("child process: fork failed: ", std::strerror(e), " (too many processes or no memory)");
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::signal(SIGPIPE, SIG_DFL);  // as a shell starts it (the parent ignores it: stop_signal.h)
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(128 + SIGTERM);  // the parent died before prctl
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execv(args[0], args.data());
    static const char msg[] = "error: child process: exec failed\n";
    (void)!::write(2, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before any signal can race the child
  ::close(log);
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(o.pid_), ended_(o.ended_), code_(o.code_), killed_by_(o.killed_by_) {
  o.pid_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  pid_ = o.pid_;
  ended_ = o.ended_;
  code_ = o.code_;
  killed_by_ = o.killed_by_;
  o.pid_ = -1;
  return *this;
}

ChildProcess::~ChildProcess() = default;

void ChildProcess::settle(int status) {
  ended_ = true;
  if (WIFSIGNALED(status)) {
    killed_by_ = WTERMSIG(status);
    code_ = 128 + killed_by_;
  } else {
    code_ = WEXITSTATUS(status);
  }
}

bool ChildProcess::poll() {
  if (pid_ <= 0 || ended_) return true;
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == pid_) settle(status);
  else if (r < 0) {  // not our child any more (reaped elsewhere): report it as lost
    ended_ = true;
    code_ = 127;
  }
  return ended_;
}

void ChildProcess::wait() {
  if (pid_ <= 0 || ended_) return;
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, 0);
  while (r < 0 && errno == EINTR);
  if (r == pid_) settle(status);
  else {
    ended_ = true;
    code_ = 127;
  }
}

void ChildProcess::signal(int sig) const {
  if (running()) ::kill(pid_, sig);
}

}  // namespace speedrun
