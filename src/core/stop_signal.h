// A graceful stop on SIGINT (Ctrl-C), SIGTERM (what a cluster scheduler sends before it
// kills a job), SIGHUP (the terminal or the ssh session closed) and SIGPIPE (the reader of
// the output went away: `speedrun train | tee log` after Ctrl-C, which ends tee at once, or
// `| head`): the first signal only sets a flag that the training loop reads after each step
// (it then writes a checkpoint and says how to resume); a second SIGINT, SIGTERM or SIGHUP
// ends the process at once, the default way. SIGPIPE comes again at every write to the
// closed output, so it never ends the process: those writes fail, and the files (metrics,
// checkpoints) are written as before. A signal the process was started with ignored (nohup's
// SIGHUP) stays ignored.
#pragma once

namespace speedrun {

// Installs the handlers (idempotent).
void install_stop_handlers();
// The signal that asked for a stop (SIGINT, SIGTERM, SIGHUP or SIGPIPE), or 0.
int stop_requested();
// Forgets a request (after the stop was handled; for tests).
void clear_stop_request();
// Names a signal number: "SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", or "a signal".
const char* signal_name(int sig);

}  // namespace speedrun
