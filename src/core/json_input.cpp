#include "core/json_input.h"

#include <string>

namespace speedrun {

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json parse_json(std::string_view text) {
  if (json_depth(text) > kMaxJsonDepth)
    throw nlohmann::json::parse_error::create(
        101, 0,
        "arrays and objects nested more than " + std::to_string(kMaxJsonDepth) +
            " levels deep, which no file speedrun reads has",
        nullptr);
  return nlohmann::json::parse(text);
}

}  // namespace speedrun
