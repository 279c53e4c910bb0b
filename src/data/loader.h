// DataLoader: the speedrun record's DistributedDataLoader (SPEC.md, Data). Per rank r of
// W, B sequences of T tokens: pos starts at r*B*T; a batch is tokens[pos, pos+B*T+1)
// (x = first B*T, y = the same shifted by one); then pos += B*T*W, and when
// pos + B*T*W >= N it moves to the next shard (cycling, sorted order) at pos = r*B*T.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace speedrun {

// The most tokens one step may read over all ranks: far beyond any machine, and small enough
// that the token counts and offsets derived from batch x seq-len x ranks stay int64s. The
// loader, the run's config and the benchmark refuse more.
inline constexpr int64_t kMaxStepTokens = int64_t(1) << 40;

class DataLoader {
 public:
  // Validates every shard's header up front (a bad shard fails here, by name), and that
  // each holds at least B*T*world + 1 tokens. Every batch's tokens are checked < vocab.
  DataLoader(std::vector<std::string> files, int64_t B, int64_t T, int rank, int world,
             int64_t vocab);

  // Back to shard 0, pos = rank*B*T.
  void reset();
  // x, y: [B*T] each (row b, column t at b*T + t); advances as described above.
  void next_batch(int32_t* x, int32_t* y);

  // Where the next batch will be read: enough to resume bit-exactly.
  struct Position {
    int64_t shard = 0;
    int64_t pos = 0;
  };
  Position position() const { return {shard_, pos_}; }
  // Throws unless p is a position this loader can reach (same B, T, rank, world).
  void seek(Position p);

  int64_t tokens_per_batch() const { return B_ * T_; }  // per rank: the length of x
  // Batches read from reset() until the loader is back at its first position: each batch
  // after that repeats one already read.
  int64_t batches_per_pass() const;
  const std::vector<std::string>& files() const { return files_; }
  int64_t shard_tokens(int64_t shard) const { return sizes_.at(size_t(shard)); }

 private:
  void load(int64_t shard);  // maps `shard`, unmapping the previous one first

  std::vector<std::string> files_;
  std::vector<int64_t> sizes_;
  int64_t B_, T_, vocab_;
  int rank_, world_;
  int64_t shard_ = 0, pos_ = 0;
  int64_t loaded_ = -1;  // index of the mapped shard, -1 when none
  Shard current_;
};

}  // namespace speedrun
