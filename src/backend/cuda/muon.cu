// Muon's device work: Nesterov momentum (F32), axpy (F32, or BF16 for the model's
// activation gradients), and the quintic Newton-Schulz
// orthogonalisation in bf16 as the record computes it: X = bf16(G) (transposed when
// rows > cols), divided by bf16(bf16(||X||_F) + 1e-7); `steps` times A = X X^T,
// B = c A A + b A, X = B X + a X (math/muon.h) as strided-batched cuBLASLt GEMMs over a
// stack of n matrices of one shape (bf16 operands and results, fp32 accumulation); then X
// written back, transposed back, in F32 or as the bf16 it is (a BF16 output not transposed
// takes the last GEMM's result directly). The norms use the deterministic two-stage order
// of math/reduce.h, one set of partials per matrix.
// muon_stack folds the momentum into the Newton-Schulz's first read (the Nesterov values go
// from registers to bf16, never to memory in F32); muon_apply lands many matrices' updates
// and their bf16 compute copies in one launch (plan.h tensor_block_starts).
// Every pass over the record's matrices moves 16 bytes per access, 8 elements per loop
// step (plan.h NsLayout, TensorTable::vec): these passes are pure memory traffic (~2.6 GB
// per step at the record config), and one 4-byte element per thread kept too few bytes in flight to reach the GPU's
// bandwidth. The transposed c_fc work matrices go through shared-memory tiles, not a
// 2-byte scatter that touches a 32-byte sector per element.
#include <algorithm>
#include <utility>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/muon.h"
#include "backend/cuda/plan.h"
#include "backend/cuda/reduce.cuh"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

__global__ void muon_momentum_kernel(float* out, float* buf, const float* g, int64_t n, float mu) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    float b = buf[i];
    const float o = math::muon_momentum_update(g[i], b, mu);
    buf[i] = b;
    out[i] = o;
  }
}

__global__ void axpy_kernel(float* y, const float* x, int64_t n, float alpha) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    y[i] = math::axpy_value(y[i], alpha, x[i]);
}

// The model also adds activation gradients (bf16) with axpy: fp32 math, one rounding.
template <bool Vec>
__global__ void axpy_bf16_kernel(uint16_t* y, const uint16_t* x, int64_t n, float alpha) {
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < n / 8; i += grid_threads()) {
      float a[8], b[8];
      load8(y + 8 * i, a);
      load8(x + 8 * i, b);
#pragma unroll
      for (int k = 0; k < 8; ++k) a[k] = math::axpy_value(a[k], alpha, b[k]);
      store8(y + 8 * i, a);
    }
  } else {
    for (int64_t i = global_thread(); i < n; i += grid_threads())
      store_bf16(y + i, math::axpy_value(load_bf16(y + i), alpha, load_bf16(x + i)));
  }
}

// Where the values a Newton-Schulz orthogonalises come from, element s of the launch's
// matrix m (blockIdx.y): a stack G, or Muon's momentum, which updates each buffer element
// as it reads it (math::muon_momentum_update, as muon_momentum) and gives the Nesterov
// value.
struct FromStack {
  const float* G;
  int64_t size;
  __device__ float operator()(int m, int64_t s) const { return G[m * size + s]; }
  // Elements s..s+7 (s % 8 == 0, G 16-byte aligned).
  __device__ void load8(int m, int64_t s, float (&v)[8]) const { load8f(G + m * size + s, v); }
};
// The momentum buffers and gradients of up to kMaxLaunchTensors matrices of one stack.
struct FromMomentum {
  float* buf[kMaxLaunchTensors];
  const float* g[kMaxLaunchTensors];
  float mu;
  __device__ float operator()(int m, int64_t s) const {
    float b = buf[m][s];
    const float o = math::muon_momentum_update(g[m][s], b, mu);
    buf[m][s] = b;
    return o;
  }
  __device__ void load8(int m, int64_t s, float (&v)[8]) const {
    float b[8], gs[8];
    load8f(buf[m] + s, b);
    load8f(g[m] + s, gs);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = math::muon_momentum_update(gs[e], b[e], mu);
    store8f(buf[m] + s, b);
  }
};

