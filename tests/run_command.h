// Shell commands from tests: the exit status and the combined stdout + stderr.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

struct Outcome {
  int code;         // exit status; 128 + signal when killed by one
  std::string out;  // stdout and stderr together
};

inline Outcome run_shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {127, "popen failed: " + cmd};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// The built speedrun binary with `args`; `prefix` may set variables or cd first.
inline Outcome run_cli(const std::string& args, const std::string& prefix = "") {
  return run_shell(prefix + " " + SPEEDRUN_BINARY + " " + args);
}
