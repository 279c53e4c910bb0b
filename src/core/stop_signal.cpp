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
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int stop_requested() { return g_requested.load(); }

void clear_stop_request() { g_requested.store(0); }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
  }
}

}  // namespace speedrun
