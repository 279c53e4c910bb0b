#include "train/op_work.h"

#include <algorithm>

namespace speedrun {

int64_t visible_pairs(const BlockMask& m) {
  check(int64_t(m.doc.size()) == m.T, "visible_pairs: mask of ", m.T, " tokens has ",
        m.doc.size(), " document indices");
  int64_t pairs = 0, doc_start = 0;
  for (int64_t i = 0; i < m.T; ++i) {
    if (i > 0 && m.doc[size_t(i)] != m.doc[size_t(i - 1)]) doc_start = i;
    const int64_t lo = std::max(doc_start, i - m.window + 1);
    pairs += i - lo + 1;
  }
  return pairs;
}

int64_t visible_pairs(const std::vector<BlockMask>& masks) {
  int64_t pairs = 0;
  for (const BlockMask& m : masks) pairs += visible_pairs(m);
  return pairs;
}

double matmul_flops(const Tensor& C, const Tensor& A, bool transA) {
  const double K = double(transA ? A.rows() : A.cols());
  return 2.0 * double(C.rows()) * double(C.cols()) * K;
}

double attention_forward_flops(int64_t pairs, int64_t heads, int64_t head_dim) {
  return 4.0 * double(pairs) * double(heads) * double(head_dim);
}

double attention_backward_flops(int64_t pairs, int64_t heads, int64_t head_dim) {
  return 10.0 * double(pairs) * double(heads) * double(head_dim);
}

double newton_schulz_flops(const Tensor& G, int steps) {
  const double n = G.ndim == 3 ? double(G.dim(0)) : 1.0;
  const double rows = double(G.dim(-2)), cols = double(G.dim(-1));
  const double m = std::min(rows, cols), k = std::max(rows, cols);
  return n * double(steps) * (4.0 * m * m * k + 2.0 * m * m * m);
}

}  // namespace speedrun
