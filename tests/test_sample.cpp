// Sampling with the KV cache: the decode ops against the full-sequence ops, the Decoder's
// logits against GPT's full forward at every position (past the window, so the ring buffer
// wraps, and across EOTs, so the document mask matters), greedy sampling against the
// argmax of full forwards, EOT stopping, bad prompts, and `speedrun sample` end to end.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "model/params.h"
#include "tolerances.h"
#include "train/sample.h"
#include "fixtures.h"
#include "run_command.h"

using namespace speedrun;
using namespace speedrun::test;
namespace fs = std::filesystem;

namespace {

// Random tokens with EOTs at the given positions (and nowhere else).
std::vector<int32_t> tokens_with_eots(int64_t n, const GPTConfig& c, std::vector<int64_t> eots,
                                      uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> x(static_cast<size_t>(n));
  for (auto& t : x) {
    t = int32_t(rng.below(uint64_t(c.vocab)));
    if (t == c.eot) t = (t + 1) % int32_t(c.vocab);
  }
  for (int64_t e : eots) x[size_t(e)] = c.eot;
  return x;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

int32_t argmax(const std::vector<double>& v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}


}  // namespace

// ---------------------------------------------------------------- the two decode ops

TEST(DecodeOps, RotaryTablesAtEqualTheRowsOfTheFullTable) {
  CpuBackend be;
  for (int64_t D : {2, 16, 34}) {
    const int64_t T = 300, half = D / 2;
    std::vector<float> cos(size_t(T * half)), sin(cos.size());
    be.rotary_tables(Tensor(cos.data(), DType::F32, {T, half}),
                     Tensor(sin.data(), DType::F32, {T, half}), 10000.0);
    for (int64_t start : {0, 1, 63, 257}) {
      const int64_t R = std::min<int64_t>(33, T - start);
      std::vector<float> c(size_t(R * half)), s(c.size());
      be.rotary_tables_at(Tensor(c.data(), DType::F32, {R, half}),
                          Tensor(s.data(), DType::F32, {R, half}), 10000.0, start);
      for (int64_t i = 0; i < R * half; ++i) {
        ASSERT_EQ(c[size_t(i)], cos[size_t(start * half + i)]) << "D " << D << " start " << start;
        ASSERT_EQ(s[size_t(i)], sin[size_t(start * half + i)]) << "D " << D << " start " << start;
      }
    }
  }
}

// attention_decode of query i over the keys the mask shows it equals row i of
// attention_forward over the whole sequence (documents and a window included).
TEST(DecodeOps, AttentionDecodeEqualsTheFullAttentionRow) {
  CpuBackend be;
  const int64_t T = 97, H = 3, D = 8, C = H * D, window = 20;
  const double scale = 1.0 / std::sqrt(double(D));
  Rng rng(7);
  std::vector<double> q(size_t(T * C)), k(q.size()), v(q.size()), out(q.size()), lse(size_t(H * T));
  for (auto* a : {&q, &k, &v})
    for (auto& x : *a) x = rng.normal();
  std::vector<int32_t> toks(size_t(T), 5);
  for (int64_t e : {0, 30, 31, 70}) toks[size_t(e)] = 1;
  const std::vector<BlockMask> masks = {build_block_mask(toks.data(), T, 1, window, 16)};
  be.attention_forward(Tensor(out.data(), DType::F64, {T, C}), Tensor(lse.data(), DType::F64, {1, H, T}),
                       Tensor(q.data(), DType::F64, {T, C}), Tensor(k.data(), DType::F64, {T, C}),
                       Tensor(v.data(), DType::F64, {T, C}), masks, H, scale);
  for (int64_t i = 0; i < T; ++i) {
    std::vector<int32_t> rows;
    for (int64_t j = 0; j <= i; ++j)
      if (masks[0].visible(i, j)) rows.push_back(int32_t(j));
    std::vector<double> o(static_cast<size_t>(C));
    be.attention_decode(Tensor(o.data(), DType::F64, {1, C}), Tensor(q.data() + i * C, DType::F64, {1, C}),
                        Tensor(k.data(), DType::F64, {T, C}), Tensor(v.data(), DType::F64, {T, C}),
                        rows, H, scale);
    for (int64_t c = 0; c < C; ++c)
      ASSERT_NEAR(o[size_t(c)], out[size_t(i * C + c)], tol::kDouble) << "query " << i;
  }
}

TEST(DecodeOps, AttentionDecodeRejectsRowsOutsideTheCache) {
  CpuBackend be;
  std::vector<float> q(8), k(32), v(32), o(8);
  auto call = [&](std::vector<int32_t> rows) {
    be.attention_decode(Tensor(o.data(), DType::F32, {1, 8}), Tensor(q.data(), DType::F32, {1, 8}),
                        Tensor(k.data(), DType::F32, {4, 8}), Tensor(v.data(), DType::F32, {4, 8}),
                        rows, 2, 0.5);
  };
  EXPECT_THROW(call({}), Error);
  EXPECT_THROW(call({0, 4}), Error);
  EXPECT_NO_THROW(call({3, 0}));
}

// ---------------------------------------------------------------- decoder vs full forward

// Teacher-forced: after each token, the decoder's logits equal the full forward's logits at
// that position, with a window of 24 over 150 tokens (the ring buffer wraps 6 times) and
// EOTs at 0, 40, 41 (a one-token document) and 97.
class DecoderVsFullForward : public ::testing::TestWithParam<DType> {};

TEST_P(DecoderVsFullForward, LogitsMatchAtEveryPosition) {
  const DType dt = GetParam();
  CpuBackend be;
  const GPTConfig c = micro_gpt(4);
  Parameters p(be, c, dt);
  randomize(p, 11);
  const int64_t T = 150, window = 24;
  const auto x = tokens_with_eots(T, c, {0, 40, 41, 97}, 5);
  GPT full(be, p, 1, T);
  Decoder dec(be, p, window);
  EXPECT_EQ(dec.cache_rows(), window);
  const size_t bytes = dec.cache_bytes();
  EXPECT_EQ(bytes, size_t(c.layers * 2 * window * c.width()) * dtype_size(dt));
  // fp64: the same math, only summation orders differ. fp32: the decode attention sums
  // in double and the 1-row matmuls take another BLAS path than the full ones; logits are
  // O(1..10), so a few fp32 ulps through 4 layers stay below 1e-4.
  const double tol = dt == DType::F64 ? 1e-10 : 1e-4;
  double worst = 0;
  for (int64_t i = 0; i < T; ++i) {
    dec.step(x[size_t(i)]);
    const auto ref = full.logits_at(x.data(), i, window);
    const double d = max_abs_diff(dec.logits(), ref);
    worst = std::max(worst, d);
    ASSERT_LT(d, tol) << "position " << i;
    ASSERT_EQ(argmax(dec.logits()), argmax(ref)) << "position " << i;
  }
  EXPECT_EQ(dec.position(), T);
  EXPECT_EQ(dec.cache_bytes(), bytes);  // bounded by the window, not the text
  // The logits must depend on the context: a decoder that ignored the cache would match
  // only at the first token of each document. Position 60 sees 24 tokens of context.
  Decoder alone(be, p, window);
  alone.step(x[60]);
  EXPECT_GT(max_abs_diff(alone.logits(), full.logits_at(x.data(), 60, window)), 1e-3);
  std::printf("worst |decoder - full forward| over %lld positions: %.3g\n", (long long)T, worst);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DecoderVsFullForward, ::testing::Values(DType::F64, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Decoder, RejectsBadTokensAndPositions) {
  CpuBackend be;
  const GPTConfig c = micro_gpt(4);
  Parameters p(be, c, DType::F32);
  randomize(p, 2);
  Decoder dec(be, p, 8, 3);
  EXPECT_EQ(dec.cache_rows(), 3);
  EXPECT_THROW(dec.step(int32_t(c.vocab)), Error);
  EXPECT_THROW(dec.step(-1), Error);
  dec.step(1);
  dec.step(2);
  dec.step(4);
  EXPECT_THROW(dec.step(5), Error);  // past max_positions
  dec.reset();
  EXPECT_NO_THROW(dec.step(5));
  EXPECT_THROW(Decoder(be, p, 0), Error);
}

// ---------------------------------------------------------------- sampling

// Greedy sampling, run past the window and through generated EOTs, picks at every step the
// argmax of a full forward over the whole text so far; the prompt holds an EOT.
TEST(Sample, GreedyEqualsArgmaxOfTheFullForwardAtEveryPosition) {
  CpuBackend be;
  const GPTConfig c = micro_gpt(4);
  Parameters p(be, c, DType::F32);
  randomize(p, 23);
  auto prompt = tokens_with_eots(12, c, {0, 7}, 9);
  SampleOptions o;
  o.temperature = 0;
  o.window = 16;
  o.max_tokens = 80;
  o.stop_at_eot = false;
  std::vector<int32_t> streamed;
  o.on_token = [&](int32_t t) { streamed.push_back(t); };
  const auto gen = sample_tokens(be, p, prompt, o);
  ASSERT_EQ(gen.size(), 80u);
  EXPECT_EQ(streamed, gen);
  std::vector<int32_t> text = prompt;
  text.insert(text.end(), gen.begin(), gen.end());
  GPT full(be, p, 1, int64_t(text.size()));
  for (size_t i = prompt.size() - 1; i + 1 < text.size(); ++i)
    ASSERT_EQ(argmax(full.logits_at(text.data(), int64_t(i), o.window)), text[i + 1])
        << "generated token " << i + 1 - prompt.size();
  // A model that ignored its context would repeat itself; this one must not be constant.
  EXPECT_GT(std::set<int32_t>(gen.begin(), gen.end()).size(), 3u);
}

// With stop_at_eot the output is the free run cut before its first EOT (the same draws).
TEST(Sample, StopsAtEot) {
  CpuBackend be;
  GPTConfig c = micro_gpt(4);
  c.vocab = 9;  // few tokens, so an EOT is drawn soon
  Parameters p(be, c, DType::F32);
  randomize(p, 4);
  const std::vector<int32_t> prompt = {c.eot, 5, 6};
  SampleOptions o;
  o.temperature = 1.0;
  o.top_k = 6;
  o.seed = 17;
  o.window = 32;
  o.max_tokens = 60;
  o.stop_at_eot = false;
  const auto free_run = sample_tokens(be, p, prompt, o);
  const auto first_eot = std::find(free_run.begin(), free_run.end(), c.eot);
  ASSERT_NE(first_eot, free_run.end()) << "seed 17 draws no EOT in 60 tokens; pick another";
  o.stop_at_eot = true;
  const auto stopped = sample_tokens(be, p, prompt, o);
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), first_eot));
  // Seeded: the same seed gives the same text, another seed another.
  EXPECT_EQ(sample_tokens(be, p, prompt, o), stopped);
  o.stop_at_eot = false;
  o.seed = 18;
  EXPECT_NE(sample_tokens(be, p, prompt, o), free_run);
}

