// What the CUDA backend's tests share (tests/test_cuda_*.cpp): the CPU backend in fp64 as
// the oracle, tensors owned per test (Pool), random inputs, error measures, and the fixture
// that skips, saying why, where no GPU is visible. In the emulated build
// (scripts/emulate.sh) the same tests run on the CPU emulator of CUDA.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <utility>
#include <optional>
#include <iterator>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/gpu_profile.h"
#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"
#endif
#include "backend/factory.h"
#include "core/arena.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "scoped_env.h"
#include "model/params.h"
#include "run_command.h"
#include "fixtures.h"
#include "tolerances.h"
#include "bf16_emulation.h"
#include "train/config.h"
#include "train/sample.h"
#include "train/trainer.h"

#ifdef SPEEDRUN_HAVE_CUDA
#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm_record.h"
#include "dist/local_comm.h"
#ifdef SPEEDRUN_HAVE_NCCL
#include "dist/nccl/nccl_comm.h"
#include "nccl_check.h"
#endif
#include "backend/cuda/math/muon.h"
#include "backend/cuda/math/reduce.h"
#include "backend/cuda/plan.h"
#endif

namespace speedrun::cuda_test {

namespace fs = std::filesystem;
using Vec = std::vector<double>;
using Shape = std::vector<int64_t>;

// Tensors owned for one test, on one backend.
class Pool {
 public:
  explicit Pool(Backend& be) : be_(be) {}
  Tensor make(DType dt, const Shape& shape) {
    arenas_.emplace_back([this](size_t n) { return be_.allocate(n); },
                         [this](void* p) { be_.release(p); });
    Tensor t;
    arenas_.back().add("t", dt, shape, &t);
    arenas_.back().materialize(be_.device());
    return t;
  }
  Tensor from(const Vec& v, DType dt, const Shape& shape) {
    Tensor t = make(dt, shape);
    be_.from_host_f64(t, v);
    return t;
  }
  Tensor poisoned(DType dt, const Shape& shape) {
    Tensor t = make(dt, shape);
    be_.fill(t, NAN);
    return t;
  }

 private:
  Backend& be_;
  std::deque<Arena> arenas_;
};

inline Vec randn(int64_t n, uint64_t seed, double scale = 1.0, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, scale);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<int32_t> rand_tokens(int64_t n, int32_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(V));
  return t;
}

using tol::rel_err;  // tests/tolerances.h's measure
using test::ScopedEnv;

// The same, relative to the reference's own largest magnitude (for small gradients).
inline double rel_to_max(const Vec& got, const Vec& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    num = std::isnan(e) ? INFINITY : std::max(num, e);
    den = std::max(den, std::fabs(ref[i]));
  }
  return den > 0 ? num / den : num;
}

inline std::vector<uint8_t> raw(Backend& be, const Tensor& t) {
  std::vector<uint8_t> b(t.bytes());
  be.download(b.data(), t);
  return b;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
    BackendOptions o;
    o.device = DeviceChoice::CUDA;
    gpu_ = make_backend(o);
    g_ = std::make_unique<Pool>(*gpu_);
    c_ = std::make_unique<Pool>(cpu_);
  }
  Backend& gpu() { return *gpu_; }
  // A GPU tensor of dtype dt holding v (rounded by the GPU's convert), and the CPU fp64
  // tensor holding exactly the values the GPU sees.
  std::pair<Tensor, Tensor> both(const Vec& v, DType dt, const Shape& shape) {
    Tensor g = g_->from(v, dt, shape);
    Tensor c = c_->from(gpu_->to_host_f64(g), DType::F64, shape);
    return {g, c};
  }
  Vec host(const Tensor& t) { return t.device == Device::CUDA ? gpu_->to_host_f64(t) : cpu_.to_host_f64(t); }

  CpuBackend cpu_{2};
  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Pool> g_, c_;  // declared after the backends: freed before them
};

}  // namespace speedrun::cuda_test
