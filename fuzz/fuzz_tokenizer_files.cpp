// A byte-level BPE tokenizer's two files (data/tokenizer_files.h): encoder.json (or
// vocab.json) and vocab.bpe (or merges.txt), the layout GPT-2 ships and `speedrun
// tokenizer train` writes. The input is the first file, a NUL byte, then the second.
// An accepted pair must make a Tokenizer whose encode/decode round-trips text, and must
// read back the same after write_bpe_files in both layouts.
#include "data/tokenizer.h"
#include "data/utf8.h"

#include "fuzz_common.h"

namespace {

void check_round_trip(const speedrun::Tokenizer& tok, std::string_view s) {
  const std::vector<int32_t> ids = tok.encode(s);
  for (int32_t id : ids)
    fuzz::require(id >= 0 && id < tok.eot(), "encode gave an id outside the ordinary tokens");
  fuzz::require(tok.decode(ids) == speedrun::sanitize_utf8(s), "decode(encode(s)) != s");
}

bool same(const speedrun::BpeVocab& a, const speedrun::BpeVocab& b) {
  return a.tokens == b.tokens && a.merges == b.merges;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = fuzz::text(data, size);
  const size_t nul = in.find('\0');
  const std::string_view vocab_text = in.substr(0, nul);
  const std::string_view merges_text = nul == in.npos ? std::string_view() : in.substr(nul + 1);
  speedrun::BpeVocab vocab;
  const std::string vj = "fuzz/encoder.json", mf = "fuzz/vocab.bpe";
  bool named = false;
  try {
    vocab = speedrun::parse_bpe_files(vocab_text, merges_text, vj, mf);
  } catch (const speedrun::Error& e) {
    const std::string_view what = e.what();
    named = what.find(vj) != what.npos || what.find(mf) != what.npos;
    fuzz::require(named, std::string("an error names neither file: ") + e.what());
    return 0;
  }
  const speedrun::Tokenizer tok(vocab);  // read_bpe_files promises what it checks
  check_round_trip(tok, "Hello world, it's 2024!\n  \xC3\xA9t\xC3\xA9 \xE2\x82\xAC 123 \xF0\x9F\x98\x80");
  check_round_trip(tok, merges_text.substr(0, 512));
  for (int32_t id = 0; id <= tok.eot(); ++id) tok.token_bytes(id);

  for (const bool ascii : {true, false}) {
    fuzz::MemFile a(""), b("");
    speedrun::write_bpe_files(vocab, a.path(), b.path(), ascii);
    fuzz::require(same(speedrun::read_bpe_files(a.path(), b.path()), vocab),
                  "write_bpe_files then read_bpe_files changed the vocabulary");
  }
  return 0;
}
