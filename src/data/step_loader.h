// StepLoader: the sequences one rank trains on in a step, as K micro-batches of `micro`
// sequences. Every sequence has its own reader, SPEC.md's loader with B = 1: sequence s of
// rank r's step is reader r*K*micro + s of W*K*micro (= --batch). So what a step reads
// depends on --batch and --seq-len alone: one CPU process reading its 8 sequences as one
// batch, one GPU as K = 8 micro-batches of one 64K sequence, and 8 GPUs all read exactly
// what the record's 8 GPUs read, shard changes included (the record's loader lets each rank
// move to the next shard at its own step, which a reader of several sequences would not).
// Validation reads through one reader per micro-batch instead (Readers::kPerMicroBatch): it
// starts over before each pass and stays within its shards, where both kinds read the same
// tokens, and one reader needs no room for the stagger of one-sequence readers (each must
// see a whole step past its own start), so a validation split just over --val-tokens (the
// built-in corpus's) holds its batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"

namespace speedrun {

class StepLoader {
 public:
  enum class Readers { kPerSequence, kPerMicroBatch };
  // micro: sequences per micro-batch; K: micro-batches per step on this rank; rank, world:
  // this rank of the run. Validates every shard (DataLoader).
  StepLoader(const std::vector<std::string>& files, int64_t micro, int64_t T, int64_t K,
             int rank, int world, int64_t vocab, Readers readers = Readers::kPerSequence);

  void reset();
  // x, y [K * micro * T]: micro-batch k at offset k * micro * T (its sequences in order).
  void next(int32_t* x, int32_t* y);

  int64_t micro_batches() const { return K_; }
  int64_t readers() const { return int64_t(loaders_.size()); }  // this rank's: K * micro, or K
  int64_t tokens_per_micro_batch() const { return micro_ * T_; }
  int64_t tokens_per_step() const { return K_ * micro_ * T_; }
  int64_t shard_tokens(int64_t shard) const { return loaders_[0].shard_tokens(shard); }
  // Steps read before any reader repeats a batch it already read (the fewest over readers).
  int64_t steps_per_pass() const;

  // Where each of this rank's readers' next sequence is, and back: enough to resume exactly.
  std::vector<DataLoader::Position> positions() const;
  void seek(const std::vector<DataLoader::Position>& p);

 private:
  int64_t micro_, T_, K_;
  std::vector<DataLoader> loaders_;
};

// The positions of the `batch` one-sequence readers of a step (all ranks'), from positions
// saved with `saved.size()` readers of batch / saved.size() sequences each (what speedrun
// saved before it read every sequence with its own reader; the same list when the sizes
// agree). Sequence j of saved reader i continues at its pos + j*T, or at the next shard's
// start where a one-sequence reader would have moved on there: exactly where such a reader
// stands when the two kinds of reader have changed shards together so far, and a position
// it reaches otherwise. `shard_tokens`: each shard's size, in order. Throws unless the
// saved readers divide the batch.
std::vector<DataLoader::Position> one_sequence_positions(
    const std::vector<DataLoader::Position>& saved, int64_t batch, int64_t T,
    const std::vector<int64_t>& shard_tokens);

}  // namespace speedrun
