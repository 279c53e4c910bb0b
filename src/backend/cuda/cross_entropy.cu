// Softcap + cross entropy, one block of kHeadRowThreads per row of bf16 logits (plan.h: why
// so many), all math in fp32 (math/cross_entropy.h): each thread keeps an online (max, sum)
// over its logits, the states merge across the warp (butterfly) and then across the warps in
// warp order, so every thread holds the row's state; the loss goes to losses[row] (F32) and,
// with backward, a second pass overwrites the logits with the gradient in bf16.
// kKeep (backward, where a block may hold the row's V floats in shared memory: Hopper's
// 227 KiB, 201 KB at V = 50,304): the first pass keeps each logit's th = tanh(l / cap)
// there, so the second neither reads the logits again nor computes a tanh (t = th k is how
// softcap2 forms t: the same bits), ~34 instructions per logit instead of 52
// (docs/PERFORMANCE.md).
// Targets outside [0, V) (GPT validates them first) give a NaN loss.
#include <cstdio>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/cross_entropy.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

using math::SoftmaxState;

template <bool Vec, bool kKeep>
__global__ void __launch_bounds__(kHeadRowThreads)
    softcap_cross_entropy_kernel(uint16_t* logits, float* losses, const int32_t* targets,
                                 int64_t V, float cap, float grad_scale, bool backward) {
  __shared__ SoftmaxState warp_states[kHeadRowThreads / 32];
  SR_DYNAMIC_SMEM(kept_raw);  // kKeep: the row's th, [V] floats
  float* kept = reinterpret_cast<float*>(kept_raw);
  const int64_t row = blockIdx.x;
  uint16_t* l = logits + row * V;
  const math::Softcap c = math::softcap_of(cap);
  SoftmaxState st = math::softmax_start(c);
  float th;
  if constexpr (Vec) {
    for (int64_t i = threadIdx.x * 8; i < V; i += int64_t(blockDim.x) * 8) {
      float v[8];
      load8(l + i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        math::softmax_add(st, math::softcap2(v[k], c, th));
        if constexpr (kKeep) kept[i + k] = th;
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      math::softmax_add(st, math::softcap2(load_bf16(l + i), c, th));
      if constexpr (kKeep) kept[i] = th;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const SoftmaxState other{__shfl_xor_sync(0xffffffffu, st.m, o),
                             __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = math::softmax_merge(st, other);
  }
  if ((threadIdx.x & 31) == 0) warp_states[threadIdx.x >> 5] = st;
  __syncthreads();
  st = warp_states[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) st = math::softmax_merge(st, warp_states[w]);

  const int32_t target = targets[row];
  const bool valid = target >= 0 && target < V;
  if (threadIdx.x == 0) {
    const float tt = valid ? math::softcap2(load_bf16(l + target), c, th) : __int_as_float(0x7fc00000);
    losses[row] = math::ce_loss(st, tt);
  }
  if (!backward) return;
  // Every thread has read its logits above, and the barrier orders those reads before any
  // write below (thread 0 read l[target] before the barrier too). With kKeep each thread
  // reads back the th it wrote itself.
  __syncthreads();
  const float inv = 1.0f / st.s;
  if constexpr (Vec) {
    for (int64_t i = threadIdx.x * 8; i < V; i += int64_t(blockDim.x) * 8) {
      float v[8];
      if constexpr (!kKeep) load8(l + i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        float t;
        if constexpr (kKeep) {
          th = kept[i + k];
          t = th * c.k;
        } else {
          t = math::softcap2(v[k], c, th);
        }
        v[k] = math::ce_grad(t, th, i + k == target, st, inv, grad_scale);
      }
      store8(l + i, v);
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      float t;
      if constexpr (kKeep) {
        th = kept[i];
        t = th * c.k;
      } else {
        t = math::softcap2(load_bf16(l + i), c, th);
      }
      store_bf16(l + i, math::ce_grad(t, th, i == target, st, inv, grad_scale));
    }
  }
}

}  // namespace

size_t CudaBackend::head_row_keep_bytes(int64_t V) {
  if (head_row_smem_ < 0) {  // once: what a block may hold, and the kernels allowed it
    int optin = 0;
    check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, gpu_),
               "softcap_cross_entropy", "reading the GPU's shared memory per block");
    // The static part (warp_states) comes out of the same budget: the compiler's count of
    // it (cudaFuncGetAttributes), so that a static array added later is counted too, and
    // at least the one this file declares (the emulator reports none).
    const void* kernels[] = {
        reinterpret_cast<const void*>(&softcap_cross_entropy_kernel<true, true>),
        reinterpret_cast<const void*>(&softcap_cross_entropy_kernel<false, true>)};
    int64_t fixed = kHeadRowThreads / 32 * int64_t(sizeof(SoftmaxState));
    for (const void* k : kernels) {
      cudaFuncAttributes fa{};
      check_cuda(cudaFuncGetAttributes(&fa, k), "softcap_cross_entropy",
                 "reading its kernel's static shared memory");
      fixed = std::max<int64_t>(fixed, int64_t(fa.sharedSizeBytes));
    }
    head_row_smem_ = std::max<int64_t>(0, int64_t(optin) - fixed);
    for (const void* k : kernels)
      check_cuda(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(head_row_smem_)),
                 "softcap_cross_entropy", "allowing its blocks the GPU's shared memory");
  }
  const int64_t bytes = V * int64_t(sizeof(float));
  return bytes <= head_row_smem_ ? size_t(bytes) : 0;
}

