#include "backend/cuda/gemm_plan.h"

#include <functional>

namespace speedrun::cuda {

size_t GemmKeyHash::operator()(const GemmKey& k) const {
  size_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  for (int64_t v : {k.M, k.N, k.K, k.batch, k.strideA, k.strideB, k.strideC}) mix(uint64_t(v));
  mix(uint64_t(k.transA) | uint64_t(k.transB) << 1 | uint64_t(k.accumulate) << 2);
  mix(uint64_t(k.a) | uint64_t(k.b) << 8 | uint64_t(k.c) << 16);
  mix(uint64_t(k.alignA) | uint64_t(k.alignB) << 16 | uint64_t(k.alignC) << 32);
  return h;
}

LtGemm lt_gemm(const GemmKey& k) {
  LtGemm g;
  g.m = uint64_t(k.N);
  g.n = uint64_t(k.M);
  g.k = uint64_t(k.K);
  // cuBLASLt's A is our B: stored [K,N] row-major = [N,K] column-major (ld N), used as is;
  // or stored [N,K] row-major = [K,N] column-major (ld K), transposed.
  g.transa = k.transB;
  g.a = k.transB ? LtMatrix{uint64_t(k.K), uint64_t(k.N), k.K} : LtMatrix{uint64_t(k.N), uint64_t(k.K), k.N};
  // cuBLASLt's B is our A: [M,K] row-major = [K,M] column-major (ld K); or stored [K,M]
  // row-major = [M,K] column-major (ld M), transposed.
  g.transb = k.transA;
  g.b = k.transA ? LtMatrix{uint64_t(k.M), uint64_t(k.K), k.M} : LtMatrix{uint64_t(k.K), uint64_t(k.M), k.K};
  g.c = LtMatrix{uint64_t(k.N), uint64_t(k.M), k.N};
  g.stride_a = k.strideB;
  g.stride_b = k.strideA;
  g.stride_c = k.strideC;
  return g;
}

uint32_t pointer_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 1;
  while (al < 256 && a % (al * 2) == 0) al *= 2;
  return al;
}

std::string gemm_key_str(const GemmKey& k) {
  std::string s = "M=" + std::to_string(k.M) + " N=" + std::to_string(k.N) +
                  " K=" + std::to_string(k.K) + " A" + (k.transA ? "^T " : " ") +
                  std::string(dtype_name(k.a)) + " x B" + (k.transB ? "^T " : " ") +
                  std::string(dtype_name(k.b)) + " -> " + std::string(dtype_name(k.c)) +
                  (k.accumulate ? " (+=)" : " (=)");
  if (k.batch > 1) s += " batch " + std::to_string(k.batch);
  return s;
}

}  // namespace speedrun::cuda
