// A stand-in bf16 backend for the conformance suite's own paths under the bf16 policy
// (compute BF16 over F32 masters, gradients and statistics), so they run on any machine,
// not only where a GPU is: the CPU backend with every BF16 operand widened to an F32
// temporary, the op run in fp32, and what it wrote rounded back to BF16 (nearest even).
// Its error is the rounding of bf16 storage alone, less than a GPU's (which also rounds
// intermediates such as attention's P), so it proves the harness, not a bound's margin.
// Newton-Schulz always rounds like bf16 (backend.h: a bf16 backend computes in bf16
// whatever it is given).
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "backend/factory.h"

namespace speedrun::conformance {

class Bf16Emulation final : public Backend {
 public:
  std::string name() const override { return "cpu-bf16-emulation"; }
  Device device() const override { return Device::CPU; }
  Precision default_precision() const override { return named_precision(PrecisionChoice::BF16); }
  void check_precision(const Precision& p) const override {
    check(p == default_precision(), name(), ": only the bf16 policy, not ", p.str());
  }

  void* allocate(size_t bytes) override { return cpu_->allocate(bytes); }
  void release(void* p) override { cpu_->release(p); }
  void upload(Tensor dst, const void* host) override { cpu_->upload(dst, host); }
  void download(void* host, const Tensor& src) override { cpu_->download(host, src); }
  void copy(Tensor dst, const Tensor& src) override { cpu_->copy(dst, src); }
  void convert(Tensor dst, const Tensor& src) override { cpu_->convert(dst, src); }
  void fill(Tensor t, double value) override {
    Wide w(*cpu_);
    cpu_->fill(w.out(t), value);
  }
  void sum_into(Tensor acc, const Tensor& t) override {
    Wide w(*cpu_);
    cpu_->sum_into(acc, w.in(t));
  }

