// Documents for tokenizer training and `speedrun prepare`, read from input files:
//  - text, one document per file (the default): the file's bytes are the document;
//  - text split on a delimiter line (DocumentOptions::delimiter, e.g. "%" for fortune
//    files): a line holding only the delimiter (a trailing "\r" is ignored) ends the
//    current document; the document is the lines before it with their newlines;
//  - JSON Lines (jsonl): one JSON object per line with a string field `field` ("text", as
//    FineWeb is distributed). Blank lines are skipped; any other line that is not such an
//    object is an error naming the file and the line number.
// Empty documents are skipped (counted, except the empty tail after a file's last
// delimiter). Text with invalid UTF-8 is kept as it is and counted: the tokenizer repairs
// it (utf8.h), and JSON lines are repaired before parsing, since JSON must be UTF-8.
// strip_overstrike removes backspace overstriking ("X\bX" bold, "_\bX" underline), as
// old fortune and man-page text holds.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace speedrun {

struct DocumentOptions {
  bool jsonl = false;
  std::string field = "text";  // jsonl: the field holding the document's text
  std::string delimiter;       // text: the delimiter line; empty: one document per file
  bool strip_overstrike = false;
};

struct DocumentStats {
  int64_t documents = 0;       // documents returned
  int64_t empty_skipped = 0;   // empty documents skipped
  int64_t invalid_utf8 = 0;    // documents holding invalid UTF-8 (sanitized when encoded)
  int64_t overstruck = 0;      // documents whose overstriking was removed
};

// A stream of documents, read in chunks of about max_bytes (never splitting a document).
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  // Replaces `out` with the next documents; false (and `out` empty) when none are left.
  virtual bool next(std::vector<std::string>& out, size_t max_bytes) = 0;
  virtual uint64_t bytes_total() const = 0;  // input size, for progress
  virtual uint64_t bytes_done() const = 0;   // input consumed so far
  virtual const DocumentStats& stats() const = 0;
};

// Documents from files, in the order given. The constructor checks that every file is a
// readable regular file (the error names it), so a typo fails before any work.
// The text of a chunk's documents (JSON parsing, overstrike removal) is extracted on all
// OpenMP threads; the documents and any error are the same for every thread count.
class DocumentReader final : public DocumentSource {
 public:
  DocumentReader(std::vector<std::string> files, DocumentOptions options);
  ~DocumentReader() override;
  bool next(std::vector<std::string>& out, size_t max_bytes) override;
  uint64_t bytes_total() const override { return bytes_total_; }
  uint64_t bytes_done() const override { return bytes_done_; }
  const DocumentStats& stats() const override { return stats_; }

 private:
  struct Record;
  bool read_record(Record& r);  // the next raw document; false at the end of all files
  bool open_next_file();

  std::vector<std::string> files_;
  DocumentOptions opt_;
  DocumentStats stats_;
  uint64_t bytes_total_ = 0, bytes_done_ = 0;
  struct Input;
  std::unique_ptr<Input> in_;  // the file being read
  size_t next_file_ = 0;
};

// Documents already in memory (for example shuffled), served in order.
class MemoryDocuments final : public DocumentSource {
 public:
  explicit MemoryDocuments(std::vector<std::string> docs);
  bool next(std::vector<std::string>& out, size_t max_bytes) override;
  uint64_t bytes_total() const override { return bytes_total_; }
  uint64_t bytes_done() const override { return bytes_done_; }
  const DocumentStats& stats() const override { return stats_; }

 private:
  std::vector<std::string> docs_;
  size_t next_ = 0;
  uint64_t bytes_total_ = 0, bytes_done_ = 0;
  DocumentStats stats_;
};

// Every document of `files` (for tokenizer training and small corpora).
std::vector<std::string> read_documents(const std::vector<std::string>& files,
                                        const DocumentOptions& options,
                                        DocumentStats* stats = nullptr);

// `text` with backspace overstriking resolved as a terminal shows it: a backspace moves
// back one character and the next one overwrites it; an underscore never hides a
// character ("X\bX" -> "X", "_\bX" and "X\b_" -> "X", "__\b\bab" -> "ab").
std::string strip_overstrike(std::string_view text);

}  // namespace speedrun
