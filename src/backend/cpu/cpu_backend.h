// The CPU backend: fp32 (and fp64 for tests) on host memory; OpenBLAS for every matmul,
// OpenMP for the rest. Each op dispatches on dtype to the templated kernels in this folder.
#pragma once
#include "backend/backend.h"

namespace speedrun {

class CpuBackend final : public Backend {
 public:
  // threads <= 0 keeps OpenMP's default (all cores).
  explicit CpuBackend(int threads = 0);
  std::string name() const override { return "cpu"; }
  std::string numerics() const override;  // "cpu, N threads"
  Device device() const override { return Device::CPU; }
  static void set_threads(int threads);

  // fp32 for training, fp64 for exact comparisons; one dtype for every tensor class.
  Precision default_precision() const override { return named_precision(PrecisionChoice::FP32); }
  void check_precision(const Precision& p) const override;

  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void upload(Tensor dst, const void* host) override;
  void download(void* host, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void fill(Tensor t, double value) override;
  void convert(Tensor dst, const Tensor& src) override;
  void sum_into(Tensor acc, const Tensor& t) override;
  // 32 up to window 64, 64 up to 256, else 128: each tile's products run through OpenBLAS,
  // which does more per call on larger ones, so the best tile trades its products' size
  // against the masked pairs a large tile computes. `build/bench_attention --tiles`
  // (docs/PERFORMANCE.md): at windows 32-64 tile 32 takes 0.4-0.7x the time of 128, at 128
  // tile 64 0.8-0.9x; from 512 up 64 and 128 are within the machine's noise of each other.
  int64_t attention_tile(int64_t window) const override;

  void matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
              bool accumulate) override;
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) override;
  void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) override;
  void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) override;
  void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                         bool accumulate) override;
  void mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x, const Coef& a,
                        const Tensor& y, const Coef& b, double eps) override;
  void mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                         const Tensor& xmix, const Tensor& rstd, const Tensor& x, const Coef& a,
                         const Tensor& y, const Coef& b, const Tensor& dadd) override;
  void rotary_tables(Tensor cos, Tensor sin, double base) override;
  void qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                   const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                   const Tensor& sin, int64_t T, int64_t H, double eps) override;
  void qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                    const Tensor& qkv, const Tensor& rstd, const Tensor& v1src, const Coef& a,
                    const Coef& b, const Tensor& cos, const Tensor& sin, int64_t T,
                    int64_t H) override;
  void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                         double scale) override;
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const std::vector<BlockMask>& masks, int64_t H, double scale) override;
  void rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) override;
  void attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const std::vector<int32_t>& rows, int64_t H, double scale) override;
  void relu_squared_forward(Tensor y, const Tensor& x) override;
  void relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) override;
  void scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                          const Coef& b) override;
  void scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y, const Tensor& dout,
                           const Tensor& x, const Coef& a, const Tensor& y,
                           const Coef& b) override;
  void softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double cap,
                             double grad_scale, bool backward) override;
  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) override;
  void muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) override;
  void newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) override;
  void axpy(Tensor y, const Tensor& x, double alpha) override;
};

}  // namespace speedrun
