// Block-sparse document-causal sliding-window attention, backward, on the CPU.
// Inputs are the forward's (q, k, v, out, lse: same shapes, same masks) and dout; writes
//   dq, dk, dv [B, T, H, D]   (assigned, every element)
// With P = exp(scale * q.k - lse) on visible pairs and Delta_i = dout_i . out_i:
//   dv_j = sum_i P_ij dout_i,  dS_ij = P_ij (dout_i . v_j - Delta_i),
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i.
// Deterministic and independent of the thread count: no atomics; every output block is
// summed by one thread in ascending block order. The gradients must not alias the inputs.
#pragma once
#include <omp.h>

#include <vector>

#include "backend/cpu/attention/common.h"

namespace speedrun::cpu {

namespace attn {

// How the backward splits its work over threads. Both give bit-identical results.
enum class BackwardSchedule {
  kAuto,     // kByHead when the (sequence, head) pairs fill the threads well, else kByBlock
  kByHead,   // one task per (sequence, head): one pass, each tile's P and dS computed once
  kByBlock,  // two passes, tasks per (sequence, head, block): dk/dv by key block, then dq by
             // query block; recomputes P and dP (7 tile matmuls instead of 5), scales to
             // any thread count
};

// Per-thread buffers of one tile (edge `tile`).
template <class T>
struct TileWork {
  std::vector<T> P, dS;
  explicit TileWork(int64_t tile) : P(size_t(tile * tile)), dS(size_t(tile * tile)) {}
};

// For the tile (query block at q0, key block at k0) of head h of sequence b: P (probabilities)
// and dS (score gradients, without the scale), both [bq, bk] with row stride mask.tile.
template <class T>
inline void tile_grad(TileWork<T>& w, const T* Q, const T* K, const T* V, const T* dO,
                      const T* lse_rows, const T* delta_rows, const BlockMask& mask, bool full,
                      int64_t q0, int64_t bq, int64_t k0, int64_t bk, int64_t D, int64_t row,
                      T scale) {
  const int64_t ld = mask.tile;
  tile_scores(w.P.data(), ld, Q, K, bq, bk, D, row, scale);
  if (!full) tile_mask(w.P.data(), ld, mask, q0, bq, k0, bk);
  tile_probs(w.P.data(), ld, lse_rows, bq, bk);
  gemm<T>(false, true, bq, bk, D, T(1), dO, row, V, row, T(0), w.dS.data(), ld);  // dP
  for (int64_t r = 0; r < bq; ++r) {
    const T* p = w.P.data() + r * ld;
    T* ds = w.dS.data() + r * ld;
    const T dl = delta_rows[r];
    for (int64_t c = 0; c < bk; ++c) ds[c] = p[c] * (ds[c] - dl);
  }
}

// Everything one backward call shares; head_row offsets into the [B, T, H, D] tensors.
template <class T>
struct BackwardArgs {
  T *dq, *dk, *dv;
  const T *dout, *q, *k, *v, *lse, *delta;
  const BlockMask* masks;
  int64_t B, T_, H, D;
  T scale;
  int64_t row() const { return H * D; }
  const T* at(const T* x, int64_t b, int64_t t, int64_t h) const { return head_row(x, b, t, h, T_, H, D); }
  T* at(T* x, int64_t b, int64_t t, int64_t h) const { return head_row(x, b, t, h, T_, H, D); }
  const T* lse_at(int64_t b, int64_t h, int64_t t) const { return lse + (b * H + h) * T_ + t; }
  const T* delta_at(int64_t b, int64_t h, int64_t t) const { return delta + (b * H + h) * T_ + t; }
};

// dk, dv of key block kb of head h of sequence b, over its query blocks in ascending order.
// When dq_too, also adds each tile's share to dq (kByHead: the caller walks kb ascending,
// so every dq block is summed over its key blocks in ascending order, as in dq_block).
template <class T>
void dkdv_block(const BackwardArgs<T>& a, TileWork<T>& w, int64_t b, int64_t h, int64_t kb,
                bool dq_too) {
  const BlockMask& mask = a.masks[b];
  const int64_t tile = mask.tile, row = a.row();
  const int64_t k0 = kb * tile;
  const int64_t bk = std::min(a.T_, k0 + tile) - k0;
  const T* K = a.at(a.k, b, k0, h);
  const T* V = a.at(a.v, b, k0, h);
  T* dK = a.at(a.dk, b, k0, h);
  T* dV = a.at(a.dv, b, k0, h);
  for (int32_t e = mask.k_ptr[size_t(kb)]; e < mask.k_ptr[size_t(kb) + 1]; ++e) {
    const int64_t qb = mask.k_q[size_t(e)];
    const int64_t q0 = qb * tile;
    const int64_t bq = std::min(a.T_, q0 + tile) - q0;
    const T* Q = a.at(a.q, b, q0, h);
    const T* dO = a.at(a.dout, b, q0, h);
    tile_grad(w, Q, K, V, dO, a.lse_at(b, h, q0), a.delta_at(b, h, q0), mask,
              mask.k_full[size_t(e)] != 0, q0, bq, k0, bk, a.D, row, a.scale);
    const T beta = e == mask.k_ptr[size_t(kb)] ? T(0) : T(1);
    gemm<T>(true, false, bk, a.D, bq, T(1), w.P.data(), tile, dO, row, beta, dV, row);
    gemm<T>(true, false, bk, a.D, bq, a.scale, w.dS.data(), tile, Q, row, beta, dK, row);
    if (dq_too) {
      const T qbeta = kb == mask.q_kv[size_t(mask.q_ptr[size_t(qb)])] ? T(0) : T(1);
      gemm<T>(false, false, bq, a.D, bk, a.scale, w.dS.data(), tile, K, row, qbeta,
              a.at(a.dq, b, q0, h), row);
    }
  }
}

// dq of query block qb of head h of sequence b, over its key blocks in ascending order.
template <class T>
void dq_block(const BackwardArgs<T>& a, TileWork<T>& w, int64_t b, int64_t h, int64_t qb) {
  const BlockMask& mask = a.masks[b];
  const int64_t tile = mask.tile, row = a.row();
  const int64_t q0 = qb * tile;
  const int64_t bq = std::min(a.T_, q0 + tile) - q0;
  const T* Q = a.at(a.q, b, q0, h);
  const T* dO = a.at(a.dout, b, q0, h);
  T* dQ = a.at(a.dq, b, q0, h);
  for (int32_t e = mask.q_ptr[size_t(qb)]; e < mask.q_ptr[size_t(qb) + 1]; ++e) {
    const int64_t k0 = int64_t(mask.q_kv[size_t(e)]) * tile;
    const int64_t bk = std::min(a.T_, k0 + tile) - k0;
    const T* K = a.at(a.k, b, k0, h);
    tile_grad(w, Q, K, a.at(a.v, b, k0, h), dO, a.lse_at(b, h, q0), a.delta_at(b, h, q0), mask,
              mask.q_full[size_t(e)] != 0, q0, bq, k0, bk, a.D, row, a.scale);
    const T beta = e == mask.q_ptr[size_t(qb)] ? T(0) : T(1);
    gemm<T>(false, false, bq, a.D, bk, a.scale, w.dS.data(), tile, K, row, beta, dQ, row);
  }
}

// kByHead keeps every thread busy when the (sequence, head) pairs split evenly enough:
// its efficiency pairs/(threads * rounds) must beat kByBlock's ~5/7 matmul share.
inline bool by_head_pays(int64_t pairs, int64_t threads) {
  const int64_t rounds = (pairs + threads - 1) / threads;
  return 7 * pairs >= 5 * threads * rounds;
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const T* lse, const BlockMask* masks, int64_t B,
                        int64_t T_, int64_t H, int64_t D, T scale, BackwardSchedule schedule) {
  const int64_t max_tile = check_masks("attention_backward", masks, B, T_, H, D);
  std::vector<T> delta(size_t(B * H * T_));  // [B, H, T]: dout_i . out_i
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < B * T_; ++n) {
    const int64_t b = n / T_, t = n % T_;
    for (int64_t h = 0; h < H; ++h) {
      const T* o = head_row(out, b, t, h, T_, H, D);
      const T* g = head_row(dout, b, t, h, T_, H, D);
      T s = 0;
      for (int64_t d = 0; d < D; ++d) s += o[d] * g[d];
      delta[size_t((b * H + h) * T_ + t)] = s;
    }
  }
  const BackwardArgs<T> a{dq, dk, dv, dout, q, k, v, lse, delta.data(), masks, B, T_, H, D, scale};

