// Token embedding. Forward: out[n] = wte[tokens[n]] (bf16 rows, 16 bytes at a time).
// Backward, deterministic without float atomics: the (token, position) pairs are sorted
// by token with CUB's radix sort (stable, so positions stay ascending within a token),
// then the block at the start of each token's run adds that token's rows of dout into its
// F32 gradient row in position order: dwte[t] += dout[n1], += dout[n2], ... the order of
// the CPU backend, so both give the same sums.
#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/cub_sort.h"
#else
#include <cub/device/device_radix_sort.cuh>
#endif

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

// A token outside [0, V) (the loader and GPT validate them first) gives a row of NaN, so
// the loss shows it instead of reading outside wte.
template <bool Vec>
__global__ void embedding_forward_kernel(uint16_t* out, const int32_t* tokens, const uint16_t* wte,
                                         int64_t N, int64_t C, int64_t V) {
  const int64_t per_row = Vec ? C / 8 : C;
  const int64_t items = N * per_row;
  for (int64_t i = global_thread(); i < items; i += grid_threads()) {
    const int64_t n = i / per_row, c = (i % per_row) * (Vec ? 8 : 1);
    const int32_t t = tokens[n];
    const bool ok = t >= 0 && t < V;
    if constexpr (Vec) {
      if (ok) {
        *reinterpret_cast<uint4*>(out + n * C + c) =
            *reinterpret_cast<const uint4*>(wte + int64_t(t) * C + c);
      } else {
        const uint32_t nan2 = 0x7fc07fc0u;
        *reinterpret_cast<uint4*>(out + n * C + c) = make_uint4(nan2, nan2, nan2, nan2);
      }
    } else {
      out[n * C + c] = ok ? wte[int64_t(t) * C + c] : uint16_t(0x7fc0);
    }
  }
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) v[i] = int32_t(i);
}

// Block b handles sorted index b when it starts a run of equal tokens.
__global__ void embedding_backward_kernel(float* dwte, const uint32_t* keys, const int32_t* pos,
                                          const uint16_t* dout, int64_t N, int64_t C, int64_t V) {
  const int64_t b = blockIdx.x;
  const uint32_t t = keys[b];
  if ((b > 0 && keys[b - 1] == t) || t >= uint32_t(V)) return;
  float* row = dwte + int64_t(t) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = row[c];
    for (int64_t j = b; j < N && keys[j] == t; ++j) acc += load_bf16(dout + int64_t(pos[j]) * C + c);
    row[c] = acc;
  }
}

}  // namespace

void CudaBackend::embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) {
  const char* op = "embedding_forward";
  need(op, "out", out, DType::BF16);
  need(op, "tokens", tokens, DType::I32);
  need(op, "wte", wte, DType::BF16);
  const int64_t N = tokens.numel(), C = wte.cols(), V = wte.rows();
  check(out.numel() == N * C, "cuda embedding_forward: out ", out.shape_str(), " is not [",
        N, ", ", C, "]");
  if (N == 0) return;
  if (vec8_ok(C, out.data, wte.data)) {
    const Launch l = elementwise_launch(N * C / 8);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, embedding_forward_kernel<true>)(
        static_cast<uint16_t*>(out.data), static_cast<const int32_t*>(tokens.data),
        static_cast<const uint16_t*>(wte.data), N, C, V);
  } else {
    const Launch l = elementwise_launch(N * C);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, embedding_forward_kernel<false>)(
        static_cast<uint16_t*>(out.data), static_cast<const int32_t*>(tokens.data),
        static_cast<const uint16_t*>(wte.data), N, C, V);
  }
  launched(op, "embedding_forward_kernel");
}

void CudaBackend::embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) {
  const char* op = "embedding_backward";
  need(op, "dwte", dwte, DType::F32);
  need(op, "tokens", tokens, DType::I32);
  need(op, "dout", dout, DType::BF16);
  const int64_t N = tokens.numel(), C = dwte.cols(), V = dwte.rows();
  check(dout.numel() == N * C, "cuda embedding_backward: dout ", dout.shape_str(), " is not [",
        N, ", ", C, "]");
  check(N < (int64_t(1) << 31), "cuda embedding_backward: ", N, " tokens exceed 2^31");
  if (N == 0) return;
  const int end_bit = radix_bits(V);
  // Token ids are non-negative: sorted as unsigned keys, over the bits ids < V use.
  const auto* keys_in = static_cast<const uint32_t*>(tokens.data);
  size_t temp_bytes = 0;
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, (uint32_t*)nullptr,
                                             (const int32_t*)nullptr, (int32_t*)nullptr, int(N), 0,
                                             end_bit, stream_),
             op, "sizing the radix sort");
  const EmbeddingBackwardPlan plan = embedding_backward_plan(N, V, temp_bytes);
  char* base = static_cast<char*>(scratch(sort_, plan.total, "the embedding backward's sort"));
  auto* keys_out = reinterpret_cast<uint32_t*>(base + plan.keys_out);
  auto* values_in = reinterpret_cast<int32_t*>(base + plan.values_in);
  auto* values_out = reinterpret_cast<int32_t*>(base + plan.values_out);
  const Launch l = elementwise_launch(N);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, iota_kernel)(values_in, N);
  launched(op, "iota_kernel");
  size_t temp = plan.temp_bytes;
  check_cuda(cub::DeviceRadixSort::SortPairs(base + plan.temp, temp, keys_in, keys_out, values_in,
                                             values_out, int(N), 0, plan.end_bit, stream_),
             op, "radix sort of the tokens");
  launched(op, "cub::DeviceRadixSort::SortPairs");
  SR_LAUNCH(int(N), 128, 0, stream_, embedding_backward_kernel)(static_cast<float*>(dwte.data), keys_out,
                                                         values_out,
                                                         static_cast<const uint16_t*>(dout.data),
                                                         N, C, V);
  launched(op, "embedding_backward_kernel");
}

}  // namespace speedrun::cuda
