#include "data/bpe_train.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <queue>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "data/bpe_pretokenize.h"
#include "data/gpt2_vocab.h"
#include "data/utf8.h"

namespace speedrun {
namespace {

struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceCounts = std::unordered_map<std::string, uint64_t, StrHash, std::equal_to<>>;

// How often each piece occurs in all texts (on all threads; the sum is order-free).
PieceCounts count_pieces(const std::vector<std::string_view>& texts) {
  const Pretokenizer pre;
  std::vector<PieceCounts> local(static_cast<size_t>(omp_get_max_threads()));
  std::exception_ptr error;
  std::once_flag first_error;
  const int64_t n = static_cast<int64_t>(texts.size());
#pragma omp parallel
  {
    PieceCounts& mine = local[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      try {
        std::string_view text = texts[i];
        std::string repaired;
        if (!is_valid_utf8(text)) {
          repaired = sanitize_utf8(text);
          text = repaired;
        }
        for (size_t pos = 0; pos < text.size();) {
          const size_t end = pre.next(text, pos);
          const std::string_view piece = text.substr(pos, end - pos);
          if (auto it = mine.find(piece); it != mine.end()) ++it->second;
          else mine.emplace(piece, 1);
          pos = end;
        }
      } catch (...) {  // an exception must not leave an OpenMP region
        std::call_once(first_error, [&] { error = std::current_exception(); });
      }
    }
  }
  if (error) std::rethrow_exception(error);
  PieceCounts all = std::move(local[0]);
  for (size_t t = 1; t < local.size(); ++t)
    for (auto& [piece, c] : local[t]) all[piece] += c;
  return all;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t key_left(uint64_t k) { return static_cast<int32_t>(k >> 32); }
int32_t key_right(uint64_t k) { return static_cast<int32_t>(k & 0xFFFFFFFFu); }

// The unique pieces as token sequences that shrink in place as merges apply.
struct Words {
  std::vector<int32_t> symbols;  // every word's tokens, back to back
  std::vector<size_t> offset;    // [W] start of word w in symbols
  std::vector<uint32_t> length;  // [W] current number of tokens of word w
  std::vector<uint64_t> freq;    // [W] occurrences of the piece in the texts
};

}  // namespace

BpeVocab train_bpe(const std::vector<std::string_view>& texts, int32_t vocab_size) {
  check(vocab_size >= 257, "train_bpe: vocab_size ", vocab_size, " is too small: it counts ",
        "the 256 bytes and <|endoftext|>, so it must be at least 257 (GPT-2 uses ", kGpt2Vocab,
        ")");
  BpeVocab v;
  // Single bytes take ids 0..255 in GPT-2's order: by the code point that spells them.
  std::vector<int> order(256);
  std::iota(order.begin(), order.end(), 0);
  const auto& alpha = gpt2_byte_to_unicode();
  std::sort(order.begin(), order.end(), [&](int x, int y) { return alpha[x] < alpha[y]; });
  int32_t byte_id[256];
  for (int i = 0; i < 256; ++i) {
    v.tokens.emplace_back(1, static_cast<char>(order[i]));
    byte_id[order[i]] = i;
  }
  std::unordered_map<std::string, int32_t> token_id;
  for (int i = 0; i < 256; ++i) token_id.emplace(v.tokens[i], i);

  // Unique pieces, sorted so that everything below runs in the same order every time.
  Words w;
  {
    PieceCounts counts = count_pieces(texts);
    std::vector<std::pair<std::string_view, uint64_t>> sorted(counts.begin(), counts.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [piece, c] : sorted) {
      w.offset.push_back(w.symbols.size());
      w.length.push_back(static_cast<uint32_t>(piece.size()));
      w.freq.push_back(c);
      for (unsigned char b : piece) w.symbols.push_back(byte_id[b]);
    }
  }
  const size_t W = w.freq.size();

  // Pair statistics: total count over all words, and the words that (may) hold the pair.
  std::unordered_map<uint64_t, int64_t> count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  for (size_t i = 0; i < W; ++i) {
    const int32_t* s = &w.symbols[w.offset[i]];
    for (uint32_t j = 0; j + 1 < w.length[i]; ++j) {
      const uint64_t k = pair_key(s[j], s[j + 1]);
      count[k] += static_cast<int64_t>(w.freq[i]);
      auto& list = where[k];
      if (list.empty() || list.back() != i) list.push_back(static_cast<uint32_t>(i));
    }
  }

  // Max-heap on (count, then smallest bytes). Entries go stale when counts change; a popped
  // entry whose count is no longer current is pushed again with the current count. Counts
  // only grow for pairs that hold the token just made, and those are pushed afresh.
  struct Entry {
    int64_t count;
    uint64_t pair;
  };
  auto after = [&](const Entry& x, const Entry& y) {  // true: x comes out after y
    if (x.count != y.count) return x.count < y.count;
    const std::string &xl = v.tokens[key_left(x.pair)], &yl = v.tokens[key_left(y.pair)];
    if (const int c = xl.compare(yl); c != 0) return c > 0;
    return v.tokens[key_right(x.pair)].compare(v.tokens[key_right(y.pair)]) > 0;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(after)> heap(after);
  for (const auto& [k, c] : count) heap.push({c, k});

  const size_t want = static_cast<size_t>(vocab_size) - 257;
  std::vector<uint64_t> touched;
  while (v.merges.size() < want && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const auto cit = count.find(top.pair);
    const int64_t current = cit == count.end() ? 0 : cit->second;
    if (current != top.count) {
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current <= 0) continue;
    const int32_t a = key_left(top.pair), b = key_right(top.pair);
    std::string joined = v.tokens[a] + v.tokens[b];
    int32_t z;
    if (auto it = token_id.find(joined); it != token_id.end()) {
      // Already a token (its bytes were made by another split). Not seen in practice with
      // left-to-right merging, but if it happens the words take that token and no merge is
      // added, so that every token's bytes stay unique.
      z = it->second;
    } else {
      z = static_cast<int32_t>(v.tokens.size());
      token_id.emplace(joined, z);
      v.tokens.push_back(std::move(joined));
      v.merges.emplace_back(a, b);
    }

    std::vector<uint32_t> holders = std::move(where[top.pair]);
    where.erase(top.pair);
    touched.clear();
    for (const uint32_t i : holders) {
      int32_t* s = &w.symbols[w.offset[i]];
      const uint32_t len = w.length[i];
      bool has = false;
      for (uint32_t j = 0; j + 1 < len && !has; ++j) has = s[j] == a && s[j + 1] == b;
      if (!has) continue;  // merged away by an earlier step
      const int64_t f = static_cast<int64_t>(w.freq[i]);
      for (uint32_t j = 0; j + 1 < len; ++j) count[pair_key(s[j], s[j + 1])] -= f;
      uint32_t out = 0;
      for (uint32_t j = 0; j < len; ++j) {
        if (j + 1 < len && s[j] == a && s[j + 1] == b) {
          s[out++] = z;
          ++j;
        } else {
          s[out++] = s[j];
        }
      }
      w.length[i] = out;
      for (uint32_t j = 0; j + 1 < out; ++j) {
        const uint64_t k = pair_key(s[j], s[j + 1]);
        count[k] += f;
        if (s[j] == z || s[j + 1] == z) {
          auto& list = where[k];
          if (list.empty() || list.back() != i) list.push_back(i);
          touched.push_back(k);
        }
      }
    }
    count.erase(top.pair);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (const uint64_t k : touched)
      if (const int64_t c = count[k]; c > 0) heap.push({c, k});
  }
  return v;
}

}  // namespace speedrun
