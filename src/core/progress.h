// A progress line on stderr for long jobs (speedrun prepare): percent of the input, rates
// and ETA. On a terminal it is redrawn in place at most 10 times a second; otherwise (a
// log file, a pipe) it prints a full line every `log_every_s` seconds. finish() prints
// the final line either way.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace speedrun {

// "1:02:03", "4:05" (minutes:seconds under an hour), "?" for a negative or unknown time.
std::string format_duration(double seconds);
// 1234567 -> "1.23M", 4321 -> "4.32K", 999 -> "999".
std::string format_count(double n);

class Progress {
 public:
  // total_bytes: the input size the percent and ETA are measured against (0: unknown).
  Progress(std::string label, uint64_t total_bytes, bool enabled, FILE* out = stderr,
           double log_every_s = 5.0);
  // Reports the work done so far; draws when it is time to.
  void update(uint64_t bytes_done, int64_t docs, int64_t tokens);
  void finish(uint64_t bytes_done, int64_t docs, int64_t tokens);

  // The text of the line for these counts after `elapsed_s` seconds (no newline).
  std::string line(uint64_t bytes_done, int64_t docs, int64_t tokens, double elapsed_s) const;

 private:
  void draw(uint64_t bytes_done, int64_t docs, int64_t tokens, bool final);

  std::string label_;
  uint64_t total_;
  bool enabled_, tty_;
  FILE* out_;
  double log_every_s_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace speedrun
