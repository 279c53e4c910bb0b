// BPE training (data/bpe_train.h), as `speedrun tokenizer train` runs it on a user's text
// files. The input's first byte picks the vocabulary size (257 to 512 ids), the rest is the
// texts, separated by NUL bytes. Training must not fail on any text, and what it returns
// must be the vocabulary bpe_train.h promises: the 256 bytes, then one token per
// merge spelling its two parts, every token's bytes unique, at most the size asked; a
// Tokenizer of it round-trips every training text, and its files read back the same.
#include <set>

#include "data/bpe_train.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int32_t vocab_size = 257 + int32_t(data[0]);
  const std::string_view in = fuzz::text(data + 1, size - 1);
  std::vector<std::string_view> texts;
  for (size_t at = 0;;) {
    const size_t nul = in.find('\0', at);
    texts.push_back(in.substr(at, nul == in.npos ? in.npos : nul - at));
    if (nul == in.npos) break;
    at = nul + 1;
  }

  const speedrun::BpeVocab v = speedrun::train_bpe(texts, vocab_size);
  fuzz::require(v.tokens.size() >= 256 && v.eot() + 1 <= vocab_size,
                "train_bpe: the vocabulary is not 256 bytes + merges within the size asked");
  fuzz::require(v.merges.size() == v.tokens.size() - 256, "train_bpe: not one token per merge");
  for (int id = 0; id < 256; ++id)  // (in GPT-2's order, so that GPT-2's ids are ours)
    fuzz::require(v.tokens[size_t(id)].size() == 1, "train_bpe: id < 256 is not a single byte");
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const auto [l, r] = v.merges[i];
    fuzz::require(l >= 0 && r >= 0 && l < int32_t(256 + i) && r < int32_t(256 + i),
                  "train_bpe: a merge joins a token not made before it");
    fuzz::require(v.tokens[256 + i] == v.tokens[size_t(l)] + v.tokens[size_t(r)],
                  "train_bpe: a merge's token is not its parts' bytes");
  }
  fuzz::require(std::set<std::string>(v.tokens.begin(), v.tokens.end()).size() == v.tokens.size(),
                "train_bpe: two tokens have the same bytes");

  const speedrun::Tokenizer tok(v);
  for (std::string_view t : texts) {
    const std::vector<int32_t> ids = tok.encode(t);
    for (int32_t id : ids)
      fuzz::require(id >= 0 && id < tok.eot(), "encode gave an id outside the ordinary tokens");
    fuzz::require(tok.decode(ids) == speedrun::sanitize_utf8(t),
                  "decode(encode(t)) != t for a training text");
  }
  fuzz::MemFile a(""), b("");
  speedrun::write_bpe_files(v, a.path(), b.path(), true);
  const speedrun::BpeVocab back = speedrun::read_bpe_files(a.path(), b.path());
  fuzz::require(back.tokens == v.tokens && back.merges == v.merges,
                "write_bpe_files then read_bpe_files changed the trained vocabulary");
  return 0;
}
