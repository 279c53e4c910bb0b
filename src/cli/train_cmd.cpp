// speedrun train: the record's training loop on shards (or the built-in corpus: fortunes
// when installed, else the synthetic one).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/setting_flags.h"
#include "data/demo_corpus.h"
#include "data/shard.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/config_io.h"
#include "train/sample.h"
#include "train/settings.h"
#include "train/trainer.h"

namespace speedrun::cli {

namespace {

struct TrainArgs {
  TrainConfig cfg;
  BackendOptions backend;
  bool no_sample = false;
  std::vector<std::string> given;  // flags given on the command line, without dashes
};

void run_train(TrainArgs& a) {
  TrainConfig& c = a.cfg;
  if (!c.resume.empty()) {  // the checkpoint's config, with the flags given here on top
    const auto ck =
        find_checkpoint(c.resume, [](const std::string& s) { std::printf("%s\n", s.c_str()); });
    c = config_from_json(merge_resume_config(ck.meta.config, config_to_json(c), a.given),
                         ck.dir + "/meta.json");
  }
  check_setting_ranges(c);  // before any data is prepared; the rules between settings follow
                            // in Trainer, once the data has fixed the vocabulary
  std::unique_ptr<Backend> backend_ptr = make_backend(a.backend);
  Backend& backend = *backend_ptr;
  std::vector<std::string> train_files, val_files;
  bool synthetic = false;
  std::optional<Tokenizer> text_tokenizer;  // the built-in real-text corpus's
  if (c.train_glob.empty()) {
    check(c.val_glob.empty(), flag_of(c, c.val_glob), " given without ", flag_of(c, c.train_glob),
          ": give both, or neither for the built-in corpus");
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
    train_files = expand_glob(c.train_glob, flag_of(c, c.train_glob).c_str());
    if (!c.val_glob.empty()) val_files = expand_glob(c.val_glob, flag_of(c, c.val_glob).c_str());
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
  args->cfg = preset_config(preset_in_args(argc, argv));
  CLI::App* sub = app.add_subcommand(
      "train", "Train a GPT with the record's recipe. Flags default to the preset's values.");
  sub->footer(presets_help());
  // A flag given twice takes its last value (scripts append overrides).
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_setting_flags(sub, args->cfg);
  add_backend_flags(sub, args->backend);
  sub->add_flag("--no-sample", args->no_sample, "do not print a sample after training");
  sub->callback([args, sub]() {
    for (const CLI::Option* o : sub->get_options()) {
      const std::string name = o->get_name();
      if (o->count() > 0) args->given.push_back(name.substr(name.find_first_not_of('-')));
    }
    run_train(*args);
  });
}

}  // namespace speedrun::cli
