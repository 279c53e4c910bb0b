// Text -> token shards (SPEC.md, Data), what `speedrun prepare` runs.
//
// Every document becomes <|endoftext|> followed by its tokens (the tokenizer's encode:
// ordinary text, invalid UTF-8 repaired), so a document starts with EOT as in the record's
// data. Documents keep their input order and the token stream is cut into shards:
//  - validation first: OUT/NAME_val_000000.bin holds the first val_docs documents, or (when
//    val_docs is 0) whole documents until it holds MORE than val_tokens tokens — enough for
//    `speedrun train --val-tokens val_tokens`, which reads one target token past them;
//  - then OUT/NAME_train_000000.bin, ... of exactly shard_tokens tokens each (the last one
//    holds the rest); a document may continue from one train shard into the next, as in
//    the record's shards. A part longer than shard_tokens continues in NAME_val_000001.bin...
// Documents are encoded in chunks on all OpenMP threads; the files are byte-identical for
// every thread count. The shards wait in OUT/.prepare.partial/ until every one is written,
// so a run that fails (a full disk, bad input) or is stopped (SIGINT, SIGTERM, SIGHUP: the
// stop request of core/stop_signal.h, read after each chunk) leaves an earlier run's shards
// and prepare.json as they were. Then prepare.json is removed, the shards are renamed into
// OUT, shards of an earlier run under the same NAME that this run did not write are
// removed (so a glob over NAME_train_*.bin sees exactly this run), and OUT/prepare.json
// (the counts) is written last: a folder without it is not a finished run.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/documents.h"
#include "data/tokenizer.h"

namespace speedrun {

struct PrepareOptions {
  std::string out_dir;
  std::string name = "data";
  int64_t shard_tokens = 100'000'000;
  int64_t val_docs = 0;             // > 0: the first val_docs documents are validation
  int64_t val_tokens = 10'485'760;  // used when val_docs == 0; 0 and 0: no validation shard
  size_t chunk_bytes = size_t(8) << 20;  // input bytes encoded per batch
  bool progress = true;             // the progress line on stderr
  // Recorded in prepare.json only.
  std::vector<std::string> inputs;
  std::string tokenizer_dir;
};

struct ShardInfo {
  std::string path;
  int64_t tokens = 0;
};

struct PrepareResult {
  DocumentStats docs;  // of the source, after the run
  int64_t val_documents = 0, train_documents = 0;
  int64_t val_tokens = 0, train_tokens = 0;  // EOTs included
  std::vector<ShardInfo> val_shards, train_shards;
};

// The largest vocabulary a shard can hold: ids are uint16.
constexpr int64_t kMaxShardVocab = 65536;

// Throws, naming the tokenizer folder and the fix, unless every id fits uint16.
void check_vocab_fits_shards(const Tokenizer& tokenizer, const std::string& tokenizer_dir);

// Reads every document of `source` and writes the shards and prepare.json. Throws, leaving
// the output folder as it was, when the source holds no document, when none is left for
// training after the validation split, or when a stop was requested.
PrepareResult prepare_shards(DocumentSource& source, const Tokenizer& tokenizer,
                             const PrepareOptions& options);

}  // namespace speedrun
