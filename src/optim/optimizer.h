// The record's optimizers over the parameter table (SPEC.md "Optimizers"):
//  - Adam (betas, eps, no weight decay) on wte (lr_embed), lm_head (lr_head) and every
//    scalar (lr_scalar);
//  - Muon on every block matrix (lr muon_lr): Nesterov momentum, 5-step quintic
//    Newton-Schulz, scaled by sqrt(max(1, rows/cols)).
// Every step's LR is base_lr x the schedule multiplier. State (Adam moments, Muon buffers)
// lives in arenas on the backend's device. Gradients in Parameters::g are consumed (Muon
// overwrites them with its Nesterov update).
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/params.h"

namespace speedrun {

struct OptimConfig {
  double lr_embed = 0.6;
  double lr_head = 0.008;
  double lr_scalar = 0.04;
  double muon_lr = 0.05;
  double beta1 = 0.8;
  double beta2 = 0.95;
  double eps = 1e-8;
  int ns_steps = 5;
  bool ns_bf16 = false;  // emulate the record's bf16 Newton-Schulz and bf16 update buffer
  void validate() const;
};

class Optimizer {
 public:
  Optimizer(Backend& backend, Parameters& params, const OptimConfig& config);
  // One update of every parameter from its gradient: LR = base x lr_mult, Muon momentum mu.
  void step(double lr_mult, double momentum);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Optimizer state tensors, in a fixed order, with names (for checkpoints and tests).
  std::vector<std::pair<std::string, Tensor>> state() const;

 private:
  Backend& be_;
  Parameters& p_;
  OptimConfig cfg_;
  int64_t t_ = 0;
  Arena state_;                   // Adam m, v per Adam parameter; Muon buffer per matrix
  std::vector<int> adam_m_, adam_v_, muon_buf_;  // arena index per parameter, -1 if none
  Tensor scratch_;                // Newton-Schulz output, sized for the largest matrix
};

}  // namespace speedrun
