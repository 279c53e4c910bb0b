// The model's parameters and their gradients: two arenas laid out from the config with
// SPEC.md's checkpoint names, in SPEC.md's order. The same table drives initialisation,
// checkpoints, optimizer groups and tests.
//   transformer.wte.weight [V,C] · transformer.h.{i}.lambdas [2] · ...attn.lamb [] ·
//   ...attn.c_q/c_k/c_v/c_proj.weight [C,C] · ...mlp.c_fc.weight [F,C] ·
//   ...mlp.c_proj.weight [C,F] · lm_head.weight [V,C] · skip_weights [L/2]
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/config.h"

namespace speedrun {

// Which optimizer group a parameter belongs to (SPEC.md "Optimizers").
enum class ParamGroup { Embed, Head, Scalar, Matrix };

struct LayerWeights {
  Tensor lambdas, lamb, c_q, c_k, c_v, c_proj, c_fc, mlp_proj;
};

// Typed views of one arena (values or gradients).
struct Weights {
  Tensor wte, lm_head, skip_weights;
  std::vector<LayerWeights> h;
};

class Parameters {
 public:
  Parameters(Backend& backend, const GPTConfig& config, DType dtype);

  const GPTConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  int count() const { return values_.size(); }
  const std::string& name(int i) const { return values_.name(i); }
  ParamGroup group(int i) const { return groups_[i]; }
  const Tensor& value(int i) const { return values_[i]; }
  const Tensor& grad(int i) const { return grads_[i]; }
  int index(const std::string& name) const;  // throws if unknown
  int64_t numel() const;

  Weights w;   // values
  Weights g;   // gradients

  // SPEC.md's initialisation from a seed (deterministic on every machine): c_q/c_k/c_v/c_fc
  // uniform(+-1/sqrt(fan_in)), wte normal(0,1), every value rounded to bf16;
  // c_proj, mlp c_proj and lm_head zero; lambdas [1,0]; lamb 0.5; skip_weights 1.
  void init(uint64_t seed);
  void zero_grad();
  // Host copies (fp32 or the arena's dtype) for checkpoints and tests.
  std::vector<double> to_host_f64(int i) const;
  void from_host_f64(int i, const std::vector<double>& data);

  // Weights file I/O (safetensors, SPEC names, config in the metadata), written atomically.
  // file_dtype: F32 (default), F64 (exact copy of an fp64 model) or BF16 (rounded to
  // nearest even, as PyTorch's .to(torch.bfloat16)).
  void save(const std::string& path, const std::map<std::string, std::string>& extra_meta,
            DType file_dtype = DType::F32) const;
  // Loads every parameter from `path`; names and shapes must match this config exactly.
  void load(const std::string& path);

 private:
  Backend& backend_;
  GPTConfig config_;
  DType dtype_;
  Arena values_, grads_;
  std::vector<ParamGroup> groups_;
};

}  // namespace speedrun
