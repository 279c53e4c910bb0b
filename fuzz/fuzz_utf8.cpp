// UTF-8 validation and repair (data/utf8.h), against a byte-at-a-time decoder written from
// the WHATWG Encoding Standard; GPT-2's byte alphabet (gpt2_spell / gpt2_unspell); and
// overstrike removal (strip_overstrike), which must keep valid UTF-8 valid.
#include "data/documents.h"
#include "data/tokenizer_files.h"
#include "data/utf8.h"

#include "fuzz_common.h"

namespace {

// WHATWG's UTF-8 decoder (encoding.spec.whatwg.org, "UTF-8 decoder"), replacing errors
// with U+FFFD; it also reports the length of the valid prefix.
std::string whatwg_decode(std::string_view in, size_t* valid_prefix) {
  std::string out;
  uint32_t needed = 0, seen = 0;
  unsigned char lower = 0x80, upper = 0xBF;
  size_t start = 0;  // where the character being decoded began
  *valid_prefix = in.size();
  auto error = [&](size_t at) {
    if (*valid_prefix == in.size()) *valid_prefix = at;
    out += "\xEF\xBF\xBD";
  };
  for (size_t i = 0; i <= in.size(); ++i) {
    if (i == in.size()) {
      if (needed != 0) error(start);
      break;
    }
    const unsigned char b = static_cast<unsigned char>(in[i]);
    if (needed == 0) {
      start = i;
      if (b <= 0x7F) {
        out += char(b);
      } else if (b >= 0xC2 && b <= 0xDF) {
        needed = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower = 0xA0;
        if (b == 0xED) upper = 0x9F;
        needed = 2;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower = 0x90;
        if (b == 0xF4) upper = 0x8F;
        needed = 3;
      } else {
        error(i);
      }
      continue;
    }
    if (b < lower || b > upper) {
      needed = seen = 0;
      lower = 0x80, upper = 0xBF;
      error(start);
      --i;  // the byte is decoded again as a new character
      continue;
    }
    lower = 0x80, upper = 0xBF;
    if (++seen == needed) {
      out.append(in.substr(start, needed + 1));
      needed = seen = 0;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = fuzz::text(data, size);
  size_t want_prefix = 0;
  const std::string want = whatwg_decode(in, &want_prefix);
  const std::string got = speedrun::sanitize_utf8(in);
  fuzz::require(got == want, "sanitize_utf8 differs from the WHATWG decoder");
  fuzz::require(speedrun::valid_utf8_prefix(in) == want_prefix, "valid_utf8_prefix");
  fuzz::require(speedrun::is_valid_utf8(in) == (want_prefix == in.size()), "is_valid_utf8");
  fuzz::require(speedrun::is_valid_utf8(got), "sanitize_utf8 gave invalid UTF-8");
  fuzz::require(speedrun::sanitize_utf8(got) == got, "sanitize_utf8 is not idempotent");

  const std::string spelled = speedrun::gpt2_spell(in);
  fuzz::require(speedrun::is_valid_utf8(spelled), "gpt2_spell gave invalid UTF-8");
  fuzz::require(speedrun::gpt2_unspell(spelled, "fuzz") == in, "gpt2_unspell(gpt2_spell(x)) != x");
  fuzz::parses("fuzz", [&] {
    const std::string raw = speedrun::gpt2_unspell(in, "fuzz");
    fuzz::require(speedrun::gpt2_spell(raw) == in, "gpt2_spell(gpt2_unspell(x)) != x");
  });

  const std::string plain = speedrun::strip_overstrike(in);
  fuzz::require(plain.size() <= in.size(), "strip_overstrike grew the text");
  if (want_prefix == in.size())
    fuzz::require(speedrun::is_valid_utf8(plain) && plain.find('\b') == plain.npos,
                  "strip_overstrike broke valid UTF-8 or left a backspace");
  return 0;
}
