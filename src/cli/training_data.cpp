#include "cli/training_data.h"

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "data/demo_corpus.h"
#include "data/shard.h"
#include "data/synthetic.h"
#include "train/settings.h"

namespace speedrun::cli {

TrainingData training_data(TrainConfig& c, bool say) {
  TrainingData d;
  if (!c.train_glob.empty()) {
    d.train_files = expand_glob(c.train_glob, flag_of(c, c.train_glob).c_str());
    if (!c.val_glob.empty()) d.val_files = expand_glob(c.val_glob, flag_of(c, c.val_glob).c_str());
    return d;
  }
  check(c.val_glob.empty(), flag_of(c, c.val_glob), " given without ", flag_of(c, c.train_glob),
        ": give both, or neither for the built-in corpus");
  // The Bible's chapters first: long documents, so the attention window binds.
  std::optional<DemoCorpus> demo = bible_corpus("data", kDemoVocabSize, c.val_tokens);
  if (!demo) {
    if (say)
      std::printf("data: no King James Bible (apt-get install bible-kjv: its chapters are long "
                  "enough for the attention window to matter): trying the fortunes\n");
    demo = fortunes_corpus("data", kDemoVocabSize, c.val_tokens);
  }
  if (demo) {
    c.model.vocab = demo->vocab;
    c.model.eot = demo->eot;
    d.tokenizer = Tokenizer::load(demo->tokenizer_dir);
    d.train_files = demo->train_files;
    d.val_files = demo->val_files;
    if (say)
      std::printf("data: no --train given: using %lld %s from %s, prepared in %s/ "
                  "(%lld train + %lld val tokens; BPE of %d ids, so --vocab %lld --eot %d)\n",
                  (long long)demo->documents, demo->what.c_str(), demo->source_dir.c_str(),
                  std::filesystem::path(demo->train_files[0]).parent_path().c_str(),
                  (long long)demo->train_tokens, (long long)demo->val_tokens,
                  d.tokenizer->vocab_size(), (long long)c.model.vocab, c.model.eot);
    return d;
  }
  d.synthetic = true;
  const std::string dir = fmt::format("data/synthetic_v{}_eot{}", c.model.vocab, c.model.eot);
  const int64_t tokens_per_step = c.batch * c.seq_len;
  const int64_t train_tokens = std::max<int64_t>(4 << 20, 2 * tokens_per_step + 1);
  const int64_t val_tokens = std::max<int64_t>(c.val_tokens + 1, tokens_per_step + 1);
  if (say) {
    std::printf("data: no fortunes in %s (apt-get install fortunes, or set "
                "SPEEDRUN_FORTUNES_DIR): falling back to the synthetic corpus\n",
                fortunes_dir().c_str());
    std::printf("data: no --train given: using the built-in synthetic corpus in %s/ "
                "(%lld train tokens, vocab %lld, EOT %d)\n",
                dir.c_str(), (long long)train_tokens, (long long)c.model.vocab, c.model.eot);
  }
  for (const auto& f : write_synthetic_shards(dir, train_tokens, val_tokens, int(c.model.vocab),
                                              c.model.eot, 1234))
    (f.find("_val_") != std::string::npos ? d.val_files : d.train_files).push_back(f);
  return d;
}

}  // namespace speedrun::cli
