#include "train/timing_backend.h"

#include <chrono>

namespace speedrun {

namespace {
// Bytes of an operand (0 for an absent one).
double sz(const Tensor& t) { return t.empty() ? 0.0 : double(t.bytes()); }
// An output: written once, and read once more when it accumulates.
double out(const Tensor& t, bool accumulate) { return (accumulate ? 2.0 : 1.0) * sz(t); }
OpWork bytes(double b) { return OpWork{0, b}; }
OpWork flops(double f) { return OpWork{f, 0}; }
}  // namespace

template <class Work, class Op>
void TimingBackend::run(const char* name, Work&& work, Op&& op, bool host) {
  if (!timing_) {
    op();
    return;
  }
  const OpWork w = work();
  be_.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  op();
  be_.synchronize();
  const auto t1 = std::chrono::steady_clock::now();
  record(name, std::chrono::duration<double, std::milli>(t1 - t0).count(), w, host);
}

void TimingBackend::record(const char* name, double ms, const OpWork& w, bool host) {
  for (OpStat& s : stats_)
    if (s.op == name && s.phase == phase_) {
      ++s.calls;
      s.ms += ms;
      s.flops += w.flops;
      s.bytes += w.bytes;
      return;
    }
  stats_.push_back(OpStat{phase_, name, 1, ms, w.flops, w.bytes, host});
}

void* TimingBackend::allocate(size_t n) {
  void* p = nullptr;
  run("allocate", [&] { return bytes(double(n)); }, [&] { p = be_.allocate(n); }, true);
  return p;
}
void TimingBackend::release(void* p) {
  run("release", [] { return OpWork{}; }, [&] { be_.release(p); }, true);
}
void TimingBackend::synchronize() {
  run("synchronize", [] { return OpWork{}; }, [&] { be_.synchronize(); }, true);
}
void TimingBackend::upload(Tensor dst, const void* host) {
  run("upload", [&] { return bytes(sz(dst)); }, [&] { be_.upload(dst, host); }, true);
}
void TimingBackend::download(void* host, const Tensor& src) {
  run("download", [&] { return bytes(sz(src)); }, [&] { be_.download(host, src); }, true);
}
void TimingBackend::copy(Tensor dst, const Tensor& src) {
  run("copy", [&] { return bytes(sz(dst) + sz(src)); }, [&] { be_.copy(dst, src); });
}
void TimingBackend::fill(Tensor t, double value) {
  run("fill", [&] { return bytes(sz(t)); }, [&] { be_.fill(t, value); });
}
void TimingBackend::convert(Tensor dst, const Tensor& src) {
  run("convert", [&] { return bytes(sz(dst) + sz(src)); }, [&] { be_.convert(dst, src); });
}
void TimingBackend::sum_into(Tensor acc, const Tensor& t) {
  run("sum_into", [&] { return bytes(sz(t) + out(acc, true)); }, [&] { be_.sum_into(acc, t); });
}

void TimingBackend::matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                           bool accumulate) {
  run("matmul", [&] { return flops(matmul_flops(C, A, transA)); },
      [&] { be_.matmul(C, A, transA, B, transB, accumulate); });
}

void TimingBackend::matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B,
                               bool transB, const Tensor& R) {
  run("matmul_add", [&] { return flops(matmul_flops(C, A, transA)); },
      [&] { be_.matmul_add(C, A, transA, B, transB, R); });
}

void TimingBackend::embedding_forward(Tensor o, const Tensor& tokens, const Tensor& wte) {
  // The rows gathered are as many as the output's.
  run("embedding_forward", [&] { return bytes(sz(tokens) + 2 * sz(o)); },
      [&] { be_.embedding_forward(o, tokens, wte); });
}
void TimingBackend::embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) {
  run("embedding_backward", [&] { return bytes(sz(tokens) + sz(dout) + out(dwte, true)); },
      [&] { be_.embedding_backward(dwte, tokens, dout); });
}

void TimingBackend::rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) {
  run("rms_norm_forward", [&] { return bytes(sz(x) + sz(y) + sz(rstd)); },
      [&] { be_.rms_norm_forward(y, rstd, x, eps); });
}
void TimingBackend::rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x,
                                      const Tensor& rstd, bool accumulate) {
  run("rms_norm_backward", [&] { return bytes(sz(dy) + sz(x) + sz(rstd) + out(dx, accumulate)); },
      [&] { be_.rms_norm_backward(dx, dy, x, rstd, accumulate); });
}

