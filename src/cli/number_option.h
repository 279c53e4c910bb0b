// A numeric flag read as train's flags, presets and sweep specs read numbers
// (core/number_text.h): decimal, so "--seed 010" is ten, not CLI11's octal eight, and
// "--seed -1" is refused where it would wrap to 2^64 - 1; a value beyond the type names
// the type's range instead of CLI11's "Could not convert".
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "core/number_text.h"

namespace speedrun::cli {

// As app->add_option(flag, x, help) for a number x (or an optional one, set when given);
// chain ->capture_default_str() to show x's value as the default.
template <class T>
CLI::Option* add_number_option(CLI::App* app, const std::string& flag, T& x,
                               const std::string& help) {
  CLI::Option* o = app->add_option_function<std::string>(
      flag, [&x, flag](const std::string& text) { x = number_or_throw<T>(text, flag); }, help);
  o->type_name(CLI::detail::type_name<T>());
  o->default_function([&x] { return fmt::format("{}", x); });
  return o;
}

template <class T>
CLI::Option* add_number_option(CLI::App* app, const std::string& flag, std::optional<T>& x,
                               const std::string& help) {
  CLI::Option* o = app->add_option_function<std::string>(
      flag, [&x, flag](const std::string& text) { x = number_or_throw<T>(text, flag); }, help);
  o->type_name(CLI::detail::type_name<T>());
  return o;
}

}  // namespace speedrun::cli
