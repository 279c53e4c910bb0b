// GPT-2 byte-level BPE tokenizer: parity with tiktoken 1.0.22 (committed vectors and, when
// node and the oracle are installed, fresh random ones), round trips, <|endoftext|>, both
// file layouts, file errors, and batch == sequential. Tests that need GPT-2's files skip
// (saying how to get them) when scripts/fetch_gpt2_tokenizer.sh has not been run.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/bpe_merge.h"
#include "data/bpe_pretokenize.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "scoped_env.h"

namespace speedrun {
namespace {
namespace fs = std::filesystem;

const Tokenizer* gpt2() {
  static const std::optional<Tokenizer> tok = []() -> std::optional<Tokenizer> {
    const fs::path dir = gpt2_tokenizer_dir();
    if (!fs::exists(dir / "encoder.json") && !fs::exists(dir / "vocab.json")) return std::nullopt;
    return Tokenizer::load(dir);
  }();
  return tok ? &*tok : nullptr;
}

#define REQUIRE_GPT2()                                                                   \
  if (gpt2()) {                                                                          \
  } else                                                                                 \
    GTEST_SKIP() << "GPT-2 tokenizer files not found in " << gpt2_tokenizer_dir().string() \
               << "; run scripts/fetch_gpt2_tokenizer.sh or set SPEEDRUN_GPT2_DIR"

// A fresh folder under the system temp dir, removed with the object.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           ("speedrun_tok_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

std::string from_hex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

std::string to_hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) out += d[c >> 4], out += d[c & 15];
  return out;
}

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// Random valid UTF-8 mixing ASCII words, spaces of every kind, and code points from all
// planes (assigned or not).
std::string random_text(std::mt19937_64& rng, size_t max_chars) {
  static const char32_t kSpaces[] = {' ', ' ', '\n', '\t', '\r', 0x0B, 0x0C, 0x85, 0xA0,
                                     0x1680, 0x2000, 0x2028, 0x202F, 0x3000, 0x180E};
  static const char* kBits[] = {"the", "'s", "'LL", "don't", "123", "4567890", "<|endoftext|>",
                                "!!", "...", "😀", "👍🏽", "中文", "é", "e\u0301", "\r\n"};
  std::string s;
  const size_t n = rng() % (max_chars + 1);
  for (size_t i = 0; i < n; ++i) {
    const unsigned k = rng() % 10;
    char32_t c;
    if (k < 3) {
      c = 0x20 + rng() % 0x5F;
    } else if (k < 5) {
      c = kSpaces[rng() % std::size(kSpaces)];
    } else if (k < 6) {
      s += kBits[rng() % std::size(kBits)];
      continue;
    } else {
      const char32_t hi[] = {0x800, 0x10000, 0x30000, 0x110000};
      do c = 0x80 + rng() % (hi[rng() % 4] - 0x80);
      while (c >= 0xD800 && c <= 0xDFFF);
    }
    s += utf8(c);
  }
  return s;
}

std::string random_bytes(std::mt19937_64& rng, size_t max_len) {
  std::string s(rng() % (max_len + 1), '\0');
  for (char& c : s) {
    const unsigned k = rng() % 4;  // biased towards bytes that start or continue sequences
    c = static_cast<char>(k == 0 ? 0x80 + rng() % 0x40 : k == 1 ? 0xC0 + rng() % 0x40
                                                               : rng() % 256);
  }
  return s;
}

// The error that fn throws (fails the test when it throws none).
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected speedrun::Error";
  return {};
}

