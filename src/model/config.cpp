#include "model/config.h"

#include <stdexcept>

#include "core/error.h"
#include "core/safetensors.h"
#include "data/gpt2_vocab.h"

namespace speedrun {

void GPTConfig::validate() const {
  check(layers >= 2 && layers % 2 == 0, "model: ", layers,
        " layers: the U-net needs an even number of layers >= 2");
  check(layers <= kMaxLayers, "model: ", layers, " layers: at most ", kMaxLayers);
  check(heads >= 1 && heads <= kMaxHeads, "model: ", heads, " heads: must be in [1, ", kMaxHeads, "]");
  check(head_dim >= 2 && head_dim % 2 == 0, "model: head dimension ", head_dim,
        ": rotary needs an even head dimension >= 2");
  check(head_dim <= kMaxHeadDim, "model: head dimension ", head_dim, ": at most ", kMaxHeadDim);
  check(width() <= kMaxWidth, "model: width ", heads, " heads x ", head_dim, " = ", width(),
        ": at most ", kMaxWidth);
  check(vocab >= 2 && vocab <= kMaxVocab, "model: vocabulary of ", vocab,
        " rows: must be in [2, ", kMaxVocab, "] (token ids are int32)");
  check(eot >= 0 && eot < vocab, "model: EOT id ", eot, " is outside the vocabulary [0, ",
        vocab, ")");
  check(attn_tile >= 0, "model: attention tile ", attn_tile,
        ": must be >= 1, or 0 for the backend's choice");
  check(softcap > 0, "model: softcap ", softcap, ": must be > 0");
}

std::map<std::string, std::string> GPTConfig::to_metadata() const {
  return {{"layers", std::to_string(layers)},     {"heads", std::to_string(heads)},
          {"head_dim", std::to_string(head_dim)}, {"vocab", std::to_string(vocab)},
          {"eot", std::to_string(eot)},           {"format", "speedrun-gpt"}};
}

GPTConfig GPTConfig::from_metadata(const std::map<std::string, std::string>& meta,
                                   const std::string& file) {
  GPTConfig c;
  auto get = [&](const char* key, int64_t& out) {
    auto it = meta.find(key);
    check(it != meta.end(), "weights ", file, ": metadata has no '", key,
          "': not written by speedrun; pass the model shape with --layers/--heads/--head-dim/--vocab");
    try {
      size_t used = 0;
      out = std::stoll(it->second, &used);
      check(used == it->second.size(), "trailing characters");
    } catch (const std::exception&) {
      fail("weights ", file, ": metadata '", key, "' = '", it->second, "' is not an integer");
    }
  };
  int64_t eot = c.eot;
  get("layers", c.layers);
  get("heads", c.heads);
  get("head_dim", c.head_dim);
  get("vocab", c.vocab);
  get("eot", eot);
  check(eot >= 0 && eot <= kMaxVocab, "weights ", file, ": metadata eot = ", eot,
        " is not a token id (an int32 >= 0)");
  c.eot = int32_t(eot);
  try {
    c.validate();
  } catch (const Error& e) {
    fail("weights ", file, ": metadata: ", e.what());
  }
  return c;
}

GPTConfig GPTConfig::from_weights(const SafetensorsFile& f, const ShapeHints& hints) {
  const std::string& file = f.path();
  const auto& meta = f.metadata();
  if (meta.count("format") && meta.at("format") == "speedrun-gpt") {
    GPTConfig c = from_metadata(meta, file);
    check(hints.heads <= 0 || hints.heads == c.heads, "--heads ", hints.heads, ": ", file,
          " says ", c.heads, " heads; leave --heads out");
    check(hints.head_dim <= 0 || hints.head_dim == c.head_dim, "--head-dim ", hints.head_dim,
          ": ", file, " says ", c.head_dim, "; leave --head-dim out");
    check(hints.eot < 0 || hints.eot == c.eot, "--eot ", hints.eot, ": ", file, " says ", c.eot,
          "; leave --eot out");
    return c;
  }
  // No metadata: read the shape off the tensors (SPEC.md's names).
  const char* kWte = "transformer.wte.weight";
  check(f.has(kWte), "weights ", file, ": no speedrun metadata and no tensor '", kWte,
        "': not a GPT of SPEC.md (its tensors must carry the record's names)");
  const auto wte = f.get(kWte).shape;
  check(wte.size() == 2 && wte[0] >= 2 && wte[1] >= 2, "weights ", file, ": '", kWte,
        "' must be [vocab, width]");
  GPTConfig c;
  c.vocab = wte[0];
  const int64_t width = wte[1];
  c.layers = 0;
  while (f.has("transformer.h." + std::to_string(c.layers) + ".attn.c_q.weight")) ++c.layers;
  check(c.layers >= 1, "weights ", file, ": no transformer.h.0.attn.c_q.weight: not a GPT of "
        "SPEC.md");
  if (hints.heads > 0 && hints.head_dim > 0)
    check(hints.heads * hints.head_dim == width, "--heads ", hints.heads, " x --head-dim ",
          hints.head_dim, " is not the width ", width, " of ", file);
  if (hints.heads > 0) {
    check(width % hints.heads == 0, "--heads ", hints.heads, " does not divide the width ", width,
          " of ", file);
    c.heads = hints.heads;
    c.head_dim = width / hints.heads;
  } else if (hints.head_dim > 0) {
    check(width % hints.head_dim == 0, "--head-dim ", hints.head_dim,
          " does not divide the width ", width, " of ", file);
    c.head_dim = hints.head_dim;
    c.heads = width / hints.head_dim;
  } else {
    fail("weights ", file, " have no speedrun metadata: their shapes give ", c.layers,
         " layers, width ", width, " and vocabulary ", c.vocab,
         ", but not how the width splits into heads: pass --heads or --head-dim (the record: "
         "--head-dim 128)");
  }
  if (hints.eot >= 0) {
    check(hints.eot < c.vocab, "--eot ", hints.eot, " is outside the vocabulary [0, ", c.vocab,
          ") of ", file);
    c.eot = int32_t(hints.eot);
  } else {
    check(c.vocab >= kGpt2Vocab, "weights ", file, " have no speedrun metadata and a vocabulary "
          "of ", c.vocab, " rows, not GPT-2's: pass --eot with the document delimiter's id");
    c.eot = kGpt2Eot;
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail("weights ", file, ": ", e.what());
  }
  return c;
}

}  // namespace speedrun
