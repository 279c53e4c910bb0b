#include "backend/backend.h"

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/arena.h"
#include "core/bf16.h"

namespace speedrun {

namespace {
// A tensor of the backend's own for one default's call, released when it goes out of scope
// (release() waits for the queued work that may still read it).
class Temporary {
 public:
  Temporary(Backend& be, const char* name, DType dtype, std::initializer_list<int64_t> shape)
      : arena_([b = &be](size_t n) { return b->allocate(n); },
               [b = &be](void* p) { b->release(p); }) {
    arena_.add(name, dtype, shape, &t);
    arena_.materialize(be.device());
  }
  Tensor t;

 private:
  Arena arena_;
};
}  // namespace

void Backend::check_residual(const Tensor& C, const Tensor& R) const {
  check(R.dtype == C.dtype && R.rows() == C.rows() && R.cols() == C.cols(), name(),
        " matmul_add: the residual ", R.shape_str(), " ", dtype_name(R.dtype),
        " is not the output's shape and dtype ", C.shape_str(), " ", dtype_name(C.dtype));
}

void Backend::matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                         const Tensor& R) {
  check_residual(C, R);
  if (R.data != C.data) copy(C, R);
  matmul(C, A, transA, B, transB, true);
}

void Backend::skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                                    const Tensor& skip, const Coef& c, const Coef& a,
                                    const Tensor& y, const Coef& b, double eps) {
  scaled_sum_forward(xmix, h, Coef::constant(1.0), skip, c);  // xin, in xmix's memory
  mix_norm_forward(xmix, n, rstd, xmix, a, y, b, eps);
}

void Backend::skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                                     const Tensor& dn, const Tensor& xmix, const Tensor& rstd,
                                     const Tensor& h, const Tensor& skip, const Coef& c,
                                     const Coef& a, const Tensor& y, const Coef& b) {
  if (dskip.empty()) {  // skip is h: xin, then c*dx, in a temporary, then added to dx
    check(skip.data == h.data, name(), " skip_mix_norm_backward: dskip may be left empty only ",
          "where skip is h (the same tensor)");
    Temporary tmp(*this, "skip_mix_norm_backward", dx.dtype, {dx.rows(), dx.cols()});
    skip_mix_norm_backward(dx, tmp.t, dy, dres, dn, xmix, rstd, h, skip, c, a, y, b);
    axpy(dx, tmp.t, 1.0);
    return;
  }
  const std::initializer_list<const Tensor*> others = {&dx, &dres, &dy, &dn, &xmix, &h, &skip, &y};
  for (const Tensor* t : others)
    check(dskip.data != t->data, name(), " skip_mix_norm_backward: dskip must not alias ",
          "another operand (it holds xin first)");
  scaled_sum_forward(dskip, h, Coef::constant(1.0), skip, c);  // xin, in dskip's memory
  mix_norm_backward(dx, dy, dres, dn, xmix, rstd, dskip, a, y, b, Tensor{});
  scaled_sum_backward(Tensor{}, false, dskip, false, dx, Tensor{}, Coef::constant(1.0), skip, c);
}

void Backend::mix_norm_backward_into_y(Tensor dy, const Tensor& dres, const Tensor& dn,
                                       const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                       const Coef& a, const Tensor& y, const Coef& b,
                                       const Tensor& dadd) {
  check(x.data == y.data, name(), " mix_norm_backward: dx may be left empty only where x is y ",
        "(the same tensor)");
  check(dadd.empty(), name(), " mix_norm_backward: no dadd without a dx to add it to");
  Temporary dx(*this, "mix_norm_backward", dy.dtype, {dy.rows(), dy.cols()});
  mix_norm_backward(dx.t, dy, dres, dn, xmix, rstd, x, a, y, b, Tensor{});
  axpy(dy, dx.t, 1.0);
}

void Backend::adam_steps(const std::vector<AdamTensor>& t, const AdamArgs& a) {
  for (const AdamTensor& x : t) {
    AdamArgs b = a;
    b.lr = x.lr;
    adam_step(x.p, x.g, x.m, x.v, b);
    if (!x.copy.empty()) convert(x.copy, x.p);
  }
}

