// Row-major GEMM on OpenBLAS, templated so tests run the same code in double.
// C[M,N] = alpha * op(A) * op(B) + beta * C, op(A) is [M,K] (A stored [K,M] if transA),
// op(B) is [K,N] (B stored [N,K] if transB); lda/ldb/ldc are row strides in elements.
#pragma once
#include <cblas.h>
#include <cstdint>
#include <type_traits>

namespace speedrun::cpu {

template <class T>
void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

template <>
inline void gemm<float>(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

template <>
inline void gemm<double>(bool transA, bool transB, int64_t M, int64_t N, int64_t K, double alpha,
                         const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                         double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// Symmetric rank-k product C[m,m] = alpha * A A^T + beta * C for row-major A [m,k]
// (BLAS syrk: half the multiplications of the equivalent gemm). The full matrix is
// written: the upper triangle is computed and mirrored into the lower one.
template <class T>
void syrk(int64_t m, int64_t k, T alpha, const T* A, int64_t lda, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(m), int(k), alpha, A, int(lda), beta,
                C, int(ldc));
  else
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(m), int(k), alpha, A, int(lda), beta,
                C, int(ldc));
  for (int64_t i = 1; i < m; ++i)
    for (int64_t j = 0; j < i; ++j) C[i * ldc + j] = C[j * ldc + i];
}

}  // namespace speedrun::cpu
