#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/shard.h"

namespace speedrun {

namespace {

constexpr uint64_t kSuccessorWeights[SyntheticCorpus::kSuccessors] = {10, 5, 3, 2};
constexpr uint64_t kSuccessorTotal = 20;
constexpr uint64_t kNoiseNum = 1, kNoiseDen = 25;  // P(uniform random word) = 1/25

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void seed_state(std::array<uint64_t, 4>& s, uint64_t seed) {
  for (uint64_t& v : s) v = splitmix64(seed);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t xoshiro_next(std::array<uint64_t, 4>& s) {
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

// Uniform in [0, n), unbiased (Lemire's multiply-and-reject).
uint64_t xoshiro_below(std::array<uint64_t, 4>& s, uint64_t n) {
  unsigned __int128 m = (unsigned __int128)xoshiro_next(s) * n;
  uint64_t low = uint64_t(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = (unsigned __int128)xoshiro_next(s) * n;
      low = uint64_t(m);
    }
  }
  return uint64_t(m >> 64);
}

// Weight of a document of L words: proportional to 1/L.
uint64_t length_weight(int L) { return (uint64_t(1) << 32) / uint64_t(L); }

}  // namespace

SyntheticCorpus::SyntheticCorpus(int vocab_, int eot_, uint64_t seed_, uint64_t stream)
    : vocab(vocab_), eot(eot_), seed(seed_) {
  check(vocab >= 8 && vocab <= 65536, "synthetic corpus: vocab ", vocab,
        " must be in [8, 65536] (tokens are uint16; --vocab)");
  check(eot >= 0 && eot < vocab, "synthetic corpus: eot token ", eot, " must be in [0, vocab ",
        vocab, ")");
  num_words_ = vocab - 1;
  topic_size_ = std::max(kSuccessors, num_words_ / 2);

  // The language: from the seed alone, so every stream shares it.
  std::array<uint64_t, 4> lang{};
  seed_state(lang, seed ^ 0x6C616E6775616765ull);
  topic_words_.resize(size_t(kTopics) * topic_size_);
  in_topic_.assign(size_t(kTopics) * num_words_, 0);
  successors_.resize(size_t(kTopics) * num_words_ * kSuccessors);
  std::vector<int32_t> perm(num_words_);
  for (int t = 0; t < kTopics; ++t) {
    for (int i = 0; i < num_words_; ++i) perm[i] = i;
    for (int i = 0; i < topic_size_; ++i) {  // partial Fisher-Yates: the topic's words
      int j = i + int(xoshiro_below(lang, uint64_t(num_words_ - i)));
      std::swap(perm[i], perm[j]);
      topic_words_[size_t(t) * topic_size_ + i] = perm[i];
      in_topic_[size_t(t) * num_words_ + perm[i]] = 1;
    }
    const int32_t* words = &topic_words_[size_t(t) * topic_size_];
    for (int w = 0; w < num_words_; ++w) {
      int32_t* succ = &successors_[(size_t(t) * num_words_ + w) * kSuccessors];
      for (int k = 0; k < kSuccessors; ++k) {  // distinct successors from the topic's words
        int32_t c;
        do {
          c = words[xoshiro_below(lang, uint64_t(topic_size_))];
        } while (std::find(succ, succ + k, c) != succ + k);
        succ[k] = c;
      }
    }
  }
  uint64_t cum = 0;
  for (int L = kMinDocWords; L <= kMaxDocWords; ++L) length_cum_.push_back(cum += length_weight(L));

  uint64_t s = seed;
  uint64_t stream_seed = splitmix64(s) ^ (0x73747265616D0000ull + stream * 0x9E3779B97F4A7C15ull);
  seed_state(rng_, stream_seed);
}

uint64_t SyntheticCorpus::below(uint64_t n) { return xoshiro_below(rng_, n); }

void SyntheticCorpus::start_document() {
  topic_ = int(below(kTopics));
  uint64_t r = below(length_cum_.back());
  doc_words_ = kMinDocWords +
               int(std::upper_bound(length_cum_.begin(), length_cum_.end(), r) - length_cum_.begin());
  words_ = 0;
  prev_ = -1;
  posterior_.fill(1.0 / kTopics);
}

int SyntheticCorpus::draw_word() {
  if (below(kNoiseDen) < kNoiseNum) return int(below(uint64_t(num_words_)));
  if (prev_ < 0) return topic_words_[size_t(topic_) * topic_size_ + below(uint64_t(topic_size_))];
  uint64_t r = below(kSuccessorTotal);
  int k = 0;
  while (r >= kSuccessorWeights[k]) r -= kSuccessorWeights[k++];
  return successors_[(size_t(topic_) * num_words_ + prev_) * kSuccessors + k];
}

// P(the document goes on after `words` words) under the 1/L length law.
static double continue_probability(const std::vector<uint64_t>& cum, int words) {
  if (words < SyntheticCorpus::kMinDocWords) return 1.0;
  const size_t i = size_t(words - SyntheticCorpus::kMinDocWords);
  const uint64_t at_least = cum.back() - (i == 0 ? 0 : cum[i - 1]);
  const uint64_t exactly = cum[i] - (i == 0 ? 0 : cum[i - 1]);
  return 1.0 - double(exactly) / double(at_least);
}

void SyntheticCorpus::score_word(int w) {
  const double eps = double(kNoiseNum) / double(kNoiseDen);
  std::array<double, kTopics> like{};
  double p = 0;
  for (int t = 0; t < kTopics; ++t) {
    double q = 0;
    if (prev_ < 0) {
      q = in_topic_[size_t(t) * num_words_ + w] ? 1.0 / topic_size_ : 0.0;
    } else {
      const int32_t* succ = &successors_[(size_t(t) * num_words_ + prev_) * kSuccessors];
      for (int k = 0; k < kSuccessors; ++k)
        if (succ[k] == w) q += double(kSuccessorWeights[k]) / double(kSuccessorTotal);
    }
    like[t] = (1 - eps) * q + eps / num_words_;
    p += posterior_[t] * like[t];
  }
  for (int t = 0; t < kTopics; ++t) posterior_[t] = posterior_[t] * like[t] / p;
  p *= continue_probability(length_cum_, words_);
  oracle_nats_ -= std::log(p);
  ++oracle_tokens_;
}

void SyntheticCorpus::score_eot() {
  oracle_nats_ -= std::log(1.0 - continue_probability(length_cum_, words_));
  ++oracle_tokens_;
}

void SyntheticCorpus::generate(uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!started_ || words_ == doc_words_) {
      if (started_ && oracle_) score_eot();
      started_ = true;
      out[i] = uint16_t(eot);
      start_document();
    } else {
      int w = draw_word();
      if (oracle_) score_word(w);
      out[i] = uint16_t(word_to_token(w));
      prev_ = w;
      ++words_;
    }
  }
}

