// speedrun prepare and the document readers: the EOT/document layout read back from the
// shards, the validation split, shard boundaries, byte-identical output across thread
// counts, bad input with clear errors, the fortunes default corpus, and the command line
// from tokenizer training to a short training run. Every tokenizer here is trained on the
// spot (no network); the GPT-2 checks skip when its files are absent.
#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "core/stop_signal.h"
#include "data/bpe_train.h"
#include "data/demo_corpus.h"
#include "data/documents.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "run_command.h"

namespace speedrun {
namespace {
namespace fs = std::filesystem;


std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, std::string_view text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(text.data(), std::streamsize(text.size()));
}

std::string shard_file(const std::string& prefix, size_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s_%06zu.bin", prefix.c_str(), i);
  return buf;
}

// Varied documents: English words, digits, contractions, multi-byte text, runs of white
// space, and the literal text "<|endoftext|>" (ordinary text, never the EOT id).
std::vector<std::string> make_docs(uint64_t seed, int n) {
  std::mt19937_64 rng(seed);
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "It's", "don't", "42", "1999",
                         "\n", "\n\n", "  ", "\t", "é", "naïve", "中文", "😀", "!", "...",
                         "<|endoftext|>", "quickly", "tokenizer", "Shards"};
  std::vector<std::string> out;
  for (int d = 0; d < n; ++d) {
    std::string s = "Doc" + std::to_string(d);
    for (int k = 1 + int(rng() % 40); k > 0; --k) {
      s += ' ';
      s += words[rng() % std::size(words)];
    }
    out.push_back(s + "\n");
  }
  return out;
}

DocumentOptions delimited(bool strip_overstrike = false) {
  DocumentOptions o;
  o.delimiter = "%";
  o.strip_overstrike = strip_overstrike;
  return o;
}

DocumentOptions jsonl_options(const std::string& field = "text") {
  DocumentOptions o;
  o.jsonl = true;
  o.field = field;
  return o;
}

class Prepare : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() /
          (std::string("speedrun_prepare_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    docs = make_docs(7, 60);
    tok_dir = dir / "tok";
    const Tokenizer t(train_bpe(std::vector<std::string_view>(docs.begin(), docs.end()), 400));
    t.save(tok_dir);
    tok = std::make_unique<Tokenizer>(Tokenizer::load(tok_dir));
  }
  void TearDown() override { fs::remove_all(dir); }

  // Writes the documents as one %-delimited file and returns its path.
  std::string fortune_file(const std::vector<std::string>& d, const std::string& name) {
    std::string text;
    for (const std::string& s : d) text += s + "%\n";
    write_file(dir / name, text);
    return (dir / name).string();
  }

  PrepareResult run(DocumentSource& src, const std::string& out, int64_t shard_tokens,
                    int64_t val_docs, int64_t val_tokens, size_t chunk = size_t(1) << 20) {
    PrepareOptions o;
    o.out_dir = (dir / out).string();
    o.name = "t";
    o.shard_tokens = shard_tokens;
    o.val_docs = val_docs;
    o.val_tokens = val_tokens;
    o.chunk_bytes = chunk;
    o.progress = false;
    o.tokenizer_dir = tok_dir.string();
    return prepare_shards(src, *tok, o);
  }

  // Every token of the shards, in order.
  static std::vector<uint16_t> tokens_of(const std::vector<ShardInfo>& shards) {
    std::vector<uint16_t> all;
    for (const ShardInfo& s : shards) {
      const Shard sh = Shard::open(s.path);
      EXPECT_EQ(sh.size(), s.tokens) << s.path;
      all.insert(all.end(), sh.tokens(), sh.tokens() + sh.size());
    }
    return all;
  }

  // The stream split into documents at EOT, each decoded; checks it starts with EOT.
  std::vector<std::string> decode_docs(const std::vector<uint16_t>& stream) const {
    std::vector<std::string> out;
    EXPECT_FALSE(stream.empty());
    if (stream.empty()) return out;
    EXPECT_EQ(stream[0], tok->eot()) << "a document must start with EOT";
    std::vector<int32_t> cur;
    for (size_t i = 1; i <= stream.size(); ++i) {
      if (i == stream.size() || stream[i] == tok->eot()) {
        out.push_back(tok->decode(cur));
        cur.clear();
      } else {
        cur.push_back(stream[i]);
      }
    }
    return out;
  }

  // EOT + encode(doc) for every document, concatenated: the stream prepare must write.
  std::vector<uint16_t> expected_stream(const std::vector<std::string>& d) const {
    std::vector<uint16_t> s;
    for (const std::string& doc : d) {
      s.push_back(uint16_t(tok->eot()));
      for (int32_t id : tok->encode(doc)) s.push_back(uint16_t(id));
    }
    return s;
  }

  fs::path dir, tok_dir;
  std::vector<std::string> docs;
  std::unique_ptr<Tokenizer> tok;
};

// ---------------------------------------------------------------- layout

TEST_F(Prepare, ShardsDecodeBackToTheDocumentsEachAfterAnEot) {
  DocumentReader reader({fortune_file(docs, "in.txt")}, delimited());
  const PrepareResult r = run(reader, "out", 1000, 5, 0);
  EXPECT_EQ(r.val_documents, 5);
  EXPECT_EQ(r.train_documents, int64_t(docs.size()) - 5);
  std::vector<std::string> got = decode_docs(tokens_of(r.val_shards));
  const std::vector<std::string> train = decode_docs(tokens_of(r.train_shards));
  got.insert(got.end(), train.begin(), train.end());
  EXPECT_EQ(got, docs);
  // "<|endoftext|>" in the text is ordinary tokens: the EOT count is the document count.
  const auto all = expected_stream(docs);
  EXPECT_EQ(std::count(all.begin(), all.end(), uint16_t(tok->eot())), int64_t(docs.size()));
  EXPECT_TRUE(Shard::open((dir / "out" / "t_val_000000.bin").string()).size() > 0);
}

