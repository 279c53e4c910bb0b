// Plain autoregressive sampling by full forward passes over a context of at most T tokens
// (the model's training sequence length). temperature 0 is greedy (argmax).
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/params.h"

namespace speedrun {

struct SampleOptions {
  int64_t max_tokens = 64;
  double temperature = 1.0;
  int64_t top_k = 0;       // 0: whole vocabulary
  int64_t context = 1024;  // T of the forward passes
  int64_t window = 1024;   // attention window
  uint64_t seed = 0;
  bool stop_at_eot = true;
};

// Continues `prompt` (non-empty) and returns only the generated tokens.
std::vector<int32_t> sample_tokens(Backend& backend, Parameters& params,
                                   const std::vector<int32_t>& prompt, const SampleOptions& o);

}  // namespace speedrun
