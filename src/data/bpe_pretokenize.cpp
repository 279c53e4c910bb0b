#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/bpe_pretokenize.h"

#include <pcre2.h>

#include <array>
#include <cstdint>

#include "core/error.h"

namespace speedrun {
namespace {

// Unicode White_Space, which is what \s means in tiktoken's (Rust) regex.
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
// Letters and numbers that Unicode 15.0 and 16.0 added: tiktoken 1.0.22's regex knows
// them (Unicode 16.0), Debian 12's PCRE2 does not (Unicode 14.0). Where PCRE2 already
// knows them the union changes nothing. Listed from tests/data/tokenizer_unicode_classes
// .json (made from tiktoken by tools/tokenizer_oracle/make_unicode_classes.mjs); the test
// Pretokenizer.LettersAndNumbersAreTiktokens checks every code point.
#define L_NEW                                                                                  \
  "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"   \
  "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}"       \
  "\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}"         \
  "\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}"       \
  "\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"        \
  "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"                  \
  "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N_NEW                                                                                  \
  "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}" \
  "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"
// Possessive quantifiers (++) where nothing after them could use a shorter match: same
// pieces, no backtracking state.
constexpr const char* kPattern =
    "'s|'t|'re|'ve|'m|'ll|'d"
    "| ?[\\p{L}" L_NEW "]++| ?[\\p{N}" N_NEW "]++| ?[^" WS "\\p{L}\\p{N}" L_NEW N_NEW "]++"
    "|[" WS "]+(?![^" WS "])|[" WS "]";
#undef WS
#undef L_NEW
#undef N_NEW
// The last branch is one character where encoder.py has \s+: it is reached only when
// \s+(?!\S) failed, i.e. when exactly one white-space character precedes a non-space one.

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Match data and JIT stack of one thread. The JIT stack starts at 32 KB and may grow to
// 64 MB (backtracking into a long white-space run); if a match still runs out, next()
// retries it with the interpreter.
struct ThreadState {
  pcre2_match_data* md = nullptr;
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* mctx = nullptr;
  ThreadState() {
    md = pcre2_match_data_create(1, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    check(md && mctx && stack, "tokenizer: out of memory creating PCRE2 match data");
    pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~ThreadState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(mctx);
    pcre2_match_data_free(md);
  }
};

ThreadState& thread_state() {
  thread_local ThreadState s;
  return s;
}

// ASCII classes as the pattern sees them: letters, digits, white space, and the rest
// (punctuation and control characters: [^\s\p{L}\p{N}]). kHigh marks bytes >= 0x80.
enum : uint8_t { kOther, kLetter, kDigit, kSpace, kHigh };
constexpr auto kAsciiClass = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = c >= 0x80                                     ? kHigh
           : (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ? kLetter
           : c >= '0' && c <= '9'                         ? kDigit
           : c == ' ' || (c >= '\t' && c <= '\r')        ? kSpace
                                                          : kOther;
  return t;
}();

// The end of the piece at p when the pattern's choice there depends on ASCII bytes only;
// 0 when a non-ASCII character could change it (PCRE2 decides those). Mirrors the pattern
// branch by branch.
size_t ascii_next(const unsigned char* s, size_t n, size_t p) {
  auto cls = [&](size_t i) { return kAsciiClass[s[i]]; };
  uint8_t c = cls(p);
  if (c == kHigh) return 0;
  if (s[p] == '\'' && p + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d
    const unsigned char a = s[p + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return p + 2;
    if (p + 2 < n) {
      const unsigned char b = s[p + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return p + 3;
    }
  }
  size_t q = p;  // start of the run; a space right before a non-space run joins it
  if (s[p] == ' ' && p + 1 < n && cls(p + 1) != kSpace) {
    q = p + 1;
    c = cls(q);
    if (c == kHigh) return 0;
  }
  size_t r = q + 1;
  if (c != kSpace) {  // ' ?\p{L}++', ' ?\p{N}++', ' ?[^\s\p{L}\p{N}]++'
    while (r < n && cls(r) == c) ++r;
    return r < n && cls(r) == kHigh ? 0 : r;  // the run might go on in non-ASCII
  }
  while (r < n && cls(r) == kSpace) ++r;  // '\s+(?!\S)|\s'
  if (r == n) return n;
  if (cls(r) == kHigh) return 0;  // more white space (U+00A0, ...) or not
  return r - p >= 2 ? r - 1 : p + 1;  // leave the last one to precede the non-space
}

}  // namespace

Pretokenizer::Pretokenizer(bool ascii_fast_path) : ascii_fast_path_(ascii_fast_path) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &err_off, nullptr);
  if (!code)
    fail("tokenizer: PCRE2 rejects the GPT-2 pattern at offset ", err_off, ": ",
         pcre2_message(err), " (PCRE2 must be built with Unicode support)");
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Pretokenizer::~Pretokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

size_t Pretokenizer::next(std::string_view text, size_t pos) const {
  if (ascii_fast_path_) {
    const size_t end =
        ascii_next(reinterpret_cast<const unsigned char*>(text.data()), text.size(), pos);
    if (end != 0) return end;
  }
  return next_pcre2(text, pos);
}

size_t Pretokenizer::next_pcre2(std::string_view text, size_t pos) const {
  ThreadState& ts = thread_state();
  auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, ts.md, ts.mctx)
                : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, ts.md, ts.mctx);
  if (rc < 0 && jit_ && rc != PCRE2_ERROR_NOMATCH)  // e.g. JIT stack exhausted: interpret
    rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, ts.md,
                     ts.mctx);
  if (rc < 0)
    fail("tokenizer: pre-tokenization failed at byte ", pos, " of a ", text.size(),
         "-byte text: ", pcre2_message(rc), " (split the text into smaller documents)");
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.md);
  check(ov[0] == pos && ov[1] > pos, "tokenizer: internal error: the GPT-2 pattern matched ",
        ov[1] - ov[0], " bytes at ", ov[0], " instead of a non-empty piece at ", pos);
  return ov[1];
}

std::vector<std::string_view> Pretokenizer::split(std::string_view text) const {
  std::vector<std::string_view> out;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = next(text, pos);
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

}  // namespace speedrun
