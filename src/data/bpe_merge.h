// Byte-pair merging of one pre-tokenized piece, exactly as tiktoken does it
// (tiktoken/src/lib.rs, byte_pair_merge): the piece starts as single bytes; repeatedly
// the adjacent pair whose concatenated bytes form the token of lowest rank is joined,
// the leftmost one when ranks tie; it stops when no adjacent pair forms a token. Ranks
// are token ids (GPT-2 and our trainer number merged tokens in merge order).
//
// Two implementations with identical results: merge_small is tiktoken's O(n * merges)
// scan, fastest for the short pieces of ordinary text; merge_heap is O(n log n) for long
// pieces (a 1 MB run of digits or letters), where the scan would be quadratic.
#pragma once
#include <cstdint>
#include <functional>
#include <queue>
#include <string_view>
#include <utility>
#include <vector>

namespace speedrun::bpe {

inline constexpr uint32_t kNoRank = UINT32_MAX;

// Both take rank(std::string_view bytes) -> uint32_t (kNoRank when not a token) and write
// the start offsets of the final parts into `starts`, followed by piece.size().
template <class Rank>
void merge_small(std::string_view piece, const Rank& rank, std::vector<uint32_t>& starts) {
  const uint32_t n = static_cast<uint32_t>(piece.size());
  // parts[k] = (start offset, rank of the pair made of part k and part k+1); like tiktoken
  // it keeps two sentinels at the end so that part k's pair ends at parts[k + 2].start.
  std::vector<std::pair<uint32_t, uint32_t>> parts;
  parts.reserve(n + 1);
  uint32_t best = kNoRank, best_k = 0;
  for (uint32_t i = 0; i + 1 < n; ++i) {
    const uint32_t r = rank(piece.substr(i, 2));
    if (r < best) best = r, best_k = i;
    parts.emplace_back(i, r);
  }
  parts.emplace_back(n - 1, kNoRank);
  parts.emplace_back(n, kNoRank);
  auto pair_rank = [&](size_t k) {  // rank of parts k and k+1 once k+1 has absorbed k+2
    if (k + 3 < parts.size())
      return rank(piece.substr(parts[k].first, parts[k + 3].first - parts[k].first));
    return kNoRank;
  };
  while (best != kNoRank) {
    const uint32_t k = best_k;
    if (k > 0) parts[k - 1].second = pair_rank(k - 1);
    parts[k].second = pair_rank(k);
    parts.erase(parts.begin() + k + 1);
    best = kNoRank;
    for (uint32_t j = 0; j + 1 < parts.size(); ++j)
      if (parts[j].second < best) best = parts[j].second, best_k = j;
  }
  starts.clear();
  for (size_t k = 0; k + 1 < parts.size(); ++k) starts.push_back(parts[k].first);
  starts.push_back(n);
}

template <class Rank>
void merge_heap(std::string_view piece, const Rank& rank, std::vector<uint32_t>& starts) {
  const uint32_t n = static_cast<uint32_t>(piece.size());
  // Parts form a linked list over their start offsets; next[n] = n closes it. pair[i] is
  // the rank of part i joined with its successor; gen[i] invalidates stale heap entries.
  std::vector<uint32_t> next(n + 1), prev(n + 1), pair(n + 1, kNoRank), gen(n + 1, 0);
  for (uint32_t i = 0; i <= n; ++i) next[i] = i < n ? i + 1 : n, prev[i] = i > 0 ? i - 1 : 0;
  struct Entry {
    uint32_t rank, start, gen;
    bool operator>(const Entry& o) const {  // lowest rank first, then leftmost
      return rank != o.rank ? rank > o.rank : start > o.start;
    }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto refresh = [&](uint32_t i) {  // recompute the pair starting at part i
    ++gen[i];
    const uint32_t j = next[i];
    pair[i] = j < n ? rank(piece.substr(i, next[j] - i)) : kNoRank;
    if (pair[i] != kNoRank) heap.push({pair[i], i, gen[i]});
  };
  for (uint32_t i = 0; i < n; ++i) refresh(i);
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    if (e.gen != gen[e.start]) continue;
    const uint32_t i = e.start, j = next[i];
    next[i] = next[j];
    prev[next[j]] = i;
    ++gen[j];  // part j no longer exists
    refresh(i);
    if (i > 0) refresh(prev[i]);
  }
  starts.clear();
  for (uint32_t i = 0; i < n; i = next[i]) starts.push_back(i);
  starts.push_back(n);
}

}  // namespace speedrun::bpe
