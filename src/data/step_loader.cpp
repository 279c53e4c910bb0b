#include "data/step_loader.h"

#include <algorithm>

#include "core/error.h"

namespace speedrun {

StepLoader::StepLoader(const std::vector<std::string>& files, int64_t micro, int64_t T,
                       int64_t K, int rank, int world, int64_t vocab, Readers readers)
    : micro_(micro), T_(T), K_(K) {
  check(K >= 1 && micro >= 1, "step loader: ", K, " micro-batches of ", micro,
        " sequences: both must be >= 1");
  // n readers of b sequences each; reader i holds the step's sequences from i * b on.
  const bool one = readers == Readers::kPerSequence;
  const int64_t n = one ? K * micro : K, b = one ? 1 : micro;
  loaders_.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    loaders_.emplace_back(files, b, T, int(rank * n + i), int(world * n), vocab);
}

void StepLoader::reset() {
  for (auto& l : loaders_) l.reset();
}

void StepLoader::next(int32_t* x, int32_t* y) {
  const int64_t n = tokens_per_step() / readers();
  for (size_t i = 0; i < loaders_.size(); ++i)
    loaders_[i].next_batch(x + int64_t(i) * n, y + int64_t(i) * n);
}

int64_t StepLoader::steps_per_pass() const {
  int64_t n = loaders_[0].batches_per_pass();
  for (const auto& l : loaders_) n = std::min(n, l.batches_per_pass());
  return n;
}

std::vector<DataLoader::Position> StepLoader::positions() const {
  std::vector<DataLoader::Position> out;
  for (const auto& l : loaders_) out.push_back(l.position());
  return out;
}

void StepLoader::seek(const std::vector<DataLoader::Position>& p) {
  check(p.size() == loaders_.size(), "step loader: ", p.size(), " positions for ",
        loaders_.size(), " readers");
  for (size_t s = 0; s < loaders_.size(); ++s) loaders_[s].seek(p[s]);
}

std::vector<DataLoader::Position> one_sequence_positions(
    const std::vector<DataLoader::Position>& saved, int64_t batch, int64_t T,
    const std::vector<int64_t>& shard_tokens) {
  const int64_t n = int64_t(saved.size());
  check(n >= 1 && batch % n == 0, "the checkpoint's ", n, " data readers do not divide the ",
        batch, " sequences of a step");
  const int64_t each = batch / n, step = batch * T, shards = int64_t(shard_tokens.size());
  std::vector<DataLoader::Position> out;
  out.reserve(size_t(batch));
  for (int64_t i = 0; i < n; ++i) {
    const DataLoader::Position& p = saved[size_t(i)];
    const bool at_start = p.pos == i * each * T;  // a shard's first read (or the run's)
    // A reader saved where none stands (its step past its shard's end: a damaged or edited
    // checkpoint) is passed on as it is, for DataLoader::seek to refuse.
    const bool reached = p.shard >= 0 && p.shard < shards &&
                         (at_start || p.pos + step < shard_tokens[size_t(p.shard)]);
    for (int64_t j = 0; j < each; ++j) {
      DataLoader::Position q{p.shard, p.pos + j * T};
      // As DataLoader::next_batch moves on after a read: a reader whose next read would
      // reach the shard's end starts the next shard at its own offset.
      if (!at_start && reached && q.pos + step >= shard_tokens[size_t(p.shard)])
        q = {(p.shard + 1) % shards, (i * each + j) * T};
      out.push_back(q);
    }
  }
  return out;
}

}  // namespace speedrun
