// --heads / --head-dim / --eot for commands that read a weights file (eval, sample, export):
// used only when the file lacks speedrun's metadata (a PyTorch export of the record), to
// complete what its tensors' shapes cannot tell (model/config.h: GPTConfig::from_weights).
#pragma once
#include <CLI/CLI.hpp>

#include "cli/number_option.h"
#include "model/config.h"

namespace speedrun::cli {

inline void add_shape_flags(CLI::App* app, ShapeHints& h) {
  add_number_option(app, "--heads", h.heads,
                  "attention heads, for weights without speedrun metadata (or --head-dim)");
  add_number_option(app, "--head-dim", h.head_dim,
                  "head dimension, for weights without speedrun metadata (the record: 128)");
  add_number_option(app, "--eot", h.eot,
                  "document delimiter id, for weights without speedrun metadata (default: "
                  "GPT-2's 50256 for a GPT-2-sized vocabulary)");
}

}  // namespace speedrun::cli