void CudaBackend::softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets,
                                        double cap, double grad_scale, bool backward) {
  const char* op = "softcap_cross_entropy";
  need(op, "logits", logits, DType::BF16);
  need(op, "losses", losses, DType::F32);
  need(op, "targets", targets, DType::I32);
  const int64_t R = logits.rows(), V = logits.cols();
  check(losses.numel() == R && targets.numel() == R, "cuda softcap_cross_entropy: ", R,
        " rows but ", losses.numel(), " losses and ", targets.numel(), " targets");
  check(cap > 0, "cuda softcap_cross_entropy: cap ", cap, " must be positive");
  check(R < (int64_t(1) << 31), "cuda softcap_cross_entropy: ", R, " rows exceed 2^31");
  if (R == 0) return;
  auto* pl = static_cast<uint16_t*>(logits.data);
  auto* ploss = static_cast<float*>(losses.data);
  const auto* pt = static_cast<const int32_t*>(targets.data);
  const Launch l = block_rows_launch(R, kHeadRowThreads);
  const bool vec = vec8_ok(V, pl);
  if (V % 8 != 0 && !narrow_vocab_noted_) {  // once per backend, not every step
    narrow_vocab_noted_ = true;
    std::fprintf(stderr,
                 "note: a vocabulary of %lld ids is not a multiple of 8, so the GPU reads the "
                 "head's logits 2 bytes at a time instead of 16 (and its GEMMs lose their "
                 "alignment): --vocab %lld pads it (the record pads GPT-2's 50257 to 50304)\n",
                 (long long)V, (long long)((V + 7) / 8 * 8));
  }
  const size_t keep = backward ? head_row_keep_bytes(V) : 0;
  const auto launch = [&]<bool Vec, bool kKeep>() {
    SR_LAUNCH(l.blocks, l.threads, kKeep ? keep : 0, stream_,
              softcap_cross_entropy_kernel<Vec, kKeep>)(pl, ploss, pt, V, float(cap),
                                                        float(grad_scale), backward);
  };
  if (keep > 0)
    vec ? launch.template operator()<true, true>() : launch.template operator()<false, true>();
  else
    vec ? launch.template operator()<true, false>() : launch.template operator()<false, false>();
  launched(op, "softcap_cross_entropy_kernel");
}

}  // namespace speedrun::cuda