TEST_F(Prepare, ValidationIsTheFirstWholeDocumentsPastTheTokenBudget) {
  MemoryDocuments src(docs);
  const int64_t budget = 300;
  const PrepareResult r = run(src, "out", 1 << 20, 0, budget);
  // The smallest prefix of documents holding MORE than `budget` tokens.
  int64_t n = 0, k = 0;
  while (n <= budget) n += 1 + int64_t(tok->encode(docs[size_t(k++)]).size());
  EXPECT_EQ(r.val_documents, k);
  EXPECT_EQ(r.val_tokens, n);
  EXPECT_GT(r.val_tokens, budget);
  ASSERT_EQ(r.val_shards.size(), 1u);
  EXPECT_EQ(fs::path(r.val_shards[0].path).filename(), "t_val_000000.bin");
  const std::vector<std::string> first(docs.begin(), docs.begin() + k);
  EXPECT_EQ(decode_docs(tokens_of(r.val_shards)), first);
}

TEST_F(Prepare, TrainShardsHoldExactlyShardTokensAndTheLastTheRest) {
  MemoryDocuments src(docs);
  const int64_t cap = 97;
  const PrepareResult r = run(src, "out", cap, 3, 0, 200);
  std::vector<std::string> rest(docs.begin() + 3, docs.end());
  const std::vector<uint16_t> want = expected_stream(rest);
  ASSERT_EQ(int64_t(r.train_shards.size()), (int64_t(want.size()) + cap - 1) / cap);
  for (size_t i = 0; i < r.train_shards.size(); ++i) {
    const int64_t expect =
        i + 1 < r.train_shards.size() ? cap : int64_t(want.size()) - cap * int64_t(i);
    EXPECT_EQ(r.train_shards[i].tokens, expect) << i;
    EXPECT_EQ(fs::path(r.train_shards[i].path).filename(), shard_file("t_train", i));
  }
  EXPECT_EQ(tokens_of(r.train_shards), want);  // documents continue across shard boundaries
  EXPECT_EQ(r.train_tokens, int64_t(want.size()));
}


TEST_F(Prepare, AValidationPartLongerThanAShardContinuesInTheNextValShard) {
  MemoryDocuments src(docs);
  const PrepareResult r = run(src, "out", 50, 20, 0);
  ASSERT_GE(r.val_shards.size(), 2u);
  for (size_t i = 0; i < r.val_shards.size(); ++i)
    EXPECT_EQ(fs::path(r.val_shards[i].path).filename(), shard_file("t_val", i));
  const std::vector<std::string> first(docs.begin(), docs.begin() + 20);
  EXPECT_EQ(tokens_of(r.val_shards), expected_stream(first));
}

TEST_F(Prepare, OutputIsByteIdenticalForOneAndTwoThreads) {
  const std::vector<std::string> many = make_docs(11, 400);
  const std::string in = fortune_file(many, "many.txt");
  const int saved = omp_get_max_threads();
  std::vector<std::string> names;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    DocumentReader reader({in}, delimited());
    // Small chunks: many encode batches, each split across the threads.
    const PrepareResult r = run(reader, "out" + std::to_string(threads), 500, 0, 200, 4096);
    EXPECT_GT(r.train_shards.size(), 3u);
  }
  omp_set_num_threads(saved);
  size_t compared = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir / "out1")) {
    const fs::path other = dir / "out2" / e.path().filename();
    ASSERT_TRUE(fs::exists(other)) << other;
    EXPECT_EQ(read_file(e.path()), read_file(other)) << e.path().filename();
    ++compared;
  }
  EXPECT_EQ(compared, size_t(std::distance(fs::directory_iterator(dir / "out2"), {})));
  EXPECT_GT(compared, 4u);
}

TEST_F(Prepare, ManifestRecordsTheCountsAndOldShardsAreRemoved) {
  {
    MemoryDocuments src(docs);
    run(src, "out", 40, 2, 0);  // many small shards
  }
  ASSERT_TRUE(fs::exists(dir / "out" / shard_file("t_train", 5)));
  write_file(dir / "out" / "other_train_000000.bin", "not ours");
  MemoryDocuments src(docs);
  const PrepareResult r = run(src, "out", 1 << 20, 2, 0);
  EXPECT_EQ(r.train_shards.size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "out" / shard_file("t_train", 1)));
  EXPECT_TRUE(fs::exists(dir / "out" / "other_train_000000.bin"));  // another name: kept
  const auto j = nlohmann::json::parse(read_file(dir / "out" / "prepare.json"));
  EXPECT_EQ(j["documents"], int64_t(docs.size()));
  EXPECT_EQ(j["vocab_size"], tok->vocab_size());
  EXPECT_EQ(j["eot"], tok->eot());
  EXPECT_EQ(j["val"]["documents"], 2);
  EXPECT_EQ(j["val"]["tokens"], r.val_tokens);
  EXPECT_EQ(j["train"]["tokens"], r.train_tokens);
  EXPECT_EQ(j["train"]["shards"][0]["file"], "t_train_000000.bin");
}

TEST_F(Prepare, NothingLeftForTrainingIsAnErrorThatLeavesNoShards) {
  MemoryDocuments src(docs);
  try {
    run(src, "out", 1 << 20, 0, 1 << 20);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--val-tokens"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "out" / "t_val_000000.bin"));
  EXPECT_FALSE(fs::exists(dir / "out" / "prepare.json"));
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const std::string& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "missing '" << n << "' in: " << e.what();
  }
}

