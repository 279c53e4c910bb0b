// GPT of SPEC.md, written once against the Backend interface. Forward stores the
// activations that backward needs in one planned arena sized for micro-batches of B
// sequences of T tokens; backward adds parameter gradients (+=) to Parameters::g, so K
// micro-batches accumulate one step's gradient. The head (lm_head, softcap, cross entropy)
// runs in row chunks so logits never need [B*T, V] memory; in training its backward runs
// inside the forward pass, chunk by chunk.
//
// Dtypes follow the parameters' precision policy (core/precision.h): activations and
// their gradients in the compute dtype, rstd / lse / losses / rotary tables in the stats
// dtype, matmul weights from the compute views Parameters::c, scalars from the masters.
//
// Losses are summed on the device (Backend::sum_into) and read by take_mean_loss(), the
// only call that waits for the device: a training step never synchronises inside it.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "backend/block_mask.h"
#include "core/arena.h"
#include "model/params.h"

namespace speedrun {

// The tile edge of the block masks for this window: the config's attn_tile, or where that is
// 0 the backend's (Backend::attention_tile).
int64_t mask_tile(const GPTConfig& cfg, const Backend& be, int64_t window);

class GPT {
 public:
  // Plans and allocates the activations for micro-batches of B sequences of T tokens. The
  // head runs in chunks of head_logits / V rows (at least 1, at most B*T); 0 takes the
  // backend's Backend::head_chunk_logits().
  GPT(Backend& backend, Parameters& params, int64_t B, int64_t T, int64_t head_logits = 0);
  // The bytes of activations that constructor allocates on `backend` (one block), planned
  // and not allocated: what a GPU needs beyond the parameters and the optimizer's state.
  static size_t activation_bytes(Backend& backend, Parameters& params, int64_t B, int64_t T,
                                 int64_t head_logits = 0);

  // One micro-batch: inputs x [B*T] and targets y [B*T] (host arrays) under attention
  // window `window`. Adds grad_scale * dLoss/dparam to params.g, Loss = the mean
  // cross-entropy over the B*T targets (the caller zeroes the gradients once per step),
  // and the B*T losses to the loss accumulator.
  void train_micro_batch(const int32_t* x, const int32_t* y, int64_t window,
                         double grad_scale = 1.0);
  // The same forward without gradients: the losses go to the accumulator.
  void eval_micro_batch(const int32_t* x, const int32_t* y, int64_t window);
  // The mean loss per target over the micro-batches since the last call; resets the
  // accumulator. Waits for the device. Throws when it is NaN or infinite.
  double take_mean_loss();

  // Conveniences that take the loss at once (tests, tools): the mean loss of one batch.
  double forward_backward(const int32_t* x, const int32_t* y, int64_t window,
                          double grad_scale = 1.0);
  double forward_loss(const int32_t* x, const int32_t* y, int64_t window);

  // Softcapped logits [V] at position `pos` of sequence 0 of inputs x [B*T] (no gradients).
  std::vector<double> logits_at(const int32_t* x, int64_t pos, int64_t window);

  // Called during train_micro_batch's backward as soon as gradients are final for this
  // micro-batch, to reduce them over the ranks while the rest of backward runs (empty: not
  // called): on_head_grads once lm_head's (the head runs before the blocks' backward),
  // on_layer_grads with each block l, L-1 down to 0. wte's and skip_weights' are final
  // when train_micro_batch returns.
  std::function<void()> on_head_grads;
  std::function<void(int64_t)> on_layer_grads;

  int64_t B() const { return B_; }
  int64_t T() const { return T_; }
  int64_t head_rows() const { return head_rows_; }
  size_t activation_bytes() const { return acts_.bytes(); }
  const std::vector<BlockMask>& masks() const { return masks_; }

 private:
  // allocate = false plans the activations and stops (activation_bytes).
  GPT(Backend& backend, Parameters& params, int64_t B, int64_t T, int64_t head_logits,
      bool allocate);

  struct LayerActs {  // [N, C] (c) unless noted
    Tensor xin;             // an encoder block's input (a decoder block's is never stored)
    Tensor xmix;            // lambdas[0] xin + lambdas[1] x0
    Tensor n1, rstd1;       // rms_norm(xmix), rstd [N] (s)
    Tensor qkv;             // [N, 3C]: n1 [c_q; c_k; c_v]^T = q_raw | k_raw | v_raw
    Tensor q, k, v;         // QK-norm + rotary; v with the value residual
    Tensor rstd_qk;         // [2, N*H] (s): q's, then k's
    Tensor att, lse;        // attention output; lse [B, H, T] (s)
    Tensor xmid;            // xmix + att c_proj^T
    Tensor n2, rstd2;       // rms_norm(xmid)
    Tensor act;             // [N, F]: relu(n2 c_fc^T)^2, formed in place (its input is
                            // not kept: the backward takes relu from act)
    Tensor xout;            // xmid + act mlp_proj^T
  };
  void prepare(const int32_t* x, const int32_t* y, int64_t window);
  void forward(bool train, double grad_scale);
  void backward();
  Coef lambda(int64_t l, int k) const;
  // Decoder block l's U-net skip: the encoder block j it mirrors, and skip_weights[i].
  int64_t skip_of(int64_t l) const { return cfg_.layers - 1 - l; }
  Coef skip_coef(int64_t l) const;

  Backend& be_;
  Parameters& p_;
  GPTConfig cfg_;
  int64_t B_, T_, N_, head_rows_;
  int64_t tokens_accumulated_ = 0;
  Arena acts_;
  Tensor tokens_, targets_;          // [N] I32
  Tensor cos_, sin_;                 // [T, D/2] (s)
  Tensor emb_, x0_, rstd0_;          // [N, C]; rstd [N] (s)
  Tensor nf_, rstdf_;                // final rms_norm
  Tensor logits_, losses_;           // [head_rows, V] (c); [N] (s)
  Tensor loss_acc_;                  // 0-dim F64: the sum of losses since take_mean_loss
  std::vector<LayerActs> L_;
  // Backward buffers (c).
  Tensor dh_, dn_, dq_, dk_, dv_, datt_, dfc_, dx0_, dv1_, dnf_;
  Tensor dqkv_;  // [N, 3C]: shares grad.fc's memory (the MLP's gradient is spent by then)
  std::vector<Tensor> dskip_;
  std::vector<BlockMask> masks_;
};

}  // namespace speedrun
