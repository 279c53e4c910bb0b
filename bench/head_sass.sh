#!/usr/bin/env bash
# SASS instructions per logit of the head's softcap + cross entropy (math/cross_entropy.h),
# counted without a GPU: its two passes (the loss's online softmax; the gradient) are
# compiled as loops of 8 and of 16 logits per iteration, and the difference of the kernels'
# machine code (.text sections, 16 bytes per instruction on sm_70 and later) over 8 is what
# one more logit costs. At the record's vocabulary these instructions cost that kernel as
# much as its bytes do (docs/PERFORMANCE.md): compare two commits with this script.
#
#   bench/head_sass.sh [ARCH ...]      # default: 90a 80
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
command -v "$NVCC" >/dev/null || { echo "head_sass: no nvcc ($NVCC)" >&2; exit 2; }
command -v readelf >/dev/null || { echo "head_sass: no readelf (apt-get install binutils)" >&2; exit 2; }
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(90a 80)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/h.cu" <<'CU'
#include "backend/cuda/math/cross_entropy.h"
using namespace speedrun::cuda::math;
template <int U>
__global__ void loss_pass(const float* __restrict__ l, float* out, float cap, int n) {
  const Softcap c = softcap_of(cap);
  SoftmaxState st = softmax_start(c);
  float th;
  for (int i = threadIdx.x * U; i < n; i += blockDim.x * U) {
#pragma unroll
    for (int k = 0; k < U; ++k) softmax_add(st, softcap2(l[i + k], c, th));
  }
  out[threadIdx.x] = st.m + st.s;
}
template <int U>
__global__ void grad_pass(float* __restrict__ l, float cap, int n, SoftmaxState st, float inv,
                          int target) {
  const Softcap c = softcap_of(cap);
  float th;
  for (int i = threadIdx.x * U; i < n; i += blockDim.x * U) {
#pragma unroll
    for (int k = 0; k < U; ++k) {
      const float t = softcap2(l[i + k], c, th);
      l[i + k] = ce_grad(t, th, i + k == target, st, inv, 1.0f);
    }
  }
}
template __global__ void loss_pass<8>(const float*, float*, float, int);
template __global__ void loss_pass<16>(const float*, float*, float, int);
template __global__ void grad_pass<8>(float*, float, int, SoftmaxState, float, int);
template __global__ void grad_pass<16>(float*, float, int, SoftmaxState, float, int);
CU
# text_instructions KERNEL CUBIN: instructions in the kernel's .text section.
text_instructions() {
  readelf -SW "$2" 2>/dev/null | awk -v k="$1" '$0 ~ "\\.text\\..*" k {
      for (i = 1; i <= NF; ++i) if ($i ~ /^\.text\./) { print $(i + 4); exit } }' |
    { read -r hex; echo $((16#$hex / 16)); }
}
echo "| arch | loss pass | gradient pass | per logit |"
echo "|---|---|---|---|"
for a in "${archs[@]}"; do
  "$NVCC" -O3 -std=c++20 -Isrc -gencode="arch=compute_$a,code=sm_$a" -cubin "$work/h.cu" \
    -o "$work/h_$a.cubin"
  f=$(( ($(text_instructions loss_passILi16 "$work/h_$a.cubin") - $(text_instructions loss_passILi8 "$work/h_$a.cubin")) / 8 ))
  b=$(( ($(text_instructions grad_passILi16 "$work/h_$a.cubin") - $(text_instructions grad_passILi8 "$work/h_$a.cubin")) / 8 ))
  echo "| sm_$a | $f | $b | $((f + b)) |"
done