TEST(Sample, TopKAndPaddedVocabularyLimitTheDraws) {
  std::vector<double> logits = {0.0, 5.0, 4.0, 3.0, 9.0, 8.0};
  Rng rng(1);
  SampleOptions o;
  o.temperature = 5.0;
  o.top_k = 2;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = pick_token(logits, o, rng);
    EXPECT_TRUE(t == 4 || t == 5) << t;
  }
  o.allowed_vocab = 4;  // ids 4 and 5 are padding rows: never drawn
  for (int i = 0; i < 200; ++i) {
    const int32_t t = pick_token(logits, o, rng);
    EXPECT_TRUE(t == 1 || t == 2) << t;
  }
  o.temperature = 0;
  EXPECT_EQ(pick_token(logits, o, rng), 1);
}

TEST(Sample, PromptMustBeUtf8) {
  EXPECT_NO_THROW(check_prompt_utf8("plain text, caf\xc3\xa9"));
  try {
    check_prompt_utf8("abc\xff" "def");
    FAIL() << "no error for invalid UTF-8";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("0xFF"), std::string::npos) << m;
    EXPECT_NE(m.find("offset 3"), std::string::npos) << m;
  }
  EXPECT_THROW(check_prompt_utf8("\xe2\x82"), Error);  // a cut character
}

