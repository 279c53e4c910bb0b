#include "model/gpt.h"

#include <algorithm>
#include <cmath>

namespace speedrun {

namespace {
// rms_norm's eps: fp32's machine epsilon, whatever the dtype (SPEC.md).
constexpr double kNormEps = 1.1920928955078125e-07;
// Rows of the head computed at once: bounds the logits buffer to ~32M elements.
constexpr int64_t kHeadElements = int64_t(1) << 25;
}  // namespace

GPT::GPT(Backend& backend, Parameters& params, int64_t B, int64_t T)
    : be_(backend), p_(params), cfg_(params.config()), B_(B), T_(T), N_(B * T) {
  check(B >= 1 && T >= 1, "GPT: batch and sequence length must be >= 1");
  const int64_t C = cfg_.width(), F = cfg_.hidden(), V = cfg_.vocab, H = cfg_.heads;
  const int64_t L = cfg_.layers, N = N_, D = cfg_.head_dim;
  const DType dt = params.dtype();
  head_rows_ = std::clamp<int64_t>(kHeadElements / V, 1, N);
  acts_ = Arena([&backend](size_t n) { return backend.allocate(n); },
                [&backend](void* p) { backend.release(p); });
  Arena& a = acts_;
  const int i_tokens = a.add("tokens", DType::I32, {N});
  const int i_targets = a.add("targets", DType::I32, {N});
  const int i_cos = a.add("rotary.cos", dt, {T, D / 2});
  const int i_sin = a.add("rotary.sin", dt, {T, D / 2});
  const int i_emb = a.add("emb", dt, {N, C});
  const int i_rstd0 = a.add("rstd0", dt, {N});
  const int i_x0 = a.add("x0", dt, {N, C});
  struct Idx {
    int xin = -1, xmix, n1, rstd1, q_raw, k_raw, v_raw, q, k, v, rstd_q, rstd_k, att, lse, xmid,
        n2, rstd2, fc, act, xout;
  };
  std::vector<Idx> idx(L);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h" + std::to_string(l) + ".";
    Idx& x = idx[l];
    if (l >= L / 2) x.xin = a.add(p + "xin", dt, {N, C});
    x.xmix = a.add(p + "xmix", dt, {N, C});
    x.n1 = a.add(p + "n1", dt, {N, C});
    x.rstd1 = a.add(p + "rstd1", dt, {N});
    x.q_raw = a.add(p + "q_raw", dt, {N, C});
    x.k_raw = a.add(p + "k_raw", dt, {N, C});
    x.v_raw = a.add(p + "v_raw", dt, {N, C});
    x.q = a.add(p + "q", dt, {N, C});
    x.k = a.add(p + "k", dt, {N, C});
    x.v = a.add(p + "v", dt, {N, C});
    x.rstd_q = a.add(p + "rstd_q", dt, {N * H});
    x.rstd_k = a.add(p + "rstd_k", dt, {N * H});
    x.att = a.add(p + "att", dt, {N, C});
    x.lse = a.add(p + "lse", dt, {B, H, T});
    x.xmid = a.add(p + "xmid", dt, {N, C});
    x.n2 = a.add(p + "n2", dt, {N, C});
    x.rstd2 = a.add(p + "rstd2", dt, {N});
    x.fc = a.add(p + "fc", dt, {N, F});
    x.act = a.add(p + "act", dt, {N, F});
    x.xout = a.add(p + "xout", dt, {N, C});
  }
  const int i_nf = a.add("nf", dt, {N, C});
  const int i_rstdf = a.add("rstdf", dt, {N});
  const int i_logits = a.add("logits", dt, {head_rows_, V});
  const int i_losses = a.add("losses", dt, {N});
  const int i_dh = a.add("grad.h", dt, {N, C});
  const int i_dn = a.add("grad.n", dt, {N, C});
  const int i_dq = a.add("grad.q", dt, {N, C});
  const int i_dk = a.add("grad.k", dt, {N, C});
  const int i_dv = a.add("grad.v", dt, {N, C});
  const int i_datt = a.add("grad.att", dt, {N, C});
  const int i_dfc = a.add("grad.fc", dt, {N, F});
  const int i_dx0 = a.add("grad.x0", dt, {N, C});
  const int i_dv1 = a.add("grad.v1", dt, {N, C});
  const int i_dnf = a.add("grad.nf", dt, {N, C});
  std::vector<int> i_dskip;
  for (int64_t j = 0; j < L / 2; ++j)
    i_dskip.push_back(a.add("grad.skip" + std::to_string(j), dt, {N, C}));
  a.materialize(backend.device());

