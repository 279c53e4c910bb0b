#include "model/config.h"

#include <stdexcept>

#include "core/error.h"

namespace speedrun {

void GPTConfig::validate() const {
  check(layers >= 2 && layers % 2 == 0, "model: ", layers,
        " layers: the U-net needs an even number of layers >= 2");
  check(heads >= 1, "model: ", heads, " heads: must be >= 1");
  check(head_dim >= 2 && head_dim % 2 == 0, "model: head dimension ", head_dim,
        ": rotary needs an even head dimension >= 2");
  check(vocab >= 2, "model: vocabulary of ", vocab, " rows: must be >= 2");
  check(eot >= 0 && eot < vocab, "model: EOT id ", eot, " is outside the vocabulary [0, ",
        vocab, ")");
  check(attn_tile >= 1, "model: attention tile ", attn_tile, ": must be >= 1");
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
  c.eot = int32_t(eot);
  try {
    c.validate();
  } catch (const Error& e) {
    fail("weights ", file, ": metadata: ", e.what());
  }
  return c;
}

}  // namespace speedrun
