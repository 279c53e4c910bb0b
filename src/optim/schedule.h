// Schedules: pure functions of (step, config), SPEC.md "Schedules". Step s counts from 0;
// N = total training steps.
#pragma once
#include <cstdint>

#include "core/enum_names.h"

namespace speedrun {

// Linear: the record's window warmup from window_start to window_end; Fixed: window_end
// throughout (the previous record).
enum class WindowSchedule { Linear, Fixed };
template <> struct EnumNames<WindowSchedule> {
  static constexpr EnumName<WindowSchedule> list[] = {{WindowSchedule::Linear, "linear"},
                                                      {WindowSchedule::Fixed, "fixed"}};
};

// Valid ranges are checked where the values are set: the settings table (train/settings.cpp).
struct ScheduleConfig {
  int64_t steps = 1750;          // N
  int64_t warmup = 0;            // LR warmup steps: multiplier (s+1)/warmup
  int64_t cooldown = 640;        // last steps with multiplier (N-s)/cooldown
  int64_t window_start = 64;     // tokens, multiple of 64
  int64_t window_end = 1792;     // tokens, multiple of 64
  WindowSchedule window_schedule = WindowSchedule::Linear;
  int64_t momentum_warmup = 300; // Muon momentum goes start -> end over these steps
  double momentum_start = 0.85;
  double momentum_end = 0.95;
};

// LR multiplier (all groups) at step s: (s+1)/warmup while s < warmup; 1 while
// s < N - cooldown; then (N - s)/cooldown.
double lr_multiplier(const ScheduleConfig& c, int64_t s);
// Attention window at step s (s may be N, for the final validation): Linear:
// 64 * floor((s/N * (end - start) + start) / 64); Fixed: end.
int64_t attention_window(const ScheduleConfig& c, int64_t s);
// Muon momentum at step s: (1 - f) * start + f * end with f = min(s / warmup, 1).
double muon_momentum_at(const ScheduleConfig& c, int64_t s);

}  // namespace speedrun