// Every file under `d` (hidden ones too) with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& d) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(d))
    if (e.is_regular_file()) m[fs::relative(e.path(), d).string()] = read_file(e.path());
  return m;
}

// Hands out documents as MemoryDocuments does and, at the second chunk, runs `interrupt`:
// a throw stands for a full disk or a bad line, a raised signal for Ctrl-C.
class InterruptedDocuments final : public DocumentSource {
 public:
  InterruptedDocuments(std::vector<std::string> d, std::function<void()> interrupt)
      : inner_(std::move(d)), interrupt_(std::move(interrupt)) {}
  bool next(std::vector<std::string>& out, size_t max_bytes) override {
    if (++calls_ == 2) interrupt_();
    return inner_.next(out, max_bytes);
  }
  uint64_t bytes_total() const override { return inner_.bytes_total(); }
  uint64_t bytes_done() const override { return inner_.bytes_done(); }
  const DocumentStats& stats() const override { return inner_.stats(); }

 private:
  MemoryDocuments inner_;
  std::function<void()> interrupt_;
  int calls_ = 0;
};

// The stop handlers for a scope: the signals' earlier dispositions come back after it.
class ScopedStopHandlers {
 public:
  ScopedStopHandlers() {
    for (size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], nullptr, &old_[i]);
    install_stop_handlers("");
  }
  ~ScopedStopHandlers() {
    clear_stop_request();
    for (size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
  struct sigaction old_[std::size(kSignals)] {};
};

TEST_F(Prepare, AFailedOrStoppedRunLeavesTheEarlierOutputsAsTheyWere) {
  {
    MemoryDocuments src(docs);
    run(src, "out", 500, 2, 0);
  }
  const auto before = snapshot(dir / "out");
  ASSERT_TRUE(before.count("prepare.json"));
  ASSERT_TRUE(before.count(shard_file("t_train", 1)));
  // A run that fails part way (other shard sizes: it would rewrite and remove shards).
  InterruptedDocuments failing(docs, [] { fail("no space left on device"); });
  expect_error([&] { run(failing, "out", 100, 1, 0, 200); }, {"no space left"});
  EXPECT_EQ(snapshot(dir / "out"), before);
  // One stopped by a signal says so, and leaves the folder alone too.
  {
    const ScopedStopHandlers handlers;
    InterruptedDocuments stopped(docs, [] { ::raise(SIGINT); });
    expect_error([&] { run(stopped, "out", 100, 1, 0, 200); },
                 {"stopped by SIGINT", (dir / "out").string(), "unchanged"});
  }
  EXPECT_EQ(snapshot(dir / "out"), before);
  // A killed run's leftovers are cleared by the next run, which replaces the outputs.
  write_file(dir / "out" / ".prepare.partial" / "t_train_000000.bin", "killed");
  MemoryDocuments src(docs);
  run(src, "out", 100, 1, 0, 200);
  const auto after = snapshot(dir / "out");
  EXPECT_NE(after, before);
  EXPECT_FALSE(fs::exists(dir / "out" / ".prepare.partial"));
  EXPECT_TRUE(after.count("prepare.json"));
  // Into a folder it made itself, a stopped run leaves nothing, and says so.
  {
    const ScopedStopHandlers handlers;
    InterruptedDocuments stopped(docs, [] { ::raise(SIGINT); });
    expect_error([&] { run(stopped, "fresh", 100, 1, 0, 200); },
                 {"stopped by SIGINT", (dir / "fresh").string() + ", new, is removed again"});
  }
  EXPECT_FALSE(fs::exists(dir / "fresh"));
}

TEST_F(Prepare, InputsWithoutTextSayTheyHoldNone) {
  write_file(dir / "empty.txt", "");
  write_file(dir / "blank.jsonl", "\n  \n\n");
  const std::string common = " --tokenizer " + tok_dir.string() + " -o " + (dir / "o").string();
  Outcome r = run_cli("prepare " + (dir / "empty.txt").string() + common + " --val-tokens 0");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("inputs (" + (dir / "empty.txt").string() + ") hold no text"),
            std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("validation"), std::string::npos) << r.out;
  r = run_cli("prepare --jsonl " + (dir / "blank.jsonl").string() + " " +
              (dir / "empty.txt").string() + common);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find((dir / "blank.jsonl").string() + ", " + (dir / "empty.txt").string() +
                       ") hold no text"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "o"));  // made by the failed run, and removed again
}

// ---------------------------------------------------------------- documents

TEST_F(Prepare, OneDocumentPerFileByDefault) {
  write_file(dir / "a.txt", "first document\n% not a delimiter here\n");
  write_file(dir / "b.txt", " \n\t\n");  // blank: skipped
  write_file(dir / "c.txt", "third");
  DocumentStats st;
  const auto d = read_documents({(dir / "a.txt").string(), (dir / "b.txt").string(),
                                 (dir / "c.txt").string()},
                                {}, &st);
  EXPECT_EQ(d, (std::vector<std::string>{"first document\n% not a delimiter here\n", "third"}));
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.empty_skipped, 1);
}

TEST_F(Prepare, DelimiterLinesSplitDocuments) {
  write_file(dir / "f", "one\nline two\n%\n%\r\ncr doc\r\n%\r\nlast % not alone\n%x\ntail\n");
  write_file(dir / "g", "%\nsecond file\n%\n\n");
  DocumentStats st;
  const auto d = read_documents({(dir / "f").string(), (dir / "g").string()},
                                delimited(), &st);
  EXPECT_EQ(d, (std::vector<std::string>{"one\nline two\n", "cr doc\r\n",
                                         "last % not alone\n%x\ntail\n", "second file\n"}));
  EXPECT_EQ(st.empty_skipped, 2);  // between "%" and "%\r", and before g's first "%"
}

