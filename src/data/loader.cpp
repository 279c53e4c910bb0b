#include "data/loader.h"

#include <utility>

#include "core/error.h"

namespace speedrun {

DataLoader::DataLoader(std::vector<std::string> files, int64_t B, int64_t T, int rank,
                       int world, int64_t vocab)
    : files_(std::move(files)), B_(B), T_(T), vocab_(vocab), rank_(rank), world_(world) {
  check(!files_.empty(), "data loader: no shard files given (pass a --train/--val pattern that matches shards)");
  check(B >= 1 && T >= 1, "data loader: batch ", B, " x seq-len ", T,
        " is empty (--batch and --seq-len must be >= 1)");
  check(world >= 1 && rank >= 0 && rank < world, "data loader: rank ", rank,
        " is outside a world of ", world, " processes");
  check(vocab >= 1, "data loader: vocab ", vocab, " must be >= 1 (--vocab)");
  // B*world sequences of T tokens: --batch x --seq-len, however the readers split them.
  check(B <= kMaxStepTokens / T / world, "data loader: --batch x --seq-len = ", B * world, " x ",
        T, " tokens per step is absurdly large (check --batch and --seq-len)");
  const int64_t step = B * T * world;
  sizes_.reserve(files_.size());
  for (const std::string& f : files_) {
    int64_t n = read_shard_header(f);
    check(n >= step + 1, "shard ", f, ": has ", n, " tokens, but one step reads --batch x "
          "--seq-len + 1 = ", B * world, " x ", T, " + 1 = ", step + 1,
          " (use a smaller --batch or --seq-len, or bigger shards)");
    sizes_.push_back(n);
  }
  reset();
}

void DataLoader::load(int64_t shard) {
  if (loaded_ == shard) return;
  current_ = Shard();  // unmap first: at most one shard mapped
  loaded_ = -1;
  Shard s = Shard::open(files_[size_t(shard)]);
  check(s.size() == sizes_[size_t(shard)], "shard ", s.path(), ": now holds ", s.size(),
        " tokens but held ", sizes_[size_t(shard)],
        " when the run started (was it rewritten during training? restart the run)");
  current_ = std::move(s);
  loaded_ = shard;
}

void DataLoader::reset() {
  shard_ = 0;
  pos_ = int64_t(rank_) * B_ * T_;
  load(shard_);
}

void DataLoader::next_batch(int32_t* x, int32_t* y) {
  load(shard_);
  const int64_t bt = B_ * T_;
  const uint16_t* tok = current_.tokens() + pos_;
  // pos + B*T + 1 <= N always holds: pos + B*T*W < N, or pos = r*B*T and N >= B*T*W + 1.
  for (int64_t i = 0; i <= bt; ++i) {
    if (int64_t(tok[i]) >= vocab_)
      fail("shard ", current_.path(), ": token ", tok[i], " at position ", pos_ + i,
           " is >= vocab ", vocab_, ", the model's rows (give a model --vocab of at least ",
           int64_t(tok[i]) + 1, ", or re-create the shard with the model's tokenizer)");
  }
  for (int64_t i = 0; i < bt; ++i) {
    x[i] = int32_t(tok[i]);
    y[i] = int32_t(tok[i + 1]);
  }
  const int64_t step = bt * world_;
  pos_ += step;
  if (pos_ + step >= sizes_[size_t(shard_)]) {
    shard_ = (shard_ + 1) % int64_t(files_.size());
    pos_ = int64_t(rank_) * bt;
    load(shard_);
  }
}

int64_t DataLoader::batches_per_pass() const {
  const int64_t step = B_ * T_ * world_;
  int64_t n = 0;
  for (const int64_t size : sizes_) {
    // As next_batch: read at pos, advance, move on when pos + step >= size.
    for (int64_t pos = int64_t(rank_) * B_ * T_;; pos += step) {
      ++n;
      if (pos + 2 * step >= size) break;
    }
  }
  return n;
}

void DataLoader::seek(Position p) {
  const int64_t bt = B_ * T_, step = bt * world_;
  const int64_t first = int64_t(rank_) * bt;
  bool ok = p.shard >= 0 && p.shard < int64_t(files_.size()) && p.pos >= first &&
            (p.pos - first) % step == 0;
  if (ok) ok = p.pos == first || p.pos < sizes_[size_t(p.shard)] - step;  // pos + step overflows
  check(ok, "data loader: cannot resume at shard ", p.shard, " position ", p.pos,
        ": not a position reader ", rank_, " of ", world_, " (", B_, " sequence(s) of ", T_,
        " tokens each) reaches in ", files_.size(), " shard(s) (resume with the same data, "
        "--batch and --seq-len as the run that saved it)");
  shard_ = p.shard;
  pos_ = p.pos;
  load(shard_);
}

}  // namespace speedrun
