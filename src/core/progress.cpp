#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace speedrun {

std::string format_duration(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  const int64_t t = int64_t(std::llround(s));
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

std::string format_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

Progress::Progress(std::string label, uint64_t total_bytes, bool enabled, FILE* out,
                   double log_every_s)
    : label_(std::move(label)),
      total_(total_bytes),
      enabled_(enabled),
      tty_(enabled && ::isatty(::fileno(out))),
      out_(out),
      log_every_s_(log_every_s),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

std::string Progress::line(uint64_t bytes_done, int64_t docs, int64_t tokens,
                           double elapsed_s) const {
  const double t = std::max(elapsed_s, 1e-9);
  std::string s = label_ + ": ";
  if (total_ > 0) {
    const double frac = std::min(1.0, double(bytes_done) / double(total_));
    constexpr int kWidth = 20;
    const int filled = int(frac * kWidth);
    s += fmt::format("{:5.1f}% [{}{}] ", 100 * frac, std::string(size_t(filled), '#'),
                     std::string(size_t(kWidth - filled), ' '));
  }
  s += fmt::format("{}B", format_count(double(bytes_done)));
  if (total_ > 0) s += fmt::format("/{}B", format_count(double(total_)));
  s += fmt::format(" | {} docs ({}/s) | {} tokens ({}/s) | {}", format_count(double(docs)),
                   format_count(docs / t), format_count(double(tokens)), format_count(tokens / t),
                   format_duration(elapsed_s));
  if (total_ > 0 && bytes_done > 0 && bytes_done < total_)
    s += " ETA " + format_duration(elapsed_s * double(total_ - bytes_done) / double(bytes_done));
  return s;
}

void Progress::update(uint64_t bytes_done, int64_t docs, int64_t tokens) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.1 : log_every_s_)) return;
  last_ = now;
  draw(bytes_done, docs, tokens, false);
}

void Progress::finish(uint64_t bytes_done, int64_t docs, int64_t tokens) {
  if (enabled_) draw(bytes_done, docs, tokens, true);
}

void Progress::draw(uint64_t bytes_done, int64_t docs, int64_t tokens, bool final) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string s = line(bytes_done, docs, tokens, elapsed);
  if (tty_)
    std::fprintf(out_, "\r%s\033[K%s", s.c_str(), final ? "\n" : "");
  else
    std::fprintf(out_, "%s\n", s.c_str());
  std::fflush(out_);
}

}  // namespace speedrun
