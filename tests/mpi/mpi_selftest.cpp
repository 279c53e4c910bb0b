// Run under mpirun (tests/test_mpi.cpp does): checks the MPI communicator's collectives,
// that distributed Muon equals single-process Muon on the same gradients, and that each
// rank's data readers read SPEC.md's slices. Exits 0 when every check holds on every rank;
// prints the failed checks and exits 1 otherwise.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data/step_loader.h"
#include "dist/local_comm.h"
#include "dist/mpi/mpi_comm.h"
#include "model/params.h"
#include "optim/optimizer.h"

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
  GPTConfig cfg;
  cfg.layers = 4;
  cfg.heads = 2;
  cfg.head_dim = 16;
  cfg.vocab = 37;
  cfg.eot = 3;
  Parameters p(be, cfg, DType::F32);
  p.init(5);
  Optimizer opt(be, p, OptimConfig{}, comm);
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < p.count(); ++i) {
      Rng rng(uint64_t(100 * step + i));
      std::vector<double> g(size_t(p.grad(i).numel()));
      for (auto& x : g) x = 0.01 * rng.normal();
      be.from_host_f64(p.grad(i), g);
    }
    opt.step(1.0, 0.9);
  }
  std::vector<std::vector<double>> out;
  for (int i = 0; i < p.count(); ++i) out.push_back(p.to_host_f64(i));
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  MpiComm comm;
  const int r = comm.rank(), W = comm.size();
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
  const double all_failures = comm.all_reduce(double(failures), ReduceOp::Sum);
  if (r == 0) std::printf("mpi selftest: %d ranks, %.0f failures\n", W, all_failures);
  return all_failures == 0 ? 0 : 1;
}
