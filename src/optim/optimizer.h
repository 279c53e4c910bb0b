// The record's optimizers over the parameter table (SPEC.md "Optimizers"):
//  - Adam (betas, eps, no weight decay) on wte (lr_embed), lm_head (lr_head) and every
//    scalar (lr_scalar);
//  - Muon on every block matrix (lr muon_lr): Nesterov momentum, 5-step quintic
//    Newton-Schulz, scaled by sqrt(max(1, rows/cols)).
// Every step's LR is base_lr x the schedule multiplier. State (Adam moments, Muon buffers)
// lives in arenas on the backend's device, in the masters' dtype. Gradients in
// Parameters::g (already averaged over ranks) are consumed: Muon overwrites them with its
// Nesterov update.
//
// Over several ranks (SPEC.md "Distributed Muon"): every rank applies the momentum to
// every matrix (an elementwise pass, so each rank holds the whole optimizer state and rank
// 0's checkpoint is complete); Muon matrix i (in table order) is orthogonalised by rank
// i mod W alone, into its slot in that rank's part of one update buffer, and one in-place
// all-gather of the W equal parts gives every rank every update (exactly: values are
// copied). The record sums the buffer with zeros in the other ranks' slots (an all-reduce):
// the same values, but a ring all-reduce moves each byte twice, a gather once, and nothing
// needs zeroing. With one rank this is the single-process optimizer.
//
// On a GPU the update buffer is BF16: the Newton-Schulz values are bf16 there, so nothing is
// lost, the exchange moves half the bytes, and no F32 copy is written and read back.
//
// Batching: the update buffer is laid out by owner, then shape, then table order, so the
// matrices a rank orthogonalises form one contiguous stack [n, rows, cols] per shape within
// its part; their Nesterov inputs are written into stacks of the same shapes and
// Newton-Schulz runs once per shape (batched GEMMs on a GPU; Backend::muon_stack, which
// may fold the momentum into its first read). Adam runs as one Backend::adam_steps over its
// parameters and the Muon updates land in one Backend::muon_apply; both refresh the compute
// copies of what they update, so every master is read once after its update.
//
// Overlap (SPEC.md's values do not depend on it): the ranks' gradient reductions may still
// be running when step() is called (Comm::all_reduce_async; `ready` gives each gradient's
// ticket). The step issues its work in the order the gradients arrive and waits for each
// only where it is first read: this rank's Newton-Schulz stacks first (the blocks'
// gradients are reduced while backward runs), then the other matrices' momentum; then the
// update exchange starts on the Comm's stream and Adam runs while it does (wte's gradient,
// reduced last, is waited for here); then the Muon updates land.
// Each op reads the same values as in any other order, so the result is bit-identical.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "dist/comm.h"
#include "model/params.h"

namespace speedrun {

// Valid ranges are checked where the values are set: the settings table (train/settings.cpp).
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
};

class Optimizer {
 public:
  // comm: the ranks sharing Muon's work (none: a single process).
  Optimizer(Backend& backend, Parameters& params, const OptimConfig& config,
            Comm* comm = nullptr);
  // One update of every parameter from its gradient: LR = base x lr_mult, Muon momentum mu.
  // ready: empty (every gradient is in place), or per parameter the ticket of the
  // comm's all_reduce_async that averages its gradient (Comm::kAllAsync: any).
  void step(double lr_mult, double momentum, const std::vector<int64_t>& ready = {});
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Optimizer state tensors, in a fixed order, with names (for checkpoints and tests).
  std::vector<std::pair<std::string, Tensor>> state() const;
  // Which rank orthogonalises parameter i (-1: not a Muon matrix).
  int muon_owner(int i) const;

 private:
  Backend& be_;
  Parameters& p_;
  OptimConfig cfg_;
  Comm* comm_;
  int64_t t_ = 0;
  Arena state_;    // Adam m, v per Adam parameter; Muon buffer per matrix (names as checkpoints)
  Arena updates_;  // Muon's orthogonalised updates: one buffer, by owner, shape, table order;
                   // (g), or BF16 where the backend's Newton-Schulz values are bf16
  Arena inputs_;   // this rank's Newton-Schulz inputs (g), one stack per shape as its updates
                   // (none where the backend's muon_stack reads the gradients itself)
  Tensor exchange_;  // what the ranks gather: updates_' buffer (empty: none)
  struct Slot {
    Tensor m, v, buf;     // Adam moments, or Muon's momentum buffer (empty where none)
    Tensor update;        // Muon: the update slot
    int owner = -1;       // Muon: the rank that orthogonalises it
  };
  std::vector<Slot> slots_;  // per parameter
  struct Stack {             // one shape's matrices owned by this rank, contiguous
    Tensor input, update;    // [n, rows, cols] (input empty: see inputs_)
    std::vector<int> members;  // their parameters, table order
  };
  std::vector<Stack> stacks_;
};

}  // namespace speedrun
