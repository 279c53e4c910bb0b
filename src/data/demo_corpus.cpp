#include "data/demo_corpus.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/bpe_train.h"
#include "data/documents.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace speedrun {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr uint64_t kShuffleSeed = 20240520;

// splitmix64: the same sequence on every platform.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) {  // uniform in [0, n), by rejection
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }
};

std::optional<ojson> read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  ojson j = ojson::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

void write_json(const fs::path& p, const ojson& j, std::string_view what) {
  AtomicFileWriter w(p.string(), what);
  const std::string text = j.dump(2) + "\n";
  w.write(text.data(), text.size());
  w.commit();
}

DemoCorpus from_manifest(const ojson& m, const fs::path& dir, const fs::path& tok_dir,
                         const std::string& source) {
  DemoCorpus c;
  c.source_dir = source;
  c.tokenizer_dir = tok_dir.string();
  const Tokenizer tok = Tokenizer::load(tok_dir);
  c.eot = tok.eot();
  c.vocab = (int64_t(tok.vocab_size()) + 127) / 128 * 128;
  c.documents = m.at("documents").get<int64_t>();
  for (const char* part : {"val", "train"}) {
    for (const auto& s : m.at(part).at("shards")) {
      const std::string path = (dir / s.at("file").get<std::string>()).string();
      const int64_t n = s.at("tokens").get<int64_t>();
      check(read_shard_header(path) == n, "shard ", path, " does not hold its recorded ", n,
            " tokens");
      (part[0] == 'v' ? c.val_files : c.train_files).push_back(path);
      (part[0] == 'v' ? c.val_tokens : c.train_tokens) += n;
    }
  }
  check(!c.train_files.empty(), "no train shard recorded");
  return c;
}

}  // namespace

std::string fortunes_dir() {
  const char* e = std::getenv("SPEEDRUN_FORTUNES_DIR");
  return e && *e ? std::string(e) : std::string("/usr/share/games/fortunes");
}

std::vector<std::string> fortune_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (name.ends_with(".dat") || name.ends_with(".u8")) continue;
    if (!e.is_regular_file(ec) || e.is_directory(ec)) continue;  // off/ and other folders
    out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<DemoCorpus> fortunes_corpus(const std::string& data_dir, int32_t vocab_size,
                                          int64_t val_tokens, const std::string& source_dir) {
  const std::vector<std::string> files = fortune_files(source_dir);
  if (files.empty()) return std::nullopt;
  check(vocab_size >= 257 && vocab_size <= kMaxShardVocab, "fortunes corpus: vocabulary size ",
        vocab_size, " must be in [257, ", kMaxShardVocab, "]");
  check(val_tokens >= 0, "fortunes corpus: validation tokens ", val_tokens, " must be >= 0");
  const fs::path root = fs::path(data_dir) / fmt::format("fortunes_bpe{}", vocab_size);
  const fs::path tok_dir = root / "tokenizer", tok_manifest = root / "tokenizer.json";
  const fs::path dir = root / fmt::format("val{}", val_tokens);
  const fs::path manifest = dir / "corpus.json";

  ojson sources = ojson::array();
  for (const std::string& f : files) {
    std::error_code ec;
    sources.push_back({fs::path(f).filename().string(), fs::file_size(f, ec)});
  }
  const ojson tok_key = {{"generator", "speedrun fortunes v1"}, {"source", source_dir},
                         {"files", sources}, {"vocab_size", vocab_size},
                         {"shuffle_seed", kShuffleSeed}};
  ojson key = tok_key;
  key["val_tokens"] = val_tokens;

  auto matches = [](const fs::path& p, const ojson& k) {
    std::optional<ojson> have = read_json(p);
    if (have && have->value("key", ojson()) != k) have.reset();
    return have;
  };
  std::optional<ojson> have = matches(manifest, key);
  if (have && matches(tok_manifest, tok_key)) {
    try {
      return from_manifest(*have, dir, tok_dir, source_dir);
    } catch (const std::exception&) {
      // A shard or the tokenizer is missing or damaged: rebuild below.
    }
  }

  // The fortunes, shuffled: the same documents for the tokenizer and the shards.
  DocumentOptions opt;
  opt.delimiter = "%";
  opt.strip_overstrike = true;
  std::vector<std::string> docs = read_documents(files, opt);
  SplitMix rng{kShuffleSeed};
  for (size_t i = docs.size(); i > 1; --i) std::swap(docs[i - 1], docs[rng.below(i)]);

  std::optional<Tokenizer> tok;
  if (matches(tok_manifest, tok_key)) {
    try {
      tok = Tokenizer::load(tok_dir);
    } catch (const std::exception&) {
    }
  }
  if (!tok) {
    std::error_code ec;
    fs::remove(tok_manifest, ec);
    tok = Tokenizer(train_bpe(std::vector<std::string_view>(docs.begin(), docs.end()),
                              vocab_size));
    tok->save(tok_dir);
    write_json(tok_manifest, {{"key", tok_key}, {"ids", tok->vocab_size()}}, "tokenizer key");
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "fortunes corpus: cannot create ", dir.string(), ": ", ec.message());
  fs::remove(manifest, ec);
  PrepareOptions po;
  po.out_dir = dir.string();
  po.name = "fortunes";
  po.val_tokens = val_tokens;
  po.progress = false;
  po.inputs = files;
  po.tokenizer_dir = tok_dir.string();
  MemoryDocuments source(std::move(docs));
  PrepareResult r;
  try {
    r = prepare_shards(source, *tok, po);
  } catch (const Error& e) {
    fail("fortunes corpus from ", source_dir, ": ", e.what(), ". The default corpus is small (",
         "about 1M tokens): lower --val-tokens, or train on your own shards with --train and "
         "--val");
  }

  auto list = [](const std::vector<ShardInfo>& shards) {
    ojson a = ojson::array();
    for (const ShardInfo& s : shards)
      a.push_back({{"file", fs::path(s.path).filename().string()}, {"tokens", s.tokens}});
    return a;
  };
  const ojson m = {{"key", key},
                   {"documents", r.val_documents + r.train_documents},
                   {"val", {{"documents", r.val_documents}, {"shards", list(r.val_shards)}}},
                   {"train", {{"documents", r.train_documents}, {"shards", list(r.train_shards)}}}};
  write_json(manifest, m, "fortunes corpus manifest");
  return from_manifest(m, dir, tok_dir, source_dir);
}

}  // namespace speedrun
