// Host-side planning of the CUDA backend in plain C++ (no CUDA headers), so that
// tests/test_cuda_math.cpp checks it without a GPU: which GPU a process takes, launch
// shapes, the embedding backward's scratch layout, and the out-of-memory message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace speedrun::cuda {

// ---- devices ----------------------------------------------------------------------------
// The GPU a process uses: `gpu` itself when >= 0 (it must be < visible), else the process's
// local rank (OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID, else MPICH's MPI_LOCALRANKID,
// else 0: pass the variables' values or null) modulo `visible`: one GPU per process of a
// node, whether each process sees them all or only its own (srun --gpus-per-task=1, where
// local rank 3 sees one GPU, its device 0). Throws Error naming the variable when one is not
// a non-negative integer.
int choose_gpu(int gpu, int visible, const char* ompi_local_rank, const char* slurm_localid,
               const char* mpich_localrankid = nullptr);

// Why cudaGetDeviceCount found no GPU, and the fix: `error` is its error's text,
// `insufficient_driver` whether it was cudaErrorInsufficientDriver, the versions as CUDA
// encodes them (1000 major + 10 minor): the driver's (cudaDriverGetVersion: 0 when no
// driver is loaded) and this build's runtime's. CUDA reports a missing driver and an old
// one alike ("CUDA driver version is insufficient for CUDA runtime version"); the
// versions tell them apart, and each has its own fix.
std::string device_count_problem(const std::string& error, bool insufficient_driver,
                                 int driver_version, int runtime_version);
// "13.0" from 13000.
std::string cuda_version_name(int version);

// ---- which GPUs a build runs on ---------------------------------------------------------
// The kernels need sm_80 or newer: bf16 mma.sync, cp.async and bf16 conversions (Ampere).
inline constexpr int kMinComputeCapability = 80;
// One entry of CMAKE_CUDA_ARCHITECTURES: "90a", "80", "86-real", "80-virtual". `specific`:
// an arch-specific target ("a"), whose code runs on that chip alone; `sass` / `ptx`: the
// build holds machine code / PTX for it (CMake: plain "80" both, "-real" machine code
// alone, "-virtual" PTX alone).
struct CudaArch {
  int cc = 0;  // 10 * major + minor
  bool specific = false, sass = true, ptx = true;
};
// Parses a list separated by ';' or ','. Throws Error naming a malformed entry.
std::vector<CudaArch> parse_cuda_architectures(const std::string& list);
// Whether the list holds code for compute capability `cc`'s architecture-specific features
// ("90a", as machine code or PTX): Hopper's wgmma exists there alone, and a kernel's
// binaryVersion reads 90 for a plain "90" build all the same.
bool has_specific_arch(const std::vector<CudaArch>& archs, int cc);
// Whether a build of these architectures holds code a GPU of compute capability `cc` runs,
// by CUDA's rules: machine code for X.Y runs on X.Z, Z >= Y, of the same major (an "a"
// target's on X.Y alone); PTX for X.Y is compiled by the driver for any X.Y or newer (not
// an "a" target's).
bool build_runs_on(const std::vector<CudaArch>& archs, int cc);
// The architectures this build's kernels were compiled for, as CMake was given them.
std::string build_cuda_architectures();
// Whether this build holds Hopper's wgmma code: its list names 90a (an emulated build's
// list is empty, and its wgmma runs anywhere). Where it does not, the wgmma kernels'
// binaryVersion may still read 90 (a plain "90" build), and their wgmma calls are traps.
bool build_has_wgmma();
// Why the CUDA backend cannot run on GPU `gpu` (`name`, compute capability `cc`), or ""
// when it can: a GPU older than sm_80, or `probe_error` (the CUDA error of looking up one of
// the build's kernels on it; "" when that worked) where the build holds no code for it (the
// fix: a rebuild for it) or where it does (the driver could not load it: a driver older than
// the toolkit). Each names the GPU, the build's architectures `archs` and what to do.
std::string gpu_support_problem(int gpu, const std::string& name, int cc, const std::string& archs,
                                const std::string& probe_error);

// ---- launch shapes ------------------------------------------------------------------------
inline constexpr int kThreads = 256;  // threads per block of every elementwise/row kernel
inline constexpr int kWarpRowsPerBlock = kThreads / 32;
// Grid-stride kernels never launch more blocks than this (132 SMs x 16 resident blocks
// covers an H200; more blocks would only loop less).
inline constexpr int64_t kMaxElementwiseBlocks = 132 * 16;

// Logits the head computes at once on a GPU: 2^28 (5,336 rows of the GPT-2 vocabulary,
// 512 MiB in bf16; 13 chunks per 64K-token sequence). Each chunk reads lm_head [V, C] in
// bf16 twice (its logits GEMM and d x's) and reads and writes its fp32 gradient once
// (d W +=): 464 MB of traffic per chunk at V = 50,304, C = 768, whatever its rows. At
// 2^25 logits (667 rows, 99 chunks) that is 46 GB per sequence, ~11 ms at an H200's
// 4.2 TB/s, where 13 chunks move 6 GB; and the d x GEMM's [rows, 768] output then fills
// 126 output tiles of 128 x 256 instead of 18 on 132 SMs. Logits of 667 rows (64 MiB)
// already overflow the 50-60 MB L2, so smaller chunks win no cache reuse back.
inline constexpr int64_t kHeadChunkLogits = int64_t(1) << 28;

