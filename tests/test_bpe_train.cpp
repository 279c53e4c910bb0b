// BPE training: golden merge lists worked out by hand, tie-breaking, determinism across
// thread counts, the written files loading back, and encoding with a trained vocabulary.
#include <gtest/gtest.h>
#include <omp.h>

#include <filesystem>
#include <random>
#include <set>

#include "core/error.h"
#include "data/bpe_train.h"
#include "data/tokenizer.h"

namespace speedrun {
namespace {
namespace fs = std::filesystem;

using Merges = std::vector<std::pair<std::string, std::string>>;

Merges merge_strings(const BpeVocab& v) {
  Merges out;
  for (const auto& [l, r] : v.merges) out.emplace_back(v.tokens[l], v.tokens[r]);
  return out;
}

std::vector<std::string> random_corpus(uint64_t seed, int docs) {
  std::mt19937_64 rng(seed);
  const char* words[] = {"the", "cat", "sat", "on", "mat", "hat", "that", "then", "than",
                         "12", "345", "don't", "I'll", "!", "...", "\n", "  ", "é", "中文",
                         "😀", "the cat", "catalog", "atomic", "bathmat"};
  std::vector<std::string> out;
  for (int d = 0; d < docs; ++d) {
    std::string s;
    for (int k = rng() % 60; k > 0; --k) {
      s += words[rng() % std::size(words)];
      if (rng() % 3) s += ' ';
    }
    out.push_back(s);
  }
  return out;
}

BpeVocab train(const std::vector<std::string>& texts, int32_t vocab_size) {
  return train_bpe(std::vector<std::string_view>(texts.begin(), texts.end()), vocab_size);
}

TEST(BpeTrain, GoldenSingleWord) {
  // "aaabdaaabac" is one piece. Pair counts aa:4, ab:2, ...: merge (a,a) -> "aa a b d aa a
  // b a c". Then (aa,a) and (a,b) tie at 2; "a" < "aa", so (a,b). Then (aa,ab):2. Then all
  // pairs count 1: (a,c) has the smallest left bytes; then (aaab,ac) beats (aaab,d) on
  // the right ("ac" < "d"); then (aaab,d); then the two halves. No pair is left after 7.
  const BpeVocab v = train({"aaabdaaabac"}, 257 + 20);
  EXPECT_EQ(merge_strings(v), (Merges{{"a", "a"}, {"a", "b"}, {"aa", "ab"}, {"a", "c"},
                                      {"aaab", "ac"}, {"aaab", "d"}, {"aaabd", "aaabac"}}));
  EXPECT_EQ(v.tokens.size(), 256u + 7u);  // stopped early: nothing left to merge
  EXPECT_EQ(v.eot(), 263);
}

TEST(BpeTrain, GoldenWordsWithSpaces) {
  // Pieces "the", " cat", " the", " hat". (a,t), (h,e), (t,h) tie at 2: smallest left
  // bytes first, "a" < "h" < "t" -- but (t,h) is gone once "he" exists, so (t,he) follows.
  // Then every pair counts 1 and " " (0x20) is the smallest left token: " c", " h", " the"
  // by their right bytes, then " cat" and " hat".
  const BpeVocab v = train({"the cat the hat"}, 257 + 20);
  EXPECT_EQ(merge_strings(v), (Merges{{"a", "t"}, {"h", "e"}, {"t", "he"}, {" ", "c"}, {" ", "h"},
                                      {" ", "the"}, {" c", "at"}, {" h", "at"}}));
}

TEST(BpeTrain, CountsWeighRepeatedPiecesAndStopAtVocabSize) {
  // Pieces "x", " ab" (3 times), " cd" (twice): the pairs of " ab" count 3 and win, the
  // one with the smaller left bytes first (" " < "a"); the vocabulary is full after two.
  const BpeVocab v = train({"x ab ab cd ab cd"}, 257 + 2);
  EXPECT_EQ(merge_strings(v), (Merges{{" ", "a"}, {" a", "b"}}));
  EXPECT_EQ(v.eot(), 258);
  EXPECT_THROW(train({"x"}, 256), Error);
}

TEST(BpeTrain, BytesTakeGpt2Ids) {
  const BpeVocab v = train({"hello"}, 257);
  ASSERT_EQ(v.tokens.size(), 256u);
  EXPECT_EQ(v.tokens[0], "!");
  EXPECT_EQ(v.tokens[94], "\xA1");
  EXPECT_EQ(v.tokens[188], std::string(1, '\0'));
  EXPECT_EQ(v.tokens[220], " ");  // GPT-2's "Ġ" is 220
}

TEST(BpeTrain, BytesTakeTheIdsOfGpt2sTokenizer) {
  const fs::path dir = gpt2_tokenizer_dir();
  if (!fs::exists(dir / "encoder.json") && !fs::exists(dir / "vocab.json"))
    GTEST_SKIP() << "GPT-2 tokenizer files not found in " << dir.string()
                 << "; run scripts/fetch_gpt2_tokenizer.sh or set SPEEDRUN_GPT2_DIR";
  const BpeVocab v = train({"hello"}, 257);
  const Tokenizer gpt2 = Tokenizer::load(dir);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(gpt2.token_bytes(i), v.tokens[i]) << i;
}

TEST(BpeTrain, SameResultOnAnyThreadCountAndRun) {
  const auto corpus = random_corpus(1, 300);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const BpeVocab one = train(corpus, 700);
  omp_set_num_threads(std::max(2, threads));
  const BpeVocab many = train(corpus, 700);
  const BpeVocab again = train(corpus, 700);
  omp_set_num_threads(threads);
  EXPECT_EQ(one.tokens, many.tokens);
  EXPECT_EQ(one.merges, many.merges);
  EXPECT_EQ(many.merges, again.merges);
  EXPECT_GT(one.merges.size(), 100u);
}

TEST(BpeTrain, FilesLoadBackAndEncodingRoundTrips) {
  const auto corpus = random_corpus(2, 400);
  const BpeVocab v = train(corpus, 1000);
  const Tokenizer tok(v);  // validates: unique tokens, GPT-2 numbering
  const fs::path dir = fs::temp_directory_path() / ("speedrun_bpe_train_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  tok.save(dir);
  const Tokenizer back = Tokenizer::load(dir);
  fs::remove_all(dir);
  EXPECT_EQ(back.vocab().tokens, v.tokens);
  EXPECT_EQ(back.vocab().merges, v.merges);
  EXPECT_EQ(back.eot(), v.eot());
  std::set<std::string> unique(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(unique.size(), v.tokens.size());

  // Trained tokens compress the training text well and decode back to it exactly.
  size_t bytes = 0, ids = 0;
  for (const auto& text : corpus) {
    const auto e = back.encode(text);
    ASSERT_EQ(back.decode(e), text);
    bytes += text.size();
    ids += e.size();
  }
  EXPECT_LT(ids * 3, bytes);
  // Text it never saw round-trips too (bytes are always tokens).
  for (const std::string s : {"unseen words, 42 of them!", "\xF0\x9F\xA6\x80 \xE4\xB8\xAD", ""})
    EXPECT_EQ(back.decode(back.encode(s)), s);
  EXPECT_EQ(back.decode(std::vector<int32_t>{back.eot()}), "<|endoftext|>");
}

// A vocabulary of the bytes alone (--vocab-size 257, or a text with no pair to merge) is a
// byte-level tokenizer like any other: its files load back (they were refused for having no
// merge, so `speedrun tokenizer train` wrote a tokenizer nothing could read).
TEST(BpeTrain, AVocabularyOfTheBytesAloneLoadsBack) {
  for (const auto& [texts, size] : {std::pair{std::vector<std::string>{"abc"}, 257},
                                    std::pair{std::vector<std::string>{"a", "", "b\n"}, 300}}) {
    const BpeVocab v = train(texts, size);
    ASSERT_EQ(v.merges.size(), 0u);
    const fs::path dir = fs::temp_directory_path() / ("speedrun_bpe_bytes_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    Tokenizer(v).save(dir);
    const Tokenizer back = Tokenizer::load(dir);
    fs::remove_all(dir);
    EXPECT_EQ(back.vocab().tokens, v.tokens);
    EXPECT_EQ(back.eot(), 256);
    const std::string s = "bytes only \xC3\xA9";
    EXPECT_EQ(back.encode(s).size(), s.size());
    EXPECT_EQ(back.decode(back.encode(s)), s);
  }
}

TEST(BpeTrain, FrequentWordsBecomeSingleTokens) {
  // Three pieces, each repeated: 50 merges are enough to make each one token, and the
  // tokenizer, which merges by the learned ranks, finds those tokens again.
  const BpeVocab v = train({"banana banana banana bandana bandana"}, 257 + 50);
  const Tokenizer tok(v);
  EXPECT_EQ(tok.encode(" banana").size(), 1u);
  EXPECT_EQ(tok.encode(" bandana").size(), 1u);
  EXPECT_EQ(tok.encode("banana").size(), 1u);
}

}  // namespace
}  // namespace speedrun
