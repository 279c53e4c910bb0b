// What built this speedrun, so that a result names the build that produced it:
// `speedrun --version`, each run's run.json, each checkpoint's meta.json and the
// benchmark's report and JSON carry it.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace speedrun {

struct BuildInfo {
  std::string version;     // the project's version (CMakeLists.txt, project())
  std::string commit;      // `git describe --always --dirty` of the sources built, at build
                           // time; "-dirty": with uncommitted changes; "unknown" outside git
  std::string compiler;    // "g++ 12.2.0", "clang 14.0.6"
  std::string build_type;  // CMAKE_BUILD_TYPE: Release, Debug, ...
  std::string cpu_arch;    // the C++ code's -march ("": the compiler's default)
  std::string cuda;        // "CUDA 13.0.88 for 80,90a", "CUDA emulated on the CPU (...)", ""
  bool mpi = false, nccl = false;
  std::string sanitizers;  // SPEEDRUN_SANITIZE ("" in a normal build)
  bool portable = false;   // scripts/build_portable.sh's build
};

const BuildInfo& build_info();
// The build in a few words, where one text names it (weights' metadata, what ranks compare):
// "0.1.0 commit 0b46c95a1b2c".
std::string build_id();
// One line: "speedrun 0.1.0 (commit 0b46c95a1b2c), Release, g++ 12.2.0, -march=x86-64-v3,
// CUDA 13.0.88 for 80,90a, MPI, NCCL".
std::string build_summary();
// {"version", "commit", "compiler", "build_type", "cpu_arch", "cuda", "mpi", "nccl", ...}.
nlohmann::json build_info_json();

// The command line this process was started with, as main() received it (empty until
// set_command_line is called: a library user that is not the speedrun executable).
void set_command_line(int argc, const char* const* argv);
const std::vector<std::string>& command_line();

}  // namespace speedrun
