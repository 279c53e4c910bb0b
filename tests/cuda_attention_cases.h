// Cases and the fp64 oracle shared by the CUDA attention tests (test_cuda_attention_plan:
// the CPU emulation of the kernels; test_cuda_attention: the kernels on a GPU). Shapes are
// the awkward ones on purpose: T not a multiple of the 128-token tile, 1-token documents,
// windows under one tile and over T, several sequences with different documents.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/block_mask.h"
#include "backend/cpu/attention/backward.h"
#include "backend/cpu/attention/forward.h"
#include "core/bf16.h"
#include "tolerances.h"

namespace speedrun::attn_cases {

constexpr int32_t kEot = 50256;

// How the documents of one sequence are drawn.
enum class Docs {
  kOne,       // a single document
  kSparse,    // EOT with probability 1/100, plus a run of adjacent EOTs (1-token documents)
  kDense,     // EOT with probability 1/8
  kEveryEot,  // every token an EOT: T documents of 1 token
};

struct Case {
  std::string name;
  int64_t T;
  std::vector<Docs> docs;        // one per sequence (B = docs.size())
  std::vector<int64_t> windows;  // one per sequence
  int64_t B() const { return int64_t(docs.size()); }
};

inline std::vector<Case> cases() {
  return {
      {"T300_w37_docs", 300, {Docs::kSparse, Docs::kDense}, {37, 37}},
      {"T200_w1000_one_every_dense", 200, {Docs::kOne, Docs::kEveryEot, Docs::kDense}, {1000, 1000, 1000}},
      {"T129_w128", 129, {Docs::kSparse}, {128}},
      {"T64_w5", 64, {Docs::kDense, Docs::kOne}, {5, 5}},
      {"T384_w256_one_doc_full_tiles", 384, {Docs::kOne}, {256}},
      {"T513_w200", 513, {Docs::kSparse, Docs::kSparse}, {200, 200}},
      {"T256_w1", 256, {Docs::kSparse}, {1}},
      {"T320_mixed_windows", 320, {Docs::kOne, Docs::kSparse}, {64, 300}},
  };
}

inline std::vector<int32_t> make_tokens(int64_t T, Docs docs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, 50000);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& x : t) x = id(rng);
  auto eot_with = [&](double p) {
    std::bernoulli_distribution is(p);
    for (auto& x : t)
      if (is(rng)) x = kEot;
  };
  switch (docs) {
    case Docs::kOne: break;
    case Docs::kSparse:
      eot_with(0.01);
      for (int64_t i = T / 3; i < std::min(T, T / 3 + 4); ++i) t[size_t(i)] = kEot;
      break;
    case Docs::kDense: eot_with(0.125); break;
    case Docs::kEveryEot: std::fill(t.begin(), t.end(), kEot); break;
  }
  return t;
}

inline std::vector<BlockMask> make_masks(const Case& c, uint64_t seed) {
  std::vector<BlockMask> masks;
  for (int64_t b = 0; b < c.B(); ++b) {
    const std::vector<int32_t> tok = make_tokens(c.T, c.docs[size_t(b)], seed + 17 * uint64_t(b));
    masks.push_back(build_block_mask(tok.data(), c.T, kEot, c.windows[size_t(b)], 128));
  }
  return masks;
}

// n values ~ N(0, sd^2) rounded to bf16 (the GPU's inputs are bf16; the oracle gets the same).
inline std::vector<float> bf16_normal(size_t n, double sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, sd);
  std::vector<float> x(n);
  for (auto& v : x) v = round_bf16(float(nd(rng)));
  return x;
}

inline std::vector<double> to_double(const std::vector<float>& x) {
  return std::vector<double>(x.begin(), x.end());
}

using tol::rel_err;  // tests/tolerances.h's measure

// The CPU backend's kernels in double: the oracle.
struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};
inline Reference reference(const std::vector<BlockMask>& masks, int64_t T, int64_t H, int64_t D,
                           double scale, const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, const std::vector<float>& dout) {
  const int64_t B = int64_t(masks.size()), n = B * T * H * D;
  const std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v),
                            gd = to_double(dout);
  Reference r;
  r.out.assign(size_t(n), 0.0);
  r.lse.assign(size_t(B * H * T), 0.0);
  cpu::attention_forward<double>(r.out.data(), r.lse.data(), qd.data(), kd.data(), vd.data(),
                                 masks.data(), B, T, H, D, scale);
  if (!dout.empty()) {
    r.dq.assign(size_t(n), 0.0);
    r.dk.assign(size_t(n), 0.0);
    r.dv.assign(size_t(n), 0.0);
    cpu::attention_backward<double>(r.dq.data(), r.dk.data(), r.dv.data(), gd.data(), qd.data(),
                                    kd.data(), vd.data(), r.out.data(), r.lse.data(),
                                    masks.data(), B, T, H, D, scale);
  }
  return r;
}

}  // namespace speedrun::attn_cases
