// speedrun eval: validation loss of a weights file on shards under a given window.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/backend_flags.h"
#include "cli/number_option.h"
#include "cli/shape_flags.h"
#include "cli/commands.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/shards_eot.h"
#include "dist/local_comm.h"
#include "model/gpt.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/evaluate.h"

namespace speedrun::cli {

namespace {
struct EvalArgs {
  std::string weights, val_glob;
  int64_t window = 0, seq_len = 0, batch = 1, val_tokens = 0;  // defaults: the record's
  PrecisionChoice dtype = PrecisionChoice::Auto;
  BackendOptions backend;
  ShapeHints shape;
};

void run_eval(const EvalArgs& a) {
  check(a.window >= 1, "--window ", a.window, ": must be >= 1");
  check(a.seq_len >= 1 && a.batch >= 1, "--seq-len and --batch must be >= 1");
  const int64_t per_batch = a.batch * a.seq_len;
  check(a.val_tokens >= per_batch && a.val_tokens % per_batch == 0, "--val-tokens ",
        a.val_tokens, " must be a positive multiple of --batch x --seq-len = ", per_batch);
  std::unique_ptr<Backend> backend = make_backend(a.backend);
  // A run or checkpoint directory stands for its newest weights, as for sample and export.
  const std::string weights = resolve_weights(
      a.weights, [](const std::string& s) { std::fprintf(stderr, "eval: %s\n", s.c_str()); });
  GPTConfig cfg = GPTConfig::from_weights(SafetensorsFile::open(weights), a.shape);
  Parameters params(*backend, cfg, resolve_precision(*backend, a.dtype));
  params.load(weights);
  const std::vector<std::string> files = expand_glob(a.val_glob, "--val");
  // A warning only: the model may have been trained with this EOT on these very shards.
  const std::string warning = check_shards_eot(files, cfg.eot, [&](int64_t) {
    return "the loss is the model's with its own EOT " + std::to_string(cfg.eot) +
           " (if the shards are of another tokenizer, evaluate on shards of the model's)";
  }, false);
  if (!warning.empty()) std::fprintf(stderr, "%s\n", warning.c_str());
  StepLoader loader(files, a.batch, a.seq_len, 1, 0, 1, cfg.vocab,
                    StepLoader::Readers::kPerMicroBatch);  // as train validates
  // As train: a budget past what the shards hold would read batches again (and the
  // record's default, 10M tokens, would take long over a small split).
  const int64_t pass = loader.steps_per_pass();
  check(a.val_tokens / per_batch <= pass, "--val-tokens ", a.val_tokens, " is more than ",
        a.val_glob, " holds: it gives ", pass, " batches of ", a.batch, " x ", a.seq_len,
        " tokens (", pass * per_batch, " tokens) before repeating; lower --val-tokens to at "
        "most that");
  GPT model(*backend, params, a.batch, a.seq_len);
  LocalComm comm(backend.get());
  const double loss = evaluate(model, loader, a.val_tokens / per_batch, a.window, comm);
  std::printf("val_loss:%.6f tokens:%lld window:%lld weights:%s\n", loss,
              (long long)a.val_tokens, (long long)a.window, weights.c_str());
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  // By default the record's final validation: its last window, sequence length and budget.
  const TrainConfig record = preset_config("record");
  a->window = record.schedule.window_end;
  a->seq_len = record.seq_len;
  a->val_tokens = record.val_tokens;
  CLI::App* sub = app.add_subcommand(
      "eval", "Validation loss of a weights file (the model shape is read from its metadata)");
  sub->add_option("--weights", a->weights,
                  "weights .safetensors, a checkpoint directory or a run directory (its latest "
                  "weights)")
      ->required();
  sub->add_option("--val", a->val_glob, "glob of validation shards")->required();
  add_number_option(sub, "--window", a->window, "attention window in tokens")->capture_default_str();
  add_number_option(sub, "--seq-len", a->seq_len, "tokens per sequence")->capture_default_str();
  add_number_option(sub, "--batch", a->batch, "sequences per batch")->capture_default_str();
  add_number_option(sub, "--val-tokens", a->val_tokens,
                    "tokens to evaluate, a positive multiple of --batch x --seq-len")
      ->capture_default_str();
  add_enum_option(sub, "--dtype", a->dtype, "precision (auto: the device's)");
  add_backend_flags(sub, a->backend);
  add_shape_flags(sub, a->shape);
  sub->callback([a]() { run_eval(*a); });
}

}  // namespace speedrun::cli
