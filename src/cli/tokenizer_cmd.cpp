// speedrun tokenizer train | encode | decode: learn a byte-level BPE vocabulary from text,
// and turn text into ids and back with any tokenizer folder.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/number_option.h"
#include "core/error.h"
#include "data/bpe_train.h"
#include "data/documents.h"
#include "data/gpt2_vocab.h"
#include "data/prepare.h"
#include "data/tokenizer.h"

namespace speedrun::cli {

namespace {

struct TokenizerTrainArgs {
  std::vector<std::string> files;
  std::string out;
  int32_t vocab_size = 0;
  DocumentOptions doc;
  bool hf_layout = false;
  bool overwrite = false;
  int threads = 0;
};

// The files of both layouts (data/tokenizer_files.h): a folder holding either is a tokenizer.
constexpr const char* kTokenizerFiles[] = {"encoder.json", "vocab.bpe", "vocab.json",
                                           "merges.txt"};

// The tokenizer files already in `out`, joined by ", "; empty when there are none.
std::string tokenizer_files_in(const std::string& out) {
  std::string found;
  std::error_code ec;
  for (const char* f : kTokenizerFiles)
    if (std::filesystem::exists(std::filesystem::path(out) / f, ec))
      found += (found.empty() ? "" : ", ") + std::string(f);
  return found;
}

// Shards and models made with a tokenizer need its exact vocabulary, so a retrained one
// replaces it only when asked; refused before any work.
void check_out_is_free(const std::string& out, bool overwrite) {
  const std::string found = tokenizer_files_in(out);
  check(found.empty() || overwrite, "-o ", out, " already holds a tokenizer (", found,
        "): shards and models made with it need its vocabulary; choose another -o, or pass "
        "--overwrite to replace it");
}

// Called once the new vocabulary is trained, so a failed run keeps the old one. The other
// layout's files go too: the loader prefers encoder.json, which would shadow a new vocab.json.
void remove_old_tokenizer(const std::string& out) {
  for (const char* f : kTokenizerFiles) {
    const std::filesystem::path p = std::filesystem::path(out) / f;
    std::error_code ec;
    std::filesystem::remove(p, ec);
    check(!ec, "tokenizer train: cannot remove ", p.string(), ": ", ec.message(),
          "; remove it yourself or choose another -o");
  }
}

// No text at all would still give a tokenizer (the 256 bytes and <|endoftext|>), which
// only hides a wrong path or --field.
[[noreturn]] void fail_no_text(const TokenizerTrainArgs& a, const DocumentStats& stats) {
  std::string inputs;
  for (const std::string& f : a.files) inputs += (inputs.empty() ? "" : ", ") + f;
  fail("tokenizer train: the inputs (", inputs, ") hold no text (",
       (long long)stats.empty_skipped, " empty documents): give files that hold text",
       a.doc.jsonl ? " (with --jsonl, a non-empty \"" + a.doc.field + "\" field, or name the "
                     "field with --field)"
                   : "");
}

void run_tokenizer_train(const TokenizerTrainArgs& a) {
  check(!(a.doc.jsonl && !a.doc.delimiter.empty()),
        "--delimiter applies to text files, not --jsonl: give one of them");
  check(a.vocab_size >= 257 && a.vocab_size <= kMaxShardVocab, "--vocab-size ", a.vocab_size,
        ": must be in [257, ", kMaxShardVocab, "]: 256 bytes + <|endoftext|> at least, and "
        "token shards store 16-bit ids, so `speedrun prepare` takes at most ", kMaxShardVocab);
  check(a.threads >= 0, "--threads ", a.threads, ": must be >= 0 (0: all cores)");
  check_out_is_free(a.out, a.overwrite);
  if (a.threads > 0) omp_set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  DocumentStats stats;
  const std::vector<std::string> docs = read_documents(a.files, a.doc, &stats);
  if (docs.empty()) fail_no_text(a, stats);
  size_t bytes = 0;
  for (const std::string& d : docs) bytes += d.size();
  const Tokenizer tok(
      train_bpe(std::vector<std::string_view>(docs.begin(), docs.end()), a.vocab_size));
  if (a.overwrite) remove_old_tokenizer(a.out);
  tok.save(a.out, a.hf_layout ? Tokenizer::Layout::HuggingFace : Tokenizer::Layout::OpenAI);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("trained %d ids (%zu merges, <|endoftext|> = %d) on %lld documents (%zu bytes) "
              "in %.1f s -> %s\n",
              tok.vocab_size(), tok.vocab().merges.size(), tok.eot(), (long long)stats.documents,
              bytes, s, a.out.c_str());
  if (tok.vocab_size() < a.vocab_size)
    std::printf("note: the text ran out of pairs to merge before %d ids\n", a.vocab_size);
  if (stats.invalid_utf8 > 0)
    std::fprintf(stderr, "warning: %lld documents held invalid UTF-8 (repaired to U+FFFD)\n",
                 (long long)stats.invalid_utf8);
}

struct CodecArgs {
  std::string tokenizer, text;
  std::vector<std::string> ids;
  bool eot = false;
};

Tokenizer load(const std::string& dir) {
  return Tokenizer::load(dir.empty() ? gpt2_tokenizer_dir() : std::filesystem::path(dir));
}

void run_encode(const CodecArgs& a, bool text_given) {
  const Tokenizer tok = load(a.tokenizer);
  std::string text = a.text;
  if (!text_given) text.assign(std::istreambuf_iterator<char>(std::cin), {});
  std::vector<int32_t> ids;
  if (a.eot) ids.push_back(tok.eot());
  tok.encode_append(text, ids);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void run_decode(const CodecArgs& a) {
  const Tokenizer tok = load(a.tokenizer);
  std::vector<std::string> words = a.ids;
  if (words.empty()) {
    std::string w;
    while (std::cin >> w) words.push_back(w);
  }
  std::vector<int32_t> ids;
  for (const std::string& w : words) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == w.size() && v >= 0 && v <= tok.eot(), "tokenizer decode: '", w,
          "' is not a token id of this tokenizer (0..", tok.eot(), ")");
    ids.push_back(int32_t(v));
  }
  const std::string text = tok.decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tk = app.add_subcommand("tokenizer", "Train a BPE vocabulary; encode and decode");
  tk->require_subcommand(1);