  if (schedule == BackwardSchedule::kAuto)
    schedule = by_head_pays(B * H, omp_get_max_threads()) ? BackwardSchedule::kByHead
                                                          : BackwardSchedule::kByBlock;
  if (schedule == BackwardSchedule::kByHead) {
#pragma omp parallel
    {
      TileWork<T> w(max_tile);
#pragma omp for schedule(static, 1)
      for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        for (int64_t kb = 0; kb < masks[b].num_blocks(); ++kb) dkdv_block(a, w, b, h, kb, true);
      }
    }
    return;
  }
  int64_t nb_max = 0;
  for (int64_t b = 0; b < B; ++b) nb_max = std::max(nb_max, masks[b].num_blocks());
  const int64_t tasks = B * H * nb_max;
#pragma omp parallel
  {
    TileWork<T> w(max_tile);
#pragma omp for schedule(static, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % nb_max, h = (task / nb_max) % H, b = task / (nb_max * H);
      if (blk < masks[b].num_blocks()) dkdv_block(a, w, b, h, blk, false);
    }
#pragma omp for schedule(static, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = task % nb_max, h = (task / nb_max) % H, b = task / (nb_max * H);
      if (blk < masks[b].num_blocks()) dq_block(a, w, b, h, blk);
    }
  }
}

}  // namespace attn

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const T* lse, const BlockMask* masks, int64_t B,
                        int64_t T_, int64_t H, int64_t D, T scale) {
  attn::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, masks, B, T_, H, D, scale,
                           attn::BackwardSchedule::kAuto);
}

}  // namespace speedrun::cpu