void Backend::muon_apply(const std::vector<MuonApply>& u) {
  for (const MuonApply& x : u) {
    if (x.update.dtype == x.p.dtype) {
      axpy(x.p, x.update, x.alpha);
    } else {  // a narrower update (a bf16 copy), widened exactly first
      Temporary wide(*this, "muon_apply.update", x.p.dtype, {x.p.numel()});
      convert(wide.t, x.update.view({x.update.numel()}));
      axpy(x.p.view({x.p.numel()}), wide.t, x.alpha);
    }
    if (!x.copy.empty()) convert(x.copy, x.p);
  }
}

void Backend::muon_stack(Tensor X, Tensor input, const std::vector<Tensor>& bufs,
                         const std::vector<Tensor>& grads, double mu, int steps, bool bf16_round) {
  check(bufs.size() == grads.size(), name(), " muon_stack: ", bufs.size(), " momentum buffers for ",
        grads.size(), " gradients");
  check(!input.empty(), name(), " muon_stack: this backend needs the input stack");
  check(input.ndim == 3 && input.dim(0) == int64_t(grads.size()), name(), " muon_stack: input ",
        input.shape_str(), " is not a stack of ", grads.size(), " matrices");
  for (size_t k = 0; k < grads.size(); ++k) {
    const int64_t i = int64_t(k);
    muon_momentum(input.slice(i, i + 1).view({input.dim(1), input.dim(2)}), bufs[k], grads[k], mu);
  }
  newton_schulz(X, input, steps, bf16_round);
}

void Backend::muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                           double mu) {
  check(bufs.size() == grads.size(), name(), " muon_momenta: ", bufs.size(),
        " momentum buffers for ", grads.size(), " gradients");
  for (size_t k = 0; k < grads.size(); ++k) muon_momentum(grads[k], bufs[k], grads[k], mu);
}

std::vector<double> Backend::to_host_f64(const Tensor& t) {
  const int64_t n = t.numel();
  std::vector<double> out(static_cast<size_t>(n));
  if (out.empty()) return out;  // nothing to stage (an empty arena holds no memory)
  if (t.dtype == DType::F64) {
    download(out.data(), t);
    return out;
  }
  // F32 and BF16 are widened on the host, exactly as convert() widens them: no device
  // buffer of n doubles (a GPU allocation and free, which waits for the GPU, for each
  // sampled token's logits; 309 MB for an embedding written to a checkpoint).
  if (t.dtype == DType::F32) {
    std::vector<float> f(static_cast<size_t>(n));
    download(f.data(), t);
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
    for (int64_t k = 0; k < n; ++k) out[size_t(k)] = double(f[size_t(k)]);
    return out;
  }
  if (t.dtype == DType::BF16) {
    std::vector<uint16_t> b(static_cast<size_t>(n));
    download(b.data(), t);
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
    for (int64_t k = 0; k < n; ++k) out[size_t(k)] = double(bf16_to_float(b[size_t(k)]));
    return out;
  }
  Arena staging([this](size_t n) { return allocate(n); }, [this](void* p) { release(p); });
  Tensor tmp;
  staging.add("to_host_f64", DType::F64, {t.numel()}, &tmp);
  staging.materialize(device());
  convert(tmp, t.view({t.numel()}));
  download(out.data(), tmp);
  return out;
}

void Backend::from_host_f64(Tensor t, const std::vector<double>& values) {
  check(int64_t(values.size()) == t.numel(), name(), " from_host_f64: ", values.size(),
        " values for a tensor of ", t.numel(), " elements ", t.shape_str());
  if (values.empty()) return;
  if (t.dtype == DType::F64) {
    upload(t, values.data());
    return;
  }
  if (t.dtype == DType::F32) {
    // Rounded on the host as convert() rounds (to nearest even): no staging buffer of n
    // doubles on the device.
    const int64_t n = t.numel();
    std::vector<float> f(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
    for (int64_t k = 0; k < n; ++k) f[size_t(k)] = float(values[size_t(k)]);
    upload(t, f.data());
    return;
  }
  Arena staging([this](size_t n) { return allocate(n); }, [this](void* p) { release(p); });
  Tensor tmp;
  staging.add("from_host_f64", DType::F64, {t.numel()}, &tmp);
  staging.materialize(device());
  upload(tmp, values.data());
  convert(t.view({t.numel()}), tmp);
  synchronize();  // the staging buffer is freed when this returns
}

}  // namespace speedrun
