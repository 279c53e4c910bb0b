// Flash attention on the GPU for the Backend's attention_forward / attention_backward
// (backend.h has the contract): causal, same-document, sliding-window attention that walks
// only the 128x128 tiles a BlockMask lists, with the exact rule applied inside partial
// tiles, bf16 q/k/v/out/dq/dk/dv, fp32 lse. The window is a plain integer per call (no
// recompilation). The backward is deterministic (no atomics).
//
// AttentionRunner is owned by the CUDA backend (one per backend, on its stream). It turns
// the host masks of a micro-batch into device work lists (uploaded once per distinct set
// of masks, reused by the backward of the same micro-batch), and launches the kernels.
// This header is plain C++ so the backend's family files can include it freely.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backend/block_mask.h"
#include "backend/cuda/attention/plan.h"
#include "core/tensor.h"

namespace speedrun::cuda {

class AttentionRunner {
 public:
  // stream: the backend's cudaStream_t, passed as void* to keep CUDA types out of here.
  // tiling: the kernels' chunk sizes (plan.h); by default the widest the current GPU's
  // shared memory per block holds. An Error where the GPU holds neither.
  // forward, backward: the kernels (plan.h); by default SPEEDRUN_ATTENTION_FORWARD's and
  // SPEEDRUN_ATTENTION_BACKWARD's (mma when unset). An Error where wgmma is asked for and
  // this GPU or build cannot run it.
  // order: the work items' order (plan.h ItemOrder); by default SPEEDRUN_ATTENTION_ORDER's
  // (longest when unset).
  explicit AttentionRunner(void* stream, std::optional<attn::Tiling> tiling = std::nullopt,
                           std::optional<attn::ForwardKernel> forward = std::nullopt,
                           std::optional<attn::BackwardKernel> backward = std::nullopt,
                           std::optional<attn::ItemOrder> order = std::nullopt);
  ~AttentionRunner();
  AttentionRunner(const AttentionRunner&) = delete;
  AttentionRunner& operator=(const AttentionRunner&) = delete;

  // As Backend::attention_forward: out [N, C] (bf16), lse [B, H, T] (f32), q, k, v [N, C]
  // (bf16) on the device; head dims 64 and 128.
  void forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
               const std::vector<BlockMask>& masks, int64_t H, double scale);
  // As Backend::attention_backward: dq, dk, dv [N, C] (bf16, =).
  void backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                const std::vector<BlockMask>& masks, int64_t H, double scale);

  attn::Tiling tiling() const;
  attn::ForwardKernel forward_kernel() const;
  attn::BackwardKernel backward_kernel() const;
  attn::ItemOrder item_order() const;
  // Device bytes held for work lists and scratch (for the memory report).
  size_t device_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace speedrun::cuda
