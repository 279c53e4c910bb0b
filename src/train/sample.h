// Autoregressive sampling with the KV-cache Decoder (model/decoder.h): the prompt is fed
// token by token, then each new token is drawn from the next-token logits and fed back.
// temperature 0 is greedy (the first largest logit); otherwise softmax(logits / T) over
// the top_k largest (ties broken by lower id), drawn with the seeded Rng.
#pragma once
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "model/params.h"

namespace speedrun {

// The most tokens one call generates: days of sampling at any speed, and far enough from
// int64's end that prompt + max_tokens (the decoder's positions) cannot overflow.
inline constexpr int64_t kMaxSampleTokens = 1'000'000'000;

struct SampleOptions {
  int64_t max_tokens = 64;
  double temperature = 1.0;
  int64_t top_k = 0;        // 0: whole vocabulary
  int64_t context = 0;      // > 0: only the last `context` prompt tokens are fed; 0: all
  int64_t window = 1024;    // attention window (the KV cache holds this many positions)
  int64_t allowed_vocab = 0;  // > 0: ids >= this are never drawn (a padded vocabulary)
  uint64_t seed = 0;
  bool stop_at_eot = true;  // stop (without returning it) when EOT is drawn
  std::function<void(int32_t)> on_token;  // called with each generated token as it comes
};

// Continues `prompt` (non-empty) and returns only the generated tokens.
std::vector<int32_t> sample_tokens(Backend& backend, const Parameters& params,
                                   const std::vector<int32_t>& prompt, const SampleOptions& o);

// Throws Error naming the first byte that is not valid UTF-8 and its offset (prompts are
// text: the tokenizer would silently replace such bytes with U+FFFD).
void check_prompt_utf8(std::string_view prompt);

// The next token from `logits` under o's temperature, top_k and allowed_vocab.
int32_t pick_token(const std::vector<double>& logits, const SampleOptions& o, class Rng& rng);

}  // namespace speedrun
