// Text documents (data/documents.h, `speedrun prepare`, `speedrun tokenizer train`): one
// document per file, or documents separated by a delimiter line, with backspace
// overstriking optionally removed. The input's first line chooses the options: its first
// byte's low bits (1: delimiter mode, the rest of the line is the delimiter; 2: strip
// overstriking; 4: the text is two files, split at its middle); the text follows.
#include "data/documents.h"
#include "data/utf8.h"

#include "fuzz_common.h"

namespace {

bool blank(std::string_view s) { return s.find_first_not_of(" \t\n\r\v\f") == s.npos; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = fuzz::text(data, size);
  const size_t eol = in.find('\n');
  if (in.empty() || eol == in.npos) return 0;
  const unsigned flags = static_cast<unsigned char>(in[0]);
  speedrun::DocumentOptions o;
  if (flags & 1) o.delimiter = std::string(in.substr(1, eol - 1));
  o.strip_overstrike = flags & 2;
  const std::string_view body = in.substr(eol + 1);
  const size_t cut = (flags & 4) ? body.size() / 2 : body.size();
  fuzz::MemFile a(body.substr(0, cut)), b(body.substr(cut));
  std::vector<std::string> files = {a.path()};
  if (flags & 4) files.push_back(b.path());

  std::vector<std::string> docs;
  const bool ok = fuzz::parses(a.path(), [&] {
    speedrun::DocumentReader reader(files, o);
    std::vector<std::string> chunk;
    while (reader.next(chunk, 8))
      for (std::string& d : chunk) docs.push_back(std::move(d));
    fuzz::require(reader.stats().documents == int64_t(docs.size()), "stats().documents");
    fuzz::require(reader.bytes_done() == reader.bytes_total(), "bytes_done != bytes_total");
  });
  if (!ok) return 0;
  for (const std::string& d : docs) {
    fuzz::require(!blank(d), "a blank document was returned");
    if (o.strip_overstrike && speedrun::is_valid_utf8(body.substr(0, cut)) &&
        speedrun::is_valid_utf8(body.substr(cut)))
      fuzz::require(d.find('\b') == d.npos && speedrun::is_valid_utf8(d),
                    "overstriking left a backspace or broke UTF-8");
  }
  if (o.delimiter.empty() && !o.strip_overstrike) {  // each file is one document, unchanged
    std::vector<std::string> want;
    for (std::string_view f : {body.substr(0, cut), body.substr(cut)})
      if (!blank(f)) want.emplace_back(f);
    fuzz::require(docs == want, "whole-file documents differ from the files");
  }
  if (!o.delimiter.empty() && !o.strip_overstrike) {
    size_t bytes = 0;
    for (const std::string& d : docs) {
      bytes += d.size();
      for (size_t p = 0; p < d.size();) {  // no line of a document is the delimiter
        size_t e = d.find('\n', p);
        std::string_view line = std::string_view(d).substr(p, e == d.npos ? d.npos : e - p);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        fuzz::require(line != o.delimiter, "a document holds a delimiter line");
        p = e == d.npos ? d.size() : e + 1;
      }
    }
    fuzz::require(bytes <= body.size(), "documents hold more bytes than the files");
  }
  return 0;
}
