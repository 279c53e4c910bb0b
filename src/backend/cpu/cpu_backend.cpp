#include "backend/cpu/cpu_backend.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/adam.h"
#include "backend/cpu/attention/backward.h"
#include "backend/cpu/attention/decode.h"
#include "backend/cpu/attention/forward.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/head_norm_rotary.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/mix_norm.h"
#include "backend/cpu/muon.h"
#include "backend/cpu/relu_squared.h"
#include "backend/cpu/rms_norm.h"
#include "backend/cpu/scaled_sum.h"
#include "core/bf16.h"
#include "core/host_memory.h"

extern "C" void openblas_set_num_threads(int);

namespace speedrun {

namespace {

void need_float(const char* op, const Tensor& t) {
  check(t.dtype == DType::F32 || t.dtype == DType::F64, "cpu ", op, ": dtype ",
        dtype_name(t.dtype), " is not supported (F32 or F64)");
}

void same(const char* op, const Tensor& a, const Tensor& b) {
  check(a.dtype == b.dtype, "cpu ", op, ": dtype mismatch ", dtype_name(a.dtype), " vs ",
        dtype_name(b.dtype));
  check(a.numel() == b.numel(), "cpu ", op, ": size mismatch ", a.shape_str(), " vs ",
        b.shape_str());
}

// Calls f(T{}) with T = float or double according to t's dtype.
template <class F>
void dispatch(const char* op, const Tensor& t, F&& f) {
  need_float(op, t);
  if (t.dtype == DType::F32)
    f(float{});
  else
    f(double{});
}

template <class T>
T coef_value(const Coef& c) {
  if (c.value_param.empty()) return T(c.offset);
  // PyTorch evaluates (1 - lamb) in the parameter's precision first.
  return T(T(c.offset) + T(c.sign) * *c.value_param.ptr<T>());
}

template <class T>
void add_grad(const Coef& c, double dot) {
  if (c.grad_param.empty()) return;
  *c.grad_param.ptr<T>() += T(c.sign * dot);
}

}  // namespace

CpuBackend::CpuBackend(int threads) { set_threads(threads); }

void CpuBackend::set_threads(int threads) {
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
}

int64_t CpuBackend::attention_tile(int64_t window) const {
  return window <= 64 ? 32 : window <= 256 ? 64 : 128;
}

std::string CpuBackend::numerics() const {
  const int n = omp_get_max_threads();
  return "cpu, " + std::to_string(n) + (n == 1 ? " thread" : " threads");
}

void* CpuBackend::allocate(size_t bytes) {
  // Blocks of 2 MiB or more start on a 2 MiB boundary and ask for transparent huge pages
  // (a hint; where the kernel has them off it is ignored): arenas of gigabytes are then
  // faulted in 2 MiB at a time instead of 4 KiB, which on a virtual machine was most of
  // the time a large model took to start, and the TLB covers them.
  constexpr size_t kHuge = size_t(2) << 20;
  constexpr size_t kCheckedBlock = size_t(64) << 20;  // smaller ones are not worth a /proc read
  const bool huge = bytes >= kHuge;
  const size_t align = huge ? kHuge : 64;
  const size_t n = bytes == 0 ? 64 : (bytes + align - 1) / align * align;
  // Every page is touched below: a block beyond what the machine has left would have the
  // kernel kill the process mid-memset, with no message. Refuse it first, naming the fix.
  if (n >= kCheckedBlock) {
    const std::optional<size_t> room = host_memory_available();
    check(!room || n <= *room, host_oom_message(bytes, room));
  }
  void* p = std::aligned_alloc(align, n);
  check(p != nullptr, host_oom_message(bytes, std::nullopt));
  if (huge) madvise(p, n, MADV_HUGEPAGE);
  std::memset(p, 0, n);
  return p;
}

void CpuBackend::release(void* p) { std::free(p); }

void CpuBackend::upload(Tensor dst, const void* host) { std::memcpy(dst.data, host, dst.bytes()); }

void CpuBackend::download(void* host, const Tensor& src) {
  std::memcpy(host, src.data, src.bytes());
}

void CpuBackend::copy(Tensor dst, const Tensor& src) {
  same("copy", dst, src);
  if (dst.data != src.data) std::memcpy(dst.data, src.data, dst.bytes());
}

void CpuBackend::fill(Tensor t, double value) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::F32: {
      float* p = t.ptr<float>();
      const float v = float(value);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) p[i] = v;
      break;
    }
    case DType::F64: {
      double* p = t.ptr<double>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) p[i] = value;
      break;
    }
    case DType::I32: {
      int32_t* p = t.ptr<int32_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = int32_t(value);
      break;
    }
    default:
      fail("cpu fill: dtype ", dtype_name(t.dtype), " is not supported");
  }
}