TEST(Documents, OverstrikeIsResolvedAsATerminalShowsIt) {
  EXPECT_EQ(strip_overstrike("B\bBo\bol\bld"), "Bold");
  EXPECT_EQ(strip_overstrike("_\bu_\bn_\bd"), "und");
  EXPECT_EQ(strip_overstrike("x\b_"), "x");
  EXPECT_EQ(strip_overstrike("my ____\b\b\b\bLAST time"), "my LAST time");
  EXPECT_EQ(strip_overstrike("é\bé ok\nnext\bt line"), "é ok\nnext line");
  EXPECT_EQ(strip_overstrike("\bstart"), "start");
  EXPECT_EQ(strip_overstrike("plain text"), "plain text");
}

TEST_F(Prepare, OverstrikeIsStrippedOnlyWhenAsked) {
  write_file(dir / "f", "a B\bBo\bol\bld word\n%\nplain\n%\n");
  DocumentStats st;
  auto d = read_documents({(dir / "f").string()}, delimited(true),
                          &st);
  EXPECT_EQ(d[0], "a Bold word\n");
  EXPECT_EQ(st.overstruck, 1);
  d = read_documents({(dir / "f").string()}, delimited());
  EXPECT_EQ(d[0], "a B\bBo\bol\bld word\n");
}

TEST_F(Prepare, InvalidUtf8IsCountedAndEncodedAsTheTokenizerRepairsIt) {
  const std::vector<std::string> in = {"good text\n", "bad \xC3 byte and \xFF\xFE\n", "ok\n"};
  MemoryDocuments src(in);
  const PrepareResult r = run(src, "out", 1 << 20, 1, 0);
  EXPECT_EQ(r.docs.invalid_utf8, 1);
  EXPECT_EQ(decode_docs(tokens_of(r.train_shards)),
            (std::vector<std::string>{sanitize_utf8(in[1]), in[2]}));
}

TEST_F(Prepare, JsonLinesTakeTheTextField) {
  write_file(dir / "a.jsonl",
             "{\"text\": \"Hello \\\"world\\\"\\n\", \"id\": 1}\n"
             "\n"
             "{\"id\": 2, \"text\": \"caf\\u00e9 \\ud83d\\ude00\"}\r\n"
             "{\"text\": \"raw \xC3 byte\"}\n");
  DocumentStats st;
  const auto d = read_documents({(dir / "a.jsonl").string()}, jsonl_options(), &st);
  EXPECT_EQ(d, (std::vector<std::string>{"Hello \"world\"\n", "café 😀",
                                         "raw \xEF\xBF\xBD byte"}));
  EXPECT_EQ(st.invalid_utf8, 1);
  write_file(dir / "b.jsonl", "{\"body\": \"x\"}\n");
  EXPECT_EQ(read_documents({(dir / "b.jsonl").string()}, jsonl_options("body")),
            std::vector<std::string>{"x"});
}

TEST_F(Prepare, MalformedJsonLinesNameTheFileAndLine) {
  const std::string p = (dir / "bad.jsonl").string();
  const std::string good = "{\"text\": \"fine\"}\n";
  const auto read = [&] { read_documents({p}, jsonl_options()); };
  write_file(p, good + good + "{\"text\": \"unterminated}\n" + good);
  expect_error(read, {p + ":3:", "not valid JSON"});
  write_file(p, good + "[1, 2]\n");
  expect_error(read, {p + ":2:", "not an object"});
  write_file(p, good + good + good + "{\"txt\": \"typo\"}\n");
  expect_error(read, {p + ":4:", "no field \"text\""});
  write_file(p, "{\"text\": 42}\n");
  expect_error(read, {p + ":1:", "not a string"});
  // The same error for every thread count and chunk size: the first bad line wins.
  std::string many;
  for (int i = 0; i < 500; ++i) many += i == 321 || i == 400 ? "oops\n" : good;
  write_file(p, many);
  expect_error(read, {p + ":322:"});
}

TEST_F(Prepare, MissingInputsFailBeforeAnyWork) {
  const std::string missing = (dir / "nope.txt").string();
  write_file(dir / "a.txt", "text");
  expect_error([&] { DocumentReader r({(dir / "a.txt").string(), missing}, {}); },
               {missing, "No such file"});
  expect_error([&] { DocumentReader r({dir.string()}, {}); }, {dir.string(), "not a regular"});
}

// ---------------------------------------------------------------- vocabulary limits

// A valid vocabulary of `ids` ids: the 256 bytes, two-byte merges, <|endoftext|>.
BpeVocab vocab_with_ids(int64_t ids) {
  BpeVocab v = train_bpe({std::string_view("x")}, 257);  // the 256 bytes in GPT-2's order
  std::vector<int32_t> id_of(256);
  for (int32_t i = 0; i < 256; ++i) id_of[uint8_t(v.tokens[size_t(i)][0])] = i;
  for (int a = 0; a < 256 && int64_t(v.tokens.size()) < ids - 1; ++a)
    for (int b = 0; b < 256 && int64_t(v.tokens.size()) < ids - 1; ++b) {
      v.merges.push_back({id_of[a], id_of[b]});
      v.tokens.push_back(std::string{char(a), char(b)});
    }
  return v;
}

