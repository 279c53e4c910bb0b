#include "data/demo_corpus.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <regex>
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
                         const std::string& source, const std::string& what) {
  DemoCorpus c;
  c.source_dir = source;
  c.what = what;
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

namespace {

// One built-in corpus: its documents, where they came from and what identifies them.
struct Recipe {
  std::string name;    // kjv, fortunes: the folder data/<name>_bpe<K>/ and the shard prefix
  std::string what;    // how messages name the documents
  std::string source;  // the folder or program they came from
  ojson source_key;    // what identifies the input (file sizes, a checksum of the text)
  std::vector<std::string> inputs;  // recorded in prepare.json
  std::function<std::vector<std::string>()> documents;  // read only when (re)building
};

// The corpus of `r` prepared (or reused) under data_dir/<name>_bpe<vocab_size>/.
DemoCorpus prepare_builtin(const std::string& data_dir, int32_t vocab_size, int64_t val_tokens,
                           const Recipe& r) {
  check(vocab_size >= 257 && vocab_size <= kMaxShardVocab, r.name, " corpus: vocabulary size ",
        vocab_size, " must be in [257, ", kMaxShardVocab, "]");
  check(val_tokens >= 0, r.name, " corpus: validation tokens ", val_tokens, " must be >= 0");
  const fs::path root = fs::path(data_dir) / fmt::format("{}_bpe{}", r.name, vocab_size);
  const fs::path tok_dir = root / "tokenizer", tok_manifest = root / "tokenizer.json";
  const fs::path dir = root / fmt::format("val{}", val_tokens);
  const fs::path manifest = dir / "corpus.json";
  const ojson tok_key = {{"generator", "speedrun " + r.name + " v1"}, {"source", r.source},
                         {"files", r.source_key}, {"vocab_size", vocab_size},
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
      return from_manifest(*have, dir, tok_dir, r.source, r.what);
    } catch (const std::exception&) {
      // A shard or the tokenizer is missing or damaged: rebuild below.
    }
  }

  // The documents, shuffled: the same for the tokenizer and the shards.
  std::vector<std::string> docs = r.documents();
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
  check(!ec, r.name, " corpus: cannot create ", dir.string(), ": ", ec.message());
  fs::remove(manifest, ec);
  PrepareOptions po;
  po.out_dir = dir.string();
  po.name = r.name;
  po.val_tokens = val_tokens;
  po.progress = false;
  po.inputs = r.inputs;
  po.tokenizer_dir = tok_dir.string();
  MemoryDocuments source(std::move(docs));
  PrepareResult res;
  try {
    res = prepare_shards(source, *tok, po);
  } catch (const Error& e) {
    fail(r.name, " corpus from ", r.source, ": ", e.what(), ". The built-in corpus is small (",
         "about 1M tokens): lower --val-tokens, or train on your own shards with --train and "
         "--val");
  }

  auto list = [](const std::vector<ShardInfo>& shards) {
    ojson a = ojson::array();
    for (const ShardInfo& sh : shards)
      a.push_back({{"file", fs::path(sh.path).filename().string()}, {"tokens", sh.tokens}});
    return a;
  };
  const ojson m = {{"key", key},
                   {"documents", res.val_documents + res.train_documents},
                   {"val", {{"documents", res.val_documents}, {"shards", list(res.val_shards)}}},
                   {"train", {{"documents", res.train_documents}, {"shards", list(res.train_shards)}}}};
  write_json(manifest, m, r.name + " corpus manifest");
  return from_manifest(m, dir, tok_dir, r.source, r.what);
}

}  // namespace

std::optional<DemoCorpus> fortunes_corpus(const std::string& data_dir, int32_t vocab_size,
                                          int64_t val_tokens, const std::string& source_dir) {
  const std::vector<std::string> files = fortune_files(source_dir);
  if (files.empty()) return std::nullopt;
  Recipe r;
  r.name = "fortunes";
  r.what = "fortunes";
  r.source = source_dir;
  r.inputs = files;
  r.source_key = ojson::array();
  for (const std::string& f : files) {
    std::error_code ec;
    r.source_key.push_back({fs::path(f).filename().string(), fs::file_size(f, ec)});
  }
  r.documents = [files] {
    DocumentOptions opt;
    opt.delimiter = "%";
    opt.strip_overstrike = true;
    return read_documents(files, opt);
  };
  return prepare_builtin(data_dir, vocab_size, val_tokens, r);
}

std::string bible_program() {
  if (const char* e = std::getenv("SPEEDRUN_BIBLE"); e && *e)
    return std::string(e) == "none" ? std::string() : std::string(e);
  const char* path = std::getenv("PATH");
  std::string dirs = path && *path ? path : "/usr/bin:/bin";
  for (size_t a = 0; a <= dirs.size();) {
    const size_t b = std::min(dirs.find(':', a), dirs.size());
    const fs::path p = fs::path(dirs.substr(a, b - a)) / "bible";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
    a = b + 1;
  }
  return "";
}

std::vector<std::string> bible_chapters(const std::string& text) {
  // A heading is a line like "Genesis 1" or "1 Corinthians 13" after a blank line; a verse
  // starts with spaces and its number; other lines continue the verse before them.
  static const std::regex heading("([1-3] )?[A-Z][A-Za-z ]*[a-z] [0-9]+");
  static const std::regex verse(" +([0-9]+) (.*)");
  std::vector<std::string> chapters;
  std::istringstream in(text);
  std::string line, prev = "";
  std::smatch m;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (prev.empty() && std::regex_match(line, heading)) {
      chapters.push_back(line);
    } else if (!chapters.empty() && std::regex_match(line, m, verse)) {
      chapters.back() += "\n" + m[1].str() + " " + m[2].str();
    } else if (!chapters.empty() && !line.empty()) {
      chapters.back() += " " + line;
    }
    prev = line;
  }
  return chapters;
}

std::optional<DemoCorpus> bible_corpus(const std::string& data_dir, int32_t vocab_size,
                                       int64_t val_tokens, const std::string& program) {
  if (program.empty()) return std::nullopt;
  // The whole text, Genesis 1:1 to Revelation 22:21.
  const std::string cmd = "'" + program + "' 'Gen1:1-Rev22:21' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  check(p != nullptr, "bible corpus: cannot run ", program);
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  const int status = ::pclose(p);
  check(status == 0, "bible corpus: ", program, " failed (status ", status, "): ",
        text.substr(0, 200), " (apt-get install bible-kjv, or SPEEDRUN_BIBLE=none to use the "
        "fortunes)");
  std::vector<std::string> chapters = bible_chapters(text);
  check(chapters.size() >= 10, "bible corpus: ", program, " printed ", chapters.size(),
        " chapters: not the bible-kjv program's output (SPEEDRUN_BIBLE=none to use the "
        "fortunes)");
  Recipe r;
  r.name = "kjv";
  r.what = "chapters of the King James Bible";
  r.source = program;
  r.inputs = {program};
  r.source_key = {{"bytes", text.size()}, {"checksum", fmt::format("{:016x}", std::hash<std::string>{}(text))}};
  r.documents = [chapters = std::move(chapters)] { return chapters; };
  return prepare_builtin(data_dir, vocab_size, val_tokens, r);
}

}  // namespace speedrun
