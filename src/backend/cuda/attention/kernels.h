// The launches of the attention kernels (forward.cu, backward.cu and their wgmma versions),
// for runner.cpp. Tensors are bf16 [N, C] head-interleaved (row n, head h at n * ld + h * D),
// lse and delta fp32 [B, H, T]; `plan` points at the device copy of the work lists (plan.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention/plan.h"
#include "backend/cuda/attention/tile_math.h"

namespace speedrun::cuda::attn {

struct ForwardArgs {
  PlanView plan;
  const void *q, *k, *v;  // bf16 [N, C]
  void* out;              // bf16 [N, C]
  float* lse;             // [B, H, T]
  int64_t ld;             // C = H * D
  int H;
  float scale;
};

struct BackwardArgs {
  PlanView plan;
  const void *q, *k, *v, *out, *dout;  // bf16 [N, C]
  const float* lse;                    // [B, H, T], the forward's
  float* delta;                        // [B, H, T] scratch: rowsum(dO * O), dq_kernel's for dkv_kernel
  void *dq, *dk, *dv;                  // bf16 [N, C]
  int64_t ld;                          // C = H * D
  int64_t N;                           // B * T rows
  int H;
  float scale;
};

// f.template operator()<kD, kT>() for the kernel set of head dim D and tiling t, where
// prepare and launch pick their template instances: head dim 64 has one set (kWide's
// chunks are also kNarrow's, plan.h), head dim 128 one per tiling. Callers pass a lambda
// with a capture default even when it captures nothing: a captureless template lambda has
// a conversion to a function pointer whose template parameters nvcc warns are unused.
template <class F>
cudaError_t with_kernel_set(int D, Tiling t, F&& f) {
  if (D == 64) return f.template operator()<64, Tiling::kWide>();
  return t == Tiling::kWide ? f.template operator()<128, Tiling::kWide>()
                            : f.template operator()<128, Tiling::kNarrow>();
}

// Raise the dynamic shared-memory limits of the head-dim-D kernels of a tiling (plan.h) on
// the current device.
cudaError_t prepare_forward(int D, Tiling t);
cudaError_t prepare_backward(int D, Tiling t);
// Enqueue on `stream`; return the launch error (cudaSuccess when all launched).
cudaError_t launch_forward(int D, Tiling t, const ForwardArgs& a, cudaStream_t stream);
// The wgmma forward (forward_wgmma.cu, head dims 64 and 128, its own chunks: plan.h), and
// the SASS version its kernels run as on the current GPU (90 where built for sm_90a and run
// on an sm_90 GPU; 0 where they have no code for it).
cudaError_t prepare_forward_wgmma(int D);
cudaError_t launch_forward_wgmma(int D, const ForwardArgs& a, cudaStream_t stream);
int forward_wgmma_binary_version();
// dQ over query tiles (and D_i = rowsum(dO * O) for each), then dK/dV over key tiles.
cudaError_t launch_backward(int D, Tiling t, const BackwardArgs& a, cudaStream_t stream);
// The same on wgmma (backward_wgmma.cu, head dims 64 and 128, its own chunks: plan.h), and
// the SASS version its kernels run as on the current GPU, as for the forward's.
cudaError_t prepare_backward_wgmma(int D);
cudaError_t launch_backward_wgmma(int D, const BackwardArgs& a, cudaStream_t stream);
int backward_wgmma_binary_version();

}  // namespace speedrun::cuda::attn