// A tiny vocabulary without GPT-2's files: bytes in GPT-2's order, then merges of
// "a b" -> "ab", "ab c" -> "abc", " t" -> " t", "h e" -> "he", " t he" -> " the".
BpeVocab toy_vocab() {
  BpeVocab v;
  const auto& alpha = gpt2_byte_to_unicode();
  std::vector<int> order(256);
  for (int b = 0; b < 256; ++b) order[b] = b;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return alpha[x] < alpha[y]; });
  for (int b : order) v.tokens.push_back(std::string(1, static_cast<char>(b)));
  auto id = [&](std::string_view s) {
    for (size_t i = 0; i < v.tokens.size(); ++i)
      if (v.tokens[i] == s) return static_cast<int32_t>(i);
    return int32_t{-1};
  };
  for (auto [l, r] : std::vector<std::pair<std::string, std::string>>{
           {"a", "b"}, {"ab", "c"}, {" ", "t"}, {"h", "e"}, {" t", "he"}}) {
    v.merges.emplace_back(id(l), id(r));
    v.tokens.push_back(l + r);
  }
  return v;
}

// ---------------------------------------------------------------- UTF-8

TEST(Utf8, ValidityAndRepairFollowWhatwg) {
  const std::string R = "\xEF\xBF\xBD";
  const std::pair<std::string, std::string> cases[] = {
      {"", ""},
      {"plain ascii", "plain ascii"},
      {"caf\xC3\xA9 \xF0\x9F\x98\x80", "caf\xC3\xA9 \xF0\x9F\x98\x80"},
      {"\xC3", R},
      {"\xC3(", R + "("},
      {"\xE2\x82", R},                                 // truncated: one maximal subpart
      {"\xE2\x82\xE2\x82\xAC", R + "\xE2\x82\xAC"},
      {"\xED\xA0\x80", R + R + R},                     // surrogate: ED then two strays
      {"\xC0\xAF", R + R},                             // overlong lead is never valid
      {"\xE0\x80\x80", R + R + R},                     // overlong
      {"\xF0\x9F\x98" "A", R + "A"},
      {"\xF4\x90\x80\x80", R + R + R + R},             // above U+10FFFF
      {"\xF8\x88\x80\x80\x80", R + R + R + R + R},
      {"\xFF\xFE", R + R},
      {"a\x80" "b", "a" + R + "b"},
      {std::string("a\0b", 3), std::string("a\0b", 3)},
      {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},        // U+10FFFF is valid
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(sanitize_utf8(in), want) << to_hex(in);
    EXPECT_EQ(is_valid_utf8(in), in == want) << to_hex(in);
  }
  EXPECT_EQ(valid_utf8_prefix("abcdefghij\xC3"), 10u);
}

TEST(Utf8, RepairOfRandomBytesIsValidAndIdempotent) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const std::string b = random_bytes(rng, 40);
    const std::string s = sanitize_utf8(b);
    EXPECT_TRUE(is_valid_utf8(s)) << to_hex(b);
    EXPECT_EQ(sanitize_utf8(s), s);
  }
}

// ---------------------------------------------------------------- pieces

