#!/usr/bin/env bash
# Checks, without a GPU, that ptxas keeps the Hopper attention kernels' warpgroup products
# asynchronous: compiles every *_wgmma.cu for sm_90a with the build's flags and fails where
# ptxas reports "Potential Performance Loss: wgmma.mma_async instructions are serialized"
# (C7515, C7520, ...). Serialized products still compute the right values, so no test on the
# emulator or a GPU notices; they only lose the overlap of each product with the code after
# its issue (the softmax, dS) that the kernels are built around (docs/CUDA_ATTENTION.md).
# Its info notes (C7519, C7517: a warpgroup arrive or wait it added) are printed, not failed.
#
#   scripts/check_wgmma.sh        # exit 0: no product serialized
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
command -v "$NVCC" >/dev/null || { echo "check_wgmma: no nvcc ($NVCC)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for src in src/backend/cuda/attention/*_wgmma.cu; do
  log="$work/$(basename "$src").log"
  "$NVCC" -O3 -DNDEBUG -std=c++20 --expt-relaxed-constexpr -Isrc -DSPEEDRUN_HAVE_CUDA=1 \
    -gencode=arch=compute_90a,code=sm_90a -Xptxas=-v -c "$src" -o "$work/o.o" >"$log" 2>&1 || {
    cat "$log"
    echo "check_wgmma: $src does not compile"
    exit 1
  }
  # "(C7519) <what> ... in function '<mangled>'" -> "C7519 <what> in forward_wgmma_kernel<64>".
  notes() {
    sed -E -e "s/.*\((C75[0-9]+)\) (.*) in (the )?function '[^']*(forward|dq|dkv)_wgmma_kernelILi([0-9]+)E.*/\1 \2 in \4_wgmma_kernel<\5>/" \
      -e 's/ in around line [0-9]+ by compiler//'
  }
  grep -E "C75[0-9]+" "$log" | grep -v "Potential Performance Loss" | notes | sed 's/^/  note: /' || true
  if grep -q "Potential Performance Loss" "$log"; then
    grep "Potential Performance Loss" "$log" | notes | sed 's/^/  /'
    echo "check_wgmma: $src: ptxas serializes warpgroup products"
    status=1
  else
    echo "check_wgmma: $src: no product serialized ($(grep -c 'Used [0-9]* registers' "$log") kernels)"
  fi
done
exit "$status"
