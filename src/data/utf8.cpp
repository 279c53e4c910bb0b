#include "data/utf8.h"

#include <cstdint>
#include <cstring>

namespace speedrun {
namespace {

// Length of the well-formed sequence starting at p[0] (1..4), or 0 when the bytes at p
// start an ill-formed one; `*bad` then receives the length of its maximal subpart (>= 1),
// the bytes that one U+FFFD replaces. Byte ranges: Unicode Table 3-7.
size_t sequence_length(const unsigned char* p, size_t left, size_t* bad) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *bad = 1;  // 80..C1 and F5..FF never start a sequence
    return 0;
  }
  size_t i = 1;
  for (; i <= need; ++i) {
    if (i >= left) break;
    const unsigned char b = p[i];
    const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  if (i == need + 1) return need + 1;
  *bad = i;  // the lead byte plus the continuation bytes that were still acceptable
  return 0;
}

uint64_t load8(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

size_t valid_utf8_prefix(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n && (load8(p + i) & 0x8080808080808080ull) == 0) {
      i += 8;  // eight ASCII bytes at once: most text is mostly ASCII
      continue;
    }
    size_t bad = 0;
    const size_t len = sequence_length(p + i, n - i, &bad);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

bool is_valid_utf8(std::string_view bytes) { return valid_utf8_prefix(bytes) == bytes.size(); }

std::string sanitize_utf8(std::string_view bytes) {
  size_t i = valid_utf8_prefix(bytes);
  if (i == bytes.size()) return std::string(bytes);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n + n / 2);
  out.append(bytes.data(), i);
  while (i < n) {
    size_t bad = 0;
    const size_t len = sequence_length(p + i, n - i, &bad);
    if (len > 0) {
      out.append(bytes.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

}  // namespace speedrun
