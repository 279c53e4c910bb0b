#include "backend/cuda/plan.h"

#include <cstdio>
#include <cstdlib>

#include "backend/cuda/math/reduce.h"
#include "core/error.h"
#include "core/host_memory.h"

namespace speedrun::cuda {

namespace {
// A non-negative integer from an environment variable's value, or -1 when it is unset.
int local_rank_from(const char* name, const char* value) {
  if (value == nullptr || *value == 0) return -1;
  char* end = nullptr;
  const long r = std::strtol(value, &end, 10);
  check(end != value && *end == 0 && r >= 0 && r < (1L << 30), "--device cuda: ", name, "='",
        value, "' is not a local rank (a non-negative integer): fix the launcher's environment");
  return int(r);
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }
}  // namespace

int choose_gpu(int gpu, int visible, const char* ompi_local_rank, const char* slurm_localid,
               const char* mpich_localrankid) {
  check(visible > 0, "--device cuda: no CUDA GPU is visible");
  if (gpu >= 0) {
    check(gpu < visible, "--device cuda: GPU ", gpu, " asked for, but only ", visible,
          " visible (0..", visible - 1, "): check CUDA_VISIBLE_DEVICES");
    return gpu;
  }
  int rank = local_rank_from("OMPI_COMM_WORLD_LOCAL_RANK", ompi_local_rank);
  if (rank < 0) rank = local_rank_from("SLURM_LOCALID", slurm_localid);
  if (rank < 0) rank = local_rank_from("MPI_LOCALRANKID", mpich_localrankid);
  if (rank < 0) rank = 0;
  return rank % visible;
}

std::vector<CudaArch> parse_cuda_architectures(const std::string& list) {
  std::vector<CudaArch> out;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find_first_of(";,", i);
    if (j == std::string::npos) j = list.size();
    const std::string e = list.substr(i, j - i);
    i = j + 1;
    if (e.empty()) continue;
    CudaArch a;
    size_t k = 0;
    while (k < e.size() && e[k] >= '0' && e[k] <= '9') ++k;
    const std::string digits = e.substr(0, k);
    std::string rest = e.substr(k);
    if (!rest.empty() && (rest[0] == 'a' || rest[0] == 'f')) {  // "a": this chip alone
      a.specific = rest[0] == 'a';
      rest = rest.substr(1);
    }
    if (rest == "-real") a.ptx = false;
    else if (rest == "-virtual") a.sass = false;
    else check(rest.empty(), "CUDA architectures '", list, "': '", e,
               "' is not an architecture (as 80, 90a, 86-real, 80-virtual)");
    check(digits.size() >= 2 && digits.size() <= 3, "CUDA architectures '", list, "': '", e,
          "' is not an architecture (as 80, 90a, 86-real, 80-virtual)");
    a.cc = std::atoi(digits.c_str());
    out.push_back(a);
  }
  return out;
}

bool build_runs_on(const std::vector<CudaArch>& archs, int cc) {
  for (const CudaArch& a : archs) {
    if (a.specific) {
      if (cc == a.cc && (a.sass || a.ptx)) return true;
      continue;
    }
    if (a.sass && cc / 10 == a.cc / 10 && cc >= a.cc) return true;
    if (a.ptx && cc >= a.cc) return true;
  }
  return false;
}

bool has_specific_arch(const std::vector<CudaArch>& archs, int cc) {
  for (const CudaArch& a : archs)
    if (a.cc == cc && a.specific && (a.sass || a.ptx)) return true;
  return false;
}

std::string build_cuda_architectures() {
#ifdef SPEEDRUN_CUDA_ARCHITECTURES
  return SPEEDRUN_CUDA_ARCHITECTURES;
#else
  return "";
#endif
}

bool build_has_wgmma() {
  const std::string archs = build_cuda_architectures();
  return archs.empty() || has_specific_arch(parse_cuda_architectures(archs), 90);
}