// The bf16 value of x, adding its square to acc (the norm's sum, in the load's order).
__device__ inline uint16_t to_bf16_summing(float x, double& acc) {
  const uint16_t b = math::f32_to_bf16(x);
  const double v = math::bf16_to_f32(b);
  acc += v * v;
  return b;
}
__device__ inline uint32_t pair_bits(uint16_t lo, uint16_t hi) {
  return uint32_t(lo) | (uint32_t(hi) << 16);
}
// Two values as a bf16 pair (lo first in memory), their squares added in that order.
__device__ inline uint32_t pair_summing(float lo, float hi, double& acc) {
  const uint16_t l = to_bf16_summing(lo, acc);
  return pair_bits(l, to_bf16_summing(hi, acc));
}

// Matrix first + blockIdx.y of the stack: X = bf16(its values) laid out [m, k] (transposed
// when tr), and the sum of squares of those bf16 values, partial[matrix * gridDim.x +
// block]. The elements per thread, so the partials, depend on the sizes alone: from the
// momentum the same bits as the momentum into a stack, then this from it.
template <class Source>
__global__ void __launch_bounds__(math::kReduceThreads)
    ns_load_kernel(uint16_t* X, double* partial, Source src, int first, int64_t rows,
                   int64_t cols, bool tr) {
  __shared__ double smem[math::kReduceWarps];
  const int64_t size = rows * cols, mat = first + int64_t(blockIdx.y);
  uint16_t* x = X + mat * size;
  double acc = 0;
  for (int64_t s = global_thread(); s < size; s += grid_threads()) {
    const uint16_t b = to_bf16_summing(src(int(blockIdx.y), s), acc);
    x[tr ? (s % cols) * rows + s / cols : s] = b;
  }
  const double total = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[mat * gridDim.x + blockIdx.x] = total;
}

// NsLayout::kVectors: as ns_load_kernel, not transposed, 8 elements per item (their squares
// added in order), 16-byte accesses.
template <class Source>
__global__ void __launch_bounds__(math::kReduceThreads)
    ns_load_vec_kernel(uint16_t* X, double* partial, Source src, int first, int64_t size) {
  __shared__ double smem[math::kReduceWarps];
  const int64_t mat = first + int64_t(blockIdx.y);
  uint16_t* x = X + mat * size;
  double acc = 0;
  for (int64_t i = global_thread(); i < size / 8; i += grid_threads()) {
    float v[8];
    src.load8(int(blockIdx.y), 8 * i, v);
    uint32_t w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) w[e] = pair_summing(v[2 * e], v[2 * e + 1], acc);
    *reinterpret_cast<uint4*>(x + 8 * i) = make_uint4(w[0], w[1], w[2], w[3]);
  }
  const double total = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[mat * gridDim.x + blockIdx.x] = total;
}

// A kNsTile x kNsTile tile of bf16 in shared memory, rows padded by one 32-bit word: a
// warp's transposing reads (8 rows at each of 4 columns) then meet 2 lanes per bank, its
// row-wise 32-bit writes none.
struct NsTile {
  uint32_t w[kNsTile][kNsTile / 2 + 1];  // w[r][j]: elements (r, 2j) low, (r, 2j + 1) high
  __device__ uint16_t at(int r, int c) const { return uint16_t(w[r][c / 2] >> (16 * (c & 1))); }
};
// The thread's place in a tile walk: 256 threads cover 32 rows x 8 vectors of 8 columns.
inline constexpr int kNsTilePasses = int(kNsTile) / 32;
static_assert(kNsTile % 32 == 0 && kNsTile / 8 * 32 == math::kReduceThreads,
              "a tile pass is one row slot per 8 threads, 8 vectors per row");