TEST(Pretokenizer, SplitsLikeGpt2) {
  const Pretokenizer pre;
  using V = std::vector<std::string_view>;
  EXPECT_EQ(pre.split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pre.split("I'm  here's'S"), (V{"I", "'m", " ", " here", "'s", "'", "S"}));
  EXPECT_EQ(pre.split("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(pre.split("x\n\n y"), (V{"x", "\n\n", " y"}));
  EXPECT_EQ(pre.split("x\ny"), (V{"x", "\n", "y"}));
  EXPECT_EQ(pre.split("end  "), (V{"end", "  "}));
  EXPECT_EQ(pre.split(" 12345abc!!?"), (V{" 12345", "abc", "!!?"}));
  EXPECT_EQ(pre.split("<|endoftext|>"), (V{"<|", "endoftext", "|>"}));
  // U+180E is no longer white space (Unicode 6.3): it is punctuation-like, not \s.
  EXPECT_EQ(pre.split("a \xE1\xA0\x8E" "b"), (V{"a", " \xE1\xA0\x8E", "b"}));
  // U+0085 and U+3000 are white space.
  EXPECT_EQ(pre.split("a\xC2\x85" "b"), (V{"a", "\xC2\x85", "b"}));
  EXPECT_EQ(pre.split("a\xE3\x80\x80\xE3\x80\x80" "b"), (V{"a", "\xE3\x80\x80", "\xE3\x80\x80", "b"}));
}

TEST(Pretokenizer, PiecesCoverTheTextAndSurviveHugeRuns) {
  const Pretokenizer pre;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) {
    const std::string s = random_text(rng, 200);
    std::string joined;
    for (auto p : pre.split(s)) joined += p;
    EXPECT_EQ(joined, s);
  }
  // Long runs exercise the lookahead's backtracking and the JIT stack.
  for (const std::string& s : {std::string(3'000'000, ' ') + "x", std::string(2'000'000, '\n'),
                               std::string(1'000'000, 'a'), std::string(1'000'000, '!')}) {
    const auto pieces = pre.split(s);
    size_t total = 0;
    for (auto p : pieces) total += p.size();
    EXPECT_EQ(total, s.size());
    EXPECT_LE(pieces.size(), 2u);
  }
}

TEST(Pretokenizer, AsciiFastPathEqualsPcre2) {
  // Strings over a small alphabet that hits every branch boundary: contractions, every
  // ASCII white space, letters, digits, punctuation, and non-ASCII letters, digits,
  // spaces and marks right next to them.
  const Pretokenizer fast(true), slow(false);
  const char* atoms[] = {" ", " ", "  ", "\t", "\n", "\r\n", "\x0B", "\x0C", "a", "Z", "b", "7",
                         "'", "'s", "'S", "'ll", "'re", "'ve", "'m", "'d", "'t", "!", "-", "\"",
                         "\x01", "\x7F", "\xC3\xA9", "\xC2\xA0", "\xC2\x85", "\xE3\x80\x80",
                         "\xD9\xA3", "\xCC\x81", "\xE2\x80\x94", "\xF0\x9F\x98\x80", "\xE1\xA0\x8E"};
  std::mt19937_64 rng(17);
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    for (int k = rng() % 12; k > 0; --k) s += atoms[rng() % std::size(atoms)];
    ASSERT_EQ(fast.split(s), slow.split(s)) << to_hex(s);
  }
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_text(rng, 300);
    ASSERT_EQ(fast.split(s), slow.split(s)) << to_hex(s);
  }
}

TEST(Pretokenizer, LettersAndNumbersAreTiktokens) {
  // Every code point: our pieces treat it as a letter, a number or neither exactly when
  // tiktoken's do (tests/data/tokenizer_unicode_classes.json, made from tiktoken).
  const auto j = nlohmann::json::parse(
      read(fs::path(SPEEDRUN_SOURCE_DIR) / "tests/data/tokenizer_unicode_classes.json"));
  std::vector<char> want(0x110000, 'o');
  for (const char* cls : {"L", "N"})
    for (const auto& r : j.at(cls))
      for (uint32_t c = r[0].get<uint32_t>(); c <= r[1].get<uint32_t>(); ++c) want[c] = cls[0];
  const Pretokenizer pre;
  size_t bad = 0;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const std::string ch = utf8(c);
    // "a" + c is one piece iff c is a letter; "1" + c iff c is a number.
    const char got = pre.split("a" + ch).size() == 1 ? 'L' : pre.split("1" + ch).size() == 1 ? 'N' : 'o';
    if (got != want[c] && ++bad <= 10)
      ADD_FAILURE() << "U+" << std::hex << static_cast<uint32_t>(c) << ": ours '" << got
                    << "', tiktoken's '" << want[c] << "' (L letter, N number, o neither)";
  }
  EXPECT_EQ(bad, 0u);
}

// ---------------------------------------------------------------- merging

