// JSON from files speedrun reads (safetensors headers, meta.json, tokenizer files, JSON
// Lines, metrics.jsonl). nlohmann's parser does not recurse, but copying, comparing and
// printing a value do, once per level of nesting: a file of a million '[' parses, then
// overflows the stack when an error message prints it. parse_json refuses such text.
#pragma once
#include <string_view>

#include <nlohmann/json.hpp>

namespace speedrun {

// Deeper than any file speedrun writes or reads (safetensors and meta.json: 3 levels).
constexpr int kMaxJsonDepth = 512;

// The deepest nesting of arrays and objects in `text` (brackets inside strings do not
// count), counted up to limit + 1.
int json_depth(std::string_view text, int limit = kMaxJsonDepth);

// nlohmann::json::parse(text), except that text nested deeper than kMaxJsonDepth throws
// nlohmann::json::parse_error like any other malformed text, so callers report it the
// same way (naming their file).
nlohmann::json parse_json(std::string_view text);

}  // namespace speedrun