// The 8 bf16 of tile column c, rows r..r+7, packed as in memory.
__device__ inline uint4 tile_column8(const NsTile& t, int r, int c) {
  uint32_t w[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) w[e] = pair_bits(t.at(r + 2 * e, c), t.at(r + 2 * e + 1, c));
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// NsLayout::kTiles: the values [rows, cols] (rows > cols, both multiples of kNsTile) into
// the work matrix X [cols, rows] through shared-memory tiles: a tile's rows are read with
// 16-byte loads and its columns written as X's rows with 16-byte stores. Block b of the
// matrix takes tiles b, b + gridDim.x, ...; its threads add the squares of the elements
// they read, 8 at a time in order, so the partials are a function of the shape alone.
template <class Source>
__global__ void __launch_bounds__(math::kReduceThreads)
    ns_load_tiles_kernel(uint16_t* X, double* partial, Source src, int first, int64_t rows,
                         int64_t cols) {
  __shared__ double smem[math::kReduceWarps];
  __shared__ NsTile tile;
  const int64_t mat = first + int64_t(blockIdx.y), tiles_c = cols / kNsTile;
  const int64_t tiles = rows / kNsTile * tiles_c;
  uint16_t* x = X + mat * rows * cols;
  const int slot = int(threadIdx.x) / 8, c8 = int(threadIdx.x) % 8 * 8;
  double acc = 0;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = t / tiles_c * kNsTile, c0 = t % tiles_c * kNsTile;
    for (int pass = 0; pass < kNsTilePasses; ++pass) {
      const int r = 32 * pass + slot;
      float v[8];
      src.load8(int(blockIdx.y), (r0 + r) * cols + c0 + c8, v);
#pragma unroll
      for (int e = 0; e < 4; ++e) tile.w[r][c8 / 2 + e] = pair_summing(v[2 * e], v[2 * e + 1], acc);
    }
    __syncthreads();
    for (int pass = 0; pass < kNsTilePasses; ++pass) {
      const int c = 32 * pass + slot;  // X's row c0 + c, its columns r0 + c8 .. + 7
      *reinterpret_cast<uint4*>(x + (c0 + c) * rows + r0 + c8) = tile_column8(tile, c8, c);
    }
    __syncthreads();  // the next tile overwrites this one
  }
  const double total = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[mat * gridDim.x + blockIdx.x] = total;
}

// Up to kMaxLaunchTensors matrices: p (F32 master) += alpha u, copy (bf16) = p. u is F32,
// or (ub) the bf16 copy another rank sent, whose values the F32 update held exactly.
struct ApplyBatch {
  TensorTable t;
  float* p[kMaxLaunchTensors];
  const float* u[kMaxLaunchTensors];      // null where ub is given
  const uint16_t* ub[kMaxLaunchTensors];  // null where u is given
  uint16_t* copy[kMaxLaunchTensors];      // null: none
  float alpha[kMaxLaunchTensors];
};

__global__ void apply_batch_kernel(ApplyBatch b) {
  const TensorBlock t = tensor_block(b.t);
  float* p = b.p[t.k];
  const float* u = b.u[t.k];
  const uint16_t* ub = b.ub[t.k];
  uint16_t* copy = b.copy[t.k];
  const float alpha = b.alpha[t.k];
  const int64_t items = b.t.items(t.k);
  if (b.t.vec[t.k]) {
    for (int64_t i = t.first; i < items; i += t.stride) {
      float y[8], ui[8];
      load8f(p + 8 * i, y);
      if (u)
        load8f(u + 8 * i, ui);
      else
        load8(ub + 8 * i, ui);
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = math::axpy_value(y[e], alpha, ui[e]);
      store8f(p + 8 * i, y);
      if (copy) store8(copy + 8 * i, y);
    }
    return;
  }
  for (int64_t i = t.first; i < items; i += t.stride) {
    const float ui = u ? u[i] : math::bf16_to_f32(ub[i]);
    const float y = math::axpy_value(p[i], alpha, ui);  // axpy_kernel's arithmetic
    p[i] = y;
    if (copy) copy[i] = math::f32_to_bf16(y);
  }
}

// Up to kMaxLaunchTensors matrices' momentum buffers (F32): buf = mu*buf + g, nothing else
// written (muon_momentum_kernel's arithmetic).
struct MomentaBatch {
  TensorTable t;
  float* buf[kMaxLaunchTensors];
  const float* g[kMaxLaunchTensors];
};

