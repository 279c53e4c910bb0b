// speedrun devices: what this build can run on, for a user setting up a machine: the
// backends built in, the GPU architectures its CUDA kernels were compiled for, and each
// visible GPU with whether the CUDA backend runs there (or why not, and the fix).
#include <cstdio>

#include "backend/factory.h"
#include "cli/commands.h"

namespace speedrun::cli {

void add_devices_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "devices", "List the backends this build has and the GPUs it can train on");
  sub->callback([] { std::fputs(devices_report().c_str(), stdout); });
}

}  // namespace speedrun::cli
