// GPT-2's pre-tokenization: text is cut into pieces by the regular expression of OpenAI's
// encoder.py,
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and BPE runs on each piece separately. It runs on PCRE2 (UTF + UCP, JIT-compiled when
// the library has a JIT). Two deliberate spelling changes keep the pieces identical to
// tiktoken's (Rust regex, Unicode 16.0) on every code point:
//  - \s is written out as Unicode's White_Space property (25 code points): PCRE2's \s
//    also matches U+180E, which Unicode stopped counting as space in 6.3;
//  - \p{L} and \p{N} are extended with the letters and numbers Unicode 15 and 16 added,
//    which Debian 12's PCRE2 10.42 (Unicode 14.0) does not know.
// A PCRE2 with Unicode newer than 16.0 would count later letters as letters where tiktoken
// does not; Pretokenizer.LettersAndNumbersAreTiktokens would then fail and say which.
//
// Speed: most pieces of ordinary text are ASCII, and for them the pattern reduces to a few
// character classes. An ASCII scanner decides such pieces itself (about half the time of
// the JIT-compiled pattern) and hands every piece that touches a non-ASCII byte, or whose
// end depends on one, to PCRE2. The tests check that both give the same pieces.
#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

namespace speedrun {

class Pretokenizer {
 public:
  // Compiles the pattern; throws Error if PCRE2 rejects it. ascii_fast_path = false makes
  // every piece go through PCRE2 (for tests).
  explicit Pretokenizer(bool ascii_fast_path = true);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // End offset of the piece that starts at `pos` (< text.size()). `text` must be valid
  // UTF-8 (the caller checks once per text; see utf8.h). Thread-safe: each thread matches
  // with its own match data.
  size_t next(std::string_view text, size_t pos) const;

  // All pieces of valid UTF-8 `text`, in order; they concatenate back to `text`.
  std::vector<std::string_view> split(std::string_view text) const;

  bool jit() const { return jit_; }

 private:
  size_t next_pcre2(std::string_view text, size_t pos) const;

  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so that users need no PCRE2 header
  bool jit_ = false;
  bool ascii_fast_path_ = true;
};

}  // namespace speedrun