TEST(BpeMerge, ScanAndHeapAgree) {
  // Toy ranks over the alphabet {a, b, c}: every string of length 2..4 is a token, ranked
  // by a fixed shuffle, so ties, chains and leftmost-first rules all come up.
  std::mt19937_64 rng(11);
  std::vector<std::string> toks;
  for (int len = 2; len <= 4; ++len)
    for (int code = 0; code < (1 << (2 * len)); ++code) {
      std::string s;
      bool ok = true;
      for (int k = 0; k < len; ++k) {
        const int d = (code >> (2 * k)) & 3;
        ok &= d < 3;
        s += static_cast<char>('a' + d);
      }
      if (ok && rng() % 3 != 0) toks.push_back(s);
    }
  std::shuffle(toks.begin(), toks.end(), rng);
  std::unordered_map<std::string, uint32_t> ranks;
  for (size_t i = 0; i < toks.size(); ++i) ranks.emplace(toks[i], static_cast<uint32_t>(i));
  auto rank = [&](std::string_view s) {
    auto it = ranks.find(std::string(s));
    return it == ranks.end() ? bpe::kNoRank : it->second;
  };
  std::vector<uint32_t> a, b;
  for (int i = 0; i < 2000; ++i) {
    std::string piece(1 + rng() % 300, 'a');
    for (char& c : piece) c = static_cast<char>('a' + rng() % 3);
    bpe::merge_small(piece, rank, a);
    bpe::merge_heap(piece, rank, b);
    ASSERT_EQ(a, b) << piece;
    EXPECT_EQ(a.front(), 0u);
    EXPECT_EQ(a.back(), piece.size());
  }
}

TEST(BpeMerge, LowestRankThenLeftmost) {
  // "abab" with ranks ab:0, abab:1, ba:2: merge the left "ab", then the right one, then
  // the two halves.
  std::unordered_map<std::string, uint32_t> r{{"ab", 0}, {"abab", 1}, {"ba", 2}};
  auto rank = [&](std::string_view s) {
    auto it = r.find(std::string(s));
    return it == r.end() ? bpe::kNoRank : it->second;
  };
  std::vector<uint32_t> starts;
  bpe::merge_small("abab", rank, starts);
  EXPECT_EQ(starts, (std::vector<uint32_t>{0, 4}));
  bpe::merge_small("aba", rank, starts);  // "ab" (rank 0) beats "ba" (rank 2)
  EXPECT_EQ(starts, (std::vector<uint32_t>{0, 2, 3}));
  bpe::merge_heap("bab", rank, starts);  // "ab" on the right wins over "ba" on the left
  EXPECT_EQ(starts, (std::vector<uint32_t>{0, 1, 3}));
}

// ---------------------------------------------------------------- toy vocabulary

TEST(TokenizerToy, EncodesAndDecodes) {
  const Tokenizer toy(toy_vocab());
  EXPECT_EQ(toy.vocab_size(), 256 + 5 + 1);
  EXPECT_EQ(toy.eot(), 261);
  const int32_t abc = toy.token_id("abc"), the = toy.token_id(" the");
  ASSERT_GE(abc, 256);
  ASSERT_GE(the, 256);
  EXPECT_EQ(toy.encode("abc the"), (std::vector<int32_t>{abc, the}));
  EXPECT_EQ(toy.decode(toy.encode("abcab the them")), "abcab the them");
}

TEST(TokenizerGpt2, WordCachesAreKeptPerVocabulary) {
  // Alternating two vocabularies on one thread must not mix up their cached words.
  REQUIRE_GPT2();
  const Tokenizer toy(toy_vocab());
  const std::vector<int32_t> x = toy.encode("abcab the them");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(toy.encode("abcab the them"), x);
    EXPECT_EQ(gpt2()->encode("abcab"), (std::vector<int32_t>{39305, 397}));
    EXPECT_EQ(gpt2()->decode(gpt2()->encode("abcab the them")), "abcab the them");
  }
}

