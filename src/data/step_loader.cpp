#include "data/step_loader.h"

#include <algorithm>

#include "core/error.h"

namespace speedrun {

StepLoader::StepLoader(const std::vector<std::string>& files, int64_t micro, int64_t T,
                       int64_t K, int rank, int world, int64_t vocab)
    : micro_(micro), T_(T) {
  check(K >= 1 && micro >= 1, "step loader: ", K, " micro-batches of ", micro,
        " sequences: both must be >= 1");
  loaders_.reserve(size_t(K));
  for (int64_t k = 0; k < K; ++k)
    loaders_.emplace_back(files, micro, T, int(rank * K + k), int(world * K), vocab);
}

void StepLoader::reset() {
  for (auto& l : loaders_) l.reset();
}

void StepLoader::next(int32_t* x, int32_t* y) {
  const int64_t n = micro_ * T_;
  for (size_t k = 0; k < loaders_.size(); ++k) loaders_[k].next_batch(x + k * n, y + k * n);
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
  for (size_t k = 0; k < loaders_.size(); ++k) loaders_[k].seek(p[k]);
}

}  // namespace speedrun
