// Linked into the CPU engine's test executables (every family but test_cuda_*,
// test_conformance and test_mpi; CMakeLists.txt). The `speedrun` commands they start leave
// --device auto, which takes a GPU where one is visible: their tiny models have head dims
// the CUDA kernels lack, and bf16 would change the numbers they compare. Hiding every GPU
// before main(), from this process and the commands it starts, keeps them CPU tests
// however they are run: by ctest, by hand, or on a GPU machine by bench/cuda_check.sh.
// (The CUDA runtime reads CUDA_VISIBLE_DEVICES when it first starts, after this.)
#include <cstdlib>

namespace {
[[maybe_unused]] const bool kGpusHidden = setenv("CUDA_VISIBLE_DEVICES", "", 1) == 0;
}  // namespace
