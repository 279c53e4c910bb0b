#include "model/gpt.h"

#include <algorithm>
#include <cmath>

namespace speedrun {

GPT::GPT(Backend& backend, Parameters& params, int64_t B, int64_t T, int64_t head_logits)
    : GPT(backend, params, B, T, head_logits, true) {}

size_t GPT::activation_bytes(Backend& backend, Parameters& params, int64_t B, int64_t T,
                             int64_t head_logits) {
  return GPT(backend, params, B, T, head_logits, false).acts_.bytes();
}

GPT::GPT(Backend& backend, Parameters& params, int64_t B, int64_t T, int64_t head_logits,
         bool allocate)
    : be_(backend), p_(params), cfg_(params.config()), B_(B), T_(T), N_(B * T) {
  check(B >= 1 && T >= 1, "GPT: batch and sequence length must be >= 1");
  check(head_logits >= 0, "GPT: head_logits must be >= 0, got ", head_logits);
  const int64_t C = cfg_.width(), F = cfg_.hidden(), V = cfg_.vocab, H = cfg_.heads;
  const int64_t L = cfg_.layers, N = N_, D = cfg_.head_dim;
  const DType c = params.precision().compute, s = params.precision().stats();
  if (head_logits == 0) head_logits = backend.head_chunk_logits();
  head_rows_ = std::clamp<int64_t>(head_logits / V, 1, N);
  acts_ = Arena([&backend](size_t n) { return backend.allocate(n); },
                [&backend](void* p) { backend.release(p); });
  Arena& a = acts_;
  a.add("tokens", DType::I32, {N}, &tokens_);
  a.add("targets", DType::I32, {N}, &targets_);
  a.add("loss_acc", DType::F64, {}, &loss_acc_);
  a.add("rotary.cos", s, {T, D / 2}, &cos_);
  a.add("rotary.sin", s, {T, D / 2}, &sin_);
  a.add("emb", c, {N, C}, &emb_);
  a.add("rstd0", s, {N}, &rstd0_);
  a.add("x0", c, {N, C}, &x0_);
  L_.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h" + std::to_string(l) + ".";
    LayerActs& A = L_[size_t(l)];
    // An encoder block's input is the previous block's output (bound below); a decoder
    // block's adds the U-net skip, which skip_mix_norm forms where it reads it (never
    // stored: A.xin stays empty).
    a.add(p + "xmix", c, {N, C}, &A.xmix);
    a.add(p + "n1", c, {N, C}, &A.n1);
    a.add(p + "rstd1", s, {N}, &A.rstd1);
    a.add(p + "qkv", c, {N, 3 * C}, &A.qkv);
    a.add(p + "q", c, {N, C}, &A.q);
    a.add(p + "k", c, {N, C}, &A.k);
    a.add(p + "v", c, {N, C}, &A.v);
    a.add(p + "rstd_qk", s, {2, N * H}, &A.rstd_qk);
    a.add(p + "att", c, {N, C}, &A.att);
    a.add(p + "lse", s, {B, H, T}, &A.lse);
    a.add(p + "xmid", c, {N, C}, &A.xmid);
    a.add(p + "n2", c, {N, C}, &A.n2);
    a.add(p + "rstd2", s, {N}, &A.rstd2);
    a.add(p + "act", c, {N, F}, &A.act);
    a.add(p + "xout", c, {N, C}, &A.xout);
  }
  a.add("nf", c, {N, C}, &nf_);
  a.add("rstdf", s, {N}, &rstdf_);
  a.add("logits", c, {head_rows_, V}, &logits_);
  a.add("losses", s, {N}, &losses_);
  a.add("grad.h", c, {N, C}, &dh_);
  a.add("grad.n", c, {N, C}, &dn_);
  a.add("grad.q", c, {N, C}, &dq_);
  a.add("grad.k", c, {N, C}, &dk_);
  a.add("grad.v", c, {N, C}, &dv_);
  a.add("grad.att", c, {N, C}, &datt_);
  Tensor dfc_mem;  // dfc_ [N, F], then dqkv_ [N, 3C] within one layer's backward
  a.add("grad.fc", c, {N * std::max(F, 3 * C)}, &dfc_mem);
  a.add("grad.x0", c, {N, C}, &dx0_);
  a.add("grad.v1", c, {N, C}, &dv1_);
  a.add("grad.nf", c, {N, C}, &dnf_);
  // d xout[j] through decoder block L-1-j's skip, held until the backward reaches block
  // j + 1 (which adds it to the gradient it writes); the last encoder's skip goes into the
  // first decoder's own h, whose gradient takes it directly (skip_mix_norm_backward).
  dskip_.resize(size_t(L / 2 - 1));
  for (int64_t j = 0; j < L / 2 - 1; ++j)
    a.add("grad.skip" + std::to_string(j), c, {N, C}, &dskip_[size_t(j)]);
  if (!allocate) return;
  a.materialize(backend.device());
  dfc_ = dfc_mem.slice(0, N * F).view({N, F});
  dqkv_ = dfc_mem.slice(0, N * 3 * C).view({N, 3 * C});
  for (int64_t l = 0; l < L / 2; ++l) L_[size_t(l)].xin = l == 0 ? x0_ : L_[size_t(l - 1)].xout;
  be_.rotary_tables(cos_, sin_, cfg_.rope_base);
}