__global__ void momenta_batch_kernel(MomentaBatch b, float mu) {
  const TensorBlock t = tensor_block(b.t);
  float* buf = b.buf[t.k];
  const float* g = b.g[t.k];
  const int64_t items = b.t.items(t.k);
  if (b.t.vec[t.k]) {
    for (int64_t i = t.first; i < items; i += t.stride) {
      float v[8], gi[8];
      load8f(buf + 8 * i, v);
      load8f(g + 8 * i, gi);
#pragma unroll
      for (int e = 0; e < 8; ++e) math::muon_momentum_update(gi[e], v[e], mu);
      store8f(buf + 8 * i, v);
    }
    return;
  }
  for (int64_t i = t.first; i < items; i += t.stride) {
    float v = buf[i];
    math::muon_momentum_update(g[i], v, mu);
    buf[i] = v;
  }
}

struct NsDivisor {
  float* divisor;
  __device__ void operator()(double sumsq, int mat) const { divisor[mat] = math::ns_divisor(sumsq); }
};

template <bool Vec>
__global__ void ns_scale_kernel(uint16_t* X, const float* divisor, int64_t size) {
  uint16_t* x = X + int64_t(blockIdx.y) * size;
  const float d = divisor[blockIdx.y];
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < size / 8; i += grid_threads()) {
      float v[8];
      load8(x + 8 * i, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] /= d;
      store8(x + 8 * i, v);
    }
  } else {
    for (int64_t i = global_thread(); i < size; i += grid_threads())
      x[i] = math::f32_to_bf16(math::bf16_to_f32(x[i]) / d);
  }
}

// An output element, or 8 (bf16 bits packed as in memory): F32 widened, or BF16 copied.
__device__ inline void put1(float* o, uint16_t b) { *o = math::bf16_to_f32(b); }
__device__ inline void put1(uint16_t* o, uint16_t b) { *o = b; }
__device__ inline void put8(float* o, uint4 u) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  float v[8];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    v[2 * e] = math::unpack_lo(w[e]);
    v[2 * e + 1] = math::unpack_hi(w[e]);
  }
  store8f(o, v);
}
__device__ inline void put8(uint16_t* o, uint4 u) { *reinterpret_cast<uint4*>(o) = u; }

// The work matrix back in the stack's layout, Out = float (F32) or uint16_t (BF16).
template <NsLayout L, class Out>
__global__ void ns_store_kernel(Out* out, const uint16_t* X, int64_t rows, int64_t cols, bool tr) {
  const int64_t size = rows * cols, mat = blockIdx.y;
  Out* o = out + mat * size;
  const uint16_t* x = X + mat * size;
  if constexpr (L == NsLayout::kElements) {
    for (int64_t s = global_thread(); s < size; s += grid_threads())
      put1(o + s, x[tr ? (s % cols) * rows + s / cols : s]);
  } else if constexpr (L == NsLayout::kVectors) {
    for (int64_t i = global_thread(); i < size / 8; i += grid_threads())
      put8(o + 8 * i, *reinterpret_cast<const uint4*>(x + 8 * i));
  } else {
    // ns_load_tiles_kernel backwards: X [cols, rows] tile by tile into out [rows, cols].
    __shared__ NsTile tile;
    const int64_t tiles_c = cols / kNsTile, tiles = rows / kNsTile * tiles_c;
    const int slot = int(threadIdx.x) / 8, c8 = int(threadIdx.x) % 8 * 8;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
      const int64_t r0 = t / tiles_c * kNsTile, c0 = t % tiles_c * kNsTile;
      for (int pass = 0; pass < kNsTilePasses; ++pass) {
        const int c = 32 * pass + slot;  // X's row c0 + c, its columns r0 + c8 .. + 7
        const uint4 u = *reinterpret_cast<const uint4*>(x + (c0 + c) * rows + r0 + c8);
        tile.w[c][c8 / 2] = u.x;
        tile.w[c][c8 / 2 + 1] = u.y;
        tile.w[c][c8 / 2 + 2] = u.z;
        tile.w[c][c8 / 2 + 3] = u.w;
      }
      __syncthreads();
      for (int pass = 0; pass < kNsTilePasses; ++pass) {
        const int r = 32 * pass + slot;  // out's row r0 + r, its columns c0 + c8 .. + 7
        put8(o + (r0 + r) * cols + c0 + c8, tile_column8(tile, c8, r));
      }
      __syncthreads();
    }
  }
}