void CpuBackend::convert(Tensor dst, const Tensor& src) {
  check(dst.numel() == src.numel(), "cpu convert: size mismatch");
  const int64_t n = dst.numel();
  auto load = [&](int64_t i) -> double {
    switch (src.dtype) {
      case DType::F32: return static_cast<const float*>(src.data)[i];
      case DType::F64: return static_cast<const double*>(src.data)[i];
      case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(src.data)[i]);
      default: fail("cpu convert: source dtype ", dtype_name(src.dtype), " is not supported");
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    const double v = load(i);
    switch (dst.dtype) {
      case DType::F32: static_cast<float*>(dst.data)[i] = float(v); break;
      case DType::F64: static_cast<double*>(dst.data)[i] = v; break;
      case DType::BF16: static_cast<uint16_t*>(dst.data)[i] = bf16_bits(float(v)); break;
      default: fail("cpu convert: target dtype ", dtype_name(dst.dtype), " is not supported");
    }
  }
}

void CpuBackend::check_precision(const Precision& p) const {
  const bool one = p.master == p.compute && p.compute == p.grad;
  check(one && (p.compute == DType::F32 || p.compute == DType::F64), "cpu backend: precision ",
        p.str(), " is not supported: the CPU computes in fp32 (or fp64 for exact comparisons); "
        "use --dtype fp32, or --device cuda for bf16");
}

void CpuBackend::sum_into(Tensor acc, const Tensor& t) {
  check(acc.dtype == DType::F64 && acc.numel() == 1, "cpu sum_into: the accumulator must be one "
        "F64 element, got ", dtype_name(acc.dtype), " ", acc.shape_str());
  double s = 0;
  dispatch("sum_into", t, [&](auto z) {
    using T = decltype(z);
    const T* p = t.ptr<T>();
    for (int64_t i = 0; i < t.numel(); ++i) s += double(p[i]);
  });
  *acc.ptr<double>() += s;
}

void CpuBackend::matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                        bool accumulate) {
  const int64_t M = C.rows(), N = C.cols();
  const int64_t K = transA ? A.rows() : A.cols();
  check(A.rows() * A.cols() == M * K && (transA ? A.cols() : A.rows()) == M, "cpu matmul: A ",
        A.shape_str(), (transA ? "^T" : ""), " does not fit C ", C.shape_str());
  check((transB ? B.cols() : B.rows()) == K && (transB ? B.rows() : B.cols()) == N,
        "cpu matmul: B ", B.shape_str(), (transB ? "^T" : ""), " does not fit A ",
        A.shape_str(), (transA ? "^T" : ""), " and C ", C.shape_str());
  check(A.dtype == C.dtype && B.dtype == C.dtype, "cpu matmul: dtype mismatch");
  dispatch("matmul", C, [&](auto z) {
    using T = decltype(z);
    cpu::gemm<T>(transA, transB, M, N, K, T(1), A.ptr<T>(), A.cols(), B.ptr<T>(), B.cols(),
                 T(accumulate ? 1 : 0), C.ptr<T>(), N);
  });
}

void CpuBackend::embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) {
  dispatch("embedding_forward", out, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_forward<T>(out.ptr<T>(), tokens.ptr<int32_t>(), wte.ptr<T>(), tokens.numel(),
                              wte.cols());
  });
}