struct Launch {
  int64_t blocks = 0;
  int threads = kThreads;
};
// `items` independent items (elements, or 8-element vectors), grid-stride.
Launch elementwise_launch(int64_t items);
// One warp per row, kWarpRowsPerBlock rows per block.
Launch warp_rows_launch(int64_t rows);
// One block of `threads` per row.
Launch block_rows_launch(int64_t rows, int threads = kThreads);

// Threads per row of the head's softcap + cross entropy (cross_entropy.cu). Its backward
// reads a row of logits twice (the loss's pass, then the gradient's). At 256 threads 8 rows
// per SM are in flight, 1,056 rows of 50,304 bf16 logits on an H200: 106 MB between a
// logit's two reads, twice its L2, so the second read came from memory. At 1,024, 2 rows
// per SM: 26.5 MB, and the second read is an L2 hit (19.8 -> 13.2 GB of memory traffic per
// 64K-token sequence), where the GPU cannot keep the row in shared memory instead.
inline constexpr int kHeadRowThreads = 1024;

// Whether bf16 data of n elements at each given address can be read 8 at a time with
// 16-byte accesses: n % 8 == 0 and every address 16-byte aligned (null addresses are
// ignored).
bool vec8_ok(int64_t n, const void* a, const void* b = nullptr, const void* c = nullptr,
             const void* d = nullptr);

// ---- many tensors in one launch ----------------------------------------------------------
// The optimizer's multi-tensor kernels (adam.cu, muon.cu) take up to this many tensors per
// launch, their addresses and sizes as kernel parameters (a table of 48 tensors with five
// pointers each is ~2.7 KiB, inside the 4 KiB a kernel's parameters may take); more tensors
// take more launches.
inline constexpr int kMaxLaunchTensors = 48;
// The grid of one launch over `count` tensors of n[0..count) items (elements, or the
// 8-element vectors of a tensor read 16 bytes at a time): tensor k takes the blocks
// elementwise_launch(n[k]) would give it, [start[k], start[k + 1]), so each tensor is walked
// exactly as its own launch over those items would walk it; start[count] is the grid.
// Throws Error for count outside [1, kMaxLaunchTensors] or a negative size.
void tensor_block_starts(const int64_t* n, int count, int* start);

// ---- embedding backward -----------------------------------------------------------------
// Sorting (token, position) pairs by token: the radix sort needs only the bits of ids < V.
int radix_bits(int64_t V);
// The scratch block of one embedding backward over N tokens: sorted keys, positions in,
// positions out (N 32-bit values each) and the sort's temporary storage, each 256-byte
// aligned.
struct EmbeddingBackwardPlan {
  int end_bit = 0;
  size_t keys_out = 0, values_in = 0, values_out = 0, temp = 0;  // byte offsets
  size_t temp_bytes = 0, total = 0;
};
EmbeddingBackwardPlan embedding_backward_plan(int64_t N, int64_t V, size_t sort_temp_bytes);

// ---- Newton-Schulz --------------------------------------------------------------------------
// How a Newton-Schulz moves a matrix between its F32 values and its bf16 work matrix (the
// load that rounds it and sums its squares, the scale, the store back):
//  - kElements: one element per item, 2- and 4-byte accesses (any size, any alignment);
//  - kVectors: 8 consecutive elements per item, 16-byte accesses (the sizes a multiple of 8,
//    the stack and its output 16-byte aligned), when the work matrix is not transposed;
//  - kTiles: as kVectors, and a transposed work matrix is written (and read back) through
//    shared memory in kNsTile x kNsTile tiles, so that both sides of the transpose are
//    16-byte accesses along rows instead of a 2-byte scatter (rows and cols multiples of
//    kNsTile). The record's c_fc matrices [3072, 768] take this path.
enum class NsLayout { kElements, kVectors, kTiles };
inline constexpr int64_t kNsTile = 64;
// The scratch block of one newton_schulz call over n matrices [rows, cols]: the work
// matrices are [m, k] = the short side by the long one (transposed when rows > cols); two
// bf16 X buffers (current and next), bf16 A and B [m, m], the norms' partial sums
// (`partials` per matrix, math/reduce.h, over the layout's items) and one F32 divisor per
// matrix; each 256-byte aligned. `aligned`: every matrix the call reads or writes (its
// sources and its output) starts 16-byte aligned (the work matrices always do).
struct NewtonSchulzPlan {
  bool transposed = false;
  NsLayout layout = NsLayout::kElements;
  int64_t m = 0, k = 0;
  int64_t items = 0;  // per matrix: elements, or 8-element vectors
  int partials = 0;
  size_t x0 = 0, x1 = 0, a = 0, b = 0, partial = 0, divisor = 0, total = 0;  // byte offsets
};
NewtonSchulzPlan newton_schulz_plan(int64_t n, int64_t rows, int64_t cols, bool aligned);

// ---- messages -----------------------------------------------------------------------------
// "512 B", "1.50 KiB", "3.00 GiB", "1.00 PiB".
std::string format_bytes(double bytes);
// The message of a failed allocation: what was asked, for what, what the GPU has free, and
// which flags reduce the memory a run needs.
std::string oom_message(const std::string& what, size_t asked, size_t free_bytes,
                        size_t total_bytes, size_t held_bytes, int gpu);

}  // namespace speedrun::cuda
