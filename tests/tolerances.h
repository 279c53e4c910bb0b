// One table of tolerances for every test, relative max-abs error ||a-b||_inf / max(1,||ref||_inf).
//  - kDouble: the same math in double against a naive double loop: only summation order differs.
//  - kFloat: fp32 kernels against the double oracle: a few ulps of fp32 times sqrt(reduction length).
//  - kFiniteDiff: central differences in double with h = 1e-6: truncation O(h^2) plus
//    cancellation O(eps/h) ~ 1e-10 relative; 1e-6 leaves margin for curvature.
//  - kBf16: bf16 inputs (8-bit mantissa) accumulated in fp32.
//  - kStat: fp32 row statistics (attention's lse) of bf16 inputs through tensor-core dot
//    products (fp32 accumulation that may truncate): a few ulps of the score per 16-wide
//    k-step, ~1e-6 relative; one wrongly visible key among n moves lse by ~1/n.
#pragma once

namespace speedrun::tol {
constexpr double kDouble = 1e-12;
constexpr double kFloat = 2e-5;
constexpr double kFiniteDiff = 1e-6;
constexpr double kBf16 = 1e-2;
constexpr double kStat = 1e-4;
}  // namespace speedrun::tol
