#include "train/sample.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "core/rng.h"
#include "data/utf8.h"
#include "model/decoder.h"

namespace speedrun {

void check_prompt_utf8(std::string_view prompt) {
  const size_t ok = valid_utf8_prefix(prompt);
  if (ok == prompt.size()) return;
  fail("--prompt: byte ", fmt::format("0x{:02X}", uint8_t(prompt[ok])), " at offset ", ok,
       " is not valid UTF-8 (a prompt is text): pass UTF-8 text, e.g. convert it with "
       "iconv -t UTF-8");
}

int32_t pick_token(const std::vector<double>& logits, const SampleOptions& o, Rng& rng) {
  const int64_t n = o.allowed_vocab > 0 ? std::min<int64_t>(o.allowed_vocab, int64_t(logits.size()))
                                        : int64_t(logits.size());
  check(n >= 1, "sample: no token can be drawn (allowed vocabulary is empty)");
  if (o.temperature <= 0)
    return int32_t(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  auto higher = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  if (o.top_k > 0 && o.top_k < n) {
    std::partial_sort(ids.begin(), ids.begin() + o.top_k, ids.end(), higher);
    ids.resize(size_t(o.top_k));
  }
  double mx = -INFINITY;
  for (int32_t i : ids) mx = std::max(mx, logits[size_t(i)]);
  std::vector<double> p(ids.size());
  double z = 0;
  for (size_t i = 0; i < ids.size(); ++i)
    z += p[i] = std::exp((logits[size_t(ids[i])] - mx) / o.temperature);
  double u = rng.uniform() * z;
  size_t k = 0;
  while (k + 1 < ids.size() && (u -= p[k]) > 0) ++k;
  return ids[k];
}

std::vector<int32_t> sample_tokens(Backend& backend, const Parameters& params,
                                   const std::vector<int32_t>& prompt, const SampleOptions& o) {
  check(!prompt.empty(), "sample: the prompt must hold at least one token");
  check(o.max_tokens >= 0 && o.max_tokens <= kMaxSampleTokens, "sample: --max-tokens ",
        o.max_tokens, " must be in [0, ", kMaxSampleTokens, "]");
  check(o.top_k >= 0, "sample: --top-k ", o.top_k, " must be >= 0");
  check(std::isfinite(o.temperature) && o.temperature >= 0, "sample: --temperature ",
        o.temperature, " must be a finite number >= 0");
  const size_t skip =
      o.context > 0 && int64_t(prompt.size()) > o.context ? prompt.size() - size_t(o.context) : 0;
  const int64_t fed = int64_t(prompt.size() - skip);
  Decoder dec(backend, params, o.window, fed + o.max_tokens);
  const int32_t eot = params.config().eot;
  Rng rng(o.seed);
  std::vector<int32_t> out;
  if (o.max_tokens == 0) return out;
  for (size_t i = skip; i < prompt.size(); ++i) dec.step(prompt[i]);
  for (int64_t n = 0; n < o.max_tokens; ++n) {
    const int32_t next = pick_token(dec.logits(), o, rng);
    if (o.stop_at_eot && next == eot) break;
    out.push_back(next);
    if (o.on_token) o.on_token(next);
    if (n + 1 < o.max_tokens) dec.step(next);
  }
  return out;
}

}  // namespace speedrun