TEST_F(Prepare, VocabulariesPastUint16AreRefused) {
  const Tokenizer fits(vocab_with_ids(65536));
  EXPECT_EQ(fits.eot(), 65535);
  EXPECT_NO_THROW(check_vocab_fits_shards(fits, "fits"));
  const Tokenizer big(vocab_with_ids(65537));
  expect_error([&] { check_vocab_fits_shards(big, "bigdir"); },
               {"bigdir", "65537 ids", "uint16", "--vocab-size"});
  big.save(dir / "big");
  write_file(dir / "in.txt", "some text");
  const Outcome r = run_cli("prepare " + (dir / "in.txt").string() + " --tokenizer " +
                            (dir / "big").string() + " -o " + (dir / "out").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("uint16"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST_F(Prepare, ABrokenMergeLineIsAnErrorNamingTheFileAndLine) {
  fs::copy(tok_dir, dir / "broken");
  std::string merges = read_file(dir / "broken" / "vocab.bpe");
  // Line 4 (the third merge) loses its separating space.
  size_t pos = 0;
  for (int line = 1; line < 4; ++line) pos = merges.find('\n', pos) + 1;
  merges.erase(merges.find(' ', pos), 1);
  write_file(dir / "broken" / "vocab.bpe", merges);
  write_file(dir / "in.txt", "some text");
  const Outcome r = run_cli("prepare " + (dir / "in.txt").string() + " --tokenizer " +
                            (dir / "broken").string() + " -o " + (dir / "out").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find((dir / "broken" / "vocab.bpe").string() + " line 4"), std::string::npos)
      << r.out;
}

// ---------------------------------------------------------------- command line

TEST_F(Prepare, CommandLineFromTokenizerTrainingToATrainingRun) {
  std::string text;
  for (const std::string& d : make_docs(3, 700)) text += d + "%\n";
  write_file(dir / "corpus.txt", text);
  const std::string in = (dir / "corpus.txt").string();
  Outcome r = run_cli("tokenizer train --vocab-size 300 --delimiter % " + in + " -o " +
                      (dir / "cli_tok").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 300 ids"), std::string::npos) << r.out;

  // encode / decode round trip through the binary.
  write_file(dir / "sample.txt", "It's 42 naïve cats 😀\n\n");
  r = run_cli("tokenizer encode --tokenizer " + (dir / "cli_tok").string() + " < " +
              (dir / "sample.txt").string() + " > " + (dir / "ids.txt").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("tokenizer decode --tokenizer " + (dir / "cli_tok").string() + " < " +
              (dir / "ids.txt").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "It's 42 naïve cats 😀\n\n");
  r = run_cli("tokenizer decode --tokenizer " + (dir / "cli_tok").string() + " 12 300");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("'300' is not a token id"), std::string::npos) << r.out;

  const std::string out = (dir / "shards").string();
  r = run_cli("prepare " + in + " --delimiter % --tokenizer " + (dir / "cli_tok").string() +
              " -o " + out + " --name small --val-tokens 256 --shard-tokens 20000 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("prepared 700 documents"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prepare: 100.0%"), std::string::npos) << "progress line: " << r.out;
  ASSERT_TRUE(fs::exists(dir / "shards" / "small_train_000001.bin")) << r.out;
  // The same with two threads: the same bytes.
  r = run_cli("prepare " + in + " --delimiter % --tokenizer " + (dir / "cli_tok").string() +
              " -o " + (dir / "shards2").string() +
              " --name small --val-tokens 256 --shard-tokens 20000 --threads 2 --no-progress");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("prepare: "), std::string::npos) << r.out;
  for (const char* f : {"small_val_000000.bin", "small_train_000000.bin", "small_train_000001.bin"})
    EXPECT_EQ(read_file(dir / "shards" / f), read_file(dir / "shards2" / f)) << f;

  r = run_cli("shards info '" + out + "/*.bin' --eot 299 --vocab 300");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("700 documents"), std::string::npos) << r.out;
  r = run_cli("shards info '" + out + "/*.bin' --vocab 100");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("outside --vocab 100"), std::string::npos) << r.out;
  // Values no 16-bit id can be are refused, not run to match nothing.
  for (const char* bad : {"--vocab -5", "--vocab 0", "--vocab 70000", "--eot 99999", "--eot -1"}) {
    r = run_cli("shards info '" + out + "/*.bin' " + bad);
    EXPECT_EQ(r.code, 1) << bad << ": " << r.out;
    EXPECT_NE(r.out.find(std::string(bad).substr(0, 6)), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("16-bit ids"), std::string::npos) << r.out;
  }

  r = run_cli("train --train '" + out + "/small_train_*.bin' --val '" + out +
              "/small_val_*.bin' --layers 2 --heads 2 --head-dim 16 --vocab 384 --eot 299 "
              "--seq-len 128 --window-end 128 --batch 2 --steps 3 --cooldown 1 --val-tokens 256 "
              "--threads 1 "
              "--out " + (dir / "run").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("final val_loss"), std::string::npos) << r.out;
}

TEST_F(Prepare, TokenizerTrainKeepsAnExistingTokenizerUnlessToldToReplaceIt) {
  write_file(dir / "a.txt", make_docs(5, 50)[0] + make_docs(6, 50)[1]);
  const std::string base = "tokenizer train --vocab-size 300 " + (dir / "a.txt").string() +
                           " -o " + tok_dir.string();
  const auto before = snapshot(tok_dir);
  for (const std::string extra : {"", " --hf"}) {  // --hf too: encoder.json would shadow it
    const Outcome r = run_cli(base + extra);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("-o " + tok_dir.string() + " already holds a tokenizer (encoder.json, "
                         "vocab.bpe)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("pass --overwrite to replace it"), std::string::npos) << r.out;
    EXPECT_EQ(snapshot(tok_dir), before);
  }
  const Outcome r = run_cli(base + " --hf --overwrite");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(tok_dir / "encoder.json"));
  EXPECT_FALSE(fs::exists(tok_dir / "vocab.bpe"));
  EXPECT_EQ(Tokenizer::load(tok_dir).vocab_size(), 300);
}

