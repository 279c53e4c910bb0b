// Block-sparse document-causal sliding-window attention, forward, on the CPU.
//   out[B, T, H, D] = softmax_j(scale * q_i . k_j over the keys visible to i) @ v   (assigned)
//   lse[B, H, T]    = natural log of sum_j exp(scale * q_i . k_j) over those keys  (assigned)
// q, k, v, out: [B, T, H, D] row-major; masks[b] is the BlockMask of sequence b (its T must
// be T). Only the mask's listed tiles are read, so the cost is O(T * window * D) per head.
// out must not alias q, k or v.
#pragma once
#include <omp.h>

#include <vector>

#include "backend/cpu/attention/common.h"

namespace speedrun::cpu {

// One task = one (sequence, head, query block): the online (flash) softmax over the query
// block's listed key blocks, tile matmuls through gemm. Tasks write disjoint outputs, so
// the result does not depend on the number of threads.
template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v,
                       const BlockMask* masks, int64_t B, int64_t T_, int64_t H, int64_t D,
                       T scale) {
  const int64_t max_tile = attn::check_masks("attention_forward", masks, B, T_, H, D);
  const int64_t row = H * D;
  int64_t nb_max = 0;
  for (int64_t b = 0; b < B; ++b) nb_max = std::max(nb_max, masks[b].num_blocks());
  const int64_t tasks = B * H * nb_max;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();

#pragma omp parallel
  {
    std::vector<T> S(size_t(max_tile * max_tile));   // scores, then probabilities
    std::vector<T> O(size_t(max_tile * D));          // unnormalised output rows
    const size_t rows = static_cast<size_t>(max_tile);
    std::vector<T> m(rows), l(rows), alpha(rows);

#pragma omp for schedule(static, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t qb = task % nb_max;
      const int64_t h = (task / nb_max) % H;
      const int64_t b = task / (nb_max * H);
      const BlockMask& mask = masks[b];
      if (qb >= mask.num_blocks()) continue;
      const int64_t tile = mask.tile;
      const int64_t q0 = qb * tile;
      const int64_t bq = std::min(T_, q0 + tile) - q0;
      const T* Q = attn::head_row(q, b, q0, h, T_, H, D);

      std::fill(m.begin(), m.begin() + bq, kNegInf);
      std::fill(l.begin(), l.begin() + bq, T(0));
      std::fill(O.begin(), O.begin() + bq * D, T(0));

      for (int32_t e = mask.q_ptr[size_t(qb)]; e < mask.q_ptr[size_t(qb) + 1]; ++e) {
        const int64_t k0 = int64_t(mask.q_kv[size_t(e)]) * tile;
        const int64_t bk = std::min(T_, k0 + tile) - k0;
        attn::tile_scores(S.data(), tile, Q, attn::head_row(k, b, k0, h, T_, H, D), bq, bk, D,
                          row, scale);
        if (!mask.q_full[size_t(e)]) attn::tile_mask(S.data(), tile, mask, q0, bq, k0, bk);

        bool rescale = false;
        for (int64_t r = 0; r < bq; ++r) {
          T* s = S.data() + r * tile;
          const T mt = attn::row_max(s, bk);
          if (mt == kNegInf) {  // no visible key of this row in this tile
            std::fill(s, s + bk, T(0));
            alpha[size_t(r)] = T(1);
            continue;
          }
          const T mnew = std::max(m[size_t(r)], mt);
          const T sum = attn::exp_shift_sum(s, bk, mnew);
          const T a = attn::exp_nonpos<T>(m[size_t(r)] - mnew);
          alpha[size_t(r)] = a;
          rescale |= a != T(1);
          l[size_t(r)] = l[size_t(r)] * a + sum;
          m[size_t(r)] = mnew;
        }
        if (rescale) {
          for (int64_t r = 0; r < bq; ++r) {
            const T a = alpha[size_t(r)];
            T* o = O.data() + r * D;
            for (int64_t d = 0; d < D; ++d) o[d] *= a;
          }
        }
        gemm<T>(false, false, bq, D, bk, T(1), S.data(), tile,
                attn::head_row(v, b, k0, h, T_, H, D), row, T(1), O.data(), D);
      }

      T* lse_row = lse + (b * H + h) * T_ + q0;
      for (int64_t r = 0; r < bq; ++r) {
        const T inv = T(1) / l[size_t(r)];
        const T* o = O.data() + r * D;
        T* y = attn::head_row(out, b, q0 + r, h, T_, H, D);
        for (int64_t d = 0; d < D; ++d) y[d] = o[d] * inv;
        lse_row[r] = m[size_t(r)] + std::log(l[size_t(r)]);
      }
    }
  }
}

}  // namespace speedrun::cpu