  void matmul(Tensor C, const Tensor& A, bool tA, const Tensor& B, bool tB, bool acc) override {
    Wide w(*cpu_);
    cpu_->matmul(w.out(C), w.in(A), tA, w.in(B), tB, acc);
  }
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) override {
    Wide w(*cpu_);
    cpu_->embedding_forward(w.out(out), tokens, w.in(wte));
  }
  void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) override {
    Wide w(*cpu_);
    cpu_->embedding_backward(w.out(dwte), tokens, w.in(dout));
  }
  void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) override {
    Wide w(*cpu_);
    cpu_->rms_norm_forward(w.out(y), w.out(rstd), w.in(x), eps);
  }
  void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                         bool acc) override {
    Wide w(*cpu_);
    cpu_->rms_norm_backward(w.out(dx), w.in(dy), w.in(x), w.in(rstd), acc);
  }


  void mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x, const Coef& a,
                        const Tensor& y, const Coef& b, double eps) override {
    Wide w(*cpu_);
    cpu_->mix_norm_forward(w.out(xmix), w.out(n), w.out(rstd), w.in(x), a, w.in(y), b, eps);
  }
  void mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                         const Tensor& xmix, const Tensor& rstd, const Tensor& x, const Coef& a,
                         const Tensor& y, const Coef& b, const Tensor& dadd) override {
    if (dx.empty())
      return mix_norm_backward_into_y(dy, dres, dn, xmix, rstd, x, a, y, b, dadd);
    {
      Wide w(*cpu_);
      cpu_->mix_norm_backward(w.out(dx), w.out(dy), w.in(dres), w.in(dn), w.in(xmix),
                              w.in(rstd), w.in(x), a, w.in(y), b, Tensor{});
    }  // dx rounded to bf16, then dadd added as axpy adds it
    if (!dadd.empty()) axpy(dx, dadd, 1.0);
  }
  void qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                   const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                   const Tensor& sin, int64_t T, int64_t H, double eps) override {
    Wide w(*cpu_);
    cpu_->qkv_forward(w.out(q), w.out(k), w.out(v), w.out(rstd), w.in(qkv), w.in(v1src), a, b,
                      w.in(cos), w.in(sin), T, H, eps);
  }
  void qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                    const Tensor& qkv, const Tensor& rstd, const Tensor& v1src, const Coef& a,
                    const Coef& b, const Tensor& cos, const Tensor& sin, int64_t T,
                    int64_t H) override {
    Wide w(*cpu_);
    cpu_->qkv_backward(w.out(dqkv), w.out(dv1), w.in(dq), w.in(dk), w.in(dv), w.in(qkv),
                       w.in(rstd), w.in(v1src), a, b, w.in(cos), w.in(sin), T, H);
  }
  void rotary_tables(Tensor cos, Tensor sin, double base) override {
    cpu_->rotary_tables(cos, sin, base);
  }
  void rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) override {
    cpu_->rotary_tables_at(cos, sin, base, start);
  }
  void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                         double scale) override {
    Wide w(*cpu_);
    cpu_->attention_forward(w.out(out), w.out(lse), w.in(q), w.in(k), w.in(v), masks, H, scale);
  }
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const std::vector<BlockMask>& masks, int64_t H, double scale) override {
    Wide w(*cpu_);
    cpu_->attention_backward(w.out(dq), w.out(dk), w.out(dv), w.in(dout), w.in(q), w.in(k),
                             w.in(v), w.in(out), w.in(lse), masks, H, scale);
  }
  void attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const std::vector<int32_t>& rows, int64_t H, double scale) override {
    Wide w(*cpu_);
    cpu_->attention_decode(w.out(out), w.in(q), w.in(k), w.in(v), rows, H, scale);
  }
  void relu_squared_forward(Tensor y, const Tensor& x) override {
    Wide w(*cpu_);
    cpu_->relu_squared_forward(w.out(y), w.in(x));
  }
  void relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& x) override {
    Wide w(*cpu_);
    cpu_->relu_squared_backward(w.out(dx), w.in(dy), w.in(x));
  }
  void scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                          const Coef& b) override {
    Wide w(*cpu_);
    cpu_->scaled_sum_forward(w.out(out), w.in(x), a, w.in(y), b);
  }
  void scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y, const Tensor& dout,
                           const Tensor& x, const Coef& a, const Tensor& y,
                           const Coef& b) override {
    Wide w(*cpu_);
    cpu_->scaled_sum_backward(w.out(dx), acc_x, w.out(dy), acc_y, w.in(dout), w.in(x), a,
                              w.in(y), b);
  }
  void softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double cap,
                             double grad_scale, bool backward) override {
    Wide w(*cpu_);
    cpu_->softcap_cross_entropy(w.out(logits), w.out(losses), targets, cap, grad_scale,
                                backward);
  }
  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) override {
    cpu_->adam_step(p, g, m, v, a);
  }
  void muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) override {
    cpu_->muon_momentum(out, buf, g, mu);
  }
  void newton_schulz(Tensor X, const Tensor& G, int steps, bool) override {
    cpu_->newton_schulz(X, G, steps, true);
  }
  // The optimizer's axpy is on F32 masters; the model's backward also adds BF16 activation
  // gradients with it (the U-net skips).
  void axpy(Tensor y, const Tensor& x, double alpha) override {
    Wide w(*cpu_);
    cpu_->axpy(w.out(y), w.in(x), alpha);
  }

 private:
  // The F32 stand-ins of one op's BF16 operands: one per buffer, so operands that alias
  // stay aliased; what the op may write goes back to BF16 when the op is done.
  class Wide {
   public:
    explicit Wide(Backend& cpu) : cpu_(cpu) {}
    ~Wide() {
      for (auto& [data, e] : map_) {
        if (e.written) cpu_.convert(e.bf16, e.f32.view({e.f32.numel()}));
        cpu_.release(e.f32.data);
      }
    }
    Tensor in(const Tensor& t) { return get(t, false); }
    Tensor out(const Tensor& t) { return get(t, true); }

   private:
    struct Entry {
      Tensor bf16, f32;
      bool written;
    };
    Tensor get(const Tensor& t, bool written) {
      if (t.empty() || t.dtype != DType::BF16) return t;
      auto it = map_.find(t.data);
      if (it == map_.end()) {
        Tensor f = t;
        f.dtype = DType::F32;
        f.data = cpu_.allocate(f.bytes());
        cpu_.convert(f, t);
        it = map_.emplace(t.data, Entry{t.view({t.numel()}), f, false}).first;
      }
      it->second.written |= written;
      Tensor f = it->second.f32;
      f.ndim = t.ndim;
      f.shape = t.shape;
      return f;
    }
    Backend& cpu_;
    std::map<const void*, Entry> map_;
  };

  std::unique_ptr<Backend> cpu_ = make_backend(BackendOptions{DeviceChoice::CPU, 0, -1, {}});
};

}  // namespace speedrun::conformance
