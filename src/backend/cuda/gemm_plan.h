// GEMMs on row-major storage through cuBLASLt (column-major), in plain C++ so that
// tests/test_cuda_math.cpp checks the mapping without a GPU.
//
// A row-major [r, c] matrix is the column-major [c, r] matrix of the same bytes (its
// transpose). So the row-major C[M,N] = op(A) op(B) is the column-major
// C^T[N,M] = op(B)^T op(A)^T: cuBLASLt's "A" is our B and its "B" is our A, each with our
// transpose flag, and m, n = N, M. The descriptors and the algorithm are chosen once per
// GemmKey (matmul.cu caches them).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace speedrun::cuda {

// One GEMM problem, row-major: C[b] (=) alpha op(A[b]) op(B[b]) + beta Cin[b] for b < batch,
// op(A) [M,K] (A stored [K,M] when transA), op(B) [K,N] (B stored [N,K] when transB),
// C [M,N]; strides between the matrices of a batch in elements (0 when batch == 1).
struct GemmKey {
  int64_t M = 0, N = 0, K = 0;
  bool transA = false, transB = false;
  int64_t batch = 1, strideA = 0, strideB = 0, strideC = 0;
  DType a = DType::BF16, b = DType::BF16, c = DType::BF16;
  bool accumulate = false;  // beta != 0: C is read
  // The largest power of two (<= 256) dividing each address: the heuristic may pick
  // kernels that need more alignment than a view (a slice of rows) offers.
  uint32_t alignA = 256, alignB = 256, alignC = 256;
  bool operator==(const GemmKey&) const = default;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const;
};

// A column-major matrix as cuBLASLt sees it.
struct LtMatrix {
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};

// cuBLASLt's problem: D[m,n] = alpha opA(A) opB(B) + beta C, column-major.
struct LtGemm {
  bool transa = false, transb = false;
  uint64_t m = 0, n = 0, k = 0;
  LtMatrix a, b, c;       // c describes both C and D
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // batch strides in elements
};

LtGemm lt_gemm(const GemmKey& k);

// The largest power of two dividing the address, at most 256.
uint32_t pointer_alignment(const void* p);

// "M=65536 N=768 K=3072 A^T BF16 x B BF16 -> F32 (+=) batch 1" for messages.
std::string gemm_key_str(const GemmKey& k);

}  // namespace speedrun::cuda
