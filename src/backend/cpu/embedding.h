// Token embedding. tokens [N] (ids must be < wte's rows: not checked here, the loader
// validates them); wte, dwte [V, C]; out, dout [N, C].
// forward: out[n] = wte[tokens[n]] (=). backward: dwte[tokens[n]] += dout[n] (accumulates),
// deterministic: each thread owns a range of columns and adds rows in order n = 0..N-1.
#pragma once
#include <algorithm>
#include <cstdint>

#include "backend/cpu/reduce.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace speedrun::cpu {

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (parallel: N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T* src = wte + int64_t(tokens[n]) * C;
    std::copy(src, src + C, out + n * C);
  }
}

template <class T>
void embedding_backward(T* dwte, const int32_t* tokens, const T* dout, int64_t N, int64_t C) {
#pragma omp parallel if (parallel: N * C >= kParallelMin)
  {
    // Thread t owns columns [c0, c1) of every row (whole cache lines) and adds the rows in
    // order n = 0..N-1: each element sees the same sums in the same order for any split.
    int64_t c0 = 0, c1 = C;
#ifdef _OPENMP
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lines = (C + 15) / 16;
    c0 = std::min(C, lines * t / nt * 16);
    c1 = std::min(C, lines * (t + 1) / nt * 16);
#endif
    for (int64_t n = 0; n < N && c0 < c1; ++n) {
      T* dst = dwte + int64_t(tokens[n]) * C;
      const T* src = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace speedrun::cpu