void CpuBackend::embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) {
  dispatch("embedding_backward", dwte, [&](auto z) {
    using T = decltype(z);
    cpu::embedding_backward<T>(dwte.ptr<T>(), tokens.ptr<int32_t>(), dout.ptr<T>(),
                               tokens.numel(), dwte.cols());
  });
}

void CpuBackend::rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) {
  same("rms_norm_forward", y, x);
  dispatch("rms_norm_forward", x, [&](auto z) {
    using T = decltype(z);
    cpu::rms_norm_forward<T>(y.ptr<T>(), rstd.ptr<T>(), x.ptr<T>(), x.rows(), x.cols(), T(eps));
  });
}

void CpuBackend::rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x,
                                   const Tensor& rstd, bool accumulate) {
  same("rms_norm_backward", dx, x);
  dispatch("rms_norm_backward", x, [&](auto z) {
    using T = decltype(z);
    cpu::rms_norm_backward<T>(dx.ptr<T>(), dy.ptr<T>(), x.ptr<T>(), rstd.ptr<T>(), x.rows(),
                              x.cols(), accumulate);
  });
}

void CpuBackend::mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                                  const Coef& a, const Tensor& y, const Coef& b, double eps) {
  const char* op = "mix_norm_forward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&xmix, &n, &y}) same(op, *t, x);
  check(rstd.numel() == x.rows(), "cpu ", op, ": rstd ", rstd.shape_str(), " for ", x.rows(),
        " rows");
  dispatch(op, x, [&](auto z) {
    using S = decltype(z);
    cpu::mix_norm_forward<S>(xmix.ptr<S>(), n.ptr<S>(), rstd.ptr<S>(), x.ptr<S>(),
                             coef_value<S>(a), y.ptr<S>(), coef_value<S>(b), x.rows(), x.cols(),
                             S(eps));
  });
}

void CpuBackend::mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                                   const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                   const Coef& a, const Tensor& y, const Coef& b,
                                   const Tensor& dadd) {
  const char* op = "mix_norm_backward";
  if (dx.empty())
    return mix_norm_backward_into_y(dy, dres, dn, xmix, rstd, x, a, y, b, dadd);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dx, &dy, &dres, &dn, &xmix, &y})
    same(op, *t, x);
  if (!dadd.empty()) {
    same(op, dadd, x);
    check(dadd.data != dx.data && dadd.data != dy.data, "cpu ", op,
          ": dadd must not alias dx or dy");
  }
  check(rstd.numel() == x.rows(), "cpu ", op, ": rstd ", rstd.shape_str(), " for ", x.rows(),
        " rows");
  dispatch(op, x, [&](auto z) {
    using S = decltype(z);
    const auto [gx, gy] = cpu::mix_norm_backward<S>(
        dx.ptr<S>(), dy.ptr<S>(), dres.ptr<S>(), dn.ptr<S>(), xmix.ptr<S>(), rstd.ptr<S>(),
        x.ptr<S>(), coef_value<S>(a), y.ptr<S>(), coef_value<S>(b), x.rows(), x.cols());
    add_grad<S>(a, gx);
    add_grad<S>(b, gy);
  });
  if (!dadd.empty()) axpy(dx, dadd, 1.0);
}

namespace {
// The shapes of the stacked projection's ops: qkv and v1src [N, 3C], q/k/v-sized [N, C],
// rstd [2, N*H]; returns C.
int64_t check_qkv(const char* op, const Tensor& qkv, const Tensor& v1src, const Tensor& rstd,
                  std::initializer_list<const Tensor*> nc, int64_t H) {
  const int64_t N = qkv.rows(), C = qkv.cols() / 3;
  check(qkv.cols() % 3 == 0 && H >= 1 && C % H == 0 && (C / H) % 2 == 0, "cpu ", op, ": qkv ",
        qkv.shape_str(), " is not [N, 3C] with C a multiple of ", H, " heads of even size");
  check(v1src.rows() == N && v1src.cols() == 3 * C && v1src.dtype == qkv.dtype, "cpu ", op,
        ": v1src ", v1src.shape_str(), " is not qkv's shape ", qkv.shape_str());
  check(rstd.numel() == 2 * N * H, "cpu ", op, ": rstd ", rstd.shape_str(), " is not [2, ",
        N * H, "]");
  for (const Tensor* t : nc)
    check(t->numel() == N * C && t->dtype == qkv.dtype, "cpu ", op, ": ", t->shape_str(), " ",
          dtype_name(t->dtype), " is not [", N, ", ", C, "] ", dtype_name(qkv.dtype));
  return C;
}
}  // namespace

