#include "core/build_info.h"

#include <nlohmann/json.hpp>

#include "core/cpu_features.h"
// Written at every build (cmake/source_commit.cmake); this file is compiled alone (outside
// unity batches) so that a new commit recompiles nothing else.
#include "speedrun_source_commit.h"

#ifndef SPEEDRUN_VERSION
#define SPEEDRUN_VERSION "unknown"
#endif
#ifndef SPEEDRUN_BUILD_TYPE
#define SPEEDRUN_BUILD_TYPE ""
#endif
#ifndef SPEEDRUN_BUILD_CUDA
#define SPEEDRUN_BUILD_CUDA ""
#endif
#ifndef SPEEDRUN_BUILD_SANITIZERS
#define SPEEDRUN_BUILD_SANITIZERS ""
#endif

namespace speedrun {

namespace {
std::string compiler_name() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "g++ " __VERSION__;
#else
  return "unknown compiler";
#endif
}

std::vector<std::string>& command_line_storage() {
  static std::vector<std::string> args;
  return args;
}
}  // namespace

const BuildInfo& build_info() {
  static const BuildInfo info = [] {
    BuildInfo b;
    b.version = SPEEDRUN_VERSION;
    b.commit = SPEEDRUN_SOURCE_COMMIT;
    b.compiler = compiler_name();
    // "12.2.0" alone where __clang_version__ ends in a space or a source path.
    while (!b.compiler.empty() && b.compiler.back() == ' ') b.compiler.pop_back();
    b.build_type = SPEEDRUN_BUILD_TYPE;
    b.cpu_arch = detail::kCpuArchName;
    b.cuda = SPEEDRUN_BUILD_CUDA;
#ifdef SPEEDRUN_HAVE_MPI
    b.mpi = true;
#endif
#ifdef SPEEDRUN_HAVE_NCCL
    b.nccl = true;
#endif
    b.sanitizers = SPEEDRUN_BUILD_SANITIZERS;
#ifdef SPEEDRUN_BUILD_PORTABLE
    b.portable = true;
#endif
    return b;
  }();
  return info;
}

std::string build_id() { return build_info().version + " commit " + build_info().commit; }

std::string build_summary() {
  const BuildInfo& b = build_info();
  std::string s = "speedrun " + b.version + " (commit " + b.commit + ")";
  if (!b.build_type.empty()) s += ", " + b.build_type;
  s += ", " + b.compiler;
  s += b.cpu_arch.empty() ? std::string(", the compiler's default -march") : ", -march=" + b.cpu_arch;
  s += b.cuda.empty() ? std::string(", no CUDA") : ", " + b.cuda;
  if (b.mpi) s += ", MPI";
  if (b.nccl) s += ", NCCL";
  if (b.portable) s += ", portable";
  if (!b.sanitizers.empty()) s += ", sanitizers " + b.sanitizers;
  return s;
}

nlohmann::json build_info_json() {
  const BuildInfo& b = build_info();
  nlohmann::json j = {{"version", b.version},   {"commit", b.commit},         {"compiler", b.compiler},
                      {"build_type", b.build_type}, {"cpu_arch", b.cpu_arch}, {"cuda", b.cuda},
                      {"mpi", b.mpi},           {"nccl", b.nccl},             {"portable", b.portable}};
  if (!b.sanitizers.empty()) j["sanitizers"] = b.sanitizers;
  return j;
}

void set_command_line(int argc, const char* const* argv) {
  auto& args = command_line_storage();
  args.assign(argv, argv + argc);
}

const std::vector<std::string>& command_line() { return command_line_storage(); }

}  // namespace speedrun