std::vector<uint16_t> make_synthetic_corpus(int64_t num_tokens, int vocab, int eot, uint64_t seed) {
  check(num_tokens >= 0, "synthetic corpus: negative token count ", num_tokens);
  SyntheticCorpus c(vocab, eot, seed);
  std::vector<uint16_t> out(static_cast<size_t>(num_tokens));
  c.generate(out.data(), num_tokens);
  return out;
}

std::string synthetic_token_text(int token, int vocab, int eot) {
  check(token >= 0 && token < vocab, "synthetic corpus: token ", token, " is outside the vocab [0, ",
        vocab, ")");
  if (token == eot) return "<|eot|>";
  static constexpr char kConsonants[] = "bdfgklmnprstvz";  // 14
  static constexpr char kVowels[] = "aeiou";               // 5
  constexpr int kSyllables = 14 * 5;
  int w = token < eot ? token : token - 1;
  // Two syllables for the first 70^2 words, three after: every word distinct, and a
  // consonant-vowel string splits into its syllables in one way only.
  int n = 2;
  if (w >= kSyllables * kSyllables) {
    w -= kSyllables * kSyllables;
    n = 3;
  }
  std::string s;
  for (int i = 0; i < n; ++i) {
    int syl = w % kSyllables;
    w /= kSyllables;
    s += kConsonants[syl / 5];
    s += kVowels[syl % 5];
  }
  return s;
}

