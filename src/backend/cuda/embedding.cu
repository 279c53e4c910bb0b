// Token embedding. Forward: out[n] = wte[tokens[n]] (bf16 rows, 16 bytes at a time).
// Backward, deterministic without float atomics: the (token, position) pairs are sorted
// by token with CUB's radix sort (stable, so positions stay ascending within a token),
// then the block at the start of each token's run adds that token's rows of dout into its
// F32 gradient row in position order: dwte[t] += dout[n1], += dout[n2], ... the order of
// the CPU backend, so both give the same sums. A run's rows are loaded many at a time
// (Vec: 16 bytes a thread) and added one after another.
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

// Where the run of token t that starts at sorted index b ends: the first j > b whose key
// differs (keys ascend), found by a binary search of ~log2(N) loads instead of a test
// before every row that makes each row's load wait for the one before.
__device__ inline int64_t run_end(const uint32_t* keys, int64_t b, int64_t N, uint32_t t) {
  int64_t lo = b + 1, hi = N;  // keys[lo - 1] == t; the answer lies in [lo, hi]
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] == t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Rows of dout a thread loads before it adds them: a frequent token (" the" is ~4% of web
// text, ~2,600 rows of a 64K-token batch) is one block's run, which would otherwise cost
// one memory round trip per row while the rest of the GPU waits.
constexpr int kEmbeddingRowsAtOnce = 16;

// Block b handles sorted index b when it starts a run of equal tokens: each thread takes
// 8 columns (Vec: 16-byte loads) or one, loads kEmbeddingRowsAtOnce rows of them at a time
// and adds them in position order, the CPU's, one fp32 addition per row.
template <bool Vec>
__global__ void embedding_backward_kernel(float* dwte, const uint32_t* keys, const int32_t* pos,
                                          const uint16_t* dout, int64_t N, int64_t C, int64_t V) {
  constexpr int W = Vec ? 8 : 1, U = kEmbeddingRowsAtOnce;
  const int64_t b = blockIdx.x;
  const uint32_t t = keys[b];
  if ((b > 0 && keys[b - 1] == t) || t >= uint32_t(V)) return;
  const int64_t end = run_end(keys, b, N, t);
  float* row = dwte + int64_t(t) * C;
  for (int64_t c = int64_t(threadIdx.x) * W; c < C; c += int64_t(blockDim.x) * W) {
    float acc[W];
#pragma unroll
    for (int k = 0; k < W; ++k) acc[k] = row[c + k];
    for (int64_t j = b; j < end; j += U) {
      const int64_t n = end - j;
      int32_t p[U];
#pragma unroll
      for (int u = 0; u < U; ++u) p[u] = u < n ? pos[j + u] : 0;
      if constexpr (Vec) {
        uint4 v[U] = {};
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (u < n) v[u] = *reinterpret_cast<const uint4*>(dout + int64_t(p[u]) * C + c);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (u >= n) break;
          const uint32_t w[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
          for (int k = 0; k < 8; ++k)
            acc[k] += math::bf16_to_f32(uint16_t(k % 2 ? w[k / 2] >> 16 : w[k / 2] & 0xffffu));
        }
      } else {
        uint16_t v[U] = {};
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (u < n) v[u] = dout[int64_t(p[u]) * C + c];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (u >= n) break;
          acc[0] += math::bf16_to_f32(v[u]);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < W; ++k) row[c + k] = acc[k];
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
  auto* dw = static_cast<float*>(dwte.data);
  const auto* d = static_cast<const uint16_t*>(dout.data);
  if (vec8_ok(C, dout.data, dwte.data))
    SR_LAUNCH(int(N), 128, 0, stream_, embedding_backward_kernel<true>)(dw, keys_out, values_out, d,
                                                                        N, C, V);
  else
    SR_LAUNCH(int(N), 128, 0, stream_, embedding_backward_kernel<false>)(dw, keys_out, values_out, d,
                                                                         N, C, V);
  launched(op, "embedding_backward_kernel");
}

}  // namespace speedrun::cuda
