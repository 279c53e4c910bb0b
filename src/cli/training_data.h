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

// Resolves c's globs, or prepares the built-in corpus and sets c.model.vocab / eot to its
// tokenizer's. `given`: the flags given on the command line (without dashes): a --vocab
// given for the built-in corpus (or a resumed run's) is kept if it holds the tokenizer's
// ids (rows past them are padding, as the record pads GPT-2's 50,257 to 50,304), and a
// --vocab below them or an --eot other than the tokenizer's is refused, naming it. `say`
// prints what was chosen (rank 0) or nothing.
TrainingData training_data(TrainConfig& c, bool say, const std::vector<std::string>& given = {});

}  // namespace speedrun::cli
