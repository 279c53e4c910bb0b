#include "train/config.h"

#include "core/error.h"

namespace speedrun {

void TrainConfig::validate(int world) const {
  model.validate();
  schedule.validate();
  optim.validate();
  check(seq_len >= 1, "--seq-len ", seq_len, ": must be >= 1");
  check(batch >= 1, "--batch ", batch, ": must be >= 1");
  check(grad_accum >= 0, "--grad-accum ", grad_accum, ": must be >= 0 (0: auto)");
  check(val_every >= 0, "--val-every ", val_every, ": must be >= 0");
  check(save_every >= 0, "--save-every ", save_every, ": must be >= 0");
  check(keep >= 0, "--keep ", keep, ": must be >= 0 (0 keeps every checkpoint)");
  check(stop_after >= 0, "--stop-after ", stop_after, ": must be >= 0");
  check(val_tokens >= 0, "--val-tokens ", val_tokens, ": must be >= 0");
  check(world >= 1 && batch % world == 0, "--batch ", batch, " is not a multiple of the ", world,
        " ranks: each rank reads batch / ranks sequences per step; pick a multiple");
  micro_batches(*this, world);  // checks grad_accum against the batch
  const int64_t per_batch = batch * seq_len;
  check(val_tokens % per_batch == 0, "--val-tokens ", val_tokens,
        " is not a multiple of the tokens of one validation batch (batch ", batch, " x seq-len ",
        seq_len, " = ", per_batch, "): pick a multiple");
}

int64_t micro_batches(const TrainConfig& c, int world, int64_t max_tokens) {
  const int64_t per_rank = c.batch / world;
  if (c.grad_accum > 0) {
    check(per_rank % c.grad_accum == 0, "--grad-accum ", c.grad_accum, " does not divide the ",
          per_rank, " sequences each rank reads per step (--batch ", c.batch, " over ", world,
          " ranks): pick a divisor");
    return c.grad_accum;
  }
  if (max_tokens <= 0) return 1;
  for (int64_t k = 1; k < per_rank; ++k)
    if (per_rank % k == 0 && (per_rank / k) * c.seq_len <= max_tokens) return k;
  return per_rank;
}

TrainConfig preset_config(const std::string& name) {
  TrainConfig c;
  c.preset = name;
  if (name == "record" || name == "previous-record") {
    // SPEC.md: 8 sequences of 64K tokens per step (one per GPU on 8 GPUs; on one process
    // the same 8 sequences, as one batch or as micro-batches, which gives the same batches
    // and gradients).
    c.model = GPTConfig{};
    c.seq_len = 65536;
    c.batch = 8;
    c.val_every = 125;
    c.val_tokens = 10485760;
    c.optim.ns_bf16 = false;
    if (name == "previous-record") {
      c.schedule.steps = 1875;
      c.schedule.cooldown = 562;
      c.schedule.window_schedule = WindowSchedule::Fixed;
      c.schedule.window_start = 1024;
      c.schedule.window_end = 1024;
      c.optim.beta1 = 0.9;
      c.optim.muon_lr = 0.04;
      c.schedule.momentum_warmup = 500;
    }
    return c;
  }
  if (name == "tiny") {
    c.model.layers = 4;
    c.model.heads = 4;
    c.model.head_dim = 32;
    c.model.vocab = 512;
    c.model.eot = 0;
    c.seq_len = 1024;
    c.batch = 4;
    c.schedule.steps = 300;
    c.schedule.cooldown = 110;
    c.schedule.window_start = 64;
    c.schedule.window_end = 512;
    c.schedule.momentum_warmup = 50;
    c.val_every = 50;
    c.val_tokens = 4 * 1024 * 8;
    c.out_dir = "runs/tiny";
    return c;
  }
  fail("--preset '", name, "': unknown; choose record, previous-record or tiny");
}

}  // namespace speedrun
