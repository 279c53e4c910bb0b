// GPT-2's vocabulary as the record uses it: the tokenizer's ids, its document delimiter, and
// the embedding rows of the record's model (padded so wte and lm_head tile evenly).
#pragma once
#include <cstdint>

namespace speedrun {

inline constexpr int32_t kGpt2Vocab = 50257;  // ids: 256 bytes + 50000 merges + <|endoftext|>
inline constexpr int32_t kGpt2Eot = 50256;    // <|endoftext|>, the last id
inline constexpr int64_t kGpt2PaddedVocab = 50304;  // kGpt2Vocab rounded up to a multiple of 128

static_assert(kGpt2Eot == kGpt2Vocab - 1);
static_assert(kGpt2PaddedVocab % 128 == 0 && kGpt2PaddedVocab - 128 < kGpt2Vocab &&
              kGpt2PaddedVocab >= kGpt2Vocab);

}  // namespace speedrun
