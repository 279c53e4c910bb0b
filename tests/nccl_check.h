// The NCCL communicator on this rank's GPU against a host Comm on the same values in host
// memory: sum, mean, gather (into another buffer, in place, in place async), broadcast, the
// async reduction with its tickets, and no background error after them. Run by
// tests/mpi/mpi_selftest.cpp against MPI on every rank of an mpirun job, and by
// tests/test_cuda_backend.cpp at world 1 against the LocalComm (what MPI gives one rank), so
// that a one-GPU machine checks NCCL's calls, streams and events without MPI.
// `expect(ok, what)` reports each check.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "core/tensor.h"
#include "dist/comm.h"

namespace speedrun::test {

inline void check_nccl(Comm& nccl, Comm& host_comm, Backend& be,
                       const std::function<void(bool, const std::string&)>& expect) {
  const int r = host_comm.rank(), W = host_comm.size();
  expect(nccl.rank() == r && nccl.size() == W, "nccl rank and size are the host Comm's");
  const int64_t n = 1000;
  std::vector<double> host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) host[size_t(i)] = std::sin(double(i + 1) * (r + 1));
  Arena mem([&](size_t b) { return be.allocate(b); }, [&](void* p) { be.release(p); });
  Tensor d, y, g;
  mem.add("x", DType::F32, {n}, &d);
  mem.add("y", DType::F32, {n}, &y);
  mem.add("gathered", DType::F32, {int64_t(W) * n}, &g);
  mem.materialize(be.device());
  auto close = [](double got, double ref) {
    return std::fabs(got - ref) <= 1e-6 * (1 + std::fabs(ref));
  };
  auto agrees = [&](const std::vector<double>& got, const std::vector<float>& ref, const char* what) {
    bool ok = true;
    for (int64_t i = 0; i < n && ok; ++i) ok = close(got[size_t(i)], ref[size_t(i)]);
    expect(ok, what);
  };
  std::vector<float> ref_sum, ref_mean;
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    std::vector<float> ref(host.begin(), host.end());
    host_comm.all_reduce(Tensor(ref.data(), DType::F32, {n}), op);
    (op == ReduceOp::Sum ? ref_sum : ref_mean) = ref;
    be.from_host_f64(d, host);
    nccl.all_reduce(d, op);
    const auto got = be.to_host_f64(d);
    be.from_host_f64(d, host);
    nccl.all_reduce_async(d, op);
    nccl.wait_async();
    const auto got_async = be.to_host_f64(d);
    agrees(got, ref, op == ReduceOp::Sum ? "nccl all_reduce (sum) agrees with the host Comm"
                                         : "nccl all_reduce (mean) agrees with the host Comm");
    expect(got_async == got, "nccl async all_reduce = all_reduce");
  }
  // Tickets: waiting for one async reduction is enough to read its buffer while the one
  // started after it may still run; the ring of events is reused past 64 of them. The
  // ticket waited for is a mean: at world 1 NCCL skips an in-place sum, but runs a kernel
  // for a mean (each value times 1/W), so there too the wait is for work on the GPU.
  for (int round = 0; round < 2; ++round) {
    be.from_host_f64(d, host);
    be.from_host_f64(y, host);
    const int64_t t1 = nccl.all_reduce_async(d, ReduceOp::Mean);
    const int64_t t2 = nccl.all_reduce_async(y, ReduceOp::Sum);
    expect(t2 == t1 + 1, "nccl tickets count the async reductions");
    nccl.wait_async(t1);
    agrees(be.to_host_f64(d), ref_mean, "nccl wait_async(ticket): that reduction has landed");
    nccl.wait_async();
    agrees(be.to_host_f64(y), ref_sum, "nccl wait_async(): every reduction has landed");
    for (int k = 0; k < 70; ++k) nccl.all_reduce_async(g.slice(0, 1), ReduceOp::Mean);
    nccl.wait_async(t1);  // its event has been reused: waits through the newest
  }
  be.synchronize();
  be.from_host_f64(d, host);
  nccl.all_gather(g, d);
  const auto all = be.to_host_f64(g);
  bool in_order = true;
  for (int q = 0; q < W; ++q)
    for (int64_t i = 0; i < n; i += 97)
      in_order = in_order && all[size_t(q) * size_t(n) + size_t(i)] ==
                                 double(float(std::sin(double(i + 1) * (q + 1))));
  expect(in_order, "nccl all_gather: every rank's values in rank order");
  // In place, at once and async: the same gather.
  for (const bool async : {false, true}) {
    be.fill(g, std::nan(""));
    be.copy(g.slice(int64_t(r) * n, int64_t(r + 1) * n), d);
    if (async) {
      nccl.all_gather_async(g);
      nccl.wait_async();
    } else {
      nccl.all_gather_in_place(g);
    }
    expect(be.to_host_f64(g) == all, async ? "nccl all_gather_async in place = all_gather"
                                           : "nccl all_gather_in_place = all_gather");
  }
  nccl.broadcast(d, 0);
  const auto root = be.to_host_f64(d);
  bool roots = true;
  for (int64_t i = 0; i < n; i += 97)
    roots = roots && root[size_t(i)] == double(float(std::sin(double(i + 1))));
  expect(roots, "nccl broadcast: rank 0's values");
  nccl.barrier();
  // Healthy links after all of it: nothing for the stall watchdog to end the run for.
  const std::string background = nccl.background_error();
  expect(background.empty(), "nccl background_error() is empty on healthy links: " + background);
}

}  // namespace speedrun::test
