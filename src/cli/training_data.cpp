#include "cli/training_data.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "data/demo_corpus.h"
#include "data/shard.h"
#include "data/shards_eot.h"
#include "data/synthetic.h"
#include "train/settings.h"

namespace speedrun::cli {

TrainingData training_data(TrainConfig& c, bool say, const std::vector<std::string>& given) {
  const auto was_given = [&](const char* flag) {
    return std::find(given.begin(), given.end(), flag) != given.end();
  };
  TrainingData d;
  if (!c.train_glob.empty()) {
    d.train_files = expand_glob(c.train_glob, flag_of(c, c.train_glob).c_str());
    if (!c.val_glob.empty()) d.val_files = expand_glob(c.val_glob, flag_of(c, c.val_glob).c_str());
    else if (say)
      std::printf("data: no %s given: the run validates nothing (%s and %s do not apply)\n",
                  flag_of(c, c.val_glob).c_str(), flag_of(c, c.val_every).c_str(),
                  flag_of(c, c.val_tokens).c_str());
    // The documents' delimiter is not in the shards' headers: what their folder recorded,
    // or how they begin, says whether --eot is it. A resumed run goes on with its own
    // (a run started before this check may have trained with another): a warning.
    const auto rt = recorded_eot_of(d.train_files), rv = recorded_eot_of(d.val_files);
    if (rt && rv)
      check(rt->eot == rv->eot, "the ", flag_of(c, c.train_glob), " shards record EOT ", rt->eot,
            " (", rt->manifest, ") and the ", flag_of(c, c.val_glob), " shards EOT ", rv->eot,
            " (", rv->manifest, "): they were prepared with different tokenizers; give "
            "training and validation shards of one tokenizer");
    const bool resumed = !c.resume.empty();
    const auto fix = [&](int64_t eot) {
      return resumed ? "the resumed run goes on with its " + flag_of(c, c.model.eot) + " " +
                           std::to_string(c.model.eot) + "; a new run with " +
                           flag_of(c, c.model.eot) + " " + std::to_string(eot) +
                           " would keep the documents apart"
                     : "give " + flag_of(c, c.model.eot) + " " + std::to_string(eot);
    };
    for (const auto* files : {&d.train_files, &d.val_files}) {
      const std::string warning = check_shards_eot(*files, c.model.eot, fix, !resumed);
      if (say && !warning.empty()) std::fprintf(stderr, "%s\n", warning.c_str());
    }
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
    d.tokenizer = Tokenizer::load(demo->tokenizer_dir);
    // The corpus's tokens are its tokenizer's: a model must hold every id, and its EOT is
    // the one that separates the documents.
    const int64_t ids = d.tokenizer->vocab_size();
    const std::string fix = fmt::format(
        ": the built-in corpus ({}) is tokenized with a BPE of {} ids whose EOT is {} (by "
        "default --vocab {} --eot {}); leave the flag out, or train on your own shards with "
        "--train",
        demo->what, ids, demo->eot, demo->vocab, demo->eot);
    // Values given, or a resumed run's (its checkpoint's, which this rule fixed when the run
    // began), are kept where they fit the corpus; the others are the corpus's.
    const bool resumed = !c.resume.empty();
    const bool keep_vocab = resumed || was_given("vocab"), keep_eot = resumed || was_given("eot");
    check(!keep_vocab || c.model.vocab >= ids, flag_of(c, c.model.vocab), " ", c.model.vocab,
          " cannot hold the corpus's ", ids, " ids", fix);
    check(!keep_eot || c.model.eot == demo->eot, flag_of(c, c.model.eot), " ", c.model.eot,
          " is not the corpus's EOT ", demo->eot, fix);
    if (!keep_vocab) c.model.vocab = demo->vocab;
    c.model.eot = demo->eot;
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