  tokens_ = a[i_tokens];
  targets_ = a[i_targets];
  cos_ = a[i_cos];
  sin_ = a[i_sin];
  emb_ = a[i_emb];
  rstd0_ = a[i_rstd0];
  x0_ = a[i_x0];
  L_.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    const Idx& x = idx[l];
    LayerActs& A = L_[l];
    A.xin = x.xin >= 0 ? a[x.xin] : (l == 0 ? x0_ : a[idx[l - 1].xout]);
    A.xmix = a[x.xmix];
    A.n1 = a[x.n1];
    A.rstd1 = a[x.rstd1];
    A.q_raw = a[x.q_raw];
    A.k_raw = a[x.k_raw];
    A.v_raw = a[x.v_raw];
    A.q = a[x.q];
    A.k = a[x.k];
    A.v = a[x.v];
    A.rstd_q = a[x.rstd_q];
    A.rstd_k = a[x.rstd_k];
    A.att = a[x.att];
    A.lse = a[x.lse];
    A.xmid = a[x.xmid];
    A.n2 = a[x.n2];
    A.rstd2 = a[x.rstd2];
    A.fc = a[x.fc];
    A.act = a[x.act];
    A.xout = a[x.xout];
  }
  nf_ = a[i_nf];
  rstdf_ = a[i_rstdf];
  logits_ = a[i_logits];
  losses_ = a[i_losses];
  dh_ = a[i_dh];
  dn_ = a[i_dn];
  dq_ = a[i_dq];
  dk_ = a[i_dk];
  dv_ = a[i_dv];
  datt_ = a[i_datt];
  dfc_ = a[i_dfc];
  dx0_ = a[i_dx0];
  dv1_ = a[i_dv1];
  dnf_ = a[i_dnf];
  for (int i : i_dskip) dskip_.push_back(a[i]);
  be_.rotary_tables(cos_, sin_, cfg_.rope_base);
}

Coef GPT::lambda(int64_t l, int k) const {
  return Coef::param(p_.w.h[l].lambdas.element(k), p_.g.h[l].lambdas.element(k));
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
  for (int64_t b = 0; b < B_; ++b)
    masks_[b] = build_block_mask(x + b * T_, T_, cfg_.eot, window, cfg_.attn_tile);
}

double GPT::forward_backward(const int32_t* x, const int32_t* y, int64_t window,
                             double grad_scale) {
  prepare(x, y, window);
  const double loss = forward(true, grad_scale);
  backward();
  return loss;
}

double GPT::forward_loss(const int32_t* x, const int32_t* y, int64_t window) {
  prepare(x, y, window);
  return forward(false, 0.0);
}

std::vector<double> GPT::logits_at(const int32_t* x, int64_t pos, int64_t window) {
  check(pos >= 0 && pos < T_, "GPT::logits_at: position ", pos, " outside [0, ", T_, ")");
  prepare(x, x, window);
  forward(false, 0.0);
  const int64_t V = cfg_.vocab;
  Tensor row = logits_.slice(0, 1);
  be_.matmul(row, nf_.slice(pos, pos + 1), false, p_.w.lm_head, true, false);
  std::vector<double> out(static_cast<size_t>(V));
  if (row.dtype == DType::F64) {
    be_.download(out.data(), row);
  } else {
    std::vector<float> tmp(static_cast<size_t>(V));
    be_.download(tmp.data(), row);
    out.assign(tmp.begin(), tmp.end());
  }
  for (double& l : out) l = cfg_.softcap * std::tanh(l / cfg_.softcap);
  return out;
}