// The load of the plan's layout over matrices first .. first + count of the stack.
template <class Source>
void launch_ns_load(const NewtonSchulzPlan& p, uint16_t* x, double* partial, const Source& src,
                    int64_t first, int64_t count, int64_t rows, int64_t cols, cudaStream_t stream) {
  const dim3 grid(unsigned(p.partials), unsigned(count));
  switch (p.layout) {
    case NsLayout::kElements:
      SR_LAUNCH(grid, math::kReduceThreads, 0, stream, ns_load_kernel<Source>)(
          x, partial, src, int(first), rows, cols, p.transposed);
      break;
    case NsLayout::kVectors:
      SR_LAUNCH(grid, math::kReduceThreads, 0, stream, ns_load_vec_kernel<Source>)(
          x, partial, src, int(first), rows * cols);
      break;
    case NsLayout::kTiles:
      SR_LAUNCH(grid, math::kReduceThreads, 0, stream, ns_load_tiles_kernel<Source>)(
          x, partial, src, int(first), rows, cols);
      break;
  }
}

const char* ns_load_name(NsLayout l) {
  return l == NsLayout::kElements  ? "ns_load_kernel"
         : l == NsLayout::kVectors ? "ns_load_vec_kernel"
                                   : "ns_load_tiles_kernel";
}

}  // namespace

// A Newton-Schulz's output: F32, or BF16 (newton_schulz_is_bf16: its values are bf16).
void CudaBackend::need_update(const char* op, const Tensor& X) {
  check(X.dtype == DType::F32 || X.dtype == DType::BF16, "cuda ", op, ": X ", X.shape_str(),
        " is ", dtype_name(X.dtype), ", expected F32 or BF16");
  need(op, "X", X, X.dtype);
}

void CudaBackend::muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) {
  const char* op = "muon_momentum";
  need(op, "out", out, DType::F32);
  need(op, "buf", buf, DType::F32);
  need(op, "g", g, DType::F32);
  need_numel(op, "out", out, "g", g);
  need_numel(op, "buf", buf, "g", g);
  const int64_t n = g.numel();
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, muon_momentum_kernel)(
      static_cast<float*>(out.data), static_cast<float*>(buf.data),
      static_cast<const float*>(g.data), n, float(mu));
  launched(op, "muon_momentum_kernel");
}

void CudaBackend::axpy(Tensor y, const Tensor& x, double alpha) {
  // y (m) += alpha x (g) in the optimizer; both (c) where the model sums gradients.
  const char* op = "axpy";
  check(y.dtype == DType::F32 || y.dtype == DType::BF16, "cuda axpy: y ", y.shape_str(), " is ",
        dtype_name(y.dtype), ", expected F32 (a master) or BF16 (an activation gradient)");
  need(op, "y", y, y.dtype);
  need(op, "x", x, y.dtype);
  need_numel(op, "y", y, "x", x);
  const int64_t n = y.numel();
  if (n == 0) return;
  if (y.dtype == DType::F32) {
    const Launch l = elementwise_launch(n);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, axpy_kernel)(static_cast<float*>(y.data),
                                                     static_cast<const float*>(x.data), n,
                                                     float(alpha));
    launched(op, "axpy_kernel");
    return;
  }
  auto* py = static_cast<uint16_t*>(y.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  if (vec8_ok(n, py, px)) {
    const Launch l = elementwise_launch(n / 8);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, axpy_bf16_kernel<true>)(py, px, n, float(alpha));
  } else {
    const Launch l = elementwise_launch(n);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, axpy_bf16_kernel<false>)(py, px, n, float(alpha));
  }
  launched(op, "axpy_bf16_kernel");
}

