// speedrun prepare: text or JSON Lines -> token shards (data/prepare.h), and
// speedrun shards info: validate shards and print their token counts.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/number_option.h"
#include "core/error.h"
#include "core/stop_signal.h"
#include "data/documents.h"
#include "data/gpt2_vocab.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace speedrun::cli {

namespace {

struct PrepareArgs {
  std::vector<std::string> files;
  std::string out, name, tokenizer;
  DocumentOptions doc;
  int64_t shard_tokens = 100'000'000, val_docs = 0, val_tokens = 10'485'760;
  int threads = 0;
  bool no_progress = false;
};

void run_prepare(PrepareArgs& a, const CLI::App& sub) {
  check(!(a.doc.jsonl && !a.doc.delimiter.empty()),
        "--delimiter applies to text files, not --jsonl: give one of them");
  check(!(sub.count("--val-docs") && sub.count("--val-tokens")),
        "--val-docs and --val-tokens both given: the validation part is one or the other");
  check(a.threads >= 0, "--threads ", a.threads, ": must be >= 0 (0: all cores)");
  if (a.threads > 0) omp_set_num_threads(a.threads);
  if (a.tokenizer.empty()) a.tokenizer = gpt2_tokenizer_dir().string();
  const Tokenizer tok = Tokenizer::load(a.tokenizer);
  check_vocab_fits_shards(tok, a.tokenizer);
  DocumentReader reader(a.files, a.doc);

  PrepareOptions o;
  o.out_dir = a.out;
  o.name = a.name.empty() ? std::filesystem::path(a.out).lexically_normal().filename().string()
                          : a.name;
  if (o.name.empty() || o.name == "." || o.name == "..") o.name = "data";
  if (a.name.empty())  // the prefix comes from -o: say so if it cannot be one
    check(std::regex_match(o.name, std::regex("[A-Za-z0-9][A-Za-z0-9._-]*")), "-o ", a.out,
          ": the folder's name '", o.name, "' prefixes the shard file names, so it may hold "
          "only letters, digits, '.', '_' and '-': pass --name PREFIX, or choose another folder");
  o.shard_tokens = a.shard_tokens;
  o.val_docs = a.val_docs;
  o.val_tokens = a.val_docs > 0 ? 0 : a.val_tokens;
  o.progress = !a.no_progress;
  o.inputs = a.files;
  o.tokenizer_dir = a.tokenizer;
  // Ctrl-C leaves the earlier outputs whole (data/prepare.h).
  install_stop_handlers("\nstopping after this chunk, keeping the output folder as it was "
                        "(signal again to stop at once)\n");
  PrepareResult r;
  try {
    r = prepare_shards(reader, tok, o);
  } catch (const Error& e) {
    const int sig = stop_requested();
    if (sig == 0) throw;
    std::fprintf(stderr, "%s\n", e.what());  // a stop asked for, not an error
    exit_status() = 128 + sig;
    return;
  }

  if (r.docs.invalid_utf8 > 0)
    std::fprintf(stderr,
                 "warning: %lld documents held invalid UTF-8; each ill-formed sequence was "
                 "encoded as U+FFFD, as the tokenizer does\n",
                 (long long)r.docs.invalid_utf8);
  if (r.docs.empty_skipped > 0)
    std::fprintf(stderr, "note: %lld empty documents skipped\n", (long long)r.docs.empty_skipped);
  std::printf("prepared %lld documents with %s (%d ids, EOT %d) into %s/\n",
              (long long)(r.val_documents + r.train_documents), a.tokenizer.c_str(),
              tok.vocab_size(), tok.eot(), a.out.c_str());
  std::printf("  val:   %lld documents, %lld tokens, %zu shard(s): %s_val_*.bin\n",
              (long long)r.val_documents, (long long)r.val_tokens, r.val_shards.size(),
              o.name.c_str());
  std::printf("  train: %lld documents, %lld tokens, %zu shard(s): %s_train_*.bin\n",
              (long long)r.train_documents, (long long)r.train_tokens, r.train_shards.size(),
              o.name.c_str());
  if (r.val_shards.empty()) std::printf("  no validation shard (--val-tokens 0)\n");
}

struct ShardsArgs {
  std::vector<std::string> patterns;
  int64_t vocab = 0;  // 0: not given
  int64_t eot = -1;   // -1: not given
  bool vocab_given = false, eot_given = false;
};

void run_shards_info(const ShardsArgs& a) {
  // Shards hold uint16 ids: any other value could match nothing and say so silently.
  check(!a.vocab_given || (a.vocab >= 1 && a.vocab <= kMaxShardVocab), "--vocab ", a.vocab,
        ": must be in [1, ", kMaxShardVocab, "] (shards hold 16-bit ids), or left out");
  check(!a.eot_given || (a.eot >= 0 && a.eot < kMaxShardVocab), "--eot ", a.eot,
        ": must be an id in [0, ", kMaxShardVocab - 1, "] (shards hold 16-bit ids), or left out");
  int64_t total = 0, total_docs = 0;
  size_t files = 0;
  for (const std::string& pattern : a.patterns) {
    for (const std::string& path : expand_glob(pattern, "shards info")) {
      const Shard s = Shard::open(path);
      uint16_t max_id = 0;
      int64_t docs = 0;
      const uint16_t* t = s.tokens();
      for (int64_t i = 0; i < s.size(); ++i) {
        max_id = std::max(max_id, t[i]);
        docs += t[i] == a.eot;
      }
      check(a.vocab == 0 || max_id < a.vocab, "shard ", path, " holds token id ", max_id,
            ", outside --vocab ", a.vocab, ": it was written with another tokenizer");
      std::printf("%s: %lld tokens, max id %u", path.c_str(), (long long)s.size(), max_id);
      if (a.eot >= 0) std::printf(", %lld documents", (long long)docs);
      std::printf("\n");
      total += s.size();
      total_docs += docs;
      ++files;
    }
  }
  std::printf("%zu shard(s), %lld tokens", files, (long long)total);
  if (a.eot >= 0) std::printf(", %lld documents", (long long)total_docs);
  std::printf("\n");
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  auto a = std::make_shared<PrepareArgs>();
  CLI::App* sub = app.add_subcommand(
      "prepare",
      "Tokenize text or JSON Lines into shards: EOT before every document, validation first");
  sub->add_option("files", a->files, "input files (text, or JSON Lines with --jsonl)")
      ->required();
  sub->add_option("-o,--out", a->out, "output folder")->required();
  sub->add_option("--name", a->name,
                  "shard name prefix: NAME_val_000000.bin, NAME_train_000000.bin, ... "
                  "(default: the output folder's name)");
  sub->add_option("--tokenizer", a->tokenizer,
                  "tokenizer folder: GPT-2's files or one from `speedrun tokenizer train` "
                  "(default: " + gpt2_tokenizer_dir().string() + ")");
  sub->add_flag("--jsonl", a->doc.jsonl, "inputs are JSON Lines: one object with a text field "
                                         "per line (FineWeb's format)");
  sub->add_option("--field", a->doc.field, "--jsonl: the field holding the text")
      ->capture_default_str();
  sub->add_option("--delimiter", a->doc.delimiter,
                  "text: a line holding only this ends a document (e.g. '%' for fortune "
                  "files); default: one document per file");
  sub->add_flag("--strip-overstrike", a->doc.strip_overstrike,
                "remove backspace overstriking (X\\bX, _\\bX) from the text");
  add_number_option(sub, "--shard-tokens", a->shard_tokens, "tokens per shard")->capture_default_str();
  add_number_option(sub, "--val-docs", a->val_docs,
                    "the first N documents are validation, instead of --val-tokens (0: "
                    "--val-tokens decides)");
  add_number_option(sub, "--val-tokens", a->val_tokens,
                  "validation: whole documents until it holds more than N tokens (enough for "
                  "`speedrun train --val-tokens N`; 0: none)")
      ->capture_default_str();
  add_number_option(sub, "--threads", a->threads, "threads (0: all cores)")->capture_default_str();
  sub->add_flag("--no-progress", a->no_progress, "no progress line on stderr");
  sub->callback([a, sub]() { run_prepare(*a, *sub); });

  auto s = std::make_shared<ShardsArgs>();
  CLI::App* shards = app.add_subcommand("shards", "Inspect token shards");
  shards->require_subcommand(1);
  CLI::App* info = shards->add_subcommand(
      "info", "Validate shard headers and sizes; print token counts and the largest id");
  info->add_option("patterns", s->patterns, "shard files or globs")->required();
  add_number_option(info, "--vocab", s->vocab,
                   "fail when an id is >= this (e.g. " + std::to_string(kGpt2Vocab) +
                        " for GPT-2)");
  add_number_option(info, "--eot", s->eot,
                   "count documents: occurrences of this id (GPT-2: " +
                       std::to_string(kGpt2Eot) + ")");
  info->callback([s, info]() {
    s->vocab_given = info->count("--vocab") > 0;
    s->eot_given = info->count("--eot") > 0;
    run_shards_info(*s);
  });
}

}  // namespace speedrun::cli