double GPT::forward(bool train, double grad_scale) {
  const int64_t L = cfg_.layers, H = cfg_.heads;
  const double scale = 1.0 / std::sqrt(double(cfg_.head_dim));
  const Weights& w = p_.w;
  const Weights& g = p_.g;
  be_.embedding_forward(emb_, tokens_, w.wte);
  be_.rms_norm_forward(x0_, rstd0_, emb_, kNormEps);
  Tensor h = x0_;
  for (int64_t l = 0; l < L; ++l) {
    LayerActs& A = L_[l];
    const LayerWeights& W = w.h[l];
    if (l >= L / 2) {  // U-net decoder: add the skip from the mirrored encoder layer
      const int64_t i = l - L / 2, j = L / 2 - 1 - i;
      be_.scaled_sum_forward(A.xin, h, Coef::constant(1.0), L_[j].xout,
                             Coef::param(w.skip_weights.element(i), g.skip_weights.element(i)));
    }
    be_.scaled_sum_forward(A.xmix, A.xin, lambda(l, 0), x0_, lambda(l, 1));
    be_.rms_norm_forward(A.n1, A.rstd1, A.xmix, kNormEps);
    be_.matmul(A.q_raw, A.n1, false, W.c_q, true, false);
    be_.matmul(A.k_raw, A.n1, false, W.c_k, true, false);
    be_.matmul(A.v_raw, A.n1, false, W.c_v, true, false);
    be_.scaled_sum_forward(A.v, A.v_raw, Coef::one_minus(W.lamb, g.h[l].lamb), L_[0].v_raw,
                           Coef::param(W.lamb, g.h[l].lamb));
    be_.head_norm_rotary_forward(A.q, A.rstd_q, A.q_raw, cos_, sin_, T_, H, kNormEps);
    be_.head_norm_rotary_forward(A.k, A.rstd_k, A.k_raw, cos_, sin_, T_, H, kNormEps);
    be_.attention_forward(A.att, A.lse, A.q, A.k, A.v, masks_, H, scale);
    be_.copy(A.xmid, A.xmix);
    be_.matmul(A.xmid, A.att, false, W.c_proj, true, true);
    be_.rms_norm_forward(A.n2, A.rstd2, A.xmid, kNormEps);
    be_.matmul(A.fc, A.n2, false, W.c_fc, true, false);
    be_.relu_squared_forward(A.act, A.fc);
    be_.copy(A.xout, A.xmid);
    be_.matmul(A.xout, A.act, false, W.mlp_proj, true, true);
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
  const double loss = be_.sum(losses_) / double(N_);
  check(std::isfinite(loss), "GPT: the loss is ", loss,
        " (NaN or infinite): training diverged; lower the learning rates or check the data");
  return loss;
}

void GPT::backward() {
  const int64_t L = cfg_.layers, H = cfg_.heads;
  const double scale = 1.0 / std::sqrt(double(cfg_.head_dim));
  const Weights& w = p_.w;
  const Weights& g = p_.g;
  be_.rms_norm_backward(dh_, dnf_, L_[L - 1].xout, rstdf_, false);
  be_.fill(dx0_, 0.0);
  be_.fill(dv1_, 0.0);
  const Tensor& v1 = L_[0].v_raw;
  for (int64_t l = L - 1; l >= 0; --l) {
    LayerActs& A = L_[l];
    const LayerWeights& W = w.h[l];
    const LayerWeights& G = g.h[l];
    // dh holds dLoss/d xout[l] from above; an encoder output also feeds a decoder skip.
    if (l < L / 2) be_.axpy(dh_, dskip_[l], 1.0);
    // MLP: xout = xmid + relu(n2 Wfc^T)^2 Wp^T
    be_.matmul(dfc_, dh_, false, W.mlp_proj, false, false);
    be_.matmul(G.mlp_proj, dh_, true, A.act, false, true);
    be_.relu_squared_backward(dfc_, dfc_, A.fc);
    be_.matmul(G.c_fc, dfc_, true, A.n2, false, true);
    be_.matmul(dn_, dfc_, false, W.c_fc, false, false);
    be_.rms_norm_backward(dh_, dn_, A.xmid, A.rstd2, true);  // dh = d xmid
    // Attention: xmid = xmix + att Wo^T
    be_.matmul(datt_, dh_, false, W.c_proj, false, false);
    be_.matmul(G.c_proj, dh_, true, A.att, false, true);
    be_.attention_backward(dq_, dk_, dv_, datt_, A.q, A.k, A.v, A.att, A.lse, masks_, H, scale);
    // Value residual: v = (1 - lamb) v_raw + lamb v1, v1 = layer 0's v_raw.
    const Coef a = Coef::one_minus(W.lamb, G.lamb), b = Coef::param(W.lamb, G.lamb);
    Tensor dvr = dv_;
    if (l > 0) {
      be_.scaled_sum_backward(dv_, false, dv1_, true, dv_, A.v_raw, a, v1, b);
    } else {  // v_raw is v1 itself: both paths accumulate into dv1
      be_.scaled_sum_backward(dv1_, true, dv1_, true, dv_, v1, a, v1, b);
      dvr = dv1_;
    }
    be_.head_norm_rotary_backward(datt_, dq_, A.q_raw, A.rstd_q, cos_, sin_, T_, H);  // dq_raw
    be_.head_norm_rotary_backward(dn_, dk_, A.k_raw, A.rstd_k, cos_, sin_, T_, H);    // dk_raw
    be_.matmul(G.c_q, datt_, true, A.n1, false, true);
    be_.matmul(G.c_k, dn_, true, A.n1, false, true);
    be_.matmul(G.c_v, dvr, true, A.n1, false, true);
    be_.matmul(dq_, datt_, false, W.c_q, false, false);  // dq = d n1
    be_.matmul(dq_, dn_, false, W.c_k, false, true);
    be_.matmul(dq_, dvr, false, W.c_v, false, true);
    be_.rms_norm_backward(dh_, dq_, A.xmix, A.rstd1, true);  // dh = d xmix
    // xmix = lambdas[0] xin + lambdas[1] x0
    be_.scaled_sum_backward(dh_, false, dx0_, true, dh_, A.xin, lambda(l, 0), x0_, lambda(l, 1));
    if (l >= L / 2) {  // xin = h + skip_weights[i] * xout[j]
      const int64_t i = l - L / 2, j = L / 2 - 1 - i;
      be_.scaled_sum_backward(Tensor{}, false, dskip_[j], false, dh_, Tensor{},
                              Coef::constant(1.0), L_[j].xout,
                              Coef::param(w.skip_weights.element(i), g.skip_weights.element(i)));
    }
  }
  // dh is now d xin[0] = a share of d x0.
  be_.axpy(dx0_, dh_, 1.0);
  be_.rms_norm_backward(dn_, dx0_, emb_, rstd0_, false);
  be_.embedding_backward(g.wte, tokens_, dn_);
}

}  // namespace speedrun
