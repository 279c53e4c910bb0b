// Attention of one query over a key/value cache, on the CPU (incremental decoding).
//   out[H, D] = softmax_j(scale * q_h . k_jh) @ v_jh over the cache rows j in rows[0..n)
// q, out: [1, H, D]; k, v: [S, H, D] row-major (row stride H*D). The scores, the softmax
// and the weighted sum are computed in double and summed in the order of `rows`, so the
// result depends only on the data (not on threads). out must not alias q, k or v.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/cpu/reduce.h"
#include "core/error.h"

namespace speedrun::cpu {

template <class T>
void attention_decode(T* out, const T* q, const T* k, const T* v, const int32_t* rows,
                      int64_t n, int64_t S, int64_t H, int64_t D, double scale) {
  check(n >= 1, "attention_decode: the query sees no key (empty row list)");
  for (int64_t j = 0; j < n; ++j)
    check(rows[j] >= 0 && rows[j] < S, "attention_decode: cache row ", rows[j],
          " outside [0, ", S, ")");
  const int64_t row = H * D;
  std::vector<double> p(static_cast<size_t>(n)), acc(static_cast<size_t>(D));
  for (int64_t h = 0; h < H; ++h) {
    const T* qh = q + h * D;
    double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      p[size_t(j)] = scale * dot_serial(qh, k + rows[j] * row + h * D, D);
      m = std::max(m, p[size_t(j)]);
    }
    double l = 0;
    for (int64_t j = 0; j < n; ++j) l += p[size_t(j)] = std::exp(p[size_t(j)] - m);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      const T* vj = v + rows[j] * row + h * D;
      const double w = p[size_t(j)];
      for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += w * double(vj[d]);
    }
    for (int64_t d = 0; d < D; ++d) out[h * D + d] = T(acc[size_t(d)] / l);
  }
}

}  // namespace speedrun::cpu