TEST_F(Prepare, TokenizerTrainAndPrepareRefuseWhatNoShardCanHold) {
  write_file(dir / "a.txt", docs[0]);
  write_file(dir / "empty.txt", " \n");
  const std::string a = (dir / "a.txt").string(), out = (dir / "new").string();
  Outcome r = run_cli("tokenizer train --vocab-size 65537 " + a + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--vocab-size 65537: must be in [257, 65536]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("16-bit ids"), std::string::npos) << r.out;
  r = run_cli("tokenizer train --vocab-size 65536 " + a + " -o " + out);  // the largest: fine
  EXPECT_EQ(r.code, 0) << r.out;
  fs::remove_all(out);
  r = run_cli("tokenizer train --vocab-size 300 " + (dir / "empty.txt").string() + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("inputs (" + (dir / "empty.txt").string() + ") hold no text"),
            std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
  r = run_cli("tokenizer train --vocab-size 300 --threads -2 " + a + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--threads -2: must be >= 0"), std::string::npos) << r.out;
  r = run_cli("prepare --threads -1 " + a + " --tokenizer " + tok_dir.string() + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--threads -1: must be >= 0"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(Prepare, CommandLineErrorsNameTheFix) {
  write_file(dir / "a.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\nnot json\n");
  Outcome r = run_cli("prepare --jsonl " + (dir / "a.jsonl").string() + " --tokenizer " +
                      tok_dir.string() + " -o " + (dir / "o").string() + " --val-docs 1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find((dir / "a.jsonl").string() + ":3:"), std::string::npos) << r.out;
  r = run_cli("prepare " + (dir / "missing.txt").string() + " --tokenizer " + tok_dir.string() +
              " -o " + (dir / "o").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("missing.txt"), std::string::npos) << r.out;
  r = run_cli("prepare x --jsonl --delimiter % -o " + (dir / "o").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--delimiter"), std::string::npos) << r.out;
  r = run_cli("prepare x --val-docs 3 --val-tokens 9 -o " + (dir / "o").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--val-docs and --val-tokens"), std::string::npos) << r.out;
  r = run_cli("prepare " + (dir / "a.jsonl").string() + " --tokenizer " +
              (dir / "no_tokenizer").string() + " -o " + (dir / "o").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("fetch_gpt2_tokenizer.sh"), std::string::npos) << r.out;
}

TEST_F(Prepare, Gpt2ShardsStartEveryDocumentWith50256) {
  const fs::path g = gpt2_tokenizer_dir();
  if (!fs::exists(g / "encoder.json") && !fs::exists(g / "vocab.json"))
    GTEST_SKIP() << "GPT-2 tokenizer files not found in " << g.string()
                 << "; run scripts/fetch_gpt2_tokenizer.sh or set SPEEDRUN_GPT2_DIR";
  write_file(dir / "a.jsonl",
             "{\"text\": \"Hello world\"}\n{\"text\": \"<|endoftext|>\"}\n{\"text\": \"!\"}\n");
  const Outcome r = run_cli("prepare --jsonl " + (dir / "a.jsonl").string() + " -o " +
                            (dir / "fw").string() + " --name fineweb --val-docs 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const Shard val = Shard::open((dir / "fw" / "fineweb_val_000000.bin").string());
  const Shard train = Shard::open((dir / "fw" / "fineweb_train_000000.bin").string());
  EXPECT_EQ(std::vector<uint16_t>(val.tokens(), val.tokens() + val.size()),
            (std::vector<uint16_t>{50256, 15496, 995}));
  // tiktoken's encode_ordinary: the literal text is 6 ordinary tokens, not the special id.
  EXPECT_EQ(std::vector<uint16_t>(train.tokens(), train.tokens() + train.size()),
            (std::vector<uint16_t>{50256, 27, 91, 437, 1659, 5239, 91, 29, 50256, 0}));
}

// scripts/fineweb.sh against a local copy of the record's files (file:// URLs): the
// download, its resumption, and the header check that keeps a bad file out.
TEST_F(Prepare, FinewebScriptDownloadsResumesAndRejectsBadShards) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "curl not installed (apt-get install curl)";
  const fs::path src = dir / "hf", out = dir / "fineweb10B";
  fs::create_directories(src);
  std::mt19937 rng(5);
  for (const char* name : {"fineweb_val_000000.bin", "fineweb_train_000001.bin",
                           "fineweb_train_000002.bin", "fineweb_train_000003.bin"}) {
    std::vector<uint16_t> t(3000);
    for (uint16_t& x : t) x = uint16_t(rng() % 50257);
    t[0] = 50256;
    write_shard((src / name).string(), t.data(), int64_t(t.size()));
  }
  const std::string bytes1 = read_file(src / "fineweb_train_000001.bin");
  write_file(out / "fineweb_train_000001.bin.part", bytes1.substr(0, 2500));  // interrupted
  const std::string env = "SPEEDRUN=" + std::string(SPEEDRUN_BINARY) + " FINEWEB_DIR=" +
                          out.string() + " FINEWEB_URL=file://" + src.string() + " bash " +
                          SPEEDRUN_SOURCE_DIR + "/scripts/fineweb.sh";
  auto script = [&](const std::string& n) { return run_shell(env + " " + n); };

  Outcome r = script("2");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* name :
       {"fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"})
    EXPECT_EQ(read_file(out / name), read_file(src / name)) << name;
  EXPECT_FALSE(fs::exists(out / "fineweb_train_000003.bin"));
  EXPECT_NE(r.out.find("3 shard(s), 9000 tokens"), std::string::npos) << r.out;

  // A shard whose ids are not GPT-2's is refused and not kept.
  std::vector<uint16_t> bad(3000, 60000);
  write_shard((src / "fineweb_train_000003.bin").string(), bad.data(), 3000);
  r = script("3");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("outside --vocab 50257"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "fineweb_train_000003.bin"));
}

// ---------------------------------------------------------------- the fortunes corpus

class Fortunes : public Prepare {
 protected:
  // A small fortunes folder laid out like Debian's package.
  void make_source() {
    src = dir / "fortunes";
    std::string a, b;
    const std::vector<std::string> d = make_docs(5, 400);
    for (size_t i = 0; i < d.size(); ++i) (i % 2 ? a : b) += d[i] + "%\n";
    write_file(src / "alpha", a + "An A\bAN\bNS\bSI\bI word\n%\n");
    write_file(src / "beta", b);
    write_file(src / "alpha.dat", "DATFILE index bytes");
    write_file(src / "off" / "rude", "OFFENSIVE fortune\n%\n");
    fs::create_symlink("alpha", src / "alpha.u8");
  }
  fs::path src;
};

TEST_F(Fortunes, FilesSkipIndexesLinksAndFolders) {
  make_source();
  EXPECT_EQ(fortune_files(src.string()),
            (std::vector<std::string>{(src / "alpha").string(), (src / "beta").string()}));
  EXPECT_TRUE(fortune_files((dir / "nowhere").string()).empty());
  EXPECT_FALSE(fortunes_corpus((dir / "data").string(), 300, 256, (dir / "nowhere").string()));
}

TEST_F(Fortunes, CorpusIsPreparedOnceAndRebuiltWhenDamaged) {
  make_source();
  const std::string data = (dir / "data").string();
  const auto c = fortunes_corpus(data, 300, 512, src.string());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->documents, 401);
  EXPECT_EQ(c->eot, 299);
  EXPECT_EQ(c->vocab, 384);
  EXPECT_EQ(c->tokenizer_dir, (dir / "data" / "fortunes_bpe300" / "tokenizer").string());
  ASSERT_EQ(c->val_files.size(), 1u);
  ASSERT_EQ(c->train_files.size(), 1u);
  EXPECT_EQ(c->train_files[0],
            (dir / "data" / "fortunes_bpe300" / "val512" / "fortunes_train_000000.bin").string());
  EXPECT_GT(c->val_tokens, 512);

  const Tokenizer t = Tokenizer::load(c->tokenizer_dir);
  std::string all;
  for (const auto& f : {c->val_files[0], c->train_files[0]}) {
    const Shard s = Shard::open(f);
    EXPECT_EQ(s.tokens()[0], 299);
    all += t.decode(std::vector<int32_t>(s.tokens(), s.tokens() + s.size()));
  }
  EXPECT_NE(all.find("An ANSI word\n"), std::string::npos);  // overstrike removed
  EXPECT_EQ(all.find("OFFENSIVE"), std::string::npos);
  EXPECT_EQ(all.find("DATFILE"), std::string::npos);
  EXPECT_EQ(all.find('\b'), std::string::npos);

  // Reused: the same files, untouched.
  const auto stamp = fs::last_write_time(c->train_files[0]);
  const auto again = fortunes_corpus(data, 300, 512, src.string());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->train_files, c->train_files);
  EXPECT_EQ(fs::last_write_time(c->train_files[0]), stamp);
  EXPECT_EQ(read_file(again->val_files[0]), read_file(c->val_files[0]));

  // A truncated shard or different parameters: rebuilt, to the same bytes.
  const std::string train_bytes = read_file(c->train_files[0]);
  fs::resize_file(c->train_files[0], 2000);
  const auto fixed = fortunes_corpus(data, 300, 512, src.string());
  ASSERT_TRUE(fixed);
  EXPECT_EQ(read_file(fixed->train_files[0]), train_bytes);
  const std::string vocab_bpe = read_file(fs::path(c->tokenizer_dir) / "vocab.bpe");
  fs::remove(fs::path(c->tokenizer_dir) / "vocab.bpe");
  ASSERT_TRUE(fortunes_corpus(data, 300, 512, src.string()));
  EXPECT_EQ(read_file(fs::path(c->tokenizer_dir) / "vocab.bpe"), vocab_bpe);
  // Another validation budget: its own folder, beside the first (a run reading the first
  // is not disturbed), with the same tokenizer.
  const std::string& tok_bytes = vocab_bpe;
  const auto other = fortunes_corpus(data, 300, 1024, src.string());
  ASSERT_TRUE(other);
  EXPECT_GT(other->val_tokens, 1024);
  EXPECT_NE(other->train_files[0], c->train_files[0]);
  EXPECT_EQ(read_file(c->train_files[0]), train_bytes);
  EXPECT_EQ(read_file(fs::path(other->tokenizer_dir) / "vocab.bpe"), tok_bytes);

  // Too little text for the validation budget: a clear error.
  expect_error([&] { fortunes_corpus(data, 300, 1 << 24, src.string()); },
               {"--val-tokens", "--train"});
}

TEST_F(Fortunes, DefaultTrainingRunUsesFortunesOrSaysItFallsBack) {
  make_source();
  const std::string flags =
      "train --layers 2 --heads 2 --head-dim 16 --seq-len 128 --window-end 128 --batch 2 "
      "--steps 2 "
      "--cooldown 1 --val-tokens 256 --threads 1";
  fs::create_directories(dir / "cwd1");
  Outcome r = run_cli(flags, "cd " + (dir / "cwd1").string() +
                                 " && SPEEDRUN_BIBLE=none SPEEDRUN_FORTUNES_DIR=" + src.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("using 401 fortunes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sample (temperature 0.8):\n"), std::string::npos) << r.out;
  const fs::path made = dir / "cwd1" / "data" / "fortunes_bpe2048";
  EXPECT_TRUE(fs::exists(made / "val256" / "corpus.json"));
  // The small text runs out of pairs before 2048 ids; the model's rows are the tokenizer's
  // ids rounded up to a multiple of 128.
  const Tokenizer t = Tokenizer::load(made / "tokenizer");
  const int rows = (t.vocab_size() + 127) / 128 * 128;
  EXPECT_NE(r.out.find("--vocab " + std::to_string(rows) + " --eot " + std::to_string(t.eot())),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("vocab " + std::to_string(rows) + ","), std::string::npos) << r.out;

  // --vocab and --eot given for the corpus: padding rows are kept (and by a resume), a
  // vocabulary without room for the tokenizer's ids or another EOT is refused.
  const std::string in_cwd1 = "cd " + (dir / "cwd1").string() +
                              " && SPEEDRUN_BIBLE=none SPEEDRUN_FORTUNES_DIR=" + src.string();
  const std::string padded = std::to_string(rows + 128);
  r = run_cli(flags + " --vocab " + padded + " --save-every 1 --stop-after 1 --no-sample --out p",
              in_cwd1);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("vocab " + padded + ","), std::string::npos) << r.out;
  r = run_cli("train --resume p --threads 1 --no-sample", in_cwd1);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("vocab " + padded + ","), std::string::npos) << r.out;
  r = run_cli(flags + " --vocab 100", in_cwd1);
  EXPECT_EQ(r.code, 1) << r.out;
  for (const std::string& piece :
       {"--vocab 100 cannot hold the corpus's " + std::to_string(t.vocab_size()) + " ids",
        std::string("BPE of"), std::string("--train")})
    EXPECT_NE(r.out.find(piece), std::string::npos) << piece << " in: " << r.out;
  r = run_cli(flags + " --eot 3", in_cwd1);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--eot 3 is not the corpus's EOT " + std::to_string(t.eot())),
            std::string::npos)
      << r.out;

  fs::create_directories(dir / "cwd2");
  r = run_cli(flags, "cd " + (dir / "cwd2").string() +
                         " && SPEEDRUN_BIBLE=none SPEEDRUN_FORTUNES_DIR=" + (dir / "empty").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("falling back to the synthetic corpus"), std::string::npos) << r.out;
}