  auto t = std::make_shared<TokenizerTrainArgs>();
  CLI::App* train = tk->add_subcommand(
      "train", "Learn a byte-level BPE vocabulary (GPT-2's pre-tokenization and file format)");
  train->add_option("files", t->files, "text files (or JSON Lines with --jsonl)")->required();
  add_number_option(train, "--vocab-size", t->vocab_size,
                    "ids in all: 256 bytes + merges + <|endoftext|>, 257 to " +
                        std::to_string(kMaxShardVocab) + " (shards hold 16-bit ids; GPT-2: " +
                        std::to_string(kGpt2Vocab) + ")")
      ->required();
  train->add_option("-o,--out", t->out,
                   "folder for encoder.json + vocab.bpe (one holding a tokenizer: see --overwrite)")
      ->required();
  train->add_flag("--jsonl", t->doc.jsonl, "inputs are JSON Lines with a text field");
  train->add_option("--field", t->doc.field, "--jsonl: the field holding the text")
      ->capture_default_str();
  train->add_option("--delimiter", t->doc.delimiter,
                    "text: a line holding only this ends a document (default: one per file)");
  train->add_flag("--strip-overstrike", t->doc.strip_overstrike,
                  "remove backspace overstriking (X\\bX, _\\bX) from the text");
  train->add_flag("--hf", t->hf_layout, "write vocab.json + merges.txt (Hugging Face names)");
  train->add_flag("--overwrite", t->overwrite,
                  "replace the tokenizer already in -o (shards made with it need the old one)");
  add_number_option(train, "--threads", t->threads, "threads (0: all cores)")->capture_default_str();
  train->callback([t]() { run_tokenizer_train(*t); });

  const std::string tok_help =
      "tokenizer folder (default: " + gpt2_tokenizer_dir().string() + ", GPT-2's)";
  auto e = std::make_shared<CodecArgs>();
  CLI::App* enc = tk->add_subcommand(
      "encode", "Text (stdin, or --text) -> token ids on one line, separated by spaces");
  enc->add_option("--tokenizer", e->tokenizer, tok_help);
  CLI::Option* text_opt = enc->add_option("--text", e->text, "encode this instead of stdin");
  enc->add_flag("--eot", e->eot, "start with <|endoftext|>, as a document in a shard does");
  enc->callback([e, text_opt]() { run_encode(*e, text_opt->count() > 0); });

  auto d = std::make_shared<CodecArgs>();
  CLI::App* dec = tk->add_subcommand(
      "decode", "Token ids (arguments, or stdin separated by white space) -> the exact bytes");
  dec->add_option("--tokenizer", d->tokenizer, tok_help);
  dec->add_option("ids", d->ids, "token ids (default: read from stdin)");
  dec->callback([d]() { run_decode(*d); });
}

}  // namespace speedrun::cli