TEST(TokenizerFiles, ByteAlphabetIsGpt2s) {
  const auto& a = gpt2_byte_to_unicode();
  EXPECT_EQ(a['!'], U'!');
  EXPECT_EQ(a['~'], U'~');
  EXPECT_EQ(a[0], 0x100u);
  EXPECT_EQ(a[' '], 0x120u);   // "Ġ"
  EXPECT_EQ(a['\n'], 0x10Au);  // "Ċ"
  EXPECT_EQ(a[0x7F], 0x121u);
  EXPECT_EQ(a[0xAD], 0x143u);
  EXPECT_EQ(a[0xAE], 0xAEu);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(gpt2_unspell(gpt2_spell(all), "test"), all);
}

TEST(TokenizerFiles, BothLayoutsRoundTrip) {
  const Tokenizer toy(toy_vocab());
  TempDir t;
  for (auto layout : {Tokenizer::Layout::OpenAI, Tokenizer::Layout::HuggingFace}) {
    const fs::path dir = t.path / (layout == Tokenizer::Layout::OpenAI ? "openai" : "hf");
    toy.save(dir, layout);
    const Tokenizer back = Tokenizer::load(dir);
    EXPECT_EQ(back.vocab().tokens, toy.vocab().tokens);
    EXPECT_EQ(back.vocab().merges, toy.vocab().merges);
    EXPECT_EQ(back.encode("abc the"), toy.encode("abc the"));
  }
  EXPECT_TRUE(fs::exists(t.path / "hf" / "vocab.json"));
  EXPECT_TRUE(fs::exists(t.path / "hf" / "merges.txt"));
}

TEST(TokenizerFiles, ErrorsNameTheFileLineAndFix) {
  const Tokenizer toy(toy_vocab());
  TempDir t;
  toy.save(t.path);
  const fs::path enc = t.path / "encoder.json", bpe = t.path / "vocab.bpe";
  const std::string good_enc = read(enc), good_bpe = read(bpe);
  auto load = [&] { Tokenizer::load(t.path); };

  // A merge line that is not "left right" (line 4: header, then merges 1..).
  std::string broken = good_bpe;
  const size_t l4 = broken.find('\n', broken.find('\n', broken.find('\n') + 1) + 1) + 1;
  broken.insert(l4, "x");
  broken[broken.find(' ', l4)] = '_';  // "xĠ_t": one field
  write(bpe, broken);
  std::string e = error_of(load);
  EXPECT_NE(e.find("vocab.bpe line 4"), std::string::npos) << e;
  EXPECT_NE(e.find("fetch_gpt2_tokenizer.sh"), std::string::npos) << e;

  // Three fields.
  write(bpe, good_bpe + "a b c\n");
  e = error_of(load);
  EXPECT_NE(e.find("vocab.bpe line 7"), std::string::npos) << e;

  // A merge of tokens that do not exist yet.
  std::string swapped = good_bpe;
  swapped.replace(swapped.find("a b\n"), 4, "ab c\n");
  write(bpe, swapped);
  e = error_of(load);
  EXPECT_NE(e.find("vocab.bpe line 2"), std::string::npos) << e;

  // Truncated merges.
  write(bpe, good_bpe.substr(0, good_bpe.rfind('\n', good_bpe.size() - 2) + 1));
  e = error_of(load);
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  write(bpe, good_bpe);

  // Broken JSON, a bad id, a character outside the byte alphabet.
  write(enc, good_enc.substr(0, good_enc.size() / 2));
  e = error_of(load);
  EXPECT_NE(e.find("encoder.json is not valid JSON"), std::string::npos) << e;
  std::string bad_id = good_enc;
  bad_id.replace(bad_id.find(": 0,"), 4, ": 99999,");
  write(enc, bad_id);
  e = error_of(load);
  EXPECT_NE(e.find("encoder.json"), std::string::npos) << e;
  EXPECT_NE(e.find("99999"), std::string::npos) << e;
  std::string bad_char = good_enc;
  bad_char.replace(bad_char.find("\"!\""), 3, "\" \"");
  write(enc, bad_char);
  e = error_of(load);
  EXPECT_NE(e.find("outside GPT-2's byte alphabet"), std::string::npos) << e;
  write(enc, good_enc);
  EXPECT_NO_THROW(load());

  // Missing files.
  fs::remove(bpe);
  e = error_of(load);
  EXPECT_NE(e.find("holds encoder.json but not vocab.bpe"), std::string::npos) << e;
  e = error_of([&] { Tokenizer::load(t.path / "nowhere"); });
  EXPECT_NE(e.find("nowhere"), std::string::npos) << e;
  EXPECT_NE(e.find("fetch_gpt2_tokenizer.sh"), std::string::npos) << e;
  e = error_of([&] { Tokenizer::load_files(enc, t.path / "missing.bpe"); });
  EXPECT_NE(e.find("missing.bpe"), std::string::npos) << e;
}

