// relu(x)^2, elementwise over n values. forward: y = max(x,0)^2 (=); y may alias x.
// backward: dx = 2*max(x,0)*dy (=); dx may alias dy (not x).
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
void relu_squared_backward(T* dx, const T* dy, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = (x[i] + std::fabs(x[i])) * dy[i];  // 2*max(x,0)*dy with the same bits
  }
}

}  // namespace speedrun::cpu
