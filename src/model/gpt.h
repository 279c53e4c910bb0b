// GPT of SPEC.md, written once against the Backend interface. Forward stores the
// activations that backward needs in one planned arena sized for B sequences of T tokens;
// backward writes parameter gradients (+=) into Parameters::g. The head (lm_head, softcap,
// cross entropy) runs in row chunks so logits never need [B*T, V] memory; in training its
// backward runs inside the forward pass, chunk by chunk.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/block_mask.h"
#include "core/arena.h"
#include "model/params.h"

namespace speedrun {

class GPT {
 public:
  // Plans and allocates the activations for batches of B sequences of T tokens.
  GPT(Backend& backend, Parameters& params, int64_t B, int64_t T);

  // Mean cross-entropy over the B*T targets of inputs x [B*T] and targets y [B*T] (host
  // arrays) under attention window `window`. Training: also adds dLoss/dparam to params.g
  // scaled by grad_scale (1 gives the gradient of the mean; the caller zeroes grads).
  double forward_backward(const int32_t* x, const int32_t* y, int64_t window,
                          double grad_scale = 1.0);
  // The same loss without gradients.
  double forward_loss(const int32_t* x, const int32_t* y, int64_t window);

  // Softcapped logits [V] at position `pos` of sequence 0 of inputs x [B*T] (no gradients).
  std::vector<double> logits_at(const int32_t* x, int64_t pos, int64_t window);

  int64_t B() const { return B_; }
  int64_t T() const { return T_; }
  size_t activation_bytes() const { return acts_.bytes(); }
  const std::vector<BlockMask>& masks() const { return masks_; }

 private:
  struct LayerActs {
    Tensor xin, xmix, n1, rstd1, q_raw, k_raw, v_raw, q, k, v, rstd_q, rstd_k, att, lse, xmid,
        n2, rstd2, fc, act, xout;
  };
  void prepare(const int32_t* x, const int32_t* y, int64_t window);
  double forward(bool train, double grad_scale);
  void backward();
  Coef lambda(int64_t l, int k) const;

  Backend& be_;
  Parameters& p_;
  GPTConfig cfg_;
  int64_t B_, T_, N_, head_rows_;
  Arena acts_;
  Tensor tokens_, targets_, emb_, rstd0_, x0_, nf_, rstdf_, logits_, losses_, cos_, sin_;
  std::vector<LayerActs> L_;
  // Backward buffers.
  Tensor dh_, dn_, dq_, dk_, dv_, datt_, dfc_, dx0_, dv1_, dnf_;
  std::vector<Tensor> dskip_;
  std::vector<BlockMask> masks_;
};

}  // namespace speedrun
