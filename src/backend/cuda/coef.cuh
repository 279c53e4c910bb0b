// The scalar coefficients of the weighted sums (backend.h's Coef) on the device, shared by
// scaled_sum.cu, mix_norm.cu and qkv.cu: a Coef as the kernels read it, and stage 2 of the
// reduction that adds sign * <dout, x> to a coefficient's F32 gradient.
#pragma once
#include "backend/backend.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/elementwise.h"
#include "backend/cuda/math/reduce.h"

namespace speedrun::cuda {

// c's value and gradient pointers (checked F32 on the device), its sign and offset.
math::CoefArg coef_arg(const char* op, const char* name, const Coef& c);

// One block of math::kReduceThreads: sums partial[0 .. count) and partial[count ..
// 2*count) in the order of reduce_partials_kernel, then ga[0] += sa * first and gb[0] +=
// sb * second, in that order (a and b may share one gradient scalar: the value
// residual's (1 - lamb) and lamb). Either pointer may be null.
__global__ void __launch_bounds__(math::kReduceThreads)
    coef_grads_kernel(const double* partial, int count, float* ga, double sa, float* gb,
                      double sb);

}  // namespace speedrun::cuda
