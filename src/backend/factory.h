// Backends by name: commands ask for a device and never construct a backend themselves.
//   cpu   the CPU backend (backend/cpu/): fp32 or fp64, OpenBLAS + OpenMP
//   cuda  the CUDA backend (backend/cuda/): bf16 over fp32 masters; only in a build with the
//         CUDA toolkit, and only where a GPU is visible
//   auto  cuda when this build has it and runs on the visible GPU a process takes, else cpu
// A new backend is a folder under backend/, one DeviceChoice name and one branch in
// factory.cpp.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "core/enum_names.h"

namespace speedrun {

enum class DeviceChoice { Auto, CPU, CUDA };
template <> struct EnumNames<DeviceChoice> {
  static constexpr EnumName<DeviceChoice> list[] = {
      {DeviceChoice::Auto, "auto"}, {DeviceChoice::CPU, "cpu"}, {DeviceChoice::CUDA, "cuda"}};
};

// Options that choose and tune a backend but never change what a run computes beyond
// rounding: where it runs and with how many threads. They are not part of a run's config.
struct BackendOptions {
  DeviceChoice device = DeviceChoice::Auto;
  int threads = 0;  // CPU threads (0: all cores); ignored by cuda
  int gpu = -1;     // CUDA device index (-1: the process's local rank modulo the GPUs)
  // cuda: the GEMM algorithm record the backend reads and extends (backend/cuda/
  // gemm_record.h; "" none); unset: SPEEDRUN_GEMM_ALGOS, where set. Ignored by cpu.
  std::optional<std::string> gemm_algos;
};

// The backend `o` names. Asking for cuda in a build without it, or on a machine where no
// GPU is visible, throws an Error saying which and what to do.
std::unique_ptr<Backend> make_backend(const BackendOptions& o);

// Whether this build contains the CUDA backend.
bool cuda_built();
// Number of visible CUDA GPUs; 0 (with the reason in *why, if given) when there are none,
// including in a build without CUDA.
int cuda_device_count(std::string* why = nullptr);
// What `speedrun devices` prints: the backends this build has, the GPUs its kernels were
// compiled for, and each visible GPU with whether the build runs on it (or why not).
std::string devices_report();

// The precision a run uses on backend `be`: the named policy, or the backend's default for
// auto; throws (naming the backend and the policy) when the backend cannot run it.
Precision resolve_precision(const Backend& be, PrecisionChoice choice);

}  // namespace speedrun
