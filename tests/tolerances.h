// One table of tolerances for every test, relative max-abs error ||a-b||_inf / max(1,||ref||_inf).
//  - kDouble: the same math in double against a naive double loop: only summation order differs.
//  - kFloat: fp32 kernels against the double oracle: a few ulps of fp32 times sqrt(reduction length).
//  - kFiniteDiff: central differences in double with h = 1e-6: truncation O(h^2) plus
//    cancellation O(eps/h) ~ 1e-10 relative; 1e-6 leaves margin for curvature.
//  - kBf16: bf16 inputs (8-bit mantissa) accumulated in fp32.
//  - kStat: fp32 row statistics (attention's lse) of bf16 inputs through tensor-core dot
//    products (fp32 accumulation that may truncate): a few ulps of the score per 16-wide
//    k-step, ~1e-6 relative; one wrongly visible key among n moves lse by ~1/n.
//  - kBf16Iterated: bf16 results fed through several dependent steps (Newton-Schulz's five
//    iterations, a model's layers and its backward): each step's rounding (2^-9 relative)
//    is carried and amplified by the next; a first estimate, to be confirmed on the GPU.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/dtype.h"

namespace speedrun::tol {

// The measure the tolerances bound: ||got - ref||_inf / max(1, ||ref||_inf), in double. A size
// mismatch, or a NaN or an infinity in got, gives infinity: it never passes.
template <class A, class R>
double rel_err(const std::vector<A>& got, const std::vector<R>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double err = 0, mag = 1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = double(got[i]);
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::abs(g - double(ref[i])));
    mag = std::max(mag, std::abs(double(ref[i])));
  }
  return err / mag;
}
constexpr double kDouble = 1e-12;
constexpr double kFloat = 2e-5;
constexpr double kFiniteDiff = 1e-6;
constexpr double kBf16 = 1e-2;
constexpr double kStat = 1e-4;
constexpr double kBf16Iterated = 5e-2;

// ---- conformance: a backend through the Backend interface against the CPU backend in fp64
// (tests/test_conformance.cpp). The bound is that of the least precise dtype among the op's
// operands, since that is where its rounding happens:
//  - F64 (kDouble): the oracle's own arithmetic in another order: ~1e-16 per operation.
//  - F32 (kFloat, 2e-5): fp32's unit roundoff is 6e-8; an op rounds each stored value once
//    and its reductions add rounding of order sqrt(terms) ulps, so a few hundred ulps of
//    the largest output leave room for a GPU's other summation order (tree reductions,
//    tensor-core fp32 accumulation, fused multiply-adds) and still catch a wrong formula:
//    a wrong index, a missed term or a wrong constant moves outputs by O(1e-2) of their
//    size or more. The CPU's fp32 backend measures <= 4e-6 on every case of the suite
//    but the rotary tables (their own bound below).
//  - BF16 (kBf16, 1e-2): the inputs are bf16 values and the accumulation is fp32, so the
//    error is the rounding of bf16 outputs and stored intermediates (a softmax's P, an
//    accumulated gradient), up to bf16's unit roundoff 2^-8 = 3.9e-3 of a value each
//    (8 significant bits): the output's own rounding and one or two more. The suite's
//    bf16 emulation, which rounds outputs only, measures <= 3.6e-3.
// Reductions: rounding errors of n terms of random sign grow like sqrt(n), so in F32 and
// F64 a reduction longer than kReductionFree terms (a vocabulary row, a long dot product,
// a sum over a whole tensor) multiplies the bound by sqrt(n / kReductionFree). BF16 needs
// no factor: its reductions accumulate in fp32, whose error even over 1e6 terms (~1e-4)
// stays below the rounding of one bf16 output.
constexpr int64_t kReductionFree = 1024;
inline double conformance(DType least_precise, int64_t reduction = 1) {
  if (least_precise == DType::BF16) return kBf16;
  const double base = least_precise == DType::F32 ? kFloat : kDouble;
  return base * std::max(1.0, std::sqrt(double(reduction) / double(kReductionFree)));
}

// Newton-Schulz in bf16 (a bf16 backend, or the CPU's bf16 emulation) against exact
// arithmetic: ~16 roundings of whole matrices to 8 significant bits (up to 2^-8 each),
// amplified by the quintic's slope (up to a = 3.44 per step for small singular values)
// over 5 steps: measured <= 2.7e-2 of the largest entry over 40 seeds (test_ops.cpp's
// NewtonSchulz5 tests), so kBf16 is too tight; 5e-2 still rejects a missed step or a wrong
// coefficient, which move entries by O(0.1-1).
constexpr double kNewtonSchulzBf16 = 5e-2;

// Rotary tables are computed "like PyTorch in the tables' dtype" (backend.h): the inverse
// frequency base^(-2j/D) and the angle t*inv_freq are rounded to that dtype before cos and
// sin, so the angle carries a relative error of a few units of its roundoff u (pow is
// within an ulp or two, the exponent 2j/D and 1/base are rounded, the product rounds once,
// and d(inv)/inv = ln(base) d(exponent) amplifies the exponent's rounding by up to ~9 for
// base 1e4). cos and sin then differ from the exact ones by up to |angle| * 16u, and no
// angle exceeds the last position (inv_freq <= 1). Plus the base bound.
inline double rotary_tables(DType stats, double max_angle) {
  const double u = stats == DType::F64 ? 0x1p-53 : 0x1p-24;  // BF16 tables: none (stats are F32)
  return conformance(stats) + 16.0 * u * max_angle;
}
}  // namespace speedrun::tol
