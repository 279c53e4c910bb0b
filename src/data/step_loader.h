// StepLoader: the sequences one rank trains on in a step, as K micro-batches. Micro-batch k
// of rank r is read by its own DataLoader (SPEC.md's loader) as reader r*K + k of W*K
// readers of `micro` sequences each, so the batches a step sees depend only on the number
// of readers W*K and their size: one GPU with K = 8 micro-batches of one 64K sequence
// reads exactly what the record's 8 GPUs read (shard changes included, which the record's
// loader lets each rank make at its own step), and W ranks x K = 1 read what W*K ranks read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"

namespace speedrun {

class StepLoader {
 public:
  // micro: sequences per micro-batch; K: micro-batches per step on this rank; rank, world:
  // this rank of the run. Validates every shard (DataLoader).
  StepLoader(const std::vector<std::string>& files, int64_t micro, int64_t T, int64_t K,
             int rank, int world, int64_t vocab);

  void reset();
  // x, y [K * micro * T]: micro-batch k at offset k * micro * T.
  void next(int32_t* x, int32_t* y);

  int64_t readers() const { return int64_t(loaders_.size()); }  // K
  int64_t tokens_per_micro_batch() const { return micro_ * T_; }
  int64_t tokens_per_step() const { return readers() * micro_ * T_; }
  int64_t shard_tokens(int64_t shard) const { return loaders_[0].shard_tokens(shard); }
  // Steps read before any reader repeats a batch it already read (the fewest over readers).
  int64_t steps_per_pass() const;

  // Where each reader's next batch is (this rank's K), and back: enough to resume exactly.
  std::vector<DataLoader::Position> positions() const;
  void seek(const std::vector<DataLoader::Position>& p);

 private:
  int64_t micro_, T_;
  std::vector<DataLoader> loaders_;
};

}  // namespace speedrun
