// UTF-8 validation and repair, as the tokenizer needs them.
//
// Repair follows the WHATWG Encoding Standard's UTF-8 decoder (what JavaScript's
// TextDecoder, Python's bytes.decode(errors="replace") and Rust's String::from_utf8_lossy
// do): every maximal subpart of an ill-formed sequence becomes one U+FFFD (EF BF BD).
// Examples: "\xC3" -> U+FFFD; "\xE2\x82" -> one U+FFFD; "\xED\xA0\x80" (a surrogate) ->
// three U+FFFD; "\xF0\x9F\x98A" -> U+FFFD then "A"; "\xFF" -> U+FFFD.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace speedrun {

// True when `bytes` is well-formed UTF-8 (no overlongs, surrogates or values > U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

// Length of the longest prefix of `bytes` that is well-formed UTF-8.
size_t valid_utf8_prefix(std::string_view bytes);

// `bytes` with each maximal ill-formed subpart replaced by U+FFFD; equal to `bytes` when
// it is already valid.
std::string sanitize_utf8(std::string_view bytes);

}  // namespace speedrun
