// Numbers read from text as people write them, in one way wherever speedrun reads one: the
// command line's flags, presets, sweep specs. Decimal only: "010" is ten, where strtol(s, 0,
// 0) -- which CLI11 uses for integer options -- reads eight, and "0x10" sixteen; an integer
// has no fraction or exponent ("1.5", "1e3" are refused, not cut); an unsigned one has no
// minus sign (strtoull wraps "-1" to 2^64 - 1). One leading '+' is allowed. A real is
// from_chars' general format: "0.05", "1e-8", "inf", "nan" (whether a value may be infinite
// is the caller's range check). No surrounding spaces.
#pragma once
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include <fmt/format.h>

#include "core/error.h"

namespace speedrun {

enum class NumberText { kOk, kNotANumber, kOutOfRange };

// Reads all of `text` into `out` (unchanged unless kOk). T: an integer type (not bool) or
// float/double.
template <class T> NumberText read_number(std::string_view text, T& out) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);
  if (text.size() > 1 && text[0] == '+' && text[1] != '-' && text[1] != '+') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  T v{};
  std::from_chars_result r;
  if constexpr (std::is_floating_point_v<T>)
    r = std::from_chars(text.data(), end, v, std::chars_format::general);
  else
    r = std::from_chars(text.data(), end, v, 10);
  if (r.ptr != end || text.empty()) {
    // from_chars stops at the first character it cannot use: a number cut short ("12x",
    // "1.5" for an integer) is not a number of this type, whatever its prefix held.
    return NumberText::kNotANumber;
  }
  if (r.ec == std::errc::result_out_of_range) return NumberText::kOutOfRange;
  if (r.ec != std::errc()) return NumberText::kNotANumber;
  out = v;
  return NumberText::kOk;
}

// What a T is, for messages: "an integer", "an integer >= 0", "a number".
template <class T> const char* number_noun() {
  if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_unsigned_v<T>) return "an integer >= 0";
  else return "an integer";
}

// The values a T holds, for messages: "an integer in [-2147483648, 2147483647]".
template <class T> std::string number_type_range() {
  if constexpr (std::is_floating_point_v<T>)
    return fmt::format("a number of magnitude below {}", std::numeric_limits<T>::max());
  else
    return fmt::format("an integer in [{}, {}]", std::numeric_limits<T>::min(),
                       std::numeric_limits<T>::max());
}

// `text` as a T, or an Error naming `what` (a flag, "preset tiny: --steps"):
// "--steps '1.5': not an integer", "--threads 99999999999: out of range (an integer in
// [-2147483648, 2147483647])". `must` is added to the second (a setting's own range:
// "must be >= 1").
template <class T>
T number_or_throw(std::string_view text, std::string_view what, std::string_view must = {}) {
  T v{};
  switch (read_number(text, v)) {
    case NumberText::kOk:
      return v;
    case NumberText::kNotANumber:
      fail(what, " '", text, "': not ", number_noun<T>());
    case NumberText::kOutOfRange:
      fail(what, " ", text, ": out of range (", number_type_range<T>(), ")",
           must.empty() ? "" : "; ", must);
  }
  fail(what, " '", text, "': not ", number_noun<T>());
}

}  // namespace speedrun