Coef GPT::lambda(int64_t l, int k) const {
  return Coef::param(p_.c.h[l].lambdas.element(k), p_.g.h[l].lambdas.element(k));
}

Coef GPT::skip_coef(int64_t l) const {
  const int64_t i = l - cfg_.layers / 2;
  return Coef::param(p_.c.skip_weights.element(i), p_.g.skip_weights.element(i));
}

int64_t mask_tile(const GPTConfig& cfg, const Backend& be, int64_t window) {
  return cfg.attn_tile > 0 ? cfg.attn_tile : be.attention_tile(window);
}

void GPT::prepare(const int32_t* x, const int32_t* y, int64_t window) {
  check(window >= 1, "GPT: attention window must be >= 1, got ", window);
  for (int64_t n = 0; n < N_; ++n) {
    check(x[n] >= 0 && x[n] < cfg_.vocab, "GPT: input token ", x[n], " at position ", n,
          " is outside the vocabulary [0, ", cfg_.vocab, ")");
    check(y[n] >= 0 && y[n] < cfg_.vocab, "GPT: target token ", y[n], " at position ", n,
          " is outside the vocabulary [0, ", cfg_.vocab, ")");
  }
  be_.upload(tokens_, x);
  be_.upload(targets_, y);
  masks_.resize(B_);
  const int64_t tile = mask_tile(cfg_, be_, window);
  for (int64_t b = 0; b < B_; ++b)
    masks_[b] = build_block_mask(x + b * T_, T_, cfg_.eot, window, tile);
}

void GPT::train_micro_batch(const int32_t* x, const int32_t* y, int64_t window,
                            double grad_scale) {
  prepare(x, y, window);
  forward(true, grad_scale);
  backward();
}

void GPT::eval_micro_batch(const int32_t* x, const int32_t* y, int64_t window) {
  prepare(x, y, window);
  forward(false, 0.0);
}

double GPT::take_mean_loss() {
  check(tokens_accumulated_ > 0, "GPT::take_mean_loss: no micro-batch since the last call");
  double sum = 0;
  be_.download(&sum, loss_acc_);
  be_.fill(loss_acc_, 0.0);
  const double loss = sum / double(tokens_accumulated_);
  tokens_accumulated_ = 0;
  check(std::isfinite(loss), "GPT: the loss is ", loss,
        " (NaN or infinite): training diverged; lower the learning rates or check the data");
  return loss;
}

double GPT::forward_backward(const int32_t* x, const int32_t* y, int64_t window,
                             double grad_scale) {
  train_micro_batch(x, y, window, grad_scale);
  return take_mean_loss();
}

double GPT::forward_loss(const int32_t* x, const int32_t* y, int64_t window) {
  eval_micro_batch(x, y, window);
  return take_mean_loss();
}

