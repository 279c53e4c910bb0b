// The Backend interface: every op the model, the optimizers and the trainer need, at layer
// granularity. The model is written once against it; a backend (cpu/, cuda/) implements it
// and is built by name (backend/factory.h).
//
// Dimension legend: B sequences, T tokens per sequence, N = B*T rows, C width, H heads,
// D head dim (C = H*D), F = 4C hidden, V vocab, R rows of a chunk of the head.
// Conventions:
//  - Tensors are contiguous, row-major views (core/tensor.h) on this backend's device.
//  - "=" means the output is assigned (every element written); "+=" that it accumulates.
//  - Unless stated, outputs must not alias inputs.
//  - Each operand's dtype is one class of the run's precision policy (core/precision.h),
//    marked after its shape: (m) master, (c) compute, (s) statistics, (g) gradient; token
//    tensors are I32. Under fp32 or fp64 every class is the same dtype; under bf16
//    (c) is BF16 and (m), (s), (g) are F32.
//  - Ops are asynchronous on an asynchronous device: only download(), synchronize() and
//    the host-side helpers below wait for the device. Forward and backward never need to.
//  - A backend that does not support an op or dtype throws speedrun::Error saying so; it
//    never falls back silently to something slower.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/block_mask.h"
#include "core/precision.h"
#include "core/tensor.h"

namespace speedrun {

// A scalar coefficient read from a parameter: value = offset + sign * value_param[0], or
// just `offset` when value_param is empty. grad_param (if set) receives
// += sign * dL/d(value) in backward. value_param is a master (m) scalar, grad_param a
// gradient (g) scalar; both stay on the device (no host round trip inside a step). This covers lambdas[k] (sign 1), the value residual's
// (1 - lamb) (offset 1, sign -1) and the constant 1 of a plain residual add.
struct Coef {
  Tensor value_param;  // 0-dim view of a parameter, or empty
  Tensor grad_param;   // 0-dim view of its gradient, or empty
  double sign = 1.0;
  double offset = 0.0;
  static Coef constant(double c) { return Coef{{}, {}, 1.0, c}; }
  static Coef param(Tensor v, Tensor g) { return Coef{v, g, 1.0, 0.0}; }
  static Coef one_minus(Tensor v, Tensor g) { return Coef{v, g, -1.0, 1.0}; }
};

struct AdamArgs {
  double lr = 0, beta1 = 0.8, beta2 = 0.95, eps = 1e-8;
  int64_t step = 1;  // counts from 1
};

// One parameter of Backend::adam_steps: adam_step(p, g, m, v) at its own lr, then its
// compute copy (c; empty: none) = p in the copy's dtype.
struct AdamTensor {
  Tensor p, g, m, v, copy;
  double lr = 0;
};

// One matrix of Backend::muon_apply: p (m) += alpha * update (g), then its compute copy (c;
// empty: none) = p in the copy's dtype. The update may also be (c) where that is narrower:
// the bf16 copy another rank sent of an update whose values are bf16
// (newton_schulz_is_bf16), read as the wider values it holds exactly.
struct MuonApply {
  Tensor p, update, copy;
  double alpha = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // What, beyond the inputs, decides the bits of a result: the device and, on a CPU, the
  // threads a reduction is split over ("cpu, 2 threads"). A checkpoint records it; a resume
  // where it differs continues the same training, but not bit for bit.
  virtual std::string numerics() const { return name(); }

  // ---- precision ----------------------------------------------------------------------
  // The policy used when the user asks for none (--dtype auto).
  virtual Precision default_precision() const = 0;
  // Throws, naming the backend, the policy and what it supports, unless it can run it.
  virtual void check_precision(const Precision& p) const = 0;

