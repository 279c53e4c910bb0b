#include "core/stop_signal.h"

#include <signal.h>

#include <atomic>
#include <unistd.h>

#include <cstdio>

namespace speedrun {

namespace {
std::atomic<int> g_requested{0};

void on_signal(int sig) {
  if (g_requested.exchange(sig) != 0) {  // the second one: stop now, the default way
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  static const char msg[] =
      "\nstopping after this step with a checkpoint (signal again to stop at once)\n";
  (void)!::write(2, msg, sizeof(msg) - 1);
}

// The output's reader is gone. Every later write to it raises SIGPIPE again (and returns
// EPIPE): only the first one asks for the stop, and says so on stderr, which may be the same
// closed pipe (the SIGPIPE that this write raises then finds the request made, and returns).
void on_pipe(int sig) {
  int none = 0;
  if (!g_requested.compare_exchange_strong(none, sig)) return;
  static const char msg[] =
      "\nthe output's reader is gone: stopping after this step with a checkpoint\n";
  (void)!::write(2, msg, sizeof(msg) - 1);
}

// Installs `handler` for `sig`, unless the process was started with SIGHUP or SIGPIPE
// ignored (nohup; a parent that wants writes to a closed pipe to fail and nothing more).
void handle(int sig, void (*handler)(int)) {
  struct sigaction old {};
  if ((sig == SIGHUP || sig == SIGPIPE) && ::sigaction(sig, nullptr, &old) == 0 &&
      old.sa_handler == SIG_IGN)
    return;
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(sig, &sa, nullptr);
}
}  // namespace

void install_stop_handlers() {
  handle(SIGINT, on_signal);
  handle(SIGTERM, on_signal);
  handle(SIGHUP, on_signal);
  handle(SIGPIPE, on_pipe);
}

int stop_requested() { return g_requested.load(); }

void clear_stop_request() { g_requested.store(0); }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    default: return "a signal";
  }
}

}  // namespace speedrun
