// Run under mpirun (tests/test_mpi.cpp does): checks the MPI communicator's collectives,
// that distributed Muon equals single-process Muon on the same gradients, and that each
// rank's data readers read SPEC.md's slices; with --nccl the NCCL communicator against MPI,
// with --nccl-race (emulated build) the emulator's check on a collective's input. Exits 0 when every check holds on every rank;
// prints the failed checks and exits 1 otherwise.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/factory.h"
#include "core/arena.h"
#include "dist/launch.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data/step_loader.h"
#include "dist/local_comm.h"
#include "dist/mpi/mpi_comm.h"
#ifdef SPEEDRUN_HAVE_NCCL
#include "dist/nccl/nccl_comm.h"
#include "nccl_check.h"
#endif
#if defined(SPEEDRUN_HAVE_NCCL) && defined(SPEEDRUN_CUDA_EMULATED)
#include "backend/cuda/emulator/simt.h"
#endif
#include "model/params.h"
#include "optim/optimizer.h"
#include "fixtures.h"

using namespace speedrun;

namespace {
int failures = 0;
void expect(bool ok, int rank, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
    ++failures;
  }
}

std::vector<std::vector<double>> muon_steps(Comm* comm) {
  CpuBackend be(1);
  Parameters p(be, test::micro_gpt(4), DType::F32);
  p.init(5);
  Optimizer opt(be, p, OptimConfig{}, comm);
  for (int step = 0; step < 3; ++step) {
    test::random_grads(be, p, step);
    opt.step(1.0, 0.9);
  }
  std::vector<std::vector<double>> out;
  for (int i = 0; i < p.count(); ++i) out.push_back(p.to_host_f64(i));
  return out;
}
}  // namespace

#ifdef SPEEDRUN_HAVE_NCCL
// The NCCL communicator on this rank's GPU against MPI on the same values in host memory
// (tests/nccl_check.h). A one-GPU machine runs it at world 1.
int nccl_check(MpiComm& mpi) {
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  o.gpu = detect_launch().local_rank;
  auto be = make_backend(o);
  NcclComm nccl(*be, std::make_unique<MpiComm>());
  const int r = mpi.rank();
  test::check_nccl(nccl, mpi, *be, [r](bool ok, const std::string& what) { expect(ok, r, what); });
  return 0;
}
#endif

#if defined(SPEEDRUN_HAVE_NCCL) && defined(SPEEDRUN_CUDA_EMULATED)
// The emulator's check on a collective's input, under lazy streams: a buffer overwritten on
// the backend's stream while its async reduction may still read it (no wait between them)
// is reported as a device fault naming the collective; with the wait, nothing is.
int nccl_race_check(MpiComm& mpi) {
  namespace emu = speedrun::cuda::emu;
  emu::Schedule lazy = emu::schedule();
  lazy.lazy_streams = true;
  emu::set_schedule(lazy);
  BackendOptions o;
  o.device = DeviceChoice::CUDA;
  o.gpu = detect_launch().local_rank;
  auto be = make_backend(o);
  NcclComm nccl(*be, std::make_unique<MpiComm>());
  const int r = mpi.rank();
  const int64_t n = 256;
  Arena mem([&](size_t b) { return be->allocate(b); }, [&](void* p) { be->release(p); });
  Tensor d;
  mem.add("x", DType::F32, {n}, &d);
  mem.materialize(be->device());
  for (bool wait : {true, false}) {
    be->from_host_f64(d, std::vector<double>(size_t(n), 1.0 + r));
    nccl.all_reduce_async(d, ReduceOp::Sum);
    if (wait) nccl.wait_async();
    be->fill(d, 0.0);  // the next use of the buffer
    std::string error;
    try {
      be->synchronize();
      nccl.wait_async();
      be->synchronize();
    } catch (const Error& e) {
      error = e.what();
    }
    const std::string fault = emu::last_failure();
    if (wait) {
      expect(error.empty() && fault.empty(), r, "a write after the wait is not a race: " + error);
    } else {
      expect(!error.empty(), r, "the write during the reduction ended the step with an error");
      expect(fault.find("ncclAllReduce: its input was written while it ran") != std::string::npos,
             r, "the fault names the collective and the race: " + fault);
      emu::reset_device_for_tests();  // so the communicator and the memory can be released
    }
  }
  return 0;
}
#endif

