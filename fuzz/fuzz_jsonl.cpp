// JSON Lines documents (data/documents.h, `speedrun prepare --jsonl`, `speedrun tokenizer
// train --jsonl`): one object per line with a string field "text". The input is the file;
// its documents are read in small chunks, so chunk boundaries fall everywhere.
#include "data/documents.h"
#include "data/utf8.h"

#include "fuzz_common.h"

namespace {

bool blank(std::string_view s) { return s.find_first_not_of(" \t\n\r\v\f") == s.npos; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::MemFile file(fuzz::text(data, size));
  speedrun::DocumentOptions o;
  o.jsonl = true;
  o.strip_overstrike = size > 0 && data[0] == ' ';  // a leading space turns it on
  int64_t docs = 0;
  fuzz::parses(file.path(), [&] {
    speedrun::DocumentReader reader({file.path()}, o);
    std::vector<std::string> chunk;
    while (reader.next(chunk, 16)) {
      fuzz::require(!chunk.empty(), "next() returned true with no document");
      for (const std::string& d : chunk) {
        fuzz::require(!blank(d), "a blank document was returned");
        fuzz::require(speedrun::is_valid_utf8(d), "a JSON Lines document is not valid UTF-8");
        ++docs;
      }
    }
    fuzz::require(chunk.empty(), "next() returned false with documents");
    fuzz::require(reader.stats().documents == docs, "stats().documents != documents returned");
    fuzz::require(reader.bytes_done() == reader.bytes_total(), "bytes_done != bytes_total at the end");
  });
  return 0;
}
