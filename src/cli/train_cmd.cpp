// speedrun train: the record's training loop on shards (or the built-in corpus: fortunes
// when installed, else the synthetic one).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "data/demo_corpus.h"
#include "data/shard.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/config_io.h"
#include "train/sample.h"
#include "train/trainer.h"

namespace speedrun::cli {

namespace {

// The --preset value in argv (so the other flags can default to the preset's values).
std::string find_preset(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--preset") == 0 && i + 1 < argc) return argv[i + 1];
    if (std::strncmp(argv[i], "--preset=", 9) == 0) return argv[i] + 9;
  }
  return "tiny";
}

struct TrainArgs {
  TrainConfig cfg;
  BackendOptions backend;
  bool no_sample = false;
  std::vector<std::string> given;  // flags given on the command line, without dashes
};

void run_train(TrainArgs& a) {
  TrainConfig& c = a.cfg;
  if (!c.resume.empty()) {  // the checkpoint's config, with the flags given here on top
    const auto ck = find_checkpoint(c.resume, [](const std::string& s) { std::printf("%s\n", s.c_str()); });
    c = config_from_json(merge_resume_config(ck.meta.config, config_to_json(c), a.given),
                         ck.dir + "/meta.json");
  }
  std::unique_ptr<Backend> backend_ptr = make_backend(a.backend);
  Backend& backend = *backend_ptr;
  std::vector<std::string> train_files, val_files;
  bool synthetic = false;
  std::optional<Tokenizer> text_tokenizer;  // the built-in real-text corpus's
  if (c.train_glob.empty()) {
    check(c.val_glob.empty(), "--val given without --train: give both, or neither for the "
                              "built-in corpus");
    if (std::optional<DemoCorpus> demo = fortunes_corpus("data", kDemoVocabSize, c.val_tokens)) {
      c.model.vocab = demo->vocab;
      c.model.eot = demo->eot;
      text_tokenizer = Tokenizer::load(demo->tokenizer_dir);
      train_files = demo->train_files;
      val_files = demo->val_files;
      std::printf("data: no --train given: using %lld fortunes from %s, prepared in %s/ "
                  "(%lld train + %lld val tokens; BPE of %d ids, so --vocab %lld --eot %d)\n",
                  (long long)demo->documents, demo->source_dir.c_str(),
                  std::filesystem::path(demo->train_files[0]).parent_path().c_str(),
                  (long long)demo->train_tokens, (long long)demo->val_tokens,
                  text_tokenizer->vocab_size(), (long long)c.model.vocab, c.model.eot);
    } else {
      synthetic = true;
      std::printf("data: no fortunes in %s (apt-get install fortunes, or set "
                  "SPEEDRUN_FORTUNES_DIR): falling back to the synthetic corpus\n",
                  fortunes_dir().c_str());
      const std::string dir =
          fmt::format("data/synthetic_v{}_eot{}", c.model.vocab, c.model.eot);
      const int64_t tokens_per_step = c.batch * c.seq_len;
      const int64_t train_tokens = std::max<int64_t>(4 << 20, 2 * tokens_per_step + 1);
      const int64_t val_tokens = std::max<int64_t>(c.val_tokens + 1, tokens_per_step + 1);
      std::printf("data: no --train given: using the built-in synthetic corpus in %s/ "
                  "(%lld train tokens, vocab %lld, EOT %d)\n",
                  dir.c_str(), (long long)train_tokens, (long long)c.model.vocab, c.model.eot);
      auto files = write_synthetic_shards(dir, train_tokens, val_tokens, int(c.model.vocab),
                                          c.model.eot, 1234);
      for (const auto& f : files)
        (f.find("_val_") != std::string::npos ? val_files : train_files).push_back(f);
    }
  } else {
    train_files = expand_glob(c.train_glob, "--train");
    if (!c.val_glob.empty()) val_files = expand_glob(c.val_glob, "--val");
  }
  Trainer trainer(backend, c, train_files, val_files);
  TrainResult r = trainer.run();
  if (!r.val_losses.empty()) {
    const bool finished = r.val_losses.back().first == c.schedule.steps;
    std::printf("%s val_loss: %.4f (step %lld)\n", finished ? "final" : "last",
                r.val_losses.back().second, (long long)r.val_losses.back().first);
  }
  if ((synthetic || text_tokenizer) && !a.no_sample) {
    Parameters params(backend, c.model, resolve_precision(backend, c.dtype));
    params.load(r.final_weights);
    SampleOptions o;
    o.context = std::min<int64_t>(c.seq_len, 256);
    o.window = c.schedule.window_end;
    o.max_tokens = text_tokenizer ? 150 : 40;
    o.temperature = 0.8;
    o.seed = c.seed;
    if (text_tokenizer) o.allowed_vocab = text_tokenizer->vocab_size();  // not the padding rows
    const std::vector<int32_t> prompt = {c.model.eot};
    auto out = sample_tokens(backend, params, prompt, o);
    std::string text;
    if (text_tokenizer) {
      text = text_tokenizer->decode(out);
      std::printf("sample (temperature 0.8):\n%s\n", text.c_str());
    } else {
      for (int32_t t : out) text += synthetic_token_text(t, int(c.model.vocab), c.model.eot) + " ";
      std::printf("sample (temperature 0.8): %s\n", text.c_str());
    }
  }
}

}  // namespace

