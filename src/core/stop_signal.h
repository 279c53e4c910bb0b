// A graceful stop on SIGINT (Ctrl-C), SIGTERM (what a cluster scheduler sends before it
// kills a job) and SIGHUP (the terminal or the ssh session closed): the first signal only
// sets a flag that the training loop reads after each step (it then writes a checkpoint and
// says how to resume); a second one ends the process at once, the default way. A run under
// nohup (SIGHUP ignored) keeps ignoring SIGHUP.
//
// The console's reader going away (`speedrun train | head`; `| tee log` when Ctrl-C ends tee
// before the trainer) asks for the same stop, as SIGPIPE: SIGPIPE itself is ignored (its
// default killed the process mid-step, without a checkpoint), and a console write that
// fails with EPIPE (write_console) makes the request. Writes to other pipes and sockets
// just fail, as their libraries expect.
#pragma once
#include <cstdio>
#include <string>

namespace speedrun {

// What the first signal prints on stderr by default: the training loop's stop.
inline constexpr const char* kTrainingStopNotice =
    "\nstopping after this step with a checkpoint (signal again to stop at once)\n";

// Installs the handlers (idempotent). `notice` (static storage: the handler reads it) is
// what the first signal prints, saying what the command does next.
void install_stop_handlers(const char* notice = kTrainingStopNotice);
// The signal that asked for a stop (SIGINT, SIGTERM, SIGHUP, or SIGPIPE for a console whose
// reader is gone), or 0.
int stop_requested();
// Forgets a request (after the stop was handled; for tests).
void clear_stop_request();
// Names a signal number: "SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", or "a signal".
const char* signal_name(int sig);

// Writes `text` to the console stream `f` and flushes it. Where the stream's reader is gone
// (EPIPE), asks for a stop (stop_requested() == SIGPIPE) unless one was asked already, and
// says so on stderr; the text is lost, and so is every later line.
void write_console(FILE* f, const std::string& text);

}  // namespace speedrun
