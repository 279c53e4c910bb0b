// TimingBackend: a Backend that forwards every op to another one and, while timing is on,
// measures each: it synchronises the device before and after the op and reads a steady
// clock, so the time is the op's alone. That serialises the device (no overlap of one op
// with the next, no launch queue running ahead), so per-op times add up to more than the
// same ops take in a real step; a real step is timed with timing off, when this class only
// forwards. With timing on it also counts each op's work (train/op_work.h) and files it
// under the current phase ("fwd+bwd", "optimizer", ...) by op name.
//
// The model, the optimizer and the parameters are built on a TimingBackend like on any
// backend; results are bit for bit the wrapped backend's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "train/op_work.h"

namespace speedrun {

// One (phase, op) line: calls and their summed time and work since the last reset.
struct OpStat {
  std::string phase, op;
  int64_t calls = 0;
  double ms = 0;
  double flops = 0;  // matrix-unit work (matmul, attention, Newton-Schulz)
  double bytes = 0;  // memory-bound work
  bool host = false; // a host <-> device transfer (upload, download)
};

class TimingBackend final : public Backend {
 public:
  explicit TimingBackend(Backend& inner) : be_(inner) {}
  // Not copyable: TimingBackend(other_timing_backend) would copy, not wrap; wrap one with
  // TimingBackend(static_cast<Backend&>(other)).
  TimingBackend(const TimingBackend&) = delete;
  TimingBackend& operator=(const TimingBackend&) = delete;

  // Per-op synchronisation, timing and counting on or off (off: plain forwarding).
  void set_timing(bool on) { timing_ = on; }
  bool timing() const { return timing_; }
  // The phase that ops are filed under from now on.
  void set_phase(std::string phase) { phase_ = std::move(phase); }
  // The lines since the last reset, in the order first seen.
  const std::vector<OpStat>& stats() const { return stats_; }
  void reset() { stats_.clear(); }
  Backend& inner() { return be_; }

  std::string name() const override { return be_.name(); }
  std::string numerics() const override { return be_.numerics(); }
  Device device() const override { return be_.device(); }
  Precision default_precision() const override { return be_.default_precision(); }
  void check_precision(const Precision& p) const override { be_.check_precision(p); }

  // Allocation, release and explicit synchronisation are filed too (as host events), so a
  // test can show that a step does none of them: a step that allocates or waits mid-way
  // cannot be captured as a CUDA graph and stalls the GPU's launch queue.
  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void upload(Tensor dst, const void* host) override;
  void download(void* host, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void fill(Tensor t, double value) override;
  void convert(Tensor dst, const Tensor& src) override;
  void sum_into(Tensor acc, const Tensor& t) override;
  void synchronize() override;
  void* stream() const override { return be_.stream(); }
  int device_index() const override { return be_.device_index(); }
  size_t peak_bytes() const override { return be_.peak_bytes(); }
  int64_t preferred_micro_batch_tokens() const override {
    return be_.preferred_micro_batch_tokens();
  }
  int64_t head_chunk_logits() const override { return be_.head_chunk_logits(); }
  int64_t attention_tile(int64_t window) const override { return be_.attention_tile(window); }

  void matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
              bool accumulate) override;
  void matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                  const Tensor& R) override;
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) override;
  void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) override;
  void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) override;
  void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                         bool accumulate) override;
  void skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                             const Tensor& skip, const Coef& c, const Coef& a, const Tensor& y,
                             const Coef& b, double eps) override;
  void skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                              const Tensor& dn, const Tensor& xmix, const Tensor& rstd,
                              const Tensor& h, const Tensor& skip, const Coef& c, const Coef& a,
                              const Tensor& y, const Coef& b) override;
  void qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                   const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                   const Tensor& sin, int64_t T, int64_t H, double eps) override;
  void qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                    const Tensor& qkv, const Tensor& rstd, const Tensor& v1src, const Coef& a,
                    const Coef& b, const Tensor& cos, const Tensor& sin, int64_t T,
                    int64_t H) override;
  void mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x, const Coef& a,
                        const Tensor& y, const Coef& b, double eps) override;
  void mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                         const Tensor& xmix, const Tensor& rstd, const Tensor& x, const Coef& a,
                         const Tensor& y, const Coef& b, const Tensor& dadd) override;
  void rotary_tables(Tensor cos, Tensor sin, double base) override;
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
  bool newton_schulz_is_bf16() const override { return be_.newton_schulz_is_bf16(); }
  void axpy(Tensor y, const Tensor& x, double alpha) override;
  void adam_steps(const std::vector<AdamTensor>& t, const AdamArgs& a) override;
  void muon_apply(const std::vector<MuonApply>& u) override;
  void muon_stack(Tensor X, Tensor input, const std::vector<Tensor>& bufs,
                  const std::vector<Tensor>& grads, double mu, int steps,
                  bool bf16_round) override;
  bool muon_stack_needs_input() const override { return be_.muon_stack_needs_input(); }
  void muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                    double mu) override;

 private:
  // Runs `op` (a callable forwarding to be_); with timing on, between two synchronisations,
  // and files its time with the work `work()` returns (computed outside the timed region).
  template <class Work, class Op>
  void run(const char* name, Work&& work, Op&& op, bool host = false);
  void record(const char* name, double ms, const OpWork& w, bool host);

  Backend& be_;
  bool timing_ = false;
  std::string phase_ = "step";
  std::vector<OpStat> stats_;
};

}  // namespace speedrun