// A damaged folder is made again the way it was made: GPT-2's default folder by the fetch
// script, any other (perhaps a vocabulary trained here) by training it again, or GPT-2's.
TEST(TokenizerFiles, TheFixForADamagedFolderFitsWhatItHolds) {
  TempDir t;
  const fs::path trained = t.path / "trained", gpt2 = t.path / "gpt2";
  for (const fs::path& d : {trained, gpt2}) {
    Tokenizer(toy_vocab()).save(d);
    write(d / "vocab.bpe", "#version: 0.2\nbroken\n");
  }
  const speedrun::test::ScopedEnv env("SPEEDRUN_GPT2_DIR", gpt2.c_str());
  std::string e = error_of([&] { Tokenizer::load(trained); });
  EXPECT_NE(e.find("vocab.bpe line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("re-run `speedrun tokenizer train ... -o " + trained.string() +
                   " --overwrite`"), std::string::npos) << e;
  EXPECT_NE(e.find("fetch_gpt2_tokenizer.sh"), std::string::npos) << e;  // GPT-2's, named
  EXPECT_EQ(e.find("delete it"), std::string::npos) << e;
  e = error_of([&] { Tokenizer::load(gpt2); });
  EXPECT_NE(e.find("delete " + gpt2.string() + " and run scripts/fetch_gpt2_tokenizer.sh"),
            std::string::npos) << e;
  EXPECT_EQ(e.find("tokenizer train"), std::string::npos) << e;
  // The alphabet check's error, raised below the parser, takes the folder's fix too.
  write(trained / "vocab.bpe", "#version: 0.2\n\x01 b\n");
  e = error_of([&] { Tokenizer::load(trained); });
  EXPECT_NE(e.find("outside GPT-2's byte alphabet"), std::string::npos) << e;
  EXPECT_NE(e.find("--overwrite"), std::string::npos) << e;
}

TEST(TokenizerFiles, AFolderUnderAFileNameIsNotARegularFile) {
  TempDir t;
  Tokenizer(toy_vocab()).save(t.path);
  fs::remove(t.path / "encoder.json");
  fs::create_directories(t.path / "encoder.json");
  const std::string e = error_of([&] { Tokenizer::load(t.path); });
  EXPECT_NE(e.find((t.path / "encoder.json").string() + " is not a regular file (a directory)"),
            std::string::npos) << e;
  EXPECT_EQ(e.find("but not"), std::string::npos) << e;
}

// ---------------------------------------------------------------- GPT-2

TEST(TokenizerGpt2, MatchesCommittedTiktokenVectors) {
  REQUIRE_GPT2();
  const fs::path file = fs::path(SPEEDRUN_SOURCE_DIR) / "tests/data/tokenizer_oracle.json";
  const auto j = nlohmann::json::parse(read(file));
  ASSERT_EQ(j.at("encoding"), "gpt2");
  const auto& cases = j.at("cases");
  ASSERT_GT(cases.size(), 4000u);
  size_t bad = 0, hex = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const bool is_hex = c.contains("hex");
    hex += is_hex;
    const std::string in = is_hex ? from_hex(c.at("hex").get<std::string>())
                                  : c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int32_t>>();
    const auto got = gpt2()->encode(in);
    if (got != want && ++bad <= 10)
      ADD_FAILURE() << "case " << i << " (" << to_hex(in) << "): ids differ from tiktoken's";
    if (!is_hex) {
      EXPECT_EQ(gpt2()->decode(got), in) << "case " << i;
    }
  }
  EXPECT_EQ(bad, 0u) << "of " << cases.size();
  EXPECT_GT(hex, 100u);  // the file covers ill-formed input too
}

TEST(TokenizerGpt2, KnownIds) {
  REQUIRE_GPT2();
  const Tokenizer& t = *gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(t.encode(""), (std::vector<int32_t>{}));
  EXPECT_EQ(t.token_id(" the"), 262);
  EXPECT_EQ(t.token_id("<|endoftext|>"), -1);
}

TEST(TokenizerGpt2, EndOfTextOnlyWhenAskedFor) {
  REQUIRE_GPT2();
  const Tokenizer& t = *gpt2();
  EXPECT_EQ(t.eot(), 50256);
  const auto ids = t.encode("a<|endoftext|>b <|endoftext|>");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), t.eot()), 0);
  EXPECT_EQ(t.decode(ids), "a<|endoftext|>b <|endoftext|>");
  const std::vector<int32_t> doc = {t.eot(), 15496, 995};
  EXPECT_EQ(t.decode(doc), "<|endoftext|>Hello world");
  EXPECT_EQ(t.token_bytes(t.eot()), "<|endoftext|>");
  EXPECT_THROW(t.decode(std::vector<int32_t>{50257}), Error);
  EXPECT_THROW(t.decode(std::vector<int32_t>{-1}), Error);
}