double unigram_entropy(const uint16_t* tokens, int64_t n) {
  if (n <= 0) return 0.0;
  std::vector<int64_t> count(65536, 0);
  for (int64_t i = 0; i < n; ++i) ++count[tokens[i]];
  double h = 0;
  for (int64_t c : count)
    if (c > 0) {
      double p = double(c) / double(n);
      h -= p * std::log(p);
    }
  return h;
}

namespace {

std::vector<int64_t> split_evenly(int64_t total) {
  int64_t shards = (total + kSyntheticShardTokens - 1) / kSyntheticShardTokens;
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < shards; ++i) sizes.push_back(total / shards + (i < total % shards ? 1 : 0));
  return sizes;
}

std::string shard_name(const char* split, size_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "synthetic_%s_%06zu.bin", split, i);
  return buf;
}

bool shard_has_size(const std::string& path, int64_t n) {
  try {
    return read_shard_header(path) == n;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

std::vector<std::string> write_synthetic_shards(const std::string& dir, int64_t train_tokens,
                                                int64_t val_tokens, int vocab, int eot,
                                                uint64_t seed) {
  namespace fs = std::filesystem;
  check(train_tokens >= 1 && val_tokens >= 1, "synthetic corpus in ", dir, ": train tokens ",
        train_tokens, " and validation tokens ", val_tokens, " must both be >= 1");
  SyntheticCorpus probe(vocab, eot, seed);  // validates vocab and eot before touching disk
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "synthetic corpus: cannot create directory ", dir, ": ", ec.message());

  struct Part {
    std::string path;
    int64_t tokens;
    uint64_t stream;
  };
  std::vector<Part> parts;
  std::set<std::string> names;
  const std::vector<int64_t> train = split_evenly(train_tokens), val = split_evenly(val_tokens);
  for (size_t i = 0; i < train.size(); ++i) parts.push_back({shard_name("train", i), train[i], 0});
  for (size_t i = 0; i < val.size(); ++i) parts.push_back({shard_name("val", i), val[i], 1});
  for (Part& p : parts) {
    names.insert(p.path);
    p.path = (fs::path(dir) / p.path).string();
  }

  nlohmann::ordered_json want = {
      {"generator", "speedrun synthetic v1"}, {"vocab", vocab}, {"eot", eot},
      {"seed", seed}, {"train_tokens", train_tokens}, {"val_tokens", val_tokens},
      {"max_shard_tokens", kSyntheticShardTokens}};
  const std::string manifest = (fs::path(dir) / "synthetic.json").string();
  bool fresh = false;
  {
    std::ifstream in(manifest);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      nlohmann::ordered_json have = nlohmann::ordered_json::parse(ss.str(), nullptr, false);
      fresh = !have.is_discarded() && have == want;
    }
  }
  for (const Part& p : parts) fresh = fresh && shard_has_size(p.path, p.tokens);

  // Remove shards of an earlier corpus that the new one does not overwrite, so a glob
  // over synthetic_train_*.bin sees only this corpus.
  static const std::regex kOurs("synthetic_(train|val)_[0-9]{6}\\.bin");
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, kOurs) && !names.count(name)) fs::remove(e.path(), ec);
  }
  if (fresh) {
    std::vector<std::string> out;
    for (const Part& p : parts) out.push_back(p.path);
    return out;
  }

  fs::remove(manifest, ec);  // no manifest until every shard is complete
  std::vector<std::string> out;
  std::vector<uint16_t> buf;
  for (uint64_t stream : {uint64_t(0), uint64_t(1)}) {
    SyntheticCorpus gen(vocab, eot, seed, stream);
    for (const Part& p : parts) {
      if (p.stream != stream) continue;
      buf.resize(size_t(p.tokens));
      gen.generate(buf.data(), p.tokens);
      write_shard(p.path, buf.data(), p.tokens);
      out.push_back(p.path);
    }
  }
  AtomicFileWriter m(manifest, "synthetic corpus manifest");
  const std::string text = want.dump(2) + "\n";
  m.write(text.data(), text.size());
  m.commit();
  return out;
}

}  // namespace speedrun