// Every rank's failures summed; rank 0 prints them under `name`. The exit status: 0 when none.
int report(MpiComm& comm, const char* name) {
  const double all_failures = comm.all_reduce(double(failures), ReduceOp::Sum);
  if (comm.rank() == 0) std::printf("%s: %d ranks, %.0f failures\n", name, comm.size(), all_failures);
  return all_failures == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  MpiComm comm;
  const int r = comm.rank(), W = comm.size();
  if (argc > 1 && std::string(argv[1]) == "--nccl-race") {
#if defined(SPEEDRUN_HAVE_NCCL) && defined(SPEEDRUN_CUDA_EMULATED)
    nccl_race_check(comm);
    return report(comm, "nccl race selftest");
#else
    std::printf("nccl race selftest: needs the emulated NCCL\n");
    return 2;
#endif
  }
  if (argc > 1 && std::string(argv[1]) == "--nccl") {
#ifdef SPEEDRUN_HAVE_NCCL
    nccl_check(comm);
    return report(comm, "nccl selftest");
#else
    std::printf("nccl selftest: this build has no NCCL\n");
    return 2;
#endif
  }
  // Collectives.
  std::vector<float> a = {float(r + 1), 0.5f * float(r)};
  comm.all_reduce(Tensor(a.data(), DType::F32, {2}), ReduceOp::Sum);
  expect(a[0] == float(W * (W + 1) / 2), r, "all_reduce sum");
  std::vector<double> m = {double(r)};
  comm.all_reduce(Tensor(m.data(), DType::F64, {1}), ReduceOp::Mean);
  expect(m[0] == double(W - 1) / 2.0, r, "all_reduce mean");
  std::vector<float> in = {float(r)}, out(size_t(W), -1.0f);
  comm.all_gather(Tensor(out.data(), DType::F32, {W}), Tensor(in.data(), DType::F32, {1}));
  for (int k = 0; k < W; ++k) expect(out[size_t(k)] == float(k), r, "all_gather");
  std::vector<float> whole(size_t(2 * W), -1.0f);
  whole[size_t(2 * r)] = float(r);
  whole[size_t(2 * r + 1)] = float(100 + r);
  comm.all_gather_in_place(Tensor(whole.data(), DType::F32, {2 * W}));
  for (int k = 0; k < W; ++k)
    expect(whole[size_t(2 * k)] == float(k) && whole[size_t(2 * k + 1)] == float(100 + k), r,
           "all_gather_in_place");
  std::vector<float> b = {float(r)};
  comm.broadcast(Tensor(b.data(), DType::F32, {1}), W - 1);
  expect(b[0] == float(W - 1), r, "broadcast");
  expect(comm.all_reduce(1.0, ReduceOp::Sum) == double(W), r, "all_reduce(double)");
  const auto ints = comm.all_gather(std::vector<int64_t>{r});
  for (int k = 0; k < W; ++k) expect(ints[size_t(k)] == k, r, "all_gather(int64)");

  // Distributed Muon = single-process Muon, bit for bit.
  const auto split = muon_steps(&comm);
  LocalComm local;
  const auto alone = muon_steps(&local);
  expect(split == alone, r, "Muon over " + std::to_string(W) + " ranks equals Muon on one");

  // Rank r's readers read SPEC's slices: per step, the tokens at r*B*T of each step's
  // B*T*W, B = 2 sequences of T = 8 tokens per rank.
  if (argc > 1) {
    const std::string shard = argv[1];
    const int64_t T = 8, B = 2;
    StepLoader loader({shard}, B, T, 1, r, W, 65536);
    const Shard s = Shard::open(shard);
    std::vector<int32_t> x(size_t(B * T)), y(x.size());
    for (int64_t step = 0; step < 3; ++step) {
      loader.next(x.data(), y.data());
      const int64_t pos = step * B * T * W + int64_t(r) * B * T;
      bool same = true;
      for (int64_t i = 0; i < B * T; ++i)
        same = same && x[size_t(i)] == int32_t(s.tokens()[pos + i]) &&
               y[size_t(i)] == int32_t(s.tokens()[pos + i + 1]);
      expect(same, r, "step " + std::to_string(step) + " reads tokens at " + std::to_string(pos));
    }
  }
  return report(comm, "mpi selftest");
}
