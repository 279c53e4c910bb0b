// relu(x)^2, elementwise over n values. forward: y = max(x,0)^2 (=); y may alias x.
// backward, from the forward's output: dx = 2*sqrt(y)*dy (=), which is 2*max(x,0)*dy with
// the same bits (backend.h says why); dx may alias dy (not y).
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/cpu/reduce.h"

namespace speedrun::cpu {

template <class T>
void relu_squared_forward(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    // max(x, 0) written without a compare, which GCC would not vectorise under the default
    // -ftrapping-math: x + |x| is exactly 2x or +0, and NaN propagates as in PyTorch.
    const T r = (x[i] + std::fabs(x[i])) * T(0.5);
    y[i] = r * r;
  }
}

template <class T>
void relu_squared_backward(T* dx, const T* dy, const T* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T r = std::sqrt(y[i]);  // max(x, 0), exactly
    dx[i] = (r + r) * dy[i];      // as (x + |x|) * dy: 2r is exact
  }
}

}  // namespace speedrun::cpu
