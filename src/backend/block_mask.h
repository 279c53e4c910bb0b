// Block-sparse attention mask for one packed sequence of T tokens (SPEC.md "Mask"):
// key j is visible to query i iff j <= i, doc[i] == doc[j] and i - j < window, where
// doc[t] = number of EOT tokens in tokens[0..t] (inclusive). The (T x T) mask is cut into
// tile x tile blocks, each classified empty / partial / full; only non-empty blocks are
// listed, so kernels that walk these lists cost O(T * window), never O(T^2).
// Built on the host from the tokens once per sequence per step; every backend reads it.
#pragma once
#include <cstdint>
#include <vector>

namespace speedrun {

struct BlockMask {
  int64_t T = 0;       // tokens in the sequence
  int64_t tile = 128;  // block edge in tokens (the last block may be shorter)
  int64_t window = 0;  // sliding window in tokens (i - j < window)
  std::vector<int32_t> doc;  // [T] document index of each token

  // By query block qb: key blocks q_kv[q_ptr[qb] .. q_ptr[qb+1]) in ascending order,
  // q_full[e] = 1 when every (i, j) in the block is visible (no per-element test needed).
  std::vector<int32_t> q_ptr, q_kv;
  std::vector<uint8_t> q_full;
  // The same blocks by key block kb (for the backward pass over keys): query blocks
  // k_q[k_ptr[kb] .. k_ptr[kb+1]) ascending, k_full alike.
  std::vector<int32_t> k_ptr, k_q;
  std::vector<uint8_t> k_full;

  int64_t num_blocks() const { return (T + tile - 1) / tile; }
  bool visible(int64_t i, int64_t j) const {
    return j <= i && i - j < window && doc[i] == doc[j];
  }
  int64_t count_partial() const;
  int64_t count_full() const;
};

// Builds the mask of one sequence. tokens: [T] ids; eot: the document delimiter id;
// window >= 1; tile >= 1. Throws speedrun::Error on invalid arguments.
BlockMask build_block_mask(const int32_t* tokens, int64_t T, int32_t eot, int64_t window,
                           int64_t tile = 128);

}  // namespace speedrun