void CudaBackend::newton_schulz(Tensor X, const Tensor& G, int steps, bool /*bf16_round*/) {
  // A bf16 backend computes in bf16 whatever it is asked (backend.h).
  const char* op = "newton_schulz";
  need_update(op, X);
  need(op, "G", G, DType::F32);
  check(G.ndim == 2 || G.ndim == 3, "cuda newton_schulz: G ", G.shape_str(),
        " must be [rows, cols] or [n, rows, cols]");
  check(X.ndim == G.ndim && X.shape == G.shape, "cuda newton_schulz: X ", X.shape_str(),
        " and G ", G.shape_str(), " differ");
  check(steps >= 0, "cuda newton_schulz: steps ", steps, " must be >= 0");
  const int64_t n = G.ndim == 3 ? G.dim(0) : 1, rows = G.dim(-2), cols = G.dim(-1);
  if (n == 0) return;
  const bool aligned = vec8_ok(0, G.data);
  newton_schulz_stack(op, X, n, rows, cols, steps, aligned,
                      [&](const NewtonSchulzPlan& p, uint16_t* x, double* partial) {
                        const FromStack src{static_cast<const float*>(G.data), rows * cols};
                        launch_ns_load(p, x, partial, src, 0, n, rows, cols, stream_);
                        launched(op, ns_load_name(p.layout));
                      });
}

void CudaBackend::muon_stack(Tensor X, Tensor /*input*/, const std::vector<Tensor>& bufs,
                             const std::vector<Tensor>& grads, double mu, int steps,
                             bool /*bf16_round*/) {
  const char* op = "muon_stack";
  need_update(op, X);
  check(X.ndim == 3, "cuda muon_stack: X ", X.shape_str(), " must be [n, rows, cols]");
  const int64_t n = X.dim(0), rows = X.dim(1), cols = X.dim(2);
  check(int64_t(bufs.size()) == n && int64_t(grads.size()) == n, "cuda muon_stack: ",
        bufs.size(), " momentum buffers and ", grads.size(), " gradients for a stack of ", n);
  check(steps >= 0, "cuda muon_stack: steps ", steps, " must be >= 0");
  for (int64_t k = 0; k < n; ++k) {
    need(op, "buf", bufs[size_t(k)], DType::F32);
    need(op, "grad", grads[size_t(k)], DType::F32);
    check(bufs[size_t(k)].numel() == rows * cols && grads[size_t(k)].numel() == rows * cols,
          "cuda muon_stack: matrix ", k, "'s buffer ", bufs[size_t(k)].shape_str(), " or gradient ",
          grads[size_t(k)].shape_str(), " is not [", rows, ", ", cols, "]");
  }
  if (n == 0) return;
  bool aligned = true;
  for (int64_t k = 0; k < n; ++k)
    aligned = aligned && vec8_ok(0, bufs[size_t(k)].data, grads[size_t(k)].data);
  newton_schulz_stack(op, X, n, rows, cols, steps, aligned,
                      [&](const NewtonSchulzPlan& p, uint16_t* x, double* partial) {
    for (int64_t first = 0; first < n; first += kMaxLaunchTensors) {
      const int64_t count = std::min<int64_t>(n - first, kMaxLaunchTensors);
      FromMomentum src{};
      src.mu = float(mu);
      for (int64_t k = 0; k < count; ++k) {
        src.buf[k] = static_cast<float*>(bufs[size_t(first + k)].data);
        src.g[k] = static_cast<const float*>(grads[size_t(first + k)].data);
      }
      launch_ns_load(p, x, partial, src, first, count, rows, cols, stream_);
      launched(op, ns_load_name(p.layout));
    }
  });
}