std::vector<double> GPT::logits_at(const int32_t* x, int64_t pos, int64_t window) {
  check(pos >= 0 && pos < T_, "GPT::logits_at: position ", pos, " outside [0, ", T_, ")");
  eval_micro_batch(x, x, window);
  take_mean_loss();
  Tensor row = logits_.slice(0, 1);
  be_.matmul(row, nf_.slice(pos, pos + 1), false, p_.c.lm_head, true, false);
  std::vector<double> out = be_.to_host_f64(row);
  for (double& l : out) l = cfg_.softcap * std::tanh(l / cfg_.softcap);
  return out;
}

void GPT::forward(bool train, double grad_scale) {
  const int64_t L = cfg_.layers, H = cfg_.heads;
  const double scale = 1.0 / std::sqrt(double(cfg_.head_dim));
  const Weights& w = p_.c;  // compute views (the masters for scalars)
  const Weights& g = p_.g;
  be_.embedding_forward(emb_, tokens_, w.wte);
  be_.rms_norm_forward(x0_, rstd0_, emb_, kNormEps);
  Tensor h = x0_;
  for (int64_t l = 0; l < L; ++l) {
    LayerActs& A = L_[l];
    const LayerWeights& W = w.h[l];
    // xmix = lambdas[0] xin + lambdas[1] x0, n1 = rms_norm(xmix); in a U-net decoder block
    // xin = h + skip_weights[i] xout[j], the skip from the mirrored encoder block.
    if (l >= L / 2)
      be_.skip_mix_norm_forward(A.xmix, A.n1, A.rstd1, h, L_[skip_of(l)].xout, skip_coef(l),
                                lambda(l, 0), x0_, lambda(l, 1), kNormEps);
    else
      be_.mix_norm_forward(A.xmix, A.n1, A.rstd1, A.xin, lambda(l, 0), x0_, lambda(l, 1),
                           kNormEps);
    // q_raw | k_raw | v_raw in one GEMM; then QK norm + rotary, and the value residual
    // v = (1 - lamb) v_raw + lamb v1 with v1 = layer 0's v_raw.
    be_.matmul(A.qkv, A.n1, false, W.qkv, true, false);
    be_.qkv_forward(A.q, A.k, A.v, A.rstd_qk, A.qkv, L_[0].qkv,
                    Coef::one_minus(W.lamb, g.h[l].lamb), Coef::param(W.lamb, g.h[l].lamb), cos_,
                    sin_, T_, H, kNormEps);
    be_.attention_forward(A.att, A.lse, A.q, A.k, A.v, masks_, H, scale);
    be_.matmul_add(A.xmid, A.att, false, W.c_proj, true, A.xmix);
    be_.rms_norm_forward(A.n2, A.rstd2, A.xmid, kNormEps);
    be_.matmul(A.act, A.n2, false, W.c_fc, true, false);  // fc = n2 c_fc^T, then in place:
    be_.relu_squared_forward(A.act, A.act);               // act = relu(fc)^2
    be_.matmul_add(A.xout, A.act, false, W.mlp_proj, true, A.xmid);
    h = A.xout;
  }
  be_.rms_norm_forward(nf_, rstdf_, h, kNormEps);
  for (int64_t r0 = 0; r0 < N_; r0 += head_rows_) {
    const int64_t r1 = std::min(N_, r0 + head_rows_);
    Tensor logits = logits_.slice(0, r1 - r0);
    const Tensor nf = nf_.slice(r0, r1);
    be_.matmul(logits, nf, false, w.lm_head, true, false);
    be_.softcap_cross_entropy(logits, losses_.slice(r0, r1),
                              targets_.slice(r0, r1),
                              cfg_.softcap, grad_scale / double(N_), train);
    if (train) {
      be_.matmul(dnf_.slice(r0, r1), logits, false, w.lm_head, false, false);
      be_.matmul(g.lm_head, logits, true, nf, false, true);
    }
  }
  be_.sum_into(loss_acc_, losses_);
  tokens_accumulated_ += N_;
}

