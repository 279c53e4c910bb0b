// GPTConfig: the shape of the model of SPEC.md. Width C = heads * head_dim; MLP hidden
// F = 4C; layers must be even (U-net: first half encoder, second half decoder).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "data/gpt2_vocab.h"

namespace speedrun {

class SafetensorsFile;

// rms_norm's eps: fp32's machine epsilon whatever the dtype (SPEC.md); the full forward
// (GPT) and the KV-cache decoder use the same.
inline constexpr double kNormEps = 1.1920928955078125e-07;

// What a command line says about a model whose weights file lacks speedrun's metadata (a
// PyTorch export of the record, say): what the tensors' shapes cannot tell. 0 / -1: not given.
struct ShapeHints {
  int64_t heads = 0, head_dim = 0;  // either one (width = heads x head dim)
  int64_t eot = -1;                 // the document delimiter id
};

// The largest model shape accepted: far beyond any model trained (GPT-3: 96 layers, width
// 12,288), and small enough that no element count of the model (vocab x width at most
// 2^51) overflows an int64, nor the loops over layers run for hours. Token ids are int32.
inline constexpr int64_t kMaxLayers = 65536;
inline constexpr int64_t kMaxHeads = 65536;
inline constexpr int64_t kMaxHeadDim = 65536;
inline constexpr int64_t kMaxWidth = int64_t(1) << 20;
inline constexpr int64_t kMaxVocab = 2147483647;

struct GPTConfig {
  int64_t layers = 12;
  int64_t heads = 6;
  int64_t head_dim = 128;
  int64_t vocab = kGpt2PaddedVocab;  // rows of wte and lm_head
  int32_t eot = kGpt2Eot;            // document delimiter token id
  double rope_base = 10000.0;
  double softcap = 30.0;
  // Block-mask tile edge in tokens; 0: the backend's choice for each window
  // (Backend::attention_tile). The tile changes which masked pairs are computed, not which
  // pairs are visible: results differ only in the order of fp32 sums.
  int64_t attn_tile = 0;

  int64_t width() const { return heads * head_dim; }
  int64_t hidden() const { return 4 * width(); }
  // Throws speedrun::Error when the shape is inconsistent. The model's own invariants, for
  // a shape from any source (a weights file's metadata); `speedrun train` reports its flags
  // against the settings table (train/settings.cpp) before a model is built.
  void validate() const;
  // String form for safetensors metadata, and back (missing keys keep defaults).
  std::map<std::string, std::string> to_metadata() const;
  static GPTConfig from_metadata(const std::map<std::string, std::string>& meta,
                                 const std::string& file);
  // The model of a weights file: its speedrun metadata (hints given must agree with it),
  // or else what its tensors determine (layers from the block names, width and vocabulary
  // from wte) completed by the hints: heads or head dim, and the EOT id (GPT-2's for a
  // GPT-2-sized vocabulary when not given). Missing hints throw naming the flags.
  static GPTConfig from_weights(const SafetensorsFile& f, const ShapeHints& hints);
};

}  // namespace speedrun