void CpuBackend::qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                             const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                             const Tensor& sin, int64_t T, int64_t H, double eps) {
  const char* op = "qkv_forward";
  const int64_t C = check_qkv(op, qkv, v1src, rstd, {&q, &k, &v}, H);
  const int64_t N = qkv.rows(), D = C / H, ld = 3 * C;
  dispatch(op, qkv, [&](auto z) {
    using S = decltype(z);
    const S* x = qkv.ptr<S>();
    S* rs = rstd.ptr<S>();
    cpu::head_norm_rotary_forward_strided<S>(q.ptr<S>(), C, rs, x, ld, cos.ptr<S>(), sin.ptr<S>(),
                                             N, T, H, D, S(eps));
    cpu::head_norm_rotary_forward_strided<S>(k.ptr<S>(), C, rs + N * H, x + C, ld, cos.ptr<S>(),
                                             sin.ptr<S>(), N, T, H, D, S(eps));
    cpu::scaled_sum_forward_rows<S>(v.ptr<S>(), C, x + 2 * C, ld, coef_value<S>(a),
                                    v1src.ptr<S>() + 2 * C, ld, coef_value<S>(b), N, C);
  });
}

void CpuBackend::qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk,
                              const Tensor& dv, const Tensor& qkv, const Tensor& rstd,
                              const Tensor& v1src, const Coef& a, const Coef& b,
                              const Tensor& cos, const Tensor& sin, int64_t T, int64_t H) {
  const char* op = "qkv_backward";
  const int64_t C = check_qkv(op, qkv, v1src, rstd, {&dv1, &dq, &dk, &dv}, H);
  same(op, dqkv, qkv);
  const int64_t N = qkv.rows(), D = C / H, ld = 3 * C;
  const bool layer0 = v1src.data == qkv.data;
  dispatch(op, qkv, [&](auto z) {
    using S = decltype(z);
    const S* x = qkv.ptr<S>();
    const S* rs = rstd.ptr<S>();
    S* g = dqkv.ptr<S>();
    cpu::head_norm_rotary_backward_strided<S>(g, ld, dq.ptr<S>(), C, x, ld, rs, cos.ptr<S>(),
                                              sin.ptr<S>(), N, T, H, D);
    cpu::head_norm_rotary_backward_strided<S>(g + C, ld, dk.ptr<S>(), C, x + C, ld, rs + N * H,
                                              cos.ptr<S>(), sin.ptr<S>(), N, T, H, D);
    const S av = coef_value<S>(a), bv = coef_value<S>(b);
    const S* v_raw = x + 2 * C;
    const S* v1 = v1src.ptr<S>() + 2 * C;
    S* d1 = dv1.ptr<S>();
    // Layer 0: both terms into dv1, which is then v_raw's whole gradient.
    const auto [gx, gy] =
        layer0 ? cpu::scaled_sum_backward_rows<S>(d1, C, true, d1, C, true, dv.ptr<S>(), C, av,
                                                  v_raw, ld, bv, v1, ld, N, C)
               : cpu::scaled_sum_backward_rows<S>(g + 2 * C, ld, false, d1, C, true, dv.ptr<S>(),
                                                  C, av, v_raw, ld, bv, v1, ld, N, C);
    if (layer0)
      for (int64_t n = 0; n < N; ++n) std::copy_n(d1 + n * C, C, g + n * ld + 2 * C);
    add_grad<S>(a, gx);
    add_grad<S>(b, gy);
  });
}