// ---------------------------------------------------------------- the Bible

// Output laid out as bible-kjv's `bible` prints it: headings after a blank line, verses
// numbered and wrapped.
const char* kBibleText =
    "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n"
    "  2 And the earth was without form, and void; and darkness was upon the face of\n"
    "the deep.\n\nGenesis 2\n\n  1 Thus the heavens and the earth were finished.\n"
    "\n1 Corinthians 13\n\n  1 Though I speak with the tongues of men and of angels,\n"
    "and have not charity.\n  13 And now abideth faith, hope, charity.\n";

TEST(Bible, ChaptersAreDocumentsOfHeadingAndVerses) {
  const auto c = bible_chapters(kBibleText);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0], "Genesis 1\n1 In the beginning God created the heaven and the earth.\n"
                  "2 And the earth was without form, and void; and darkness was upon the face "
                  "of the deep.");
  EXPECT_EQ(c[1], "Genesis 2\n1 Thus the heavens and the earth were finished.");
  EXPECT_EQ(c[2], "1 Corinthians 13\n1 Though I speak with the tongues of men and of angels, "
                  "and have not charity.\n13 And now abideth faith, hope, charity.");
}

TEST_F(Fortunes, DefaultTrainingRunTakesTheBibleFirst) {
  // A stand-in for bible-kjv's program: the sample above, 30 chapters of it.
  std::string text;
  for (int k = 1; k <= 10; ++k) {
    std::string t = kBibleText;
    for (const char* book : {"Genesis 1", "Genesis 2", "1 Corinthians 13"}) {
      const size_t at = t.find(book);
      t.replace(at, std::strlen(book), std::string(book) + std::to_string(k));
    }
    text += t;
  }
  write_file(dir / "bible.txt", text);
  write_file(dir / "bible", "#!/bin/sh\ncat '" + (dir / "bible.txt").string() + "'\n");
  fs::permissions(dir / "bible", fs::perms::owner_all);
  const auto c = bible_corpus((dir / "data").string(), 300, 64, (dir / "bible").string());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->documents, 30);
  EXPECT_EQ(c->what, "chapters of the King James Bible");
  EXPECT_FALSE(bible_corpus((dir / "data").string(), 300, 64, ""));
  write_file(dir / "notbible", "#!/bin/sh\necho hello\n");
  fs::permissions(dir / "notbible", fs::perms::owner_all);
  expect_error([&] { bible_corpus((dir / "data").string(), 300, 64, (dir / "notbible").string()); },
               {"not the bible-kjv program's output", "SPEEDRUN_BIBLE=none"});
  const std::string flags =
      "train --layers 2 --heads 2 --head-dim 16 --seq-len 64 --window-end 64 --batch 2 "
      "--steps 2 --cooldown 1 --val-tokens 128 --threads 1";
  fs::create_directories(dir / "cwd");
  const Outcome r = run_cli(flags, "cd " + (dir / "cwd").string() + " && SPEEDRUN_BIBLE=" +
                                       (dir / "bible").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("using 30 chapters of the King James Bible"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "cwd" / "data" / "kjv_bpe2048" / "val128" / "corpus.json"));
}

// ---------------------------------------------------------------- progress

TEST(Progress, LineShowsPercentRatesAndEta) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(65), "1:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(4321), "4.32K");
  EXPECT_EQ(format_count(1234567), "1.23M");
  const Progress p("prepare", 1000, false);
  const std::string s = p.line(250, 10, 4000, 5.0);
  EXPECT_NE(s.find(" 25.0%"), std::string::npos) << s;
  EXPECT_NE(s.find("10 docs (2/s)"), std::string::npos) << s;
  EXPECT_NE(s.find("4.00K tokens (800/s)"), std::string::npos) << s;
  EXPECT_NE(s.find("ETA 0:15"), std::string::npos) << s;
}

}  // namespace
}  // namespace speedrun