void TimingBackend::mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                                     const Coef& a, const Tensor& y, const Coef& b, double eps) {
  run("mix_norm_forward", [&] { return bytes(sz(x) + sz(y) + sz(xmix) + sz(n) + sz(rstd)); },
      [&] { be_.mix_norm_forward(xmix, n, rstd, x, a, y, b, eps); });
}
void TimingBackend::mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                                      const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                      const Coef& a, const Tensor& y, const Coef& b,
                                      const Tensor& dadd) {
  // x and y are read only for their coefficients' gradients, as in scaled_sum_backward
  // (once where they are one tensor, as in the first block, whose dx is then not written).
  run("mix_norm_backward",
      [&] {
        const bool xy = x.data == y.data && !(a.grad_param.empty() || b.grad_param.empty());
        return bytes(sz(dres) + sz(dn) + sz(xmix) + sz(rstd) +
                     (a.grad_param.empty() || xy ? 0 : sz(x)) +
                     (b.grad_param.empty() ? 0 : sz(y)) + sz(dadd) + sz(dx) + out(dy, true));
      },
      [&] { be_.mix_norm_backward(dx, dy, dres, dn, xmix, rstd, x, a, y, b, dadd); });
}
void TimingBackend::skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                                          const Tensor& skip, const Coef& c, const Coef& a,
                                          const Tensor& y, const Coef& b, double eps) {
  run("skip_mix_norm_forward",
      [&] { return bytes(sz(h) + sz(skip) + sz(y) + sz(xmix) + sz(n) + sz(rstd)); },
      [&] { be_.skip_mix_norm_forward(xmix, n, rstd, h, skip, c, a, y, b, eps); });
}
void TimingBackend::skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                                           const Tensor& dn, const Tensor& xmix,
                                           const Tensor& rstd, const Tensor& h,
                                           const Tensor& skip, const Coef& c, const Coef& a,
                                           const Tensor& y, const Coef& b) {
  // h and skip are read to form xin again (and skip for c's gradient); once where skip is
  // h (dskip empty, not written).
  run("skip_mix_norm_backward",
      [&] {
        return bytes(sz(dres) + sz(dn) + sz(xmix) + sz(rstd) + sz(h) +
                     (skip.data == h.data ? 0 : sz(skip)) +
                     (b.grad_param.empty() ? 0 : sz(y)) + sz(dx) + sz(dskip) + out(dy, true));
      },
      [&] { be_.skip_mix_norm_backward(dx, dskip, dy, dres, dn, xmix, rstd, h, skip, c, a, y, b); });
}
void TimingBackend::qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                                const Tensor& v1src, const Coef& a, const Coef& b,
                                const Tensor& cos, const Tensor& sin, int64_t T, int64_t H,
                                double eps) {
  // qkv is read whole, v1src's v_raw block only (a third of it).
  run("qkv_forward",
      [&] {
        return bytes(sz(qkv) + sz(v1src) / 3 + sz(q) + sz(k) + sz(v) + sz(rstd) + sz(cos) +
                     sz(sin));
      },
      [&] { be_.qkv_forward(q, k, v, rstd, qkv, v1src, a, b, cos, sin, T, H, eps); });
}
void TimingBackend::qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk,
                                 const Tensor& dv, const Tensor& qkv, const Tensor& rstd,
                                 const Tensor& v1src, const Coef& a, const Coef& b,
                                 const Tensor& cos, const Tensor& sin, int64_t T, int64_t H) {
  run("qkv_backward",
      [&] {
        return bytes(sz(dq) + sz(dk) + sz(dv) + sz(qkv) + sz(v1src) / 3 + sz(rstd) + sz(cos) +
                     sz(sin) + sz(dqkv) + out(dv1, true));
      },
      [&] { be_.qkv_backward(dqkv, dv1, dq, dk, dv, qkv, rstd, v1src, a, b, cos, sin, T, H); });
}
void TimingBackend::rotary_tables(Tensor cos, Tensor sin, double base) {
  run("rotary_tables", [&] { return bytes(sz(cos) + sz(sin)); },
      [&] { be_.rotary_tables(cos, sin, base); });
}

void TimingBackend::attention_forward(Tensor o, Tensor lse, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const std::vector<BlockMask>& masks,
                                      int64_t H, double scale) {
  run("attention_forward",
      [&] { return flops(attention_forward_flops(visible_pairs(masks), H, q.cols() / H)); },
      [&] { be_.attention_forward(o, lse, q, k, v, masks, H, scale); });
}
void TimingBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                                       const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& o, const Tensor& lse,
                                       const std::vector<BlockMask>& masks, int64_t H,
                                       double scale) {
  run("attention_backward",
      [&] { return flops(attention_backward_flops(visible_pairs(masks), H, q.cols() / H)); },
      [&] { be_.attention_backward(dq, dk, dv, dout, q, k, v, o, lse, masks, H, scale); });
}

void TimingBackend::rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
  run("rotary_tables_at", [&] { return bytes(sz(cos) + sz(sin)); },
      [&] { be_.rotary_tables_at(cos, sin, base, start); });
}
void TimingBackend::attention_decode(Tensor o, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const std::vector<int32_t>& rows, int64_t H, double scale) {
  // Each listed cache row of k and v is read once.
  run("attention_decode",
      [&] { return bytes(sz(q) + sz(o) + 2.0 * double(rows.size()) * double(k.cols()) *
                                             double(dtype_size(k.dtype))); },
      [&] { be_.attention_decode(o, q, k, v, rows, H, scale); });
}

