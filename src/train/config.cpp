#include "train/config.h"

#include "core/error.h"
#include "data/loader.h"
#include "train/settings.h"

namespace speedrun {

void TrainConfig::validate(int world) const {
  check_setting_ranges(*this);
  // Rules between settings; their flag names come from the table.
  const auto flag = [this](const auto& field) { return flag_of(*this, field); };
  const GPTConfig& m = model;
  const ScheduleConfig& s = schedule;
  check(m.width() <= kMaxWidth, flag(m.heads), " ", m.heads, " x ", flag(m.head_dim), " ",
        m.head_dim, " is a width of ", m.width(), ", more than ", kMaxWidth, ": lower them");
  check(m.eot < m.vocab, flag(m.eot), " ", m.eot, " is outside the vocabulary [0, ", m.vocab,
        "): give ", flag(m.vocab), " larger than the EOT id or another ", flag(m.eot));
  check(s.warmup + s.cooldown <= s.steps, flag(s.warmup), " ", s.warmup, " + ",
        flag(s.cooldown), " ", s.cooldown, " exceed ", flag(s.steps), " ", s.steps,
        ": the LR schedule does not fit in the run; lower them or raise ", flag(s.steps));
  for (const int64_t* w : {&s.window_start, &s.window_end})
    check(*w <= seq_len, flag(*w), " ", *w, " exceeds ", flag(seq_len), " ", seq_len,
          ": the attention window would be longer than the sequence; lower it or raise ",
          flag(seq_len));
  check(s.window_schedule != WindowSchedule::Linear || s.window_end >= s.window_start,
        flag(s.window_end), " ", s.window_end, " is below ", flag(s.window_start), " ",
        s.window_start, ": a linear ", flag(s.window_schedule),
        " would shrink the window during the run; swap them, or use ",
        flag(s.window_schedule), " fixed");
  check(stop_after <= s.steps, flag(stop_after), " ", stop_after, " is beyond ", flag(s.steps),
        " ", s.steps, ": the run ends at ", flag(s.steps), "; give an earlier step or 0");
  check(world >= 1 && batch % world == 0, flag(batch), " ", batch,
        " is not a multiple of the ", world,
        " ranks: each rank reads batch / ranks sequences per step; pick a multiple");
  check(batch <= kMaxStepTokens / seq_len, flag(batch), " ", batch, " x ", flag(seq_len), " ",
        seq_len, " is more than 2^40 tokens per step: lower them");
  micro_batches(*this, world);  // checks grad_accum against the batch
  const int64_t per_batch = batch * seq_len;
  check(val_tokens % per_batch == 0, flag(val_tokens), " ", val_tokens,
        " is not a multiple of the tokens of one validation batch (", flag(batch), " ", batch,
        " x ", flag(seq_len), " ", seq_len, " = ", per_batch, "): pick a multiple");
}

int64_t micro_batches(const TrainConfig& c, int world, int64_t max_tokens) {
  const int64_t per_rank = c.batch / world;
  if (c.grad_accum > 0) {
    check(per_rank % c.grad_accum == 0, flag_of(c, c.grad_accum), " ", c.grad_accum,
          " does not divide the ", per_rank, " sequences each rank reads per step (",
          flag_of(c, c.batch), " ", c.batch, " over ", world, " ranks): pick a divisor");
    return c.grad_accum;
  }
  if (max_tokens <= 0) return 1;
  for (int64_t k = 1; k < per_rank; ++k)
    if (per_rank % k == 0 && (per_rank / k) * c.seq_len <= max_tokens) return k;
  return per_rank;
}

}  // namespace speedrun
