// The flags that choose where a command runs, shared by train, eval, sample and export:
// --device cpu|cuda|auto and --threads N (backend/factory.h). They never change what a
// run computes beyond rounding, so they are not part of a run's config.
#pragma once
#include <CLI/CLI.hpp>

#include "backend/factory.h"
#include "cli/number_option.h"
#include "core/enum_names.h"

namespace speedrun::cli {

// An option whose value is one of E's names (core/enum_names.h), parsed once into `target`;
// an unknown value is refused with the list of valid ones. The default shown is target's.
template <class E>
CLI::Option* add_enum_option(CLI::App* app, const std::string& flag, E& target,
                             const std::string& help) {
  std::vector<std::string> names;
  for (const auto& n : EnumNames<E>::list) names.push_back(n.name);
  CLI::Option* o = app->add_option_function<std::string>(
      flag, [&target, flag](const std::string& s) { target = parse_enum<E>(s, flag); },
      help + " (" + enum_choices<E>(" | ", " | ") + ")");
  o->check(CLI::IsMember(names));
  o->default_str(enum_name(target));
  return o;
}

inline void add_backend_flags(CLI::App* app, BackendOptions& o) {
  add_enum_option(app, "--device", o.device,
                  "where to run: auto picks cuda when this build has it and a GPU is visible");
  add_number_option(app, "--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
}

}  // namespace speedrun::cli
