// The two files of a GPT-2-style byte-level BPE tokenizer, in OpenAI's layout
// (encoder.json + vocab.bpe) or Hugging Face's (vocab.json + merges.txt) — the same
// content under other names:
//  - encoder.json: a JSON object {token: id}. A token's bytes are spelled with GPT-2's
//    byte alphabet (gpt2_byte_to_unicode: printable Latin-1 bytes stand for themselves,
//    the other 68 bytes for U+0100..U+0143, e.g. space = "Ġ" U+0120).
//  - vocab.bpe: "#version: 0.2", then one merge per line, "left right", in rank order.
// Supported vocabularies number tokens the GPT-2 way, which is what tiktoken assumes:
// ids 0..255 are the 256 single bytes, id 256+i is the token made by merge i, and the last
// id is <|endoftext|>. Our trainer (bpe_train.h) writes the same layout.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace speedrun {

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

// A byte-level BPE vocabulary in memory.
struct BpeVocab {
  std::vector<std::string> tokens;  // [256 + merges.size()] id -> raw bytes (ordinary tokens)
  std::vector<std::pair<int32_t, int32_t>> merges;  // merge i joins (left, right) into 256 + i
  // <|endoftext|> has id tokens.size(); it is not an ordinary token.
  int32_t eot() const { return static_cast<int32_t>(tokens.size()); }
};

// GPT-2's byte alphabet: the code point that spells byte b in the files.
const std::array<char32_t, 256>& gpt2_byte_to_unicode();

// UTF-8 spelling of raw bytes in GPT-2's byte alphabet, and back (throws on a character
// outside the alphabet, naming `what`).
std::string gpt2_spell(std::string_view bytes);
std::string gpt2_unspell(std::string_view spelled, std::string_view what);

// The files of a tokenizer folder: encoder.json + vocab.bpe if both are there, else
// vocab.json + merges.txt; throws naming the folder and the fix when neither pair is.
std::pair<std::filesystem::path, std::filesystem::path> find_bpe_files(
    const std::filesystem::path& dir);

// Reads and validates the pair; every error names the file (and line) and what to do.
BpeVocab read_bpe_files(const std::filesystem::path& vocab_json,
                        const std::filesystem::path& merges_file);
// The same on the files' texts; the names stand for the files in errors.
BpeVocab parse_bpe_files(std::string_view vocab_json_text, std::string_view merges_text,
                         const std::string& vocab_json_name, const std::string& merges_name);

// Writes the pair. ascii_json = true escapes non-ASCII as \uXXXX, like OpenAI's
// encoder.json (GPT-2's own tables then come out byte-identical to the originals);
// false writes UTF-8, like Hugging Face's vocab.json.
void write_bpe_files(const BpeVocab& vocab, const std::filesystem::path& vocab_json,
                     const std::filesystem::path& merges_file, bool ascii_json = true);

}  // namespace speedrun
