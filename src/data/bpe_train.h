// Training a byte-level BPE vocabulary the GPT-2 way, written in the same two files the
// tokenizer reads (Tokenizer(vocab).save(dir) or write_bpe_files).
//
//  - Texts are repaired (utf8.h) and cut into pieces with GPT-2's pattern
//    (bpe_pretokenize.h), exactly as encode() does; merges never cross pieces. Counting
//    runs on all OpenMP threads; the merge loop works on the unique pieces with their
//    frequencies and updates pair counts incrementally (only the words holding the merged
//    pair are touched). Its cost grows with the number of distinct pieces, not with the
//    text: 100 MB of Debian's English text trains a 50,257-token vocabulary in about a
//    second on two cores (bench_tokenizer).
//  - Ids: 0..255 are the single bytes in GPT-2's order (the same ids as GPT-2's
//    encoder.json), merge i creates id 256 + i, and <|endoftext|> is the last id.
//  - Each step merges the most frequent adjacent pair; ties go to the pair whose bytes are
//    smallest: compare the left tokens' bytes (memcmp order, a prefix first), then the
//    right tokens'. Occurrences in a word merge left to right, without overlap ("aaa" with
//    (a, a) gives "aa a"). The result does not depend on the thread count.
//  - Every token's bytes are unique, as the file format and tiktoken's rules need: should a
//    pair's joined bytes already be a token (another split of the same string), the words
//    take that token and no merge is added.
//  - Training stops early, with fewer tokens than asked, when no adjacent pair is left.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "data/tokenizer_files.h"

namespace speedrun {

// vocab_size counts every id: 256 bytes + merges + <|endoftext|>, so >= 257 (GPT-2: 50257).
BpeVocab train_bpe(const std::vector<std::string_view>& texts, int32_t vocab_size);

}  // namespace speedrun
