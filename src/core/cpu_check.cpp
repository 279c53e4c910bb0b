// Compiled for the baseline x86-64 (CMakeLists.txt), whatever SPEEDRUN_CPU_ARCH is, and
// outside unity batches: this code must run on a CPU that lacks the build's extensions.
// The check at load time uses C only (libc and the compiler's builtins): an inline C++
// function it called could be linked from a copy another file compiled with AVX2.
#include "core/cpu_check.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/cpu_features.h"

namespace speedrun {

namespace {

#if defined(__x86_64__) || defined(__i386__)
// __builtin_cpu_supports takes a string literal: one test per name cpu_features.cpp uses.
int cpu_supports_c(const char* name) {
#define SPEEDRUN_FEATURE(n) \
  if (std::strcmp(name, n) == 0) return __builtin_cpu_supports(n) ? 1 : 0;
  SPEEDRUN_FEATURE("sse4.2")
  SPEEDRUN_FEATURE("popcnt")
  SPEEDRUN_FEATURE("avx")
  SPEEDRUN_FEATURE("avx2")
  SPEEDRUN_FEATURE("fma")
  SPEEDRUN_FEATURE("bmi")
  SPEEDRUN_FEATURE("bmi2")
  SPEEDRUN_FEATURE("avx512f")
  SPEEDRUN_FEATURE("avx512bw")
  SPEEDRUN_FEATURE("avx512dq")
  SPEEDRUN_FEATURE("avx512vl")
#undef SPEEDRUN_FEATURE
  return 0;  // a name this table lacks: cpu_features.cpp and this list disagree
}
#else
int cpu_supports_c(const char*) { return 0; }  // no extension is named off x86
#endif

// The message for a CPU that lacks `names` (comma-separated), into buf.
void write_message_c(char* buf, size_t size, const char* names) {
  std::snprintf(buf, size,
                "error: this speedrun was built for %s CPUs (SPEEDRUN_CPU_ARCH), and this CPU "
                "lacks %s: rebuild it for this CPU with `SPEEDRUN_CPU_ARCH=native "
                "scripts/build.sh` (or x86-64 for any x86-64 CPU; the CPU code is then slower)\n",
                detail::kCpuArchName[0] ? detail::kCpuArchName : "these", names);
}

// Writes the message for the missing extensions into buf; returns whether any is missing.
bool missing_message_c(char* buf, size_t size) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();  // needed before __builtin_cpu_supports in a constructor
#endif
  char names[256] = "";
  for (const char* const* f = detail::kRequiredCpuFeatures; *f; ++f) {
    if (cpu_supports_c(*f)) continue;
    if (names[0]) std::strncat(names, ", ", sizeof(names) - std::strlen(names) - 1);
    std::strncat(names, *f, sizeof(names) - std::strlen(names) - 1);
  }
  if (!names[0]) return false;
  write_message_c(buf, size, names);
  return true;
}

void check_or_exit() {
  char msg[512];
  if (!missing_message_c(msg, sizeof(msg))) return;
  std::fputs(msg, stderr);
  std::fflush(stderr);
  _exit(1);
}

// Before every static initialiser of default priority, in this binary or library.
[[gnu::constructor(101)]] void check_at_load() { check_or_exit(); }

}  // namespace

const std::vector<std::string>& required_cpu_features() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const char* const* f = detail::kRequiredCpuFeatures; *f; ++f) v.emplace_back(*f);
    return v;
  }();
  return names;
}

const char* cpu_arch_name() { return detail::kCpuArchName; }

std::vector<std::string> missing_cpu_features(
    const std::vector<std::string>& required,
    const std::function<bool(const std::string&)>& supports) {
  std::vector<std::string> out;
  for (const std::string& f : required)
    if (!supports(f)) out.push_back(f);
  return out;
}

bool cpu_supports(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#endif
  return cpu_supports_c(name.c_str()) != 0;
}

std::string cpu_features_message(const std::vector<std::string>& missing) {
  std::string names;
  for (const std::string& f : missing) names += (names.empty() ? "" : ", ") + f;
  char buf[1024];
  write_message_c(buf, sizeof(buf), names.c_str());
  return buf;
}

void require_cpu_features() { check_or_exit(); }

}  // namespace speedrun