void CpuBackend::rotary_tables(Tensor cos, Tensor sin, double base) {
  dispatch("rotary_tables", cos, [&](auto z) {
    using S = decltype(z);
    cpu::rotary_tables<S>(cos.ptr<S>(), sin.ptr<S>(), cos.rows(), 2 * cos.cols(), base);
  });
}

void CpuBackend::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                                   double scale) {
  const int64_t B = int64_t(masks.size());
  check(B >= 1 && q.rows() % B == 0, "cpu attention_forward: ", masks.size(),
        " masks for ", q.rows(), " rows");
  const int64_t T = q.rows() / B, D = q.cols() / H;
  dispatch("attention_forward", q, [&](auto z) {
    using S = decltype(z);
    cpu::attention_forward<S>(out.ptr<S>(), lse.ptr<S>(), q.ptr<S>(), k.ptr<S>(), v.ptr<S>(),
                              masks.data(), B, T, H, D, S(scale));
  });
}

void CpuBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                                    const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse,
                                    const std::vector<BlockMask>& masks, int64_t H,
                                    double scale) {
  const int64_t B = int64_t(masks.size());
  const int64_t T = q.rows() / B, D = q.cols() / H;
  dispatch("attention_backward", q, [&](auto z) {
    using S = decltype(z);
    cpu::attention_backward<S>(dq.ptr<S>(), dk.ptr<S>(), dv.ptr<S>(), dout.ptr<S>(), q.ptr<S>(),
                               k.ptr<S>(), v.ptr<S>(), out.ptr<S>(), lse.ptr<S>(), masks.data(),
                               B, T, H, D, S(scale));
  });
}

void CpuBackend::rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
  check(start >= 0, "cpu rotary_tables_at: start position ", start, " must be >= 0");
  same("rotary_tables_at", cos, sin);
  dispatch("rotary_tables_at", cos, [&](auto z) {
    using S = decltype(z);
    cpu::rotary_tables<S>(cos.ptr<S>(), sin.ptr<S>(), cos.rows(), 2 * cos.cols(), base, start);
  });
}

void CpuBackend::attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const std::vector<int32_t>& rows, int64_t H, double scale) {
  same("attention_decode", out, q);
  same("attention_decode", k, v);
  check(q.rows() == 1 && H >= 1 && q.cols() % H == 0 && k.cols() == q.cols(),
        "cpu attention_decode: q ", q.shape_str(), " and cache ", k.shape_str(),
        " must be [1, C] and [S, C] with C a multiple of ", H, " heads");
  const int64_t D = q.cols() / H;
  dispatch("attention_decode", q, [&](auto z) {
    using S = decltype(z);
    cpu::attention_decode<S>(out.ptr<S>(), q.ptr<S>(), k.ptr<S>(), v.ptr<S>(), rows.data(),
                             int64_t(rows.size()), k.rows(), H, D, scale);
  });
}

void CpuBackend::relu_squared_forward(Tensor y, const Tensor& x) {
  same("relu_squared_forward", y, x);
  dispatch("relu_squared_forward", x, [&](auto z) {
    using T = decltype(z);
    cpu::relu_squared_forward<T>(y.ptr<T>(), x.ptr<T>(), x.numel());
  });
}

void CpuBackend::relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) {
  same("relu_squared_backward", dx, y);
  dispatch("relu_squared_backward", y, [&](auto z) {
    using T = decltype(z);
    cpu::relu_squared_backward<T>(dx.ptr<T>(), dy.ptr<T>(), y.ptr<T>(), y.numel());
  });
}

void CpuBackend::scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                                    const Coef& b) {
  same("scaled_sum_forward", out, x);
  same("scaled_sum_forward", out, y);
  dispatch("scaled_sum_forward", out, [&](auto z) {
    using T = decltype(z);
    cpu::scaled_sum_forward<T>(out.ptr<T>(), x.ptr<T>(), coef_value<T>(a), y.ptr<T>(),
                               coef_value<T>(b), out.numel());
  });
}

