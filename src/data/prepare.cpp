#include "data/prepare.h"

#include <climits>
#include <filesystem>
#include <regex>
#include <set>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/stop_signal.h"
#include "data/shard.h"

namespace speedrun {

namespace fs = std::filesystem;

namespace {

// Appends tokens and writes a shard each time `cap` of them are buffered.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string prefix, int64_t cap)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), cap_(cap) {}

  void add(const uint16_t* t, int64_t n) {
    while (n > 0) {
      if (buf_.empty()) buf_.reserve(size_t(std::min<int64_t>(cap_, int64_t(1) << 24)));
      const int64_t take = std::min(n, cap_ - int64_t(buf_.size()));
      buf_.insert(buf_.end(), t, t + take);
      t += take;
      n -= take;
      if (int64_t(buf_.size()) == cap_) flush();
    }
  }
  void flush() {
    if (buf_.empty()) return;
    const std::string path =
        (fs::path(dir_) / fmt::format("{}_{:06}.bin", prefix_, written_.size())).string();
    write_shard(path, buf_.data(), int64_t(buf_.size()));
    written_.push_back({path, int64_t(buf_.size())});
    buf_.clear();
  }
  const std::vector<ShardInfo>& written() const { return written_; }

 private:
  std::string dir_, prefix_;
  int64_t cap_;
  std::vector<uint16_t> buf_;
  std::vector<ShardInfo> written_;
};

// The folder inside the output folder (one file system, so moving a shard out is a rename)
// where this run's shards wait until every one is written. A run that fails or stops
// removes it; one that was killed leaves it for the next run to clear.
class Staging {
 public:
  explicit Staging(const fs::path& out_dir) : dir_(out_dir / ".prepare.partial") {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    fs::create_directories(dir_, ec);
    check(!ec, "prepare: cannot create ", dir_.string(), ": ", ec.message(),
          "; check the output folder's permissions and free space");
  }
  ~Staging() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

// Moves the staged shards into `out_dir`, replacing same-named ones, and points `shards`
// at their new paths.
void publish(std::vector<ShardInfo>& shards, const fs::path& out_dir) {
  for (ShardInfo& s : shards) {
    const fs::path to = out_dir / fs::path(s.path).filename();
    std::error_code ec;
    fs::rename(s.path, to, ec);
    check(!ec, "prepare: cannot move ", s.path, " to ", to.string(), ": ", ec.message());
    s.path = to.string();
  }
}

// The inputs as a list for messages: "a.txt, b.txt".
std::string input_list(const std::vector<std::string>& inputs) {
  if (inputs.empty()) return "the input";
  std::string s;
  for (const std::string& f : inputs) s += (s.empty() ? "" : ", ") + f;
  return s;
}

nlohmann::ordered_json shard_list(const std::vector<ShardInfo>& shards) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const ShardInfo& s : shards)
    a.push_back({{"file", fs::path(s.path).filename().string()}, {"tokens", s.tokens}});
  return a;
}

}  // namespace

void check_vocab_fits_shards(const Tokenizer& tokenizer, const std::string& dir) {
  check(tokenizer.vocab_size() <= kMaxShardVocab, "tokenizer ", dir, " has ",
        tokenizer.vocab_size(), " ids (<|endoftext|> is ", tokenizer.eot(),
        "), but shard tokens are uint16 and hold ids below ", kMaxShardVocab,
        ": use a vocabulary of at most ", kMaxShardVocab,
        " ids (speedrun tokenizer train --vocab-size ", kMaxShardVocab, " or less)");
}

