// A graceful stop on SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends before it
// kills a job): the first signal only sets a flag that the training loop reads after each
// step (it then writes a checkpoint and says how to resume); a second signal ends the
// process at once, the default way.
#pragma once

namespace speedrun {

// Installs the handlers for SIGINT and SIGTERM (idempotent).
void install_stop_handlers();
// The signal that asked for a stop (SIGINT or SIGTERM), or 0.
int stop_requested();
// Forgets a request (after the stop was handled; for tests).
void clear_stop_request();
// Names a signal number: "SIGINT", "SIGTERM", or "signal N".
const char* signal_name(int sig);

}  // namespace speedrun
