// Block mask construction. Documents are contiguous and doc[] is non-decreasing, so the
// keys a query i can see form one interval [lo(i), i] with
// lo(i) = max(start of i's document, i - window + 1), and lo() is non-decreasing in i.
// The key blocks a query block [q0, q1) touches are therefore exactly the contiguous range
// [block(lo(q0)), block(q1 - 1)]: every block in it holds a visible pair (below the
// diagonal the pair (q0, k1 - 1) is visible; on the diagonal (i, i) is), every block
// outside it holds none. The build enumerates that range only: O(T + listed blocks).
#include "backend/block_mask.h"

#include <algorithm>

#include "core/error.h"

namespace speedrun {

namespace {

// Classifies a listed block with the contract's rule; full means every pair is visible.
bool block_is_full(const BlockMask& m, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  return k1 - 1 <= q0 && (q1 - 1) - k0 < m.window && m.doc[k0] == m.doc[q1 - 1];
}

}  // namespace

int64_t BlockMask::count_full() const {
  int64_t n = 0;
  for (uint8_t f : q_full) n += f;
  return n;
}

int64_t BlockMask::count_partial() const {
  return int64_t(q_full.size()) - count_full();
}

BlockMask build_block_mask(const int32_t* tokens, int64_t T, int32_t eot, int64_t window,
                           int64_t tile) {
  check(T >= 1, "build_block_mask: sequence length T must be >= 1, got ", T);
  check(window >= 1, "build_block_mask: window must be >= 1 token, got ", window);
  check(tile >= 1, "build_block_mask: tile must be >= 1 token, got ", tile);
  check(tokens != nullptr, "build_block_mask: tokens is null (T = ", T, ")");
  check(T <= int64_t(INT32_MAX), "build_block_mask: T = ", T, " does not fit the int32 mask indices");

  BlockMask m;
  m.T = T;
  m.tile = tile;
  m.window = window;
  m.doc.resize(size_t(T));
  // start[t]: first token of t's document.
  std::vector<int64_t> start(static_cast<size_t>(T));
  int32_t d = 0;
  int64_t s = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] == eot) {
      ++d;
      s = t;
    }
    m.doc[size_t(t)] = d;
    start[size_t(t)] = s;
  }

  const int64_t nb = m.num_blocks();
  m.q_ptr.assign(size_t(nb) + 1, 0);
  for (int64_t qb = 0; qb < nb; ++qb) {
    const int64_t q0 = qb * tile;
    const int64_t q1 = std::min(T, q0 + tile);
    const int64_t lo = std::max(start[size_t(q0)], q0 - window + 1);
    for (int64_t kb = lo / tile; kb <= qb; ++kb) {
      const int64_t k0 = kb * tile;
      const int64_t k1 = std::min(T, k0 + tile);
      m.q_kv.push_back(int32_t(kb));
      m.q_full.push_back(block_is_full(m, q0, q1, k0, k1) ? 1 : 0);
    }
    check(m.q_kv.size() <= size_t(INT32_MAX), "build_block_mask: more than 2^31 listed blocks (T = ",
          T, ", tile = ", tile, ", window = ", window, "); use a larger tile");
    m.q_ptr[size_t(qb) + 1] = int32_t(m.q_kv.size());
  }

  // The same blocks by key block: counting sort by kb; walking qb in ascending order
  // leaves each key block's query blocks ascending.
  const size_t nnz = m.q_kv.size();
  m.k_ptr.assign(size_t(nb) + 1, 0);
  for (int32_t kb : m.q_kv) ++m.k_ptr[size_t(kb) + 1];
  for (int64_t kb = 0; kb < nb; ++kb) m.k_ptr[size_t(kb) + 1] += m.k_ptr[size_t(kb)];
  m.k_q.resize(nnz);
  m.k_full.resize(nnz);
  std::vector<int32_t> next(m.k_ptr.begin(), m.k_ptr.end() - 1);
  for (int64_t qb = 0; qb < nb; ++qb) {
    for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
      const int32_t slot = next[size_t(m.q_kv[size_t(e)])]++;
      m.k_q[size_t(slot)] = int32_t(qb);
      m.k_full[size_t(slot)] = m.q_full[size_t(e)];
    }
  }
  return m;
}

}  // namespace speedrun
