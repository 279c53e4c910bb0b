// One table of tolerances for every test, relative max-abs error ||a-b||_inf / max(1,||ref||_inf).
//  - kDouble: the same math in double against a naive double loop: only summation order differs.
//  - kFloat: fp32 kernels against the double oracle: a few ulps of fp32 times sqrt(reduction length).
//  - kFiniteDiff: central differences in double with h = 1e-6: truncation O(h^2) plus
//    cancellation O(eps/h) ~ 1e-10 relative; 1e-6 leaves margin for curvature.
//  - kBf16: bf16 inputs (8-bit mantissa) accumulated in fp32.
//  - kBf16Iterated: bf16 results fed through several dependent steps (Newton-Schulz's five
//    iterations, a model's layers and its backward): each step's rounding (2^-9 relative)
//    is carried and amplified by the next; a first estimate, to be confirmed on the GPU.
#pragma once

namespace speedrun::tol {
constexpr double kDouble = 1e-12;
constexpr double kFloat = 2e-5;
constexpr double kFiniteDiff = 1e-6;
constexpr double kBf16 = 1e-2;
constexpr double kBf16Iterated = 5e-2;
}  // namespace speedrun::tol