void add_train_command(CLI::App& app, int argc, char** argv) {
  auto args = std::make_shared<TrainArgs>();
  const std::string preset = find_preset(argc, argv);
  try {
    args->cfg = preset_config(preset);
  } catch (const Error&) {
    args->cfg = preset_config("tiny");  // the parse below reports the bad --preset
  }
  TrainConfig& c = args->cfg;
  CLI::App* sub = app.add_subcommand(
      "train", "Train a GPT with the record's recipe. Flags default to the preset's values.");
  // A flag given twice takes its last value (scripts append overrides).
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--preset", c.preset, "record | previous-record | tiny")
      ->check(CLI::IsMember({"record", "previous-record", "tiny"}))
      ->capture_default_str();
  sub->add_option("--train", c.train_glob,
                  "glob of training shards (default: the built-in corpus: fortunes if installed, "
                  "else synthetic)");
  sub->add_option("--val", c.val_glob, "glob of validation shards");
  sub->add_option("--layers", c.model.layers, "transformer layers (even)")->capture_default_str();
  sub->add_option("--heads", c.model.heads, "attention heads")->capture_default_str();
  sub->add_option("--head-dim", c.model.head_dim, "head dimension (even)")->capture_default_str();
  sub->add_option("--vocab", c.model.vocab, "vocabulary rows")->capture_default_str();
  sub->add_option("--eot", c.model.eot, "document delimiter token id")->capture_default_str();
  sub->add_option("--seq-len", c.seq_len, "tokens per sequence (T)")->capture_default_str();
  sub->add_option("--batch", c.batch, "sequences per rank per step (B)")->capture_default_str();
  sub->add_option("--steps", c.schedule.steps, "training steps (N)")->capture_default_str();
  sub->add_option("--cooldown", c.schedule.cooldown, "steps of linear LR decay at the end")
      ->capture_default_str();
  sub->add_option("--warmup", c.schedule.warmup, "steps of linear LR warmup")
      ->capture_default_str();
  sub->add_option("--window-start", c.schedule.window_start, "attention window at step 0")
      ->capture_default_str();
  sub->add_option("--window-end", c.schedule.window_end, "attention window after the last step")
      ->capture_default_str();
  add_enum_option(sub, "--window-schedule", c.schedule.window_schedule,
                  "linear: start -> end; fixed: end throughout");
  sub->add_option("--muon-lr", c.optim.muon_lr, "Muon learning rate")->capture_default_str();
  sub->add_option("--adam-beta1", c.optim.beta1, "Adam beta1")->capture_default_str();
  sub->add_option("--adam-beta2", c.optim.beta2, "Adam beta2")->capture_default_str();
  sub->add_option("--lr-embed", c.optim.lr_embed, "Adam LR of wte")->capture_default_str();
  sub->add_option("--lr-head", c.optim.lr_head, "Adam LR of lm_head")->capture_default_str();
  sub->add_option("--lr-scalar", c.optim.lr_scalar, "Adam LR of the scalars")
      ->capture_default_str();
  sub->add_option("--momentum-warmup", c.schedule.momentum_warmup,
                  "steps of Muon momentum warmup 0.85 -> 0.95")
      ->capture_default_str();
  sub->add_option("--momentum-start", c.schedule.momentum_start, "Muon momentum at step 0")
      ->capture_default_str();
  sub->add_option("--momentum-end", c.schedule.momentum_end,
                  "Muon momentum after the warmup")
      ->capture_default_str();
  sub->add_option("--adam-eps", c.optim.eps, "Adam epsilon")->capture_default_str();
  sub->add_option("--ns-steps", c.optim.ns_steps, "Newton-Schulz iterations of Muon")
      ->capture_default_str();
  sub->add_flag("--ns-bf16", c.optim.ns_bf16,
                "round Newton-Schulz intermediates to bf16 as the record's GPU run does");
  sub->add_option("--val-every", c.val_every, "steps between validations (0: end only)")
      ->capture_default_str();
  sub->add_option("--val-tokens", c.val_tokens, "tokens per validation")->capture_default_str();
  sub->add_option("--seed", c.seed, "initialisation seed")->capture_default_str();
  add_backend_flags(sub, args->backend);
  sub->add_option("--grad-accum", c.grad_accum,
                  "micro-batches per rank per step (0: auto, by the device's memory)")
      ->capture_default_str();
  sub->add_option("--out", c.out_dir, "output directory")->capture_default_str();
  sub->add_option("--init", c.init, "start from these weights (.safetensors)");
  sub->add_option("--save-every", c.save_every,
                  "steps between checkpoints OUT/ckpt_stepNNNNNN (0: none; weights at start "
                  "and end)")
      ->capture_default_str();
  sub->add_option("--keep", c.keep, "checkpoints to keep, the newest (0: all)")
      ->capture_default_str();
  sub->add_option("--stop-after", c.stop_after,
                  "stop after this many steps with a checkpoint; the schedule still spans --steps")
      ->capture_default_str();
  sub->add_option("--resume", c.resume,
                  "continue from the newest complete checkpoint of this run directory (or this "
                  "checkpoint directory); other flags default to the checkpoint's config");
  add_enum_option(sub, "--dtype", c.dtype,
                  "precision: fp32 (cpu), fp64 (cpu, exact comparisons), bf16 (cuda), auto");
  sub->add_flag("--no-sample", args->no_sample, "do not print a sample after training");
  sub->callback([args, sub]() {
    for (const CLI::Option* o : sub->get_options())
      if (o->count() > 0) args->given.push_back(o->get_name().substr(o->get_name().find_first_not_of('-')));
    run_train(*args);
  });
}

}  // namespace speedrun::cli