// ---------------------------------------------------------------- speedrun sample

class SampleCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("speedrun_test_sample_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    // A byte-level tokenizer with two merges: ids 0..255 bytes, 256 "ab", 257 "abab",
    // EOT 258. The model pads its vocabulary to 264 rows (ids 259..263 never drawn).
    BpeVocab v;
    for (int b = 0; b < 256; ++b) v.tokens.push_back(std::string(1, char(b)));
    v.tokens.push_back("ab");
    v.merges.push_back({'a', 'b'});
    v.tokens.push_back("abab");
    v.merges.push_back({256, 256});
    Tokenizer(v).save(dir / "tok");
    cfg = micro_gpt(4);
    cfg.vocab = 264;
    cfg.eot = 258;
    CpuBackend be;
    Parameters p(be, cfg, DType::F32);
    randomize(p, 31);
    weights = (dir / "w.safetensors").string();
    p.save(weights, {{"window", "16"}});
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
  GPTConfig cfg;
  std::string weights;
};

TEST_F(SampleCli, GreedyTextEqualsTheLibrarysSample) {
  const auto r = run_cli("sample --checkpoint " + weights + " --tokenizer " + (dir / "tok").string() +
                         " --prompt 'abab x' --max-tokens 30 --temperature 0 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  CpuBackend be;
  Parameters p(be, cfg, DType::F32);
  p.load(weights);
  const Tokenizer tok = Tokenizer::load(dir / "tok");
  std::vector<int32_t> prompt = {cfg.eot};
  tok.encode_append("abab x", prompt);
  SampleOptions o;
  o.temperature = 0;
  o.window = 16;
  o.max_tokens = 30;
  o.allowed_vocab = tok.vocab_size();
  const auto gen = sample_tokens(be, p, prompt, o);
  const std::string text = sanitize_utf8("abab x" + tok.decode(gen));
  EXPECT_NE(r.out.find(text), std::string::npos) << "expected text: " << text << "\noutput:\n"
                                                 << r.out;
}

TEST_F(SampleCli, BadInputGivesClearErrors) {
  const std::string base = "sample --checkpoint " + weights + " --tokenizer " + (dir / "tok").string();
  auto r = run_cli(base + " --prompt \"$(printf 'ab\\377cd')\"");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("not valid UTF-8"), std::string::npos) << r.out;
  r = run_cli("sample --checkpoint " + (dir / "missing.safetensors").string() + " --prompt hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("missing.safetensors"), std::string::npos) << r.out;
  // GPT-2's tokenizer (50257 ids) does not fit a 264-row model.
  BpeVocab big;
  for (int b = 0; b < 256; ++b) big.tokens.push_back(std::string(1, char(b)));
  for (int i = 0; i < 20; ++i) {
    big.tokens.push_back(big.tokens[size_t('a' + i)] + "z");
    big.merges.push_back({'a' + i, 'z'});
  }
  Tokenizer(big).save(dir / "big");
  r = run_cli("sample --checkpoint " + weights + " --tokenizer " + (dir / "big").string() +
              " --prompt hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("does not fit"), std::string::npos) << r.out;
  r = run_cli(base + " --prompt hi --temperature -1");
  EXPECT_EQ(r.code, 1) << r.out;
}

// A length past the limit names the flag, rather than overflowing prompt + tokens into a
// negative position count.
TEST_F(SampleCli, MaxTokensBeyondItsRangeNamesTheFlag) {
  const std::string base = "sample --checkpoint " + weights + " --tokenizer " +
                           (dir / "tok").string() + " --prompt hi --max-tokens ";
  for (const std::string n : {"9223372036854775807", "1000000001", "-1"}) {
    const auto r = run_cli(base + n);
    EXPECT_EQ(r.code, 1) << n << ": " << r.out;
    EXPECT_NE(r.out.find("error: --max-tokens " + n + ": must be in [0, 1000000000]"),
              std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Decoder"), std::string::npos) << r.out;
  }
}