void GPT::backward() {
  const int64_t L = cfg_.layers, H = cfg_.heads;
  const double scale = 1.0 / std::sqrt(double(cfg_.head_dim));
  const Weights& w = p_.c;  // compute views (the masters for scalars)
  const Weights& g = p_.g;
  if (on_head_grads) on_head_grads();  // forward's head chunks have finished lm_head's
  be_.rms_norm_backward(dh_, dnf_, L_[L - 1].xout, rstdf_, false);
  be_.fill(dx0_, 0.0);
  be_.fill(dv1_, 0.0);
  for (int64_t l = L - 1; l >= 0; --l) {
    LayerActs& A = L_[l];
    const LayerWeights& W = w.h[l];
    const LayerWeights& G = g.h[l];
    // dh holds dLoss/d xout[l] from above, an encoder output's share from its decoder skip
    // included (added by the block above's mix backward).
    // MLP: xout = xmid + relu(n2 Wfc^T)^2 Wp^T
    be_.matmul(dfc_, dh_, false, W.mlp_proj, false, false);
    be_.matmul(G.mlp_proj, dh_, true, A.act, false, true);
    be_.relu_squared_backward(dfc_, dfc_, A.act);  // d fc = 2 relu(fc) d act
    be_.matmul(G.c_fc, dfc_, true, A.n2, false, true);
    be_.matmul(dn_, dfc_, false, W.c_fc, false, false);
    be_.rms_norm_backward(dh_, dn_, A.xmid, A.rstd2, true);  // dh = d xmid
    // Attention: xmid = xmix + att Wo^T
    be_.matmul(datt_, dh_, false, W.c_proj, false, false);
    be_.matmul(G.c_proj, dh_, true, A.att, false, true);
    be_.attention_backward(dq_, dk_, dv_, datt_, A.q, A.k, A.v, A.att, A.lse, masks_, H, scale);
    // q, k, v back to qkv (dqkv_ reuses the MLP gradient's memory); v1 = layer 0's v_raw
    // gathers every layer's value-residual share in dv1, layer 0 adds it to its own.
    be_.qkv_backward(dqkv_, dv1_, dq_, dk_, dv_, A.qkv, A.rstd_qk, L_[0].qkv,
                     Coef::one_minus(W.lamb, G.lamb), Coef::param(W.lamb, G.lamb), cos_, sin_, T_,
                     H);
    be_.matmul(G.qkv, dqkv_, true, A.n1, false, true);  // d[c_q; c_k; c_v] += dqkv^T n1
    be_.matmul(dq_, dqkv_, false, W.qkv, false, false);  // dq = d n1 = dqkv [c_q; c_k; c_v]
    // d xmix = dh (the residual stream's) + n1's share; then xmix = lambdas[0] xin +
    // lambdas[1] x0: dh = d xin, dx0 += lambdas[1] d xmix; in a decoder block xin = h +
    // skip_weights[i] xout[j] too: d h = d xin, d xout[j] = skip_weights[i] d xin (dskip[j],
    // added to dh by block j + 1's backward, which writes d xout[j]). The first decoder's
    // skip is its own h (j = l - 1): its share goes straight into dh (no dskip). The first
    // block's input is x0 itself: its d xin goes into dx0 with the rest (no dh).
    if (l >= L / 2) {
      const Tensor dskip = l > L / 2 ? dskip_[size_t(skip_of(l))] : Tensor{};
      be_.skip_mix_norm_backward(dh_, dskip, dx0_, dh_, dq_, A.xmix, A.rstd1, L_[l - 1].xout,
                                 L_[skip_of(l)].xout, skip_coef(l), lambda(l, 0), x0_,
                                 lambda(l, 1));
    } else {
      const Tensor dx = l > 0 ? dh_ : Tensor{}, dadd = l > 0 ? dskip_[size_t(l - 1)] : Tensor{};
      be_.mix_norm_backward(dx, dx0_, dh_, dq_, A.xmix, A.rstd1, A.xin, lambda(l, 0), x0_,
                            lambda(l, 1), dadd);
    }
    if (on_layer_grads) on_layer_grads(l);
  }
  be_.rms_norm_backward(dn_, dx0_, emb_, rstd0_, false);
  be_.embedding_backward(g.wte, tokens_, dn_);
}

}  // namespace speedrun