  // ---- memory -----------------------------------------------------------------------
  // Zero-filled, 64-byte aligned; freed with release(), which first waits for queued work
  // that may still read or write the memory (so it may be called right after the last op).
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void upload(Tensor dst, const void* host) = 0;      // dst = host bytes
  virtual void download(void* host, const Tensor& src) = 0;  // host = src bytes (waits)
  virtual void copy(Tensor dst, const Tensor& src) = 0;       // same dtype and numel
  virtual void fill(Tensor t, double value) = 0;
  // dst = src converted to dst's dtype (rounding to nearest even); same numel. Any of
  // F32, F64, BF16 to any of them.
  virtual void convert(Tensor dst, const Tensor& src) = 0;
  // acc (0-dim F64) += the sum of t's elements, accumulated in double, on the device: the
  // loss of a step is read once, after the step (no synchronisation inside it).
  virtual void sum_into(Tensor acc, const Tensor& t) = 0;
  // Waits until every op issued so far has finished (timing points, host reads).
  virtual void synchronize() {}
  // The device queue this backend's ops run on (a cudaStream_t on CUDA), so a communicator
  // can order its collectives with them; nullptr on the CPU.
  virtual void* stream() const { return nullptr; }
  // The device index (GPU ordinal) this backend runs on; 0 on the CPU.
  virtual int device_index() const { return 0; }
  // Peak device memory allocated so far, in bytes (0 when the backend does not track it).
  virtual size_t peak_bytes() const { return 0; }
  // The most tokens a micro-batch should hold on this backend when the user leaves
  // --grad-accum to auto (0: no limit: one micro-batch per step).
  virtual int64_t preferred_micro_batch_tokens() const { return 0; }
  // How many logits the model's head computes at once (rows of a chunk times the
  // vocabulary). Each chunk's backward reads lm_head once more and adds into its whole
  // gradient, so a chunk too small pays that traffic many times; one too large holds
  // logits the size of the whole batch.
  virtual int64_t head_chunk_logits() const { return int64_t(1) << 25; }
  // The tile edge (tokens) of the block masks this backend's attention takes best at this
  // window; the model builds its masks with it unless its config names one
  // (GPTConfig::attn_tile). The tile decides only which pairs are computed and then masked,
  // never which are visible: a mask lists every tile holding a visible pair, so a small
  // window wastes most of a large tile (a 128-token query tile at window 64 computes about
  // four times its visible pairs), while a small tile makes small products.
  virtual int64_t attention_tile(int64_t window) const { return 128; }

  // ---- host-side helpers (synchronising; for checkpoints, tests and sampling) ----------
  // The tensor's values in double on the host (exact: F32 and BF16 are downloaded as they
  // are and widened on the host, with no device memory); a tensor from double host values,
  // rounded as convert() rounds (F32 on the host, other dtypes by convert() on the device).
  std::vector<double> to_host_f64(const Tensor& t);
  void from_host_f64(Tensor t, const std::vector<double>& values);

