// GPT-2's byte-level BPE tokenizer, giving the ids of tiktoken's "gpt2" encoding with
// encode_ordinary semantics (tiktoken 1.0.22 is the oracle: tests/test_tokenizer.cpp).
//
//  - encode(text) pre-tokenizes with GPT-2's regex (bpe_pretokenize.h) and runs
//    byte-pair merging on each piece (bpe_merge.h). Ordinary text never yields
//    <|endoftext|>: the literal text "<|endoftext|>" encodes as ordinary tokens; the
//    special id (eot()) exists only where the caller puts it.
//  - Invalid UTF-8: encode first replaces each maximal ill-formed subpart with U+FFFD
//    (utf8.h), exactly what tiktoken's callers get from TextDecoder / bytes.decode(
//    errors="replace"), so the ids equal tiktoken's for ANY input bytes. Consequently
//    decode(encode(x)) == x for valid UTF-8 x, and == sanitize_utf8(x) otherwise.
//  - decode(ids) concatenates the tokens' bytes exactly (the result may be invalid UTF-8
//    when the ids cut a character); eot() decodes to the text "<|endoftext|>".
//  - Thread-safe: a Tokenizer is immutable. Each thread keeps a bounded cache of words
//    that BPE split into several tokens, so repeated words cost one hash lookup.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer_files.h"

namespace speedrun {

// Where GPT-2's files are expected: $SPEEDRUN_GPT2_DIR if set, else
// ${SPEEDRUN_CACHE:-$HOME/.cache/speedrun}/gpt2 (filled by scripts/fetch_gpt2_tokenizer.sh).
std::filesystem::path gpt2_tokenizer_dir();

class Tokenizer {
 public:
  enum class Layout { OpenAI, HuggingFace };  // encoder.json + vocab.bpe / vocab.json + merges.txt

  // A folder holding either pair of files (see tokenizer_files.h).
  static Tokenizer load(const std::filesystem::path& dir);
  static Tokenizer load_files(const std::filesystem::path& vocab_json,
                              const std::filesystem::path& merges_file);
  explicit Tokenizer(BpeVocab vocab);  // validates the GPT-2 numbering

  int32_t eot() const;         // <|endoftext|>, the last id (50256 for GPT-2)
  int32_t vocab_size() const;  // ordinary tokens + 1 (50257 for GPT-2)

  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // encode() of each text, on all OpenMP threads; identical to encoding them in order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string_view>& texts) const;

  std::string decode(std::span<const int32_t> ids) const;  // throws on an id out of range
  std::string_view token_bytes(int32_t id) const;          // throws on an id out of range
  int32_t token_id(std::string_view bytes) const;          // ordinary token, or -1

  const BpeVocab& vocab() const;
  void save(const std::filesystem::path& dir, Layout layout = Layout::OpenAI) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace speedrun
