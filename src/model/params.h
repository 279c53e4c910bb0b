// The model's parameters: one table (name, optimizer group, shape, init rule) in SPEC.md's
// checkpoint names and order, from which come three arenas on the backend's device:
//   masters   (m) the values the optimizer updates and checkpoints store
//   grads     (g) dLoss/dparam, accumulated (+=) by backward over micro-batches
//   copies    (c) compute-dtype copies of the matrices (wte, lm_head, block matrices) for
//             the forward and backward passes; only under a precision whose compute dtype
//             differs from the masters' (bf16), else the matrices' compute views are the
//             masters themselves. refresh_copies() brings them up to date.
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

// How a parameter starts (SPEC.md "Init"); random values are rounded to bf16, as the record
// casts its model to bf16 before turning the linear weights back to fp32.
struct InitRule {
  enum Kind {
    Zero,          // every c_proj and lm_head
    Normal,        // N(0, 1): wte
    UniformFanIn,  // U(+-1/sqrt(fan_in)), fan_in = shape[1]: PyTorch's nn.Linear
    Values,        // exactly `values` (one per element, or one for all)
  } kind = Zero;
  std::vector<double> values;
};

struct LayerWeights {
  Tensor lambdas, lamb, c_q, c_k, c_v, c_proj, c_fc, mlp_proj;
  // c_q, c_k, c_v stacked, [3C, C]: one view over the three (they are adjacent in their
  // arena), so the block's q/k/v projection and its gradients are one GEMM each. Not a row
  // of the parameter table.
  Tensor qkv;
};

// Typed views of one arena (values, gradients or compute copies).
struct Weights {
  Tensor wte, lm_head, skip_weights;
  std::vector<LayerWeights> h;
};

// One row of the parameter table: the name, optimizer group, shape and init rule, and the
// field its views are bound to in a Weights struct.
struct ParamSpec {
  std::string name;
  ParamGroup group;
  std::vector<int64_t> shape;
  InitRule init;
  int64_t layer = -1;                     // the block it belongs to; -1: model-level
  Tensor Weights::*top = nullptr;         // its view when layer == -1
  Tensor LayerWeights::*field = nullptr;  // its view in h[layer] otherwise
  Tensor& view(Weights& w) const { return layer < 0 ? w.*top : w.h[size_t(layer)].*field; }
};

// The parameter table of a config, in SPEC.md's order.
std::vector<ParamSpec> param_table(const GPTConfig& c);

// One [sum of rows, cols] view over 2-D tensors of one dtype and width that lie one right
// after another in memory; throws if they do not.
Tensor stack_rows(std::initializer_list<Tensor> parts);

class Parameters {
 public:
  Parameters(Backend& backend, const GPTConfig& config, const Precision& precision);
  // One dtype for masters, compute and gradients (the CPU's fp32 or fp64).
  Parameters(Backend& backend, const GPTConfig& config, DType dtype)
      : Parameters(backend, config, Precision{dtype, dtype, dtype}) {}

  const GPTConfig& config() const { return config_; }
  const Precision& precision() const { return precision_; }
  DType dtype() const { return precision_.master; }  // the masters' dtype
  int count() const { return int(table_.size()); }
  const std::string& name(int i) const { return table_[size_t(i)].name; }
  ParamGroup group(int i) const { return table_[size_t(i)].group; }
  const Tensor& value(int i) const { return values_[i]; }
  const Tensor& grad(int i) const { return grads_[i]; }
  const Arena& grad_arena() const { return grads_; }
  // Block l's gradients as one flat view (they are adjacent in the arena, padding between
  // them zero), for reducing a layer as soon as backward has finished it.
  Tensor layer_grads(int64_t l) const;
  // lm_head's gradient (final before the blocks' backward runs).
  Tensor head_grads() const;
  // The other gradients outside the blocks (wte; skip_weights), as flat views.
  std::vector<Tensor> other_grads() const;
  // The parameters whose gradients lie inside `span` (a view of the gradient arena).
  std::vector<int> grads_within(const Tensor& span) const;
  int index(const std::string& name) const;  // throws if unknown
  int64_t numel() const;

  Weights w;   // masters (m)
  Weights g;   // gradients (g)
  Weights c;   // compute views (c): the copies, or the masters when there are none

  // SPEC.md's initialisation from a seed (deterministic on every machine): each
  // parameter by its table's InitRule, from one random stream in table order.
  void init(uint64_t seed);
  void zero_grad();
  // Compute copies = masters converted to the compute dtype (no-op without copies).
  void refresh_copies();
  // Parameter i's compute copy (c), which refresh_copies() converts from its master; empty
  // where it has none (its compute view is the master itself).
  Tensor copy(int i) const;
  // Host copies of a master in double, and back (the copy is refreshed too), for
  // checkpoints and tests.
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
  void refresh_copy(int i);  // compute copy i = master i converted (no-op without a copy)

  Backend& backend_;
  GPTConfig config_;
  Precision precision_;
  std::vector<ParamSpec> table_;
  Arena values_, grads_, copies_;
  std::vector<std::pair<Tensor, Tensor>> copy_pairs_;  // (copy, master) per matrix
  std::vector<int> copy_of_;                            // param -> index in copy_pairs_ or -1
};

}  // namespace speedrun