  // ---- linear algebra -----------------------------------------------------------------
  // C[M,N] (= or +=) op(A) op(B); op(A) = A [M,K] or A^T with A stored [K,M]; op(B) = B
  // [K,N] or B^T with B stored [N,K]. A, B (c); C (c), or (g) when it is a weight gradient
  // (the bf16 policy accumulates weight gradients in F32). Linear layer y = x W^T is
  // matmul(y, x, 0, W, 1, 0); its backward dx = dy W is matmul(dx, dy, 0, W, 0, acc),
  // dW += dy^T x is matmul(dW, dy, 1, x, 0, 1).
  virtual void matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                      bool accumulate) = 0;
  // C[M,N] (c) = op(A) op(B) + R[M,N] (c): a layer's output added to the residual stream
  // R, which is read and left as it is (R has C's shape and dtype; R may be C itself). The
  // default copies R into C and accumulates, the values and rounding a backend that fuses
  // the two must give too: the CUDA backend hands R to cuBLASLt as the GEMM's C and C as
  // its D, one pass instead of a copy and a GEMM.
  virtual void matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                          const Tensor& R);

  // ---- embedding ----------------------------------------------------------------------
  // out[N,C] (c) = wte[V,C] (c) [tokens[N]].
  virtual void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) = 0;
  // dwte[V,C] (g) += scatter of dout[N,C] (c) by tokens (deterministic: no float atomics,
  // the same bits on every run).
  virtual void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) = 0;

  // ---- rms_norm over the last dimension, no weight ------------------------------------
  // y[R,C] (c) = x (c) * rstd, rstd[R] (s) = 1/sqrt(mean(x^2) + eps). y may alias x.
  virtual void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) = 0;
  // dx[R,C] (c) (= or +=) the gradient through rms_norm given dy (c), x (c) and the saved
  // rstd (s).
  virtual void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                 bool accumulate) = 0;

  // ---- a block's input: the lambdas' mix, then rms_norm, fused ------------------------
  // xmix [R, C] (c) (=) a*x + b*y as scaled_sum_forward; n (c) (=) and rstd [R] (s) (=) as
  // rms_norm_forward of that (rounded) xmix. x, y (c). xmix may alias x.
  virtual void mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                                const Coef& a, const Tensor& y, const Coef& b, double eps) = 0;
  // The gradient through both, given dn (c) and dres (c), the gradient xmix gets from
  // elsewhere (the residual stream): g = dres + rms_norm_backward(dn, xmix, rstd), rounded
  // as rms_norm_backward accumulating into dres rounds it; then as scaled_sum_backward with
  // dout = g: dx (=) a*g, dy (+=) b*g, a.grad_param += a.sign <g, x>, b.grad_param +=
  // b.sign <g, y> (deterministic). dx may alias dres. Where dadd (c) is not empty, dx then
  // (=) dx + dadd, rounded as axpy(dx, dadd, 1) adds it after the op (a U-net encoder
  // output's gradient from its skip, added where dx is written instead of in a pass of its
  // own); dadd must not alias dx or dy. dx may be empty where x is y (the same tensor: the
  // first block, whose input is x0 itself): then dy is the whole gradient, dy (+=) b*g as
  // above, then + a*g, rounded as axpy(dy, dx, 1) would add the dx written otherwise;
  // nothing else is written (no dadd then).
  virtual void mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                                 const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                 const Coef& a, const Tensor& y, const Coef& b,
                                 const Tensor& dadd) = 0;

  // A U-net decoder block's input, its skip folded in: xin = h + c*skip as
  // scaled_sum_forward(xin, h, 1, skip, c) would store it, formed per element and never
  // stored; then mix_norm_forward(xmix, n, rstd, xin, a, y, b, eps). h, skip, y (c).
  // (The default stores xin in xmix first.)
  virtual void skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                                     const Tensor& skip, const Coef& c, const Coef& a,
                                     const Tensor& y, const Coef& b, double eps);
  // Its gradient: xin recomputed from h and skip as the forward formed it, then
  // mix_norm_backward(dx, dy, dres, dn, xmix, rstd, xin, a, y, b) (dx = d xin = d h), then
  // scaled_sum_backward's for skip with dout = dx: dskip [R, C] (c) (=) c*dx and
  // c.grad_param += c.sign <dx, skip> (deterministic). dx may alias dres; dskip must alias
  // nothing. (The default recomputes xin into dskip first.)
  // dskip may be empty where skip is h (the same tensor: the first decoder block, whose
  // skip is the encoder output it also takes as h): then d h is the whole gradient, and dx
  // (=) dx + c*dx, rounded as axpy(dx, dskip, 1) would add the dskip above; nothing else
  // is written. (The default holds xin and c*dx in a temporary of its own.)
  virtual void skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                                      const Tensor& dn, const Tensor& xmix, const Tensor& rstd,
                                      const Tensor& h, const Tensor& skip, const Coef& c,
                                      const Coef& a, const Tensor& y, const Coef& b);

  // ---- rotary tables -------------------------------------------------------------------
  // cos, sin [T, D/2] (s) = cos/sin(t * base^(-2j/D)), computed like PyTorch in the tables'
  // dtype.
  virtual void rotary_tables(Tensor cos, Tensor sin, double base) = 0;

  // ---- attention's inputs from the stacked q/k/v projection ---------------------------
  // qkv [N, 3C] (c) is n1 [c_q; c_k; c_v]^T (one GEMM): columns [0, C) q_raw, [C, 2C)
  // k_raw, [2C, 3C) v_raw, each seen as [N, H, D], row n at position n % T. v1src [N, 3C]
  // (c) is layer 0's qkv (qkv itself in layer 0); v1 is its v_raw. q, k, v [N, C] (c) (=),
  // rstd [2, N*H] (s) (=, q's heads then k's); cos, sin [T, D/2] (s) (rotary_tables):
  //   q, k = QK norm then rotary of q_raw, k_raw: per head x, rstd = 1/sqrt(mean(x^2) +
  //     eps), with x1|x2 the halves of x*rstd: y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos;
  //   v = a*v_raw + b*v1, as scaled_sum_forward.
  virtual void qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                           const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                           const Tensor& sin, int64_t T, int64_t H, double eps) = 0;
  // dqkv [N, 3C] (c) (=) the gradient of qkv given dq, dk, dv [N, C] (c) and the forward's
  // qkv, rstd and v1src: dq_raw, dk_raw through rotary and QK norm (with the saved rstd);
  // a.grad_param += a.sign <dv, v_raw>, b.grad_param += b.sign <dv, v1> (deterministic);
  //   layers > 0 (v1src is not qkv): dv_raw = a*dv, dv1 [N, C] (c) (+=) b*dv;
  //   layer 0 (v1src is qkv): dv1 += a*dv, then dv1 += b*dv (each rounded, as
  //   scaled_sum_backward adds two terms into one buffer), and dv_raw = dv1: the whole
  //   gradient of v1, which every later layer has added to.
  // dqkv must not alias the other tensors.
  virtual void qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk,
                            const Tensor& dv, const Tensor& qkv, const Tensor& rstd,
                            const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                            const Tensor& sin, int64_t T, int64_t H) = 0;

  // ---- attention: causal, same document, sliding window (masks[b] for sequence b) ------
  // out [N, C] (c) (=), lse [B, H, T] (s) (=) log-sum-exp of the scaled scores; q, k, v
  // [N, C] (c) with C = H*D; scale multiplies q.k. Blocks a mask does not list are never
  // read. The masks are host data built once per micro-batch; a device backend copies
  // their lists itself.
  virtual void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                                 double scale) = 0;
  // dq, dk, dv [N, C] (c) (=) given dout (c) and the forward's inputs and outputs.
  // Deterministic: the same bits on every run.
  virtual void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse,
                                  const std::vector<BlockMask>& masks, int64_t H,
                                  double scale) = 0;

  // ---- incremental decoding (sampling with a KV cache) -----------------------------------
  // Both have defaults that throw, so a backend without them still builds; sampling then
  // fails with a message naming the backend.
  // cos, sin [R, D/2] (s) (=) the rotary tables of positions start .. start+R-1, computed as
  // rotary_tables computes its rows (the same bits as rows start.. of a longer table).
  virtual void rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
    fail(name(), " backend: rotary_tables_at is not implemented; sample with --device cpu");
  }
  // One query over a key/value cache: out [1, C] (c) (=) per head softmax_j(scale q.k_j) v_j
  // over the cache rows j in `rows` (non-empty, each < S), summed in the order given;
  // q [1, C] (c); k, v [S, C] (c) with C = H*D. out must not alias q, k or v.
  virtual void attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                                const std::vector<int32_t>& rows, int64_t H, double scale) {
    fail(name(), " backend: attention_decode is not implemented; sample with --device cpu");
  }

  // ---- MLP activation -----------------------------------------------------------------
  // y = relu(x)^2 (=); x, y (c); y may alias x (the model computes it in place).
  virtual void relu_squared_forward(Tensor y, const Tensor& x) = 0;
  // dx = 2 sqrt(y) dy (=), from the forward's output y = relu(x)^2: so the forward's input
  // need not be kept. sqrt(y) is relu(x) exactly in fp32 and fp64 (the correctly rounded root
  // of a correctly rounded square is the number, wherever the square neither underflows nor
  // overflows), so dx = 2 relu(x) dy with the same bits; in bf16, y's rounding moves sqrt(y)
  // by at most half an ulp of relu(x). All (c); dx may alias dy.
  virtual void relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) = 0;

  // ---- scalar-weighted sums (lambdas, value residual, U-net skips) ----------------------
  // out = a*x + b*y (=); out, x, y (c); out may alias x or y.
  virtual void scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                                  const Coef& b) = 0;
  // dx (= or +=) a*dout, dy (= or +=) b*dout (either may be empty to skip it); a.grad_param
  // += a.sign * <dout, x>, b.grad_param += b.sign * <dout, y> (deterministic reductions).
  // dx, dy, dout, x, y (c). dx and dy may alias when both accumulate; dx may alias dout
  // when it assigns.
  virtual void scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y,
                                   const Tensor& dout, const Tensor& x, const Coef& a,
                                   const Tensor& y, const Coef& b) = 0;

  // ---- head: softcap + cross entropy, fused --------------------------------------------
  // logits [R, V] (c) raw; z = cap*tanh(l/cap) computed in at least F32; losses[R] (s) (=)
  // logsumexp(z) - z[target]. With backward, logits is overwritten by dL/dlogits for
  // L = grad_scale * sum(losses).
  virtual void softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets,
                                     double cap, double grad_scale, bool backward) = 0;

  // ---- optimizer updates (state lives on the device) ------------------------------------
  // PyTorch's Adam on p (m) with gradient g (g) and moments m, v (m) (all same shape).
  virtual void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) = 0;
  // buf (m) = mu*buf + g; out = g + mu*buf (Nesterov); g, out (g). out may alias g.
  virtual void muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) = 0;
  // X (=) the record's quintic Newton-Schulz orthogonalisation of G, `steps` iterations;
  // G, X (g) of one shape: [rows, cols], or [n, rows, cols] for n matrices of one shape,
  // each orthogonalised on its own (a GPU runs them as batched GEMMs). bf16_round emulates
  // the record's bf16 arithmetic (rounds every stored intermediate); a bf16 backend
  // computes in bf16 whatever it is given.
  virtual void newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) = 0;
  // True when newton_schulz's X holds bf16 values whatever bf16_round says (X's dtype may
  // be wider): a bf16 copy of it is exact, and newton_schulz and muon_stack also take a
  // BF16 X, which then holds them as they are (no wider copy is written).
  virtual bool newton_schulz_is_bf16() const { return false; }
  // y (m) += alpha * x (g) in the optimizer; GPT's backward also adds activation
  // gradients with it, y and x (c).
  virtual void axpy(Tensor y, const Tensor& x, double alpha) = 0;

  // ---- the optimizer's ops over many tensors at once ----------------------------------------
  // Each has the values of the single-tensor ops it is defined by (the default runs them one
  // by one); a GPU does each in a launch or two instead of one per tensor, and reads every
  // master once for its update and its compute copy.
  //
  // For each t: adam_step(t.p, t.g, t.m, t.v, a with lr = t.lr), then convert(t.copy, t.p)
  // where t.copy is not empty. a.lr is not read. The tensors must not overlap.
  virtual void adam_steps(const std::vector<AdamTensor>& t, const AdamArgs& a);
  // For each u: axpy(u.p, u.update, u.alpha) (an update narrower than p converted to p's
  // dtype first), then convert(u.copy, u.p) where u.copy is not empty. The p's and copies
  // must not overlap each other or the updates.
  virtual void muon_apply(const std::vector<MuonApply>& u);
  // Muon on a stack of n matrices of one shape [rows, cols]: for each k,
  // muon_momentum(input[k], bufs[k], grads[k], mu) (Nesterov), then
  // newton_schulz(X, input, steps, bf16_round) with X [n, rows, cols] (g). input: the stack
  // of Nesterov values [n, rows, cols] (g), or empty where muon_stack_needs_input() is false
  // (a backend that folds the momentum into the Newton-Schulz's first read, so the values
  // never go to memory); when given, what it holds afterwards is unspecified. grads[k] is
  // not modified.
  virtual void muon_stack(Tensor X, Tensor input, const std::vector<Tensor>& bufs,
                          const std::vector<Tensor>& grads, double mu, int steps, bool bf16_round);
  virtual bool muon_stack_needs_input() const { return true; }
  // Muon's momentum alone, for the matrices another rank orthogonalises (every rank keeps
  // every buffer): for each k, bufs[k] (m) = mu*bufs[k] + grads[k] as muon_momentum updates
  // it; the Nesterov value is not needed, and what grads[k] (g) holds afterwards is
  // unspecified (the default runs muon_momentum(grads[k], bufs[k], grads[k], mu)).
  virtual void muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                            double mu);

 protected:
  // mix_norm_backward with dx empty (x is y), as the ops it stands for: the op into a
  // temporary dx, then axpy(dy, dx, 1). For a backend without a fused path for it.
  void mix_norm_backward_into_y(Tensor dy, const Tensor& dres, const Tensor& dn,
                                const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                const Coef& a, const Tensor& y, const Coef& b,
                                const Tensor& dadd);
  // matmul_add's contract on R (C's shape and dtype), for the default and any override.
  void check_residual(const Tensor& C, const Tensor& R) const;
};

}  // namespace speedrun