PrepareResult prepare_shards(DocumentSource& source, const Tokenizer& tok,
                             const PrepareOptions& o) {
  check_vocab_fits_shards(tok, o.tokenizer_dir.empty() ? "(given)" : o.tokenizer_dir);
  check(o.shard_tokens >= 1 && o.shard_tokens <= INT32_MAX, "--shard-tokens ", o.shard_tokens,
        ": must be in [1, ", INT32_MAX, "] (the shard header holds an int32 count)");
  check(o.val_docs >= 0, "--val-docs ", o.val_docs, ": must be >= 0");
  check(o.val_tokens >= 0, "--val-tokens ", o.val_tokens, ": must be >= 0");
  check(!o.out_dir.empty(), "prepare: no output folder given (-o DIR)");
  static const std::regex kName("[A-Za-z0-9][A-Za-z0-9._-]*");
  check(std::regex_match(o.name, kName), "--name '", o.name,
        "': use letters, digits, '.', '_' and '-' (it prefixes the shard file names)");
  std::error_code ec;
  // A folder this run makes is removed again if the run does not finish (once empty: the
  // staging folder inside goes first), so a failed first run leaves nothing behind.
  struct NewFolder {
    fs::path dir;
    bool made = false, kept = false;
    ~NewFolder() {
      std::error_code e;
      if (made && !kept) fs::remove(dir, e);  // only when empty
    }
  } folder{o.out_dir, !fs::exists(o.out_dir, ec)};
  fs::create_directories(o.out_dir, ec);
  check(!ec, "prepare: cannot create the output folder ", o.out_dir, ": ", ec.message());
  const fs::path manifest = fs::path(o.out_dir) / "prepare.json";
  const Staging staging(o.out_dir);

  PrepareResult r;
  ShardWriter val(staging.dir().string(), o.name + "_val", o.shard_tokens);
  ShardWriter train(staging.dir().string(), o.name + "_train", o.shard_tokens);
  const bool want_val = o.val_docs > 0 || o.val_tokens > 0;
  const uint16_t eot = uint16_t(tok.eot());
  Progress progress("prepare", source.bytes_total(), o.progress);

  std::vector<std::string> docs;
  std::vector<std::string_view> views;
  std::vector<uint16_t> ids;
  while (source.next(docs, o.chunk_bytes)) {
    views.assign(docs.begin(), docs.end());
    const std::vector<std::vector<int32_t>> enc = tok.encode_batch(views);
    for (const std::vector<int32_t>& e : enc) {
      ids.resize(e.size() + 1);
      ids[0] = eot;
      for (size_t k = 0; k < e.size(); ++k) ids[k + 1] = uint16_t(e[k]);
      const int64_t n = int64_t(ids.size());
      const bool to_val = want_val && (o.val_docs > 0 ? r.val_documents < o.val_docs
                                                      : r.val_tokens <= o.val_tokens);
      if (to_val) {
        val.add(ids.data(), n);
        ++r.val_documents;
        r.val_tokens += n;
      } else {
        if (r.train_documents == 0) val.flush();  // validation is complete
        train.add(ids.data(), n);
        ++r.train_documents;
        r.train_tokens += n;
      }
    }
    progress.update(source.bytes_done(), r.val_documents + r.train_documents,
                    r.val_tokens + r.train_tokens);
    if (const int sig = stop_requested()) {
      progress.finish(source.bytes_done(), r.val_documents + r.train_documents,
                      r.val_tokens + r.train_tokens);
      fail("prepare: stopped by ", signal_name(sig), " before every shard was written; ",
           folder.made ? o.out_dir + ", new, is removed again"
                       : o.out_dir + " holds what it held before (an earlier run's shards and "
                                     "prepare.json are unchanged)",
           ": run the command again to prepare the data");
    }
  }
  val.flush();
  train.flush();
  r.docs = source.stats();
  r.val_shards = val.written();
  r.train_shards = train.written();
  check(r.val_documents + r.train_documents > 0, "prepare: the inputs (", input_list(o.inputs),
        ") hold no text (", r.docs.empty_skipped, " empty documents skipped): give files that "
        "hold text (with --jsonl, lines whose text field is a non-empty string; --field names it)");
  if (r.train_documents == 0) {
    fail("prepare: all ", r.val_documents, " documents (", r.val_tokens,
         " tokens) went to validation and none is left for training: give a smaller "
         "--val-tokens or --val-docs, or more text");
  }

  nlohmann::ordered_json j = {
      {"generator", "speedrun prepare"},
      {"inputs", o.inputs},
      {"tokenizer", o.tokenizer_dir},
      {"vocab_size", tok.vocab_size()},
      {"eot", tok.eot()},
      {"shard_tokens", o.shard_tokens},
      {"val_docs_requested", o.val_docs},
      {"val_tokens_requested", o.val_docs > 0 ? 0 : o.val_tokens},
      {"documents", r.val_documents + r.train_documents},
      {"empty_documents_skipped", r.docs.empty_skipped},
      {"invalid_utf8_documents", r.docs.invalid_utf8},
      {"overstruck_documents", r.docs.overstruck},
      {"input_bytes", source.bytes_done()},
      {"val", {{"documents", r.val_documents}, {"tokens", r.val_tokens},
               {"shards", shard_list(r.val_shards)}}},
      {"train", {{"documents", r.train_documents}, {"tokens", r.train_tokens},
                 {"shards", shard_list(r.train_shards)}}}};

  // Every shard is written: replace the earlier run's outputs. The folder has no manifest
  // from here until the new one is written, so a stop in between still reads as unfinished.
  folder.kept = true;
  fs::remove(manifest, ec);
  publish(r.val_shards, o.out_dir);
  publish(r.train_shards, o.out_dir);
  // Remove shards of an earlier run under this name that this run did not rewrite.
  std::set<std::string> ours;
  for (const auto* list : {&r.val_shards, &r.train_shards})
    for (const ShardInfo& s : *list) ours.insert(fs::path(s.path).filename().string());
  const std::regex stale(std::regex_replace(o.name, std::regex("[.]"), "\\.") +
                         "_(train|val)_[0-9]{6}\\.bin");
  for (const fs::directory_entry& e : fs::directory_iterator(o.out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, stale) && !ours.count(name)) fs::remove(e.path(), ec);
  }

  AtomicFileWriter m(manifest.string(), "prepare manifest");
  const std::string text = j.dump(2) + "\n";
  m.write(text.data(), text.size());
  m.commit();
  progress.finish(source.bytes_done(), r.val_documents + r.train_documents,
                  r.val_tokens + r.train_tokens);
  return r;
}

}  // namespace speedrun