void CpuBackend::scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y,
                                     const Tensor& dout, const Tensor& x, const Coef& a,
                                     const Tensor& y, const Coef& b) {
  dispatch("scaled_sum_backward", dout, [&](auto z) {
    using T = decltype(z);
    auto ptr_or_null = [](const Tensor& t) { return t.empty() ? nullptr : t.ptr<T>(); };
    const Tensor* given[] = {&dx, &dy, &x, &y};
    for (const Tensor* t : given)
      if (!t->empty()) same("scaled_sum_backward", *t, dout);
    const auto [gx, gy] = cpu::scaled_sum_backward<T>(
        ptr_or_null(dx), acc_x, ptr_or_null(dy), acc_y, dout.ptr<T>(), coef_value<T>(a),
        ptr_or_null(x), coef_value<T>(b), ptr_or_null(y), dout.numel());
    if (!x.empty()) add_grad<T>(a, gx);
    if (!y.empty()) add_grad<T>(b, gy);
  });
}

void CpuBackend::softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets,
                                       double cap, double grad_scale, bool backward) {
  check(losses.numel() == logits.rows() && targets.numel() == logits.rows(),
        "cpu softcap_cross_entropy: ", logits.rows(), " rows but ", losses.numel(), " losses and ",
        targets.numel(), " targets");
  dispatch("softcap_cross_entropy", logits, [&](auto z) {
    using T = decltype(z);
    cpu::softcap_cross_entropy<T>(logits.ptr<T>(), losses.ptr<T>(), targets.ptr<int32_t>(),
                                  logits.rows(), logits.cols(), T(cap), T(grad_scale), backward);
  });
}

void CpuBackend::adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) {
  same("adam_step", p, g);
  same("adam_step", p, m);
  same("adam_step", p, v);
  dispatch("adam_step", p, [&](auto z) {
    using T = decltype(z);
    cpu::adam_step<T>(p.ptr<T>(), g.ptr<T>(), m.ptr<T>(), v.ptr<T>(), p.numel(), a.lr, a.beta1,
                      a.beta2, a.eps, a.step);
  });
}

void CpuBackend::muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) {
  same("muon_momentum", out, g);
  same("muon_momentum", buf, g);
  dispatch("muon_momentum", g, [&](auto z) {
    using T = decltype(z);
    cpu::muon_momentum<T>(out.ptr<T>(), buf.ptr<T>(), g.ptr<T>(), g.numel(), T(mu));
  });
}

void CpuBackend::newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) {
  same("newton_schulz", X, G);
  check(G.ndim == 2 || G.ndim == 3, "cpu newton_schulz: G ", G.shape_str(),
        " must be [rows, cols] or [n, rows, cols]");
  const int64_t n = G.ndim == 3 ? G.dim(0) : 1, rows = G.dim(-2), cols = G.dim(-1);
  // A stack's matrices are independent: one thread each, when there are as many matrices
  // as threads or they are small. Each then runs its products on one thread (OpenBLAS's
  // OpenMP build does inside a parallel region), with the bits it gets alone on one
  // thread. On 2 cores that is 2.5-4x faster for the tiny preset's stacks and 15-25% for
  // the record's (build/bench_ops, docs/PERFORMANCE.md): a small matrix's products are too
  // small to share well, and even large ones pay a barrier per product. Where threads
  // outnumber large matrices, their products share them.
  const bool per_matrix = n > 1 && (n >= omp_get_max_threads() || rows * cols <= (int64_t(1) << 18));
  dispatch("newton_schulz", G, [&](auto z) {
    using T = decltype(z);
#pragma omp parallel for schedule(dynamic, 1) if (per_matrix)
    for (int64_t i = 0; i < n; ++i)
      cpu::newton_schulz5<T>(X.ptr<T>() + i * rows * cols, G.ptr<T>() + i * rows * cols, rows,
                             cols, steps, bf16_round);
  });
}

void CpuBackend::axpy(Tensor y, const Tensor& x, double alpha) {
  same("axpy", y, x);
  dispatch("axpy", y, [&](auto z) {
    using T = decltype(z);
    cpu::axpy<T>(y.ptr<T>(), x.ptr<T>(), T(alpha), y.numel());
  });
}

}  // namespace speedrun