void TimingBackend::relu_squared_forward(Tensor y, const Tensor& x) {
  run("relu_squared_forward", [&] { return bytes(sz(x) + sz(y)); },
      [&] { be_.relu_squared_forward(y, x); });
}
void TimingBackend::relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) {
  run("relu_squared_backward", [&] { return bytes(sz(dy) + sz(y) + sz(dx)); },
      [&] { be_.relu_squared_backward(dx, dy, y); });
}

void TimingBackend::scaled_sum_forward(Tensor o, const Tensor& x, const Coef& a, const Tensor& y,
                                       const Coef& b) {
  run("scaled_sum_forward", [&] { return bytes(sz(x) + sz(y) + sz(o)); },
      [&] { be_.scaled_sum_forward(o, x, a, y, b); });
}
void TimingBackend::scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y,
                                        const Tensor& dout, const Tensor& x, const Coef& a,
                                        const Tensor& y, const Coef& b) {
  // x and y are read only for their coefficients' gradients; aliased outputs (dx = dy, or
  // dx = dout) are still counted as separate streams, as a kernel that fuses nothing moves.
  run("scaled_sum_backward",
      [&] {
        return bytes(sz(dout) + (a.grad_param.empty() ? 0 : sz(x)) +
                     (b.grad_param.empty() ? 0 : sz(y)) + out(dx, acc_x) + out(dy, acc_y));
      },
      [&] { be_.scaled_sum_backward(dx, acc_x, dy, acc_y, dout, x, a, y, b); });
}

void TimingBackend::softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets,
                                          double cap, double grad_scale, bool backward) {
  run("softcap_cross_entropy",
      [&] { return bytes((backward ? 2 : 1) * sz(logits) + sz(targets) + sz(losses)); },
      [&] { be_.softcap_cross_entropy(logits, losses, targets, cap, grad_scale, backward); });
}

void TimingBackend::adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) {
  run("adam_step", [&] { return bytes(sz(g) + out(p, true) + out(m, true) + out(v, true)); },
      [&] { be_.adam_step(p, g, m, v, a); });
}
void TimingBackend::muon_momentum(Tensor o, Tensor buf, const Tensor& g, double mu) {
  run("muon_momentum", [&] { return bytes(sz(g) + out(buf, true) + sz(o)); },
      [&] { be_.muon_momentum(o, buf, g, mu); });
}
void TimingBackend::newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) {
  run("newton_schulz", [&] { return flops(newton_schulz_flops(G, steps)); },
      [&] { be_.newton_schulz(X, G, steps, bf16_round); });
}
void TimingBackend::axpy(Tensor y, const Tensor& x, double alpha) {
  run("axpy", [&] { return bytes(sz(x) + out(y, true)); }, [&] { be_.axpy(y, x, alpha); });
}
// The many-tensor ops count what their single-tensor ops would: adam_step's and axpy's
// bytes plus each compute copy written; muon_stack the Newton-Schulz's FLOPs (its momentum
// is the elementwise remainder).
void TimingBackend::adam_steps(const std::vector<AdamTensor>& ts, const AdamArgs& a) {
  run("adam_steps",
      [&] {
        double b = 0;
        for (const AdamTensor& t : ts)
          b += sz(t.g) + out(t.p, true) + out(t.m, true) + out(t.v, true) + sz(t.copy);
        return bytes(b);
      },
      [&] { be_.adam_steps(ts, a); });
}
void TimingBackend::muon_apply(const std::vector<MuonApply>& us) {
  run("muon_apply",
      [&] {
        double b = 0;
        for (const MuonApply& u : us) b += sz(u.update) + out(u.p, true) + sz(u.copy);
        return bytes(b);
      },
      [&] { be_.muon_apply(us); });
}
// muon_momenta: each gradient read and its buffer read and written (no Nesterov value).
void TimingBackend::muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                                 double mu) {
  run("muon_momenta",
      [&] {
        double b = 0;
        for (size_t k = 0; k < bufs.size() && k < grads.size(); ++k)
          b += sz(grads[k]) + out(bufs[k], true);
        return bytes(b);
      },
      [&] { be_.muon_momenta(bufs, grads, mu); });
}
void TimingBackend::muon_stack(Tensor X, Tensor input, const std::vector<Tensor>& bufs,
                               const std::vector<Tensor>& grads, double mu, int steps,
                               bool bf16_round) {
  run("muon_stack", [&] { return flops(newton_schulz_flops(X, steps)); },
      [&] { be_.muon_stack(X, input, bufs, grads, mu, steps, bf16_round); });
}

}  // namespace speedrun
