#include "train/sample.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.h"
#include "model/gpt.h"

namespace speedrun {

std::vector<int32_t> sample_tokens(Backend& backend, Parameters& params,
                                   const std::vector<int32_t>& prompt, const SampleOptions& o) {
  check(!prompt.empty(), "sample: the prompt must hold at least one token");
  const int64_t T = o.context;
  GPT model(backend, params, 1, T);
  const int32_t eot = params.config().eot;
  Rng rng(o.seed);
  std::vector<int32_t> ctx = prompt, out;
  std::vector<int32_t> buf(static_cast<size_t>(T), eot);
  for (int64_t n = 0; n < o.max_tokens; ++n) {
    const int64_t len = std::min<int64_t>(int64_t(ctx.size()), T);
    std::copy(ctx.end() - len, ctx.end(), buf.begin());
    std::fill(buf.begin() + len, buf.end(), eot);
    std::vector<double> logits = model.logits_at(buf.data(), len - 1, o.window);
    int32_t next;
    if (o.temperature <= 0) {
      next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    } else {
      std::vector<int32_t> ids(logits.size());
      std::iota(ids.begin(), ids.end(), 0);
      if (o.top_k > 0 && o.top_k < int64_t(ids.size())) {
        std::partial_sort(ids.begin(), ids.begin() + o.top_k, ids.end(),
                          [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
        ids.resize(size_t(o.top_k));
      }
      double mx = -1e300;
      for (int32_t i : ids) mx = std::max(mx, logits[i]);
      std::vector<double> p(ids.size());
      double z = 0;
      for (size_t i = 0; i < ids.size(); ++i) z += p[i] = std::exp((logits[ids[i]] - mx) / o.temperature);
      double u = rng.uniform() * z;
      size_t k = 0;
      while (k + 1 < ids.size() && (u -= p[k]) > 0) ++k;
      next = ids[k];
    }
    if (o.stop_at_eot && next == eot) break;
    out.push_back(next);
    ctx.push_back(next);
  }
  return out;
}

}  // namespace speedrun
