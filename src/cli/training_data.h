// The shards a `speedrun train` run reads: the --train/--val globs, or the built-in corpus
// (real English with a BPE trained on it, prepared once under data/: the King James
// Bible's chapters from Debian's bible-kjv, else Debian's fortunes, else a synthetic
// corpus; data/demo_corpus.h), which also fixes --vocab and --eot.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "train/config.h"

namespace speedrun::cli {

struct TrainingData {
  std::vector<std::string> train_files, val_files;
  bool synthetic = false;              // the synthetic corpus (its tokens print as words)
  std::optional<Tokenizer> tokenizer;  // the built-in real-text corpus's
};

// Resolves c's globs, or prepares the built-in corpus and sets c.model.vocab / eot to it.
// `say` prints what was chosen (rank 0) or nothing.
TrainingData training_data(TrainConfig& c, bool say);

}  // namespace speedrun::cli
