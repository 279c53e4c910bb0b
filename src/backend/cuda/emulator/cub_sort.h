// cub::DeviceRadixSort::SortPairs for an emulated build, where CUB's device code cannot be
// compiled: the same contract (a sizing call with temp == nullptr, then a stable sort of
// the pairs by key bits [begin_bit, end_bit) on the stream), done on the host with
// std::stable_sort when the stream runs it (streams.h).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"

namespace cub {

struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out,
                               const V* values_in, V* values_out, int n, int begin_bit = 0,
                               int end_bit = int(sizeof(K) * 8), cudaStream_t stream = nullptr) {
    if (cudaError_t e = speedrun::cuda::emu::peek_sticky_error()) return e;
    const size_t need = 256 + size_t(n) * (sizeof(K) + sizeof(V));  // as CUB needs some
    if (!temp) {
      temp_bytes = need;
      return cudaSuccess;
    }
    if (temp_bytes < need || n < 0 || begin_bit < 0 || end_bit > int(sizeof(K) * 8) || begin_bit > end_bit)
      return cudaErrorInvalidValue;
    speedrun::cuda::emu::enqueue(stream, [=] {
      const uint64_t mask =
          end_bit - begin_bit >= 64 ? ~uint64_t(0) : (uint64_t(1) << (end_bit - begin_bit)) - 1;
      auto digit = [&](K k) { return (uint64_t(k) >> begin_bit) & mask; };
      const size_t count = static_cast<size_t>(n);
      std::vector<int> idx(count);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int a, int b) { return digit(keys_in[a]) < digit(keys_in[b]); });
      std::vector<K> k(count);
      std::vector<V> v(count);
      for (size_t i = 0; i < count; ++i) k[i] = keys_in[idx[i]], v[i] = values_in[idx[i]];
      std::copy(k.begin(), k.end(), keys_out);
      std::copy(v.begin(), v.end(), values_out);
    });
    return cudaSuccess;
  }
};

}  // namespace cub
