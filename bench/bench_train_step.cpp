// Tokens/s of one CPU training step (forward + backward + every optimizer update) of
// speedrun against the PyTorch reference (tools/reference, eager, fp32) on the same config,
// thread count and kind of data, both measured in this run; prints a table with the ratio.
//
//   build/bench_train_step [--threads N] [--steps S] [--quick]
//
// The PyTorch side runs bench/torch_cpu_step.py with /usr/bin/python3 (Debian's
// python3-torch) twice: with its block-sparse attention (O(T*window), like FlexAttention)
// and with a dense [T, T] masked attention (plain eager PyTorch). Without torch only the
// speedrun column is printed.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"

using namespace speedrun;

namespace {

struct Case {
  const char* name;
  int64_t layers, heads, head_dim, vocab, T, B, window;
};

std::string run(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

double torch_tokens_per_s(const Case& c, int threads, int steps, const char* attention) {
  const std::string cmd =
      "/usr/bin/python3 " SPEEDRUN_SOURCE_DIR "/bench/torch_cpu_step.py --layers " +
      std::to_string(c.layers) + " --heads " + std::to_string(c.heads) + " --head-dim " +
      std::to_string(c.head_dim) + " --vocab " + std::to_string(c.vocab) + " --eot 0 --seq-len " +
      std::to_string(c.T) + " --batch " + std::to_string(c.B) + " --window " +
      std::to_string(c.window) + " --threads " + std::to_string(threads) + " --steps " +
      std::to_string(steps) + " --warmup 2 --attention " + attention + " 2>/dev/null";
  const std::string out = run(cmd);
  const auto pos = out.rfind('{');
  if (pos == std::string::npos) return 0;
  try {
    return nlohmann::json::parse(out.substr(pos))["tokens_per_s"].get<double>();
  } catch (...) {
    return 0;
  }
}

// Random tokens with an EOT (id 0) opening a document every ~1000 tokens, as the
// PyTorch script's random batches.
void batch(Rng& rng, const Case& c, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  const int64_t n = c.B * c.T;
  std::vector<int32_t> t(size_t(n + 1));
  for (auto& v : t) v = rng.uniform() < 1.0 / 1000 ? 0 : int32_t(1 + rng.below(uint64_t(c.vocab - 1)));
  t[0] = 0;
  x.assign(t.begin(), t.end() - 1);
  y.assign(t.begin() + 1, t.end());
}

double speedrun_tokens_per_s(const Case& c, int threads, int steps) {
  CpuBackend be(threads);
  GPTConfig cfg;
  cfg.layers = c.layers;
  cfg.heads = c.heads;
  cfg.head_dim = c.head_dim;
  cfg.vocab = c.vocab;
  cfg.eot = 0;
  Parameters p(be, cfg, DType::F32);
  p.init(0);
  GPT model(be, p, c.B, c.T);
  Optimizer opt(be, p, OptimConfig{});
  Rng rng(1);
  std::vector<int32_t> x, y;
  std::vector<double> ms;
  for (int s = 0; s < steps + 2; ++s) {  // 2 warm-up steps: the projections become non-zero
    batch(rng, c, x, y);
    const auto t0 = std::chrono::steady_clock::now();
    p.zero_grad();
    model.forward_backward(x.data(), y.data(), c.window);
    opt.step(1.0, 0.9);
    const double dt =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= 2) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  return double(c.B * c.T) / (ms[ms.size() / 2] / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, steps = 5;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
  }
  std::vector<Case> cases = {
      {"tiny (default preset)", 4, 4, 32, 512, 1024, 4, 512},
      {"small, window 128", 6, 6, 64, 8192, 2048, 1, 128},
      {"small, window 1024", 6, 6, 64, 8192, 2048, 1, 1024},
      {"GPT-2 small shape, T 1024", 12, 6, 128, 50304, 1024, 1, 1024},
  };
  if (quick) cases.resize(1);
  std::printf("| config | L x H x D, V | B x T, window | speedrun tok/s | torch block tok/s | "
              "ratio | torch dense tok/s | ratio |\n|---|---|---|---|---|---|---|---|\n");
  for (const Case& c : cases) {
    const double ours = speedrun_tokens_per_s(c, threads, steps);
    const double tb = torch_tokens_per_s(c, threads, steps, "block");
    const double td = torch_tokens_per_s(c, threads, steps, "dense");
    auto cell = [](double v) { return v > 0 ? std::to_string(int64_t(v)) : std::string("n/a"); };
    auto ratio = [&](double v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.2fx", ours / v);
      return v > 0 ? std::string(b) : std::string("n/a");
    };
    std::printf("| %s | %lldx%lldx%lld, %lld | %lldx%lld, %lld | %s | %s | %s | %s | %s |\n", c.name,
                (long long)c.layers, (long long)c.heads, (long long)c.head_dim, (long long)c.vocab,
                (long long)c.B, (long long)c.T, (long long)c.window, cell(ours).c_str(),
                cell(tb).c_str(), ratio(tb).c_str(), cell(td).c_str(), ratio(td).c_str());
    std::fflush(stdout);
  }
  std::printf("\n%d threads, median of %d steps after 2 warm-up steps, fp32.\n", threads, steps);
  return 0;
}