void CudaBackend::muon_apply(const std::vector<MuonApply>& us) {
  const char* op = "muon_apply";
  for (const MuonApply& u : us) {
    need(op, "p", u.p, DType::F32);
    check(u.update.dtype == DType::F32 || u.update.dtype == DType::BF16, "cuda ", op, ": update ",
          u.update.shape_str(), " is ", dtype_name(u.update.dtype), ", expected F32 or BF16");
    need(op, "update", u.update, u.update.dtype);
    need_numel(op, "p", u.p, "update", u.update);
    if (!u.copy.empty()) {
      need(op, "copy", u.copy, DType::BF16);
      need_numel(op, "p", u.p, "copy", u.copy);
    }
  }
  for (size_t first = 0; first < us.size(); first += kMaxLaunchTensors) {
    ApplyBatch b{};
    b.t.count = int(std::min<size_t>(us.size() - first, kMaxLaunchTensors));
    for (int k = 0; k < b.t.count; ++k) {
      const MuonApply& u = us[first + size_t(k)];
      b.t.n[k] = u.p.numel();
      b.p[k] = static_cast<float*>(u.p.data);
      const bool narrow = u.update.dtype == DType::BF16;
      b.u[k] = narrow ? nullptr : static_cast<const float*>(u.update.data);
      b.ub[k] = narrow ? static_cast<const uint16_t*>(u.update.data) : nullptr;
      b.copy[k] = static_cast<uint16_t*>(u.copy.data);
      b.alpha[k] = float(u.alpha);
      b.t.vec[k] = vec8_ok(b.t.n[k], b.p[k], u.update.data, b.copy[k]);
    }
    SR_LAUNCH(b.t.grid(), kThreads, 0, stream_, apply_batch_kernel)(b);
    launched(op, "apply_batch_kernel");
  }
}

void CudaBackend::muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                               double mu) {
  const char* op = "muon_momenta";
  check(bufs.size() == grads.size(), "cuda ", op, ": ", bufs.size(), " momentum buffers for ",
        grads.size(), " gradients");
  for (size_t k = 0; k < grads.size(); ++k) {
    need(op, "buf", bufs[k], DType::F32);
    need(op, "g", grads[k], DType::F32);
    need_numel(op, "buf", bufs[k], "g", grads[k]);
  }
  for (size_t first = 0; first < grads.size(); first += kMaxLaunchTensors) {
    MomentaBatch b{};
    b.t.count = int(std::min<size_t>(grads.size() - first, kMaxLaunchTensors));
    for (int k = 0; k < b.t.count; ++k) {
      b.t.n[k] = grads[first + size_t(k)].numel();
      b.buf[k] = static_cast<float*>(bufs[first + size_t(k)].data);
      b.g[k] = static_cast<const float*>(grads[first + size_t(k)].data);
      b.t.vec[k] = vec8_ok(b.t.n[k], b.buf[k], b.g[k]);
    }
    SR_LAUNCH(b.t.grid(), kThreads, 0, stream_, momenta_batch_kernel)(b, float(mu));
    launched(op, "momenta_batch_kernel");
  }
}