std::string cuda_version_name(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

std::string device_count_problem(const std::string& error, bool insufficient_driver,
                                 int driver_version, int runtime_version) {
  const std::string what = "cudaGetDeviceCount: " + error;
  if (insufficient_driver && driver_version <= 0)
    return "no NVIDIA driver is loaded (libcuda.so.1 was not found; " + what +
           "): install the GPU's driver (nvidia-smi then lists the GPU), or in a container "
           "pass the GPUs through (docker run --gpus all)";
  if (insufficient_driver || driver_version < runtime_version)
    return "the NVIDIA driver supports CUDA up to " + cuda_version_name(driver_version) +
           " and this build's CUDA runtime is " + cuda_version_name(runtime_version) + " (" +
           what + "): update the driver until nvidia-smi's \"CUDA Version\" reaches " +
           cuda_version_name(runtime_version) + ", or rebuild speedrun with a CUDA " +
           cuda_version_name(driver_version) + " toolkit";
  return what + ": check nvidia-smi and CUDA_VISIBLE_DEVICES";
}

std::string gpu_support_problem(int gpu, const std::string& name, int cc, const std::string& archs,
                                const std::string& probe_error) {
  const std::string sm = "sm_" + std::to_string(cc);
  const std::string who = "GPU " + std::to_string(gpu) + " (" + name + ", " + sm + ")";
  if (cc < kMinComputeCapability)
    return who + " is older than the CUDA backend's kernels allow: they need sm_" +
           std::to_string(kMinComputeCapability) +
           " or newer (bf16 tensor cores through mma.sync, cp.async). Train on the CPU "
           "(--device cpu), or on an A100, RTX 30xx or newer GPU";
  if (probe_error.empty()) return "";
  const std::string built = "this build's kernels are for " +
                            (archs.empty() ? std::string("unknown architectures") : archs);
  if (!build_runs_on(parse_cuda_architectures(archs), cc))
    return who + " cannot run " + built + " (" + probe_error +
           "). Rebuild for it: SPEEDRUN_CUDA_ARCHITECTURES=" + std::to_string(cc) +
           " scripts/build.sh, or cmake -DCMAKE_CUDA_ARCHITECTURES=" + std::to_string(cc) +
           " (a list such as \"80;90a\" serves several GPUs from one build)";
  return who + " could not load " + built + " (" + probe_error +
         "): the NVIDIA driver is likely older than the CUDA toolkit that built speedrun; "
         "update the driver, or rebuild with the toolkit the driver supports";
}

Launch elementwise_launch(int64_t items) {
  Launch l;
  const int64_t b = (items + l.threads - 1) / l.threads;
  l.blocks = b < 1 ? 1 : b > kMaxElementwiseBlocks ? kMaxElementwiseBlocks : b;
  return l;
}

void tensor_block_starts(const int64_t* n, int count, int* start) {
  check(count >= 1 && count <= kMaxLaunchTensors, "tensor_block_starts: ", count,
        " tensors in one launch (1 to ", kMaxLaunchTensors, ")");
  start[0] = 0;
  for (int k = 0; k < count; ++k) {
    check(n[k] >= 0, "tensor_block_starts: tensor ", k, " has ", n[k], " elements");
    start[k + 1] = start[k] + int(elementwise_launch(n[k]).blocks);
  }
}

Launch warp_rows_launch(int64_t rows) {
  Launch l;
  l.blocks = rows < 1 ? 1 : (rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock;
  return l;
}

Launch block_rows_launch(int64_t rows, int threads) {
  Launch l;
  l.blocks = rows < 1 ? 1 : rows;
  l.threads = threads;
  return l;
}

bool vec8_ok(int64_t n, const void* a, const void* b, const void* c, const void* d) {
  if (n % 8 != 0) return false;
  for (const void* p : {a, b, c, d})
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

int radix_bits(int64_t V) {
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < V) ++bits;
  return bits;
}

EmbeddingBackwardPlan embedding_backward_plan(int64_t N, int64_t V, size_t sort_temp_bytes) {
  check(N >= 1 && V >= 1, "embedding_backward: ", N, " tokens and vocabulary ", V);
  EmbeddingBackwardPlan p;
  p.end_bit = radix_bits(V);
  const size_t ids = align256(size_t(N) * 4);
  p.keys_out = 0;
  p.values_in = p.keys_out + ids;
  p.values_out = p.values_in + ids;
  p.temp = p.values_out + ids;
  p.temp_bytes = sort_temp_bytes;
  p.total = p.temp + align256(sort_temp_bytes);
  return p;
}

NewtonSchulzPlan newton_schulz_plan(int64_t n, int64_t rows, int64_t cols, bool aligned) {
  check(n >= 1 && rows >= 1 && cols >= 1, "newton_schulz: ", n, " matrices [", rows, ", ", cols,
        "]");
  check(n <= 65535, "newton_schulz: ", n, " matrices in one call exceed 65535");
  NewtonSchulzPlan p;
  p.transposed = rows > cols;
  p.m = p.transposed ? cols : rows;
  p.k = p.transposed ? rows : cols;
  const int64_t size = rows * cols;
  if (aligned && size % 8 == 0) {
    if (!p.transposed)
      p.layout = NsLayout::kVectors;
    else if (rows % kNsTile == 0 && cols % kNsTile == 0)
      p.layout = NsLayout::kTiles;
  }
  p.items = p.layout == NsLayout::kElements ? size : size / 8;
  p.partials = math::reduce_blocks(p.items);
  const size_t xb = align256(size_t(n * p.m * p.k) * 2), ab = align256(size_t(n * p.m * p.m) * 2);
  p.x0 = 0;
  p.x1 = p.x0 + xb;
  p.a = p.x1 + xb;
  p.b = p.a + ab;
  p.partial = p.b + ab;
  p.divisor = p.partial + align256(size_t(n) * size_t(p.partials) * 8);
  p.total = p.divisor + align256(size_t(n) * 4);
  return p;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) bytes /= 1024, ++u;
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", bytes, units[u]);
  return buf;
}

std::string oom_message(const std::string& what, size_t asked, size_t free_bytes,
                        size_t total_bytes, size_t held_bytes, int gpu) {
  return "cuda: out of GPU memory allocating " + what + ": asked for " +
         format_bytes(double(asked)) + " (" + std::to_string(asked) + " bytes) on GPU " +
         std::to_string(gpu) + ", which has " + format_bytes(double(free_bytes)) + " free of " +
         format_bytes(double(total_bytes)) + " (this backend holds " +
         format_bytes(double(held_bytes)) +
         "). " + kMemoryAdvice;
}

}  // namespace speedrun::cuda
