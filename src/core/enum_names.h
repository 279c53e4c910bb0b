// Enums that users type (--window-schedule linear, --device cuda, --dtype bf16): each enum
// lists its names once, in an EnumNames<E> specialisation next to its declaration, and is
// parsed from and printed to text only here, so an unknown value is refused with the list
// of valid ones wherever it comes from (a flag, a checkpoint's config, a preset).
#pragma once
#include <string>
#include <string_view>

#include "core/error.h"

namespace speedrun {

template <class E> struct EnumName {
  E value;
  const char* name;
};

// Specialise with `static constexpr EnumName<E> list[] = {...};`.
template <class E> struct EnumNames;

template <class E> std::string enum_name(E v) {
  for (const auto& n : EnumNames<E>::list)
    if (n.value == v) return n.name;
  return "?";
}

// "a, b or c": the valid names, for messages and --help.
template <class E> std::string enum_choices(std::string_view sep = ", ",
                                           std::string_view last = " or ") {
  std::string out;
  const size_t n = std::size(EnumNames<E>::list);
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += i + 1 == n ? last : sep;
    out += EnumNames<E>::list[i].name;
  }
  return out;
}

// Parses `text`; `what` names its source in the error ("--device", "meta.json: device").
template <class E> E parse_enum(std::string_view text, std::string_view what) {
  for (const auto& n : EnumNames<E>::list)
    if (text == n.name) return n.value;
  fail(what, " '", text, "': unknown; choose ", enum_choices<E>());
}

}  // namespace speedrun
