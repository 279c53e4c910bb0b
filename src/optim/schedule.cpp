#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace speedrun {

double lr_multiplier(const ScheduleConfig& c, int64_t s) {
  if (s < c.warmup) return double(s + 1) / double(c.warmup);
  if (s < c.steps - c.cooldown) return 1.0;
  return double(c.steps - s) / double(c.cooldown);
}

int64_t attention_window(const ScheduleConfig& c, int64_t s) {
  if (c.window_schedule == WindowSchedule::Fixed) return c.window_end;
  // The record's expression, evaluated in the same order in double precision.
  const double x = double(s) / double(c.steps) * double(c.window_end - c.window_start) +
                   double(c.window_start);
  return 64 * int64_t(std::floor(x / 64.0));
}

double muon_momentum_at(const ScheduleConfig& c, int64_t s) {
  const double f =
      c.momentum_warmup == 0 ? 1.0 : std::min(double(s) / double(c.momentum_warmup), 1.0);
  return (1.0 - f) * c.momentum_start + f * c.momentum_end;
}

}  // namespace speedrun