void CudaBackend::newton_schulz_stack(const char* op, Tensor X, int64_t n, int64_t rows,
                                      int64_t cols, int steps, bool aligned, const NsLoad& load) {
  const NewtonSchulzPlan p = newton_schulz_plan(n, rows, cols, aligned && vec8_ok(0, X.data));
  char* base = static_cast<char*>(scratch(ns_, p.total, "Newton-Schulz work matrices"));
  auto* x = reinterpret_cast<uint16_t*>(base + p.x0);
  auto* xn = reinterpret_cast<uint16_t*>(base + p.x1);
  auto* A = reinterpret_cast<uint16_t*>(base + p.a);
  auto* B = reinterpret_cast<uint16_t*>(base + p.b);
  auto* partial = reinterpret_cast<double*>(base + p.partial);
  auto* divisor = reinterpret_cast<float*>(base + p.divisor);
  const int64_t size = rows * cols;

  load(p, x, partial);  // x = bf16 values [n, m, k], partial = their sums of squares' partials
  SR_LAUNCH(unsigned(n), math::kReduceThreads, 0, stream_, reduce_partials_kernel<NsDivisor>)(partial, p.partials,
                                                                             NsDivisor{divisor});
  launched(op, "reduce_partials_kernel");
  const Launch l = elementwise_launch(p.items);
  const dim3 grid(unsigned(l.blocks), unsigned(n));
  if (p.layout == NsLayout::kElements)
    SR_LAUNCH(grid, l.threads, 0, stream_, ns_scale_kernel<false>)(x, divisor, size);
  else
    SR_LAUNCH(grid, l.threads, 0, stream_, ns_scale_kernel<true>)(x, divisor, size);
  launched(op, "ns_scale_kernel");

  // The three GEMMs of math::newton_schulz_iterations, batched over the n matrices.
  struct Ops {
    CudaBackend& be;
    int64_t n, m, k;
    uint16_t *x, *xn, *A, *B;
    int bx_left;      // X' products still to come
    uint16_t* last_out;  // where the last one goes (null: xn, as the others)
    GemmCall call(int64_t M, int64_t N, int64_t K, bool transB, int64_t sa, int64_t sb,
                  int64_t sc, float alpha, float beta) const {
      GemmCall c;
      c.key.M = M;
      c.key.N = N;
      c.key.K = K;
      c.key.transB = transB;
      c.key.batch = n;
      if (n > 1) c.key.strideA = sa, c.key.strideB = sb, c.key.strideC = sc;
      c.key.accumulate = beta != 0;
      c.alpha = alpha;
      c.beta = beta;
      return c;
    }
    void xxt() {  // A = X X^T
      GemmCall c = call(m, m, k, true, m * k, m * k, m * m, 1.0f, 0.0f);
      c.A = x, c.B = x, c.Cin = A, c.D = A;
      finish(c);
    }
    void aa(float alpha, float beta) {  // B = alpha A A + beta A
      GemmCall c = call(m, m, m, false, m * m, m * m, m * m, alpha, beta);
      c.A = A, c.B = A, c.Cin = A, c.D = B;
      finish(c);
    }
    void bx(float alpha, float beta) {  // X' = alpha B X + beta X
      GemmCall c = call(m, k, m, false, m * m, m * k, m * k, alpha, beta);
      // The last X' straight into the output where it can take it (last_out: a BF16 stack in
      // the work matrix's layout), so that no store pass copies it there.
      uint16_t* out = --bx_left == 0 && last_out != nullptr ? last_out : xn;
      c.A = B, c.B = x, c.Cin = x, c.D = out;
      finish(c);
      xn = x;
      x = out;
    }
    void finish(GemmCall& c) {
      c.key.alignA = pointer_alignment(c.A);
      c.key.alignB = pointer_alignment(c.B);
      const uint32_t ci = pointer_alignment(c.Cin), cd = pointer_alignment(c.D);
      c.key.alignC = ci < cd ? ci : cd;
      be.gemm(c, "newton_schulz");
    }
  };
  // A BF16 output in the work matrix's own layout takes the last product itself.
  const bool direct = X.dtype == DType::BF16 && !p.transposed && steps > 0;
  Ops ops{*this, n, p.m, p.k, x, xn, A, B, steps, direct ? static_cast<uint16_t*>(X.data) : nullptr};
  math::newton_schulz_iterations(ops, steps);
  if (direct) return;

  const auto store = [&]<class Out>(Out* out) {
    switch (p.layout) {
      case NsLayout::kElements:
        SR_LAUNCH(grid, l.threads, 0, stream_, ns_store_kernel<NsLayout::kElements, Out>)(
            out, ops.x, rows, cols, p.transposed);
        break;
      case NsLayout::kVectors:
        SR_LAUNCH(grid, l.threads, 0, stream_, ns_store_kernel<NsLayout::kVectors, Out>)(
            out, ops.x, rows, cols, p.transposed);
        break;
      case NsLayout::kTiles: {  // one block per tile
        const int64_t tiles = rows / kNsTile * (cols / kNsTile);
        const dim3 tile_grid(unsigned(std::min(tiles, kMaxElementwiseBlocks)), unsigned(n));
        SR_LAUNCH(tile_grid, kThreads, 0, stream_, ns_store_kernel<NsLayout::kTiles, Out>)(
            out, ops.x, rows, cols, p.transposed);
        break;
      }
    }
  };
  if (X.dtype == DType::BF16)
    store(static_cast<uint16_t*>(X.data));
  else
    store(static_cast<float*>(X.data));
  launched(op, "ns_store_kernel");
}

}  // namespace speedrun::cuda
