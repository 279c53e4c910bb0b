// The built-in synthetic corpus: a made-up language the default run trains on until a
// real corpus is prepared. Deterministic from a seed on every platform (own PRNG,
// integer-only sampling).
//
// The language: a stream of documents, each = EOT followed by L words, L in [15, 699]
// drawn with weight 1/L (so 16..700 tokens, most short, some long). Each document draws
// one of kTopics topics. A topic has its own half of the words and, for every word, 4
// successors from that half with probabilities 10/20, 5/20, 3/20, 2/20; with probability
// 1/25 a word is instead uniform over all words. The first word of a document is uniform
// over the topic's half. So the next word depends on the previous word AND on the topic,
// which only the earlier words of the same document reveal: a model needs attention
// within the document, and attention across a document boundary misleads it.
// Measured (vocab 512, eot 0, 2M tokens): unigram entropy 6.11 nats (ln 511 = 6.24), next
// word given the previous word 2.83 nats (counted in-document), Bayes-optimal 1.63 nats.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace speedrun {

struct SyntheticCorpus {
  static constexpr int kTopics = 8;
  static constexpr int kSuccessors = 4;
  static constexpr int kMinDocWords = 15;
  static constexpr int kMaxDocWords = 699;

  int vocab = 0;  // token ids 0..vocab-1; every id except eot is a word
  int eot = 0;    // the document separator, written before every document
  uint64_t seed = 0;

  // The language (topics, successor tables) comes from `seed` alone; `stream` selects an
  // independent token stream of that language (train 0, validation 1).
  // vocab in [8, 65536], eot in [0, vocab).
  SyntheticCorpus(int vocab, int eot, uint64_t seed, uint64_t stream = 0);

  // Writes the next n tokens of the stream (the stream starts with eot).
  void generate(uint16_t* out, int64_t n);

  // Scores every token generated from now on with the Bayes-optimal predictor (knows the
  // tables and the length law, infers the topic from the document so far):
  // oracle_nats() / oracle_tokens() is the lowest achievable mean loss, in nats.
  void enable_oracle() { oracle_ = true; }
  double oracle_nats() const { return oracle_nats_; }
  int64_t oracle_tokens() const { return oracle_tokens_; }

 private:
  int word_to_token(int w) const { return w < eot ? w : w + 1; }
  uint64_t below(uint64_t n);
  void start_document();
  int draw_word();
  void score_word(int w);
  void score_eot();

  int num_words_ = 0;    // vocab - 1
  int topic_size_ = 0;   // words per topic
  std::vector<int32_t> topic_words_;   // [kTopics, topic_size_]
  std::vector<uint8_t> in_topic_;      // [kTopics, num_words_]
  std::vector<int32_t> successors_;    // [kTopics, num_words_, kSuccessors]
  std::vector<uint64_t> length_cum_;   // cumulative weights of L = kMinDocWords..kMaxDocWords
  std::array<uint64_t, 4> rng_{};      // xoshiro256** state of the stream

  bool started_ = false;  // the first eot has been written
  int topic_ = 0, prev_ = -1, words_ = 0, doc_words_ = 0;

  bool oracle_ = false;
  double oracle_nats_ = 0;
  int64_t oracle_tokens_ = 0;
  std::array<double, kTopics> posterior_{};
};

// The first num_tokens tokens of stream 0 of the language `seed`.
std::vector<uint16_t> make_synthetic_corpus(int64_t num_tokens, int vocab, int eot, uint64_t seed);

// A readable made-up word for `token` (consonant-vowel syllables, e.g. "kazu", distinct
// for every token), "<|eot|>" for eot; for printing generated samples.
std::string synthetic_token_text(int token, int vocab, int eot);

// Entropy of the empirical token distribution of tokens[0..n), in nats (0 for n == 0).
double unigram_entropy(const uint16_t* tokens, int64_t n);

// Writes dir/synthetic_train_000000.bin, ... (train_tokens of stream 0, split evenly into
// shards of at most kSyntheticShardTokens) and dir/synthetic_val_000000.bin, ... (stream
// 1) with write_shard, plus dir/synthetic.json recording the parameters. Skips the work
// when synthetic.json matches and every shard has the right header and size; removes
// stale synthetic_{train,val}_NNNNNN.bin files of other sizes. Creates dir. Returns the
// shard paths, train then validation.
constexpr int64_t kSyntheticShardTokens = 10'000'000;
std::vector<std::string> write_synthetic_shards(const std::string& dir, int64_t train_tokens,
                                                int64_t val_tokens, int vocab, int eot,
                                                uint64_t seed);

}  // namespace speedrun