TEST(TokenizerGpt2, RoundTripsRandomValidUtf8) {
  REQUIRE_GPT2();
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = random_text(rng, 120);
    ASSERT_EQ(gpt2()->decode(gpt2()->encode(s)), s) << to_hex(s);
  }
}

TEST(TokenizerGpt2, InvalidBytesBecomeReplacementCharacters) {
  REQUIRE_GPT2();
  // Ill-formed input encodes as its WHATWG repair (what tiktoken sees); decoding gives the
  // repaired text back, never the original bytes.
  std::mt19937_64 rng(99);
  for (int i = 0; i < 3000; ++i) {
    const std::string b = random_bytes(rng, 60);
    const std::string fixed = sanitize_utf8(b);
    const auto ids = gpt2()->encode(b);
    ASSERT_EQ(ids, gpt2()->encode(fixed)) << to_hex(b);
    ASSERT_EQ(gpt2()->decode(ids), fixed) << to_hex(b);
  }
  EXPECT_EQ(gpt2()->decode(gpt2()->encode("\xFF")), "\xEF\xBF\xBD");
  // decode is byte-exact: one byte of a multi-byte character decodes to that byte.
  EXPECT_EQ(gpt2()->decode(std::vector<int32_t>{gpt2()->token_id("\xF0")}), "\xF0");
}

TEST(TokenizerGpt2, LongPiecesUseTheHeapPathCorrectly) {
  REQUIRE_GPT2();
  for (const char* unit : {"a", "ab", "0", "12", "!?", "é", "😀", " the"}) {
    std::string s;
    while (s.size() < 5000) s += unit;
    const auto ids = gpt2()->encode(s);
    EXPECT_EQ(gpt2()->decode(ids), s);
    // The heap path (pieces > 128 bytes) agrees with tiktoken's scan on the same piece.
    for (const auto piece : Pretokenizer().split(s)) {
      auto rank = [&](std::string_view b) {
        const int32_t id = gpt2()->token_id(b);
        return id < 0 ? bpe::kNoRank : static_cast<uint32_t>(id);
      };
      std::vector<uint32_t> a, h;
      bpe::merge_small(piece.substr(0, 700), rank, a);
      bpe::merge_heap(piece.substr(0, 700), rank, h);
      EXPECT_EQ(a, h) << unit;
    }
  }
}

