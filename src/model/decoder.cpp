#include "model/decoder.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace speedrun {

Decoder::Decoder(Backend& backend, const Parameters& params, int64_t window,
                 int64_t max_positions)
    : be_(backend), p_(params), cfg_(params.config()), window_(window),
      max_positions_(max_positions) {
  check(window >= 1, "Decoder: attention window must be >= 1, got ", window);
  check(max_positions >= 0, "Decoder: max_positions must be >= 0, got ", max_positions);
  cap_ = max_positions > 0 ? std::min(window, max_positions) : window;
  const int64_t C = cfg_.width(), F = cfg_.hidden(), V = cfg_.vocab, H = cfg_.heads;
  const int64_t L = cfg_.layers, D = cfg_.head_dim;
  const DType c = params.precision().compute, s = params.precision().stats();
  mem_ = Arena([&backend](size_t n) { return backend.allocate(n); },
               [&backend](void* p) { backend.release(p); });
  Arena& a = mem_;
  a.add("token", DType::I32, {1}, &tok_);
  a.add("emb", c, {1, C}, &emb_);
  a.add("x0", c, {1, C}, &x0_);
  a.add("h", c, {1, C}, &h_);
  a.add("xmix", c, {1, C}, &xmix_);
  a.add("n", c, {1, C}, &n_);
  a.add("rstd", s, {1}, &rstd_);
  a.add("rstd_qk", s, {2, H}, &rstd_qk_);
  a.add("qkv", c, {1, 3 * C}, &qkv_);
  a.add("qkv0", c, {1, 3 * C}, &qkv0_);
  a.add("q", c, {1, C}, &q_);
  a.add("att", c, {1, C}, &att_);
  a.add("xmid", c, {1, C}, &xmid_);
  a.add("fc", c, {1, F}, &fc_);
  a.add("act", c, {1, F}, &act_);
  a.add("logits", c, {1, V}, &logits_dev_);
  a.add("rotary.cos", s, {1, D / 2}, &cos_);
  a.add("rotary.sin", s, {1, D / 2}, &sin_);
  kc_.resize(size_t(L));
  vc_.resize(size_t(L));
  skip_.resize(size_t(L / 2));
  for (int64_t l = 0; l < L; ++l) {
    a.add("h" + std::to_string(l) + ".k_cache", c, {cap_, C}, &kc_[size_t(l)]);
    a.add("h" + std::to_string(l) + ".v_cache", c, {cap_, C}, &vc_[size_t(l)]);
  }
  for (int64_t l = 0; l < L / 2; ++l) a.add("skip" + std::to_string(l), c, {1, C}, &skip_[size_t(l)]);
  a.materialize(backend.device());
  logits_.assign(size_t(V), 0.0);
}

size_t Decoder::cache_bytes() const {
  size_t n = 0;
  for (size_t l = 0; l < kc_.size(); ++l) n += kc_[l].bytes() + vc_[l].bytes();
  return n;
}

void Decoder::reset() {
  pos_ = 0;
  doc_start_ = 0;
}

void Decoder::step(int32_t token) {
  check(token >= 0 && token < cfg_.vocab, "Decoder: token ", token, " at position ", pos_,
        " is outside the vocabulary [0, ", cfg_.vocab, ")");
  check(max_positions_ == 0 || pos_ < max_positions_, "Decoder: position ", pos_,
        " is past the ", max_positions_, " tokens this decoder was sized for");
  const int64_t L = cfg_.layers, H = cfg_.heads;
  const double scale = 1.0 / std::sqrt(double(cfg_.head_dim));
  const Weights& w = p_.c;  // compute views (the masters for scalars)
  const Tensor none;

  // Document mask: an EOT opens a new document (SPEC.md: docs = inclusive cumsum of EOT).
  if (token == cfg_.eot) doc_start_ = pos_;
  const int64_t first = std::max(pos_ - window_ + 1, doc_start_);
  rows_.clear();
  for (int64_t j = first; j <= pos_; ++j) rows_.push_back(int32_t(j % cap_));
  const int64_t slot = pos_ % cap_;

  be_.upload(tok_, &token);
  be_.embedding_forward(emb_, tok_, w.wte);
  be_.rms_norm_forward(x0_, rstd_, emb_, kNormEps);
  be_.rotary_tables_at(cos_, sin_, cfg_.rope_base, pos_);
  be_.copy(h_, x0_);
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& W = w.h[l];
    const Coef a = Coef::param(W.lambdas.element(0), none);
    const Coef b = Coef::param(W.lambdas.element(1), none);
    if (l >= L / 2) {  // U-net decoder: the skip from the mirrored encoder layer, as GPT
      const int64_t i = l - L / 2, j = L / 2 - 1 - i;
      be_.skip_mix_norm_forward(xmix_, n_, rstd_, h_, skip_[size_t(j)],
                                Coef::param(w.skip_weights.element(i), none), a, x0_, b, kNormEps);
    } else {
      be_.mix_norm_forward(xmix_, n_, rstd_, h_, a, x0_, b, kNormEps);
    }
    // q_raw | k_raw | v_raw in one GEMM, as GPT; q and this position's cache rows from it.
    // Value residual: v = (1 - lamb) v_raw + lamb v1, v1 = layer 0's v_raw of this token.
    const Tensor qkv = l == 0 ? qkv0_ : qkv_;
    be_.matmul(qkv, n_, false, W.qkv, true, false);
    Tensor k_row = kc_[size_t(l)].slice(slot, slot + 1), v_row = vc_[size_t(l)].slice(slot, slot + 1);
    be_.qkv_forward(q_, k_row, v_row, rstd_qk_, qkv, qkv0_, Coef::one_minus(W.lamb, none),
                    Coef::param(W.lamb, none), cos_, sin_, 1, H, kNormEps);
    be_.attention_decode(att_, q_, kc_[size_t(l)], vc_[size_t(l)], rows_, H, scale);
    be_.matmul_add(xmid_, att_, false, W.c_proj, true, xmix_);
    be_.rms_norm_forward(n_, rstd_, xmid_, kNormEps);
    be_.matmul(fc_, n_, false, W.c_fc, true, false);
    be_.relu_squared_forward(act_, fc_);
    be_.matmul_add(h_, act_, false, W.mlp_proj, true, xmid_);
    if (l < L / 2) be_.copy(skip_[size_t(l)], h_);
  }
  be_.rms_norm_forward(n_, rstd_, h_, kNormEps);
  be_.matmul(logits_dev_, n_, false, w.lm_head, true, false);
  logits_ = be_.to_host_f64(logits_dev_);
  for (double& x : logits_) x = cfg_.softcap * std::tanh(x / cfg_.softcap);
  ++pos_;
}

}  // namespace speedrun
