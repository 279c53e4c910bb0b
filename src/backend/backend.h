// The Backend interface: every op the model, the optimizers and the trainer need, at layer
// granularity. The model is written once against it; a backend (cpu/, cuda/) implements it.
//
// Dimension legend: B sequences, T tokens per sequence, N = B*T rows, C width, H heads,
// D head dim (C = H*D), F = 4C hidden, V vocab, R rows of a chunk of the head.
// Conventions:
//  - Tensors are contiguous, row-major views (core/tensor.h) on this backend's device.
//  - "=" means the output is assigned (every element written); "+=" that it accumulates.
//  - Unless stated, outputs must not alias inputs.
//  - Float tensors of one call share one dtype (F32 on CPU; F64 on CPU for tests);
//    token tensors are I32.
//  - A backend that does not support an op or dtype throws speedrun::Error saying so; it
//    never falls back silently to something slower.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/block_mask.h"
#include "core/tensor.h"

namespace speedrun {

// A scalar coefficient read from a parameter: value = offset + sign * value_param[0], or
// just `offset` when value_param is empty. grad_param (if set) receives
// += sign * dL/d(value) in backward. This covers lambdas[k] (sign 1), the value residual's
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

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // ---- memory -----------------------------------------------------------------------
  // Zero-filled, 64-byte aligned; freed with release().
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void upload(Tensor dst, const void* host) = 0;      // dst = host bytes
  virtual void download(void* host, const Tensor& src) = 0;  // host = src bytes
  virtual void copy(Tensor dst, const Tensor& src) = 0;       // same dtype and numel
  virtual void fill(Tensor t, double value) = 0;
  // dst = src converted to dst's dtype (rounding to nearest even); same numel.
  virtual void convert(Tensor dst, const Tensor& src) = 0;
  // Sum of all elements, in double on the host (synchronises).
  virtual double sum(const Tensor& t) = 0;
  virtual void synchronize() {}

  // ---- linear algebra -----------------------------------------------------------------
  // C[M,N] (= or +=) op(A) op(B); op(A) = A [M,K] or A^T with A stored [K,M]; op(B) = B
  // [K,N] or B^T with B stored [N,K]. Linear layer y = x W^T is matmul(y, x, 0, W, 1, 0);
  // its backward dx = dy W is matmul(dx, dy, 0, W, 0, acc), dW += dy^T x is
  // matmul(dW, dy, 1, x, 0, 1).
  virtual void matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                      bool accumulate) = 0;

  // ---- embedding ----------------------------------------------------------------------
  // out[N,C] = wte[V,C][tokens[N]].
  virtual void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) = 0;
  // dwte[V,C] += scatter of dout[N,C] by tokens (deterministic).
  virtual void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) = 0;

  // ---- rms_norm over the last dimension, no weight ------------------------------------
  // y[R,C] = x * rstd, rstd[R] = 1/sqrt(mean(x^2) + eps). y may alias x.
  virtual void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) = 0;
  // dx[R,C] (= or +=) the gradient through rms_norm given dy, x and the saved rstd.
  virtual void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                 bool accumulate) = 0;

  // ---- QK norm + rotary on heads: x, y [N, C] seen as [N, H, D]; row n at position n % T
  // y = rotary(rms_norm over D of x), rstd [N*H]; cos, sin [T, D/2] (rotary_tables).
  virtual void head_norm_rotary_forward(Tensor y, Tensor rstd, const Tensor& x, const Tensor& cos,
                                        const Tensor& sin, int64_t T, int64_t H, double eps) = 0;
  // dx (=) the gradient through both, given dy, the input x and the saved rstd.
  virtual void head_norm_rotary_backward(Tensor dx, const Tensor& dy, const Tensor& x,
                                         const Tensor& rstd, const Tensor& cos, const Tensor& sin,
                                         int64_t T, int64_t H) = 0;
  // cos, sin [T, D/2] = cos/sin(t * base^(-2j/D)), computed like PyTorch in the tables' dtype.
  virtual void rotary_tables(Tensor cos, Tensor sin, double base) = 0;

  // ---- attention: causal, same document, sliding window (masks[b] for sequence b) ------
  // out [N, C] (=), lse [B, H, T] (=) log-sum-exp of the scaled scores; q, k, v [N, C] with
  // C = H*D; scale multiplies q.k. Blocks a mask does not list are never read.
  virtual void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                                 double scale) = 0;
  // dq, dk, dv [N, C] (=) given dout and the forward's inputs and outputs.
  virtual void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse,
                                  const std::vector<BlockMask>& masks, int64_t H,
                                  double scale) = 0;

  // ---- incremental decoding (sampling with a KV cache) -----------------------------------
  // Both have defaults that throw, so a backend without them still builds; sampling then
  // fails with a message naming the backend.
  // cos, sin [R, D/2] (=) the rotary tables of positions start .. start+R-1, computed as
  // rotary_tables computes its rows (the same bits as rows start.. of a longer table).
  virtual void rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
    fail(name(), " backend: rotary_tables_at is not implemented; sample on the cpu backend");
  }
  // One query over a key/value cache: out [1, C] (=) per head softmax_j(scale q.k_j) v_j
  // over the cache rows j in `rows` (non-empty, each < S), summed in the order given;
  // q [1, C]; k, v [S, C] with C = H*D. out must not alias q, k or v.
  virtual void attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                                const std::vector<int32_t>& rows, int64_t H, double scale) {
    fail(name(), " backend: attention_decode is not implemented; sample on the cpu backend");
  }

  // ---- MLP activation -----------------------------------------------------------------
  // y = relu(x)^2 (=).
  virtual void relu_squared_forward(Tensor y, const Tensor& x) = 0;
  // dx = 2 relu(x) dy (=); dx may alias dy.
  virtual void relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& x) = 0;

  // ---- scalar-weighted sums (lambdas, value residual, U-net skips) ----------------------
  // out = a*x + b*y (=); out may alias x or y.
  virtual void scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                                  const Coef& b) = 0;
  // dx (= or +=) a*dout, dy (= or +=) b*dout (either may be empty to skip it); a.grad_param
  // += a.sign * <dout, x>, b.grad_param += b.sign * <dout, y> (deterministic reductions).
  // dx and dy may alias when both accumulate; dx may alias dout when it assigns.
  virtual void scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y,
                                   const Tensor& dout, const Tensor& x, const Coef& a,
                                   const Tensor& y, const Coef& b) = 0;

  // ---- head: softcap + cross entropy, fused --------------------------------------------
  // logits [R, V] raw; z = cap*tanh(l/cap); losses[R] (=) logsumexp(z) - z[target].
  // With backward, logits is overwritten by dL/dlogits for L = grad_scale * sum(losses).
  virtual void softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets,
                                     double cap, double grad_scale, bool backward) = 0;

  // ---- optimizer updates (state lives on the device) ------------------------------------
  // PyTorch's Adam on p with gradient g and moments m, v (all same shape).
  virtual void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) = 0;
  // buf = mu*buf + g; out = g + mu*buf (Nesterov). out may alias g.
  virtual void muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) = 0;
  // X[rows, cols] (=) the record's 5-step quintic Newton-Schulz orthogonalisation of G.
  // bf16_round emulates the record's bf16 arithmetic (rounds every stored intermediate).
  virtual void newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) = 0;
  // y += alpha * x.
  virtual void axpy(Tensor y, const Tensor& x, double alpha) = 0;
};

}  // namespace speedrun
