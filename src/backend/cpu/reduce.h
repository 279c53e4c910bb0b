// Deterministic reductions shared by the CPU kernels: products summed in double over a
// fixed number of lanes, combined in a fixed order, so a sum depends only on the data,
// never on the thread count, the chunking across threads, or timing.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace speedrun::cpu {

// Lanes of independent double accumulators (two AVX2 registers): lets the compiler
// vectorise a reduction without reassociating it.
inline constexpr int kLanes = 8;
// Elements per chunk of a parallel reduction; fixed so partial sums never depend on the
// number of threads. Below kParallelMin elements a kernel runs on the calling thread.
inline constexpr int64_t kReduceChunk = 16384;
inline constexpr int64_t kParallelMin = 32768;

// sum_i a[i] * b[i] in double; serial, fixed order (lane l takes i = l mod kLanes).
template <class T>
inline double dot_serial(const T* a, const T* b, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += double(a[i + l]) * double(b[i + l]);
  for (int l = 0; i + l < n; ++l) acc[l] += double(a[i + l]) * double(b[i + l]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum_i a[i]^2 in double; serial, fixed order.
template <class T>
inline double sumsq_serial(const T* a, int64_t n) {
  return dot_serial(a, a, n);
}

// sx = sum_i d[i]*x[i], sy = sum_i d[i]*y[i] in double, one pass over d; fixed order as
// dot_serial (same bits as two dot_serial calls).
template <class T>
inline void dot2_serial(const T* d, const T* x, const T* y, int64_t n, double* sx, double* sy) {
  double ax[kLanes] = {}, ay[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double di = double(d[i + l]);
      ax[l] += di * double(x[i + l]);
      ay[l] += di * double(y[i + l]);
    }
  for (int l = 0; i + l < n; ++l) {
    const double di = double(d[i + l]);
    ax[l] += di * double(x[i + l]);
    ay[l] += di * double(y[i + l]);
  }
  *sx = ((ax[0] + ax[4]) + (ax[1] + ax[5])) + ((ax[2] + ax[6]) + (ax[3] + ax[7]));
  *sy = ((ay[0] + ay[4]) + (ay[1] + ay[5])) + ((ay[2] + ay[6]) + (ay[3] + ay[7]));
}

// Two dots' partial sums stored in pairs (part[2k], part[2k + 1]), one pair per chunk or
// row, added in that order: {sum of the first, sum of the second}.
inline std::pair<double, double> sum_pairs_in_order(const std::vector<double>& part) {
  double sx = 0, sy = 0;
  for (size_t k = 0; k + 1 < part.size(); k += 2) {
    sx += part[k];
    sy += part[k + 1];
  }
  return {sx, sy};
}

}  // namespace speedrun::cpu
