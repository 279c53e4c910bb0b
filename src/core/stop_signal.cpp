#include "core/stop_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace speedrun {

namespace {
std::atomic<int> g_requested{0};
std::atomic<const char*> g_notice{kTrainingStopNotice};

void on_signal(int sig) {
  if (g_requested.exchange(sig) != 0) {  // the second one: stop now, the default way
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  const char* msg = g_notice.load();
  size_t n = 0;
  while (msg[n] != '\0') ++n;  // by hand: a handler may call only async-signal-safe functions
  (void)!::write(2, msg, n);
}
}  // namespace

void install_stop_handlers(const char* notice) {
  g_notice.store(notice);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  struct sigaction hup {};
  if (::sigaction(SIGHUP, nullptr, &hup) != 0 || hup.sa_handler != SIG_IGN)  // not under nohup
    ::sigaction(SIGHUP, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
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

void write_console(FILE* f, const std::string& text) {
  errno = 0;
  const bool written = std::fputs(text.c_str(), f) != EOF && std::fflush(f) == 0;
  if (written || errno != EPIPE) return;
  std::clearerr(f);
  int none = 0;
  if (g_requested.compare_exchange_strong(none, SIGPIPE))
    std::fputs("\nthe output's reader is gone: stopping after this step with a checkpoint\n",
               f == stderr ? stdout : stderr);
}

}  // namespace speedrun
