// The real-text corpora of the built-in default run, each tokenized with a small byte-level
// BPE vocabulary trained on it, so a CPU run of a couple of minutes learns visibly and its
// samples read as text:
//  - the King James Bible from Debian's `bible-kjv` package (its `bible` program prints
//    4.3 MB of verses): each of its 1,189 chapters is a document, ~1,000 tokens long, so
//    the attention window (64 -> 512 in the tiny preset) binds, as it does on FineWeb;
//  - Debian's `fortunes` (/usr/share/games/fortunes, ~15K fortunes, 2.5 MB of English):
//    short documents (~63 tokens), shorter than any window.
// The default run takes the Bible when `bible` is installed, else the fortunes, else a
// synthetic corpus (cli/training_data.cpp).
//
// Bible: the program's output `Genesis 1` / `  1 In the beginning ...` (verses wrapped at
// 80 columns) becomes one document per chapter: its heading line, then one line per verse
// ("1 In the beginning ..."). Fortunes:
// every fortune (the text between lines holding only "%") is a document; the fortune
// files are read in name order, skipping *.dat (indexes), *.u8 (links to the same files)
// and sub-folders (off/, offensive fortunes, in some packagings); backspace overstriking
// is removed. The documents are shuffled with a fixed seed (so validation samples the whole
// text, not its beginning) and prepared like `speedrun prepare` (prepare.h) into
// DATA_DIR/<name>_bpe<K>/ (name: kjv or fortunes):
//   tokenizer/encoder.json, tokenizer/vocab.bpe   the trained vocabulary (K ids)
//   tokenizer.json                                its cache key, written last
//   val<V>/<name>_val_000000.bin                  whole documents, > V tokens
//   val<V>/<name>_train_000000.bin                the rest
//   val<V>/prepare.json, val<V>/corpus.json       counts; the cache key, written last
// One folder per validation budget V, so runs with different --val-tokens never rewrite
// the shards another run is reading. A later call with the same inputs and parameters
// reuses the files when the keys match and every shard has its recorded size; otherwise
// it rebuilds them (about a second on two cores; the bytes are the same every time).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace speedrun {

struct DemoCorpus {
  std::vector<std::string> train_files, val_files;
  int64_t vocab = 0;  // model rows: the tokenizer's ids rounded up to a multiple of 128
  int32_t eot = 0;    // the tokenizer's <|endoftext|>
  std::string tokenizer_dir;
  std::string source_dir;  // where the text was read (a folder, or the program that printed it)
  std::string what;        // "fortunes", "chapters of the King James Bible"
  int64_t documents = 0, train_tokens = 0, val_tokens = 0;
};

// The vocabulary of the default run: enough merges to cover common English words while
// the tiny model's embedding and head stay small.
constexpr int32_t kDemoVocabSize = 2048;

// $SPEEDRUN_FORTUNES_DIR when set, else /usr/share/games/fortunes.
std::string fortunes_dir();

// The fortune files of `dir` (see above), sorted by name; empty when there are none.
std::vector<std::string> fortune_files(const std::string& dir);

// The fortunes corpus prepared (or reused) under data_dir/fortunes_bpe<vocab_size>/, or
// nullopt when `source_dir` holds no fortune files. val_tokens as in prepare.h: the
// validation part holds more than that many tokens. Throws when the fortunes are too few
// for it, naming the fix.
std::optional<DemoCorpus> fortunes_corpus(const std::string& data_dir, int32_t vocab_size,
                                          int64_t val_tokens,
                                          const std::string& source_dir = fortunes_dir());

// The `bible` program: $SPEEDRUN_BIBLE when set ("none" disables the Bible corpus), else
// `bible` on PATH; "" when there is none.
std::string bible_program();

// The chapters of the program's output (see above) as documents, in the Bible's order.
std::vector<std::string> bible_chapters(const std::string& program_output);

// The Bible corpus prepared (or reused) under data_dir/kjv_bpe<vocab_size>/, or nullopt
// when `program` is empty. Throws when the program fails or prints no chapter.
std::optional<DemoCorpus> bible_corpus(const std::string& data_dir, int32_t vocab_size,
                                       int64_t val_tokens,
                                       const std::string& program = bible_program());

}  // namespace speedrun