TEST(TokenizerGpt2, SavedFilesAreTheOriginalsByteForByte) {
  REQUIRE_GPT2();
  const fs::path src = gpt2_tokenizer_dir();
  if (!fs::exists(src / "encoder.json")) GTEST_SKIP() << "needs the OpenAI layout in " << src;
  TempDir t;
  gpt2()->save(t.path / "openai");
  EXPECT_TRUE(read(t.path / "openai" / "encoder.json") == read(src / "encoder.json"));
  EXPECT_TRUE(read(t.path / "openai" / "vocab.bpe") == read(src / "vocab.bpe"));
  // Hugging Face's layout (vocab.json with raw UTF-8) loads back to the same tokenizer.
  gpt2()->save(t.path / "hf", Tokenizer::Layout::HuggingFace);
  EXPECT_FALSE(fs::exists(t.path / "hf" / "encoder.json"));
  const Tokenizer hf = Tokenizer::load(t.path / "hf");
  EXPECT_EQ(hf.vocab().tokens, gpt2()->vocab().tokens);
  EXPECT_EQ(hf.vocab().merges, gpt2()->vocab().merges);
  const std::string text = "Hugging Face's vocab.json: 𝔘𝔫𝔦 — 123!";
  EXPECT_EQ(hf.encode(text), gpt2()->encode(text));
}

TEST(TokenizerGpt2, BatchEqualsSequential) {
  REQUIRE_GPT2();
  std::mt19937_64 rng(5);
  std::vector<std::string> docs;
  for (int i = 0; i < 400; ++i) docs.push_back(random_text(rng, i % 7 == 0 ? 3000 : 200));
  docs.push_back("");
  docs.push_back(random_bytes(rng, 500));
  std::vector<std::string_view> views(docs.begin(), docs.end());
  const auto batch = gpt2()->encode_batch(views);
  ASSERT_EQ(batch.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(batch[i], gpt2()->encode(docs[i])) << i;
}

// Fresh random strings against tiktoken itself, when node and the oracle are installed
// (cd tools/tokenizer_oracle && npm ci).
TEST(TokenizerGpt2, MatchesLiveTiktoken) {
  REQUIRE_GPT2();
  const fs::path oracle = fs::path(SPEEDRUN_SOURCE_DIR) / "tools/tokenizer_oracle";
  if (!fs::exists(oracle / "node_modules/tiktoken/package.json"))
    GTEST_SKIP() << "tiktoken oracle not installed: cd " << oracle.string() << " && npm ci";
  if (std::system("node --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "node not found: install Node.js to run the live tiktoken check";
  TempDir t;
  std::mt19937_64 rng(20241124);
  nlohmann::json items = nlohmann::json::array();
  std::vector<std::string> inputs;
  for (int i = 0; i < 3000; ++i) {
    if (i % 10 == 9) {
      inputs.push_back(random_bytes(rng, 40));
      items.push_back({{"hex", to_hex(inputs.back())}});
    } else {
      inputs.push_back(random_text(rng, i % 50 == 0 ? 2000 : 100));
      items.push_back(inputs.back());
    }
  }
  write(t.path / "in.json", items.dump());
  const std::string cmd = "node '" + (oracle / "oracle.mjs").string() + "' '" +
                          (t.path / "in.json").string() + "' '" + (t.path / "out.json").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto cases = nlohmann::json::parse(read(t.path / "out.json")).at("cases");
  ASSERT_EQ(cases.size(), inputs.size());
  size_t bad = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto want = cases[i].at("ids").get<std::vector<int32_t>>();
    if (gpt2()->encode(inputs[i]) != want && ++bad <= 10)
      ADD_FAILURE() << "input " << i << " (" << to_hex(inputs[i]) << ") differs from tiktoken";
  }
  EXPECT_EQ(bad, 0u);
}

}  // namespace
}  // namespace speedrun
