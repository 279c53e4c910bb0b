// attention_decode: one query over a key/value cache (sampling), one block per head.
// The cache rows come as a host list (uploaded through the staging ring). Scores in fp32
// (one warp per key row), the softmax's max and sum in a fixed order, and each output
// element summed over the rows in the order given, as backend.h asks.
#include <algorithm>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

constexpr int kDecodeThreads = 128;

__global__ void __launch_bounds__(kDecodeThreads)
    attention_decode_kernel(uint16_t* out, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            const int32_t* rows, int n, int64_t C, int64_t D, float scale,
                            float* scores) {
  __shared__ double smem[kDecodeThreads / 32];
  __shared__ float shared_max[kDecodeThreads / 32];
  const int64_t h = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const uint16_t* qh = q + h * D;
  float* s = scores + h * n;
  for (int j = warp; j < n; j += warps) {
    const uint16_t* kj = k + int64_t(rows[j]) * C + h * D;
    float dot = 0;
    for (int64_t d = lane; d < D; d += 32) dot += load_bf16(qh + d) * load_bf16(kj + d);
    dot = warp_allsum(dot);
    if (lane == 0) s[j] = scale * dot;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, s[j]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) shared_max[warp] = m;
  __syncthreads();
  m = shared_max[0];
  for (int w = 1; w < warps; ++w) m = fmaxf(m, shared_max[w]);
  // Each thread turns its own scores into weights, so no other thread reads them yet.
  double l = 0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float p = expf(s[j] - m);
    s[j] = p;
    l += p;
  }
  // block_sum's tree (4 warps here; lanes past them hold 0) and a barrier for the weights.
  l = warp_sum(l);
  if (lane == 0) smem[warp] = l;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < warps; ++w) total += smem[w];
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int j = 0; j < n; ++j) acc += s[j] * load_bf16(v + int64_t(rows[j]) * C + h * D + d);
    store_bf16(out + h * D + d, float(double(acc) / total));
  }
}

}  // namespace

void CudaBackend::attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                                   const std::vector<int32_t>& rows, int64_t H, double scale) {
  const char* op = "attention_decode";
  need(op, "out", out, DType::BF16);
  need(op, "q", q, DType::BF16);
  need(op, "k", k, DType::BF16);
  need(op, "v", v, DType::BF16);
  check(q.rows() == 1 && out.numel() == q.numel() && H >= 1 && q.cols() % H == 0 &&
            k.cols() == q.cols() && v.cols() == k.cols() && v.rows() == k.rows(),
        "cuda attention_decode: q ", q.shape_str(), " and cache ", k.shape_str(), " / ",
        v.shape_str(), " must be [1, C] and [S, C] with C a multiple of ", H, " heads");
  check(!rows.empty(), "cuda attention_decode: the query sees no key (empty row list)");
  check(rows.size() < (size_t(1) << 31), "cuda attention_decode: too many rows");
  const int64_t S = k.rows(), C = q.cols(), D = C / H;
  for (int32_t r : rows)
    check(r >= 0 && r < S, "cuda attention_decode: cache row ", r, " outside [0, ", S, ")");
  const int n = int(rows.size());
  // Sized for a list of the whole cache at once (a decoder's list grows by a row per token
  // up to the cache's rows), so that the scratch is not grown, a free that waits for the
  // GPU, at each of the first tokens.
  const size_t cap = std::max(rows.size(), size_t(S));
  auto* d_rows = static_cast<int32_t*>(
      scratch(decode_rows_, cap * sizeof(int32_t), "the decode row list"));
  auto* d_scores = static_cast<float*>(
      scratch(decode_scores_, size_t(H) * cap * sizeof(float), "the decode scores"));
  upload_bytes(d_rows, rows.data(), rows.size() * sizeof(int32_t), op);
  SR_LAUNCH(unsigned(H), kDecodeThreads, 0, stream_, attention_decode_kernel)(
      static_cast<uint16_t*>(out.data), static_cast<const uint16_t*>(q.data),
      static_cast<const uint16_t*>(k.data), static_cast<const uint16_t*>(v.data), d_rows, n, C, D,
      float(scale), d_scores);
  launched(op, "attention_decode_kernel");
}

}  // namespace speedrun::cuda
