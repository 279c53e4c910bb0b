#include "data/documents.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_input.h"
#include "data/utf8.h"

namespace speedrun {

namespace {

bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') return false;
  return true;
}

// Bytes in the UTF-8 character starting with lead byte c (1 for a stray byte).
size_t char_len(unsigned char c) {
  if (c < 0xC0) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return c < 0xF8 ? 4 : 1;
}

}  // namespace

std::string strip_overstrike(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::vector<std::string_view> cells;  // the current line's characters as shown
  size_t cursor = 0;
  auto flush = [&] {
    for (std::string_view c : cells) out += c;
    cells.clear();
    cursor = 0;
  };
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(char_len(static_cast<unsigned char>(text[i])), text.size() - i);
    const std::string_view ch = text.substr(i, n);
    i += n;
    if (ch == "\b") {
      if (cursor > 0) --cursor;
    } else if (ch == "\n") {
      flush();
      out += '\n';
    } else if (cursor < cells.size()) {
      if (ch != "_") cells[cursor] = ch;  // an underscore underlines, it never hides
      ++cursor;
    } else {
      cells.push_back(ch);
      ++cursor;
    }
  }
  flush();
  return out;
}

// One document as read, before its text is extracted.
struct DocumentReader::Record {
  std::string data;
  uint32_t file = 0;
  int64_t line = 0;  // 1-based line where the document starts
};

struct DocumentReader::Input {
  FILE* f = nullptr;
  char* buf = nullptr;
  size_t cap = 0;
  int64_t line = 0;
  uint32_t file = 0;
  ~Input() {
    if (f) std::fclose(f);
    std::free(buf);
  }
  // The next line with its '\n' (if any); false at the end of the file.
  bool getline(std::string_view& s, const std::string& path) {
    errno = 0;
    const ssize_t n = ::getline(&buf, &cap, f);
    if (n < 0) {
      if (std::ferror(f)) fail("cannot read ", path, ": ", std::strerror(errno));
      return false;
    }
    ++line;
    s = std::string_view(buf, size_t(n));
    return true;
  }
};

DocumentReader::DocumentReader(std::vector<std::string> files, DocumentOptions options)
    : files_(std::move(files)), opt_(std::move(options)) {
  check(!files_.empty(), "no input files given: name the text or JSON Lines files to read");
  check(opt_.jsonl || opt_.delimiter.find('\n') == std::string::npos,
        "--delimiter must be a single line");
  for (const std::string& p : files_) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0)
      fail("input file ", p, ": ", std::strerror(errno), " (check the path)");
    check(S_ISREG(st.st_mode), "input file ", p, ": not a regular file (name files, not folders)");
    FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) fail("input file ", p, ": cannot open: ", std::strerror(errno));
    std::fclose(f);
    bytes_total_ += uint64_t(st.st_size);
  }
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::open_next_file() {
  in_.reset();
  if (next_file_ >= files_.size()) return false;
  auto in = std::make_unique<Input>();
  in->file = uint32_t(next_file_);
  const std::string& p = files_[next_file_++];
  in->f = std::fopen(p.c_str(), "rb");
  if (!in->f) fail("input file ", p, ": cannot open: ", std::strerror(errno));
  in_ = std::move(in);
  return true;
}

bool DocumentReader::read_record(Record& r) {
  r.data.clear();
  for (;;) {
    if (!in_ && !open_next_file()) return false;
    const std::string& path = files_[in_->file];
    r.file = in_->file;
    std::string_view s;
    if (!opt_.jsonl && opt_.delimiter.empty()) {  // the whole file
      r.line = 1;
      while (in_->getline(s, path)) r.data.append(s);
      bytes_done_ += r.data.size();
      in_.reset();
      return true;
    }
    if (opt_.jsonl) {
      while (in_->getline(s, path)) {
        bytes_done_ += s.size();
        if (is_blank(s)) continue;
        r.line = in_->line;
        r.data.assign(s);
        return true;
      }
      in_.reset();
      continue;
    }
    bool any = false;
    while (in_->getline(s, path)) {
      bytes_done_ += s.size();
      std::string_view body = s;
      if (!body.empty() && body.back() == '\n') body.remove_suffix(1);
      if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
      if (body == opt_.delimiter) {
        if (!any) r.line = in_->line;  // an empty document: extraction counts it
        return true;
      }
      if (!any) r.line = in_->line;
      any = true;
      r.data.append(s);
    }
    in_.reset();
    // The text after the last delimiter is a document unless it is blank.
    if (any && !is_blank(r.data)) return true;
    r.data.clear();
  }
}

bool DocumentReader::next(std::vector<std::string>& out, size_t max_bytes) {
  out.clear();
  std::vector<Record> recs;
  for (;;) {
    recs.clear();
    size_t bytes = 0;
    while (bytes < max_bytes || recs.empty()) {
      Record r;
      if (!read_record(r)) break;
      bytes += r.data.size();
      recs.push_back(std::move(r));
    }
    if (recs.empty()) return false;

    const int64_t n = int64_t(recs.size());
    std::vector<std::string> texts(recs.size()), errors(recs.size());
    std::vector<uint8_t> invalid(recs.size(), 0), struck(recs.size(), 0);
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i) {
      Record& r = recs[size_t(i)];
      const std::string& path = files_[r.file];
      try {
        if (opt_.jsonl) {
          std::string line = std::move(r.data);
          if (!is_valid_utf8(line)) {
            line = sanitize_utf8(line);
            invalid[i] = 1;
          }
          nlohmann::json j;
          try {
            j = parse_json(line);
          } catch (const nlohmann::json::exception& e) {
            fail(path, ":", r.line, ": not valid JSON (", e.what(), "); each line of a JSON Lines",
                 " file must be one JSON object with a string field \"", opt_.field,
                 "\": fix or remove the line");
          }
          check(j.is_object(), path, ":", r.line, ": a JSON ", j.type_name(),
                ", not an object; each line must be a JSON object with a string field \"",
                opt_.field, "\": fix or remove the line");
          auto it = j.find(opt_.field);
          check(it != j.end(), path, ":", r.line, ": the JSON object has no field \"", opt_.field,
                "\": fix the line, or name the text field with --field");
          check(it->is_string(), path, ":", r.line, ": field \"", opt_.field, "\" is a ",
                it->type_name(), ", not a string: fix the line");
          texts[i] = std::move(it->get_ref<std::string&>());
        } else {
          texts[i] = std::move(r.data);
          if (!is_valid_utf8(texts[i])) invalid[i] = 1;
        }
        if (opt_.strip_overstrike && texts[i].find('\b') != std::string::npos) {
          texts[i] = strip_overstrike(texts[i]);
          struck[i] = 1;
        }
      } catch (const std::exception& e) {  // no exception may leave an OpenMP region
        errors[i] = e.what();
      }
    }
    for (size_t i = 0; i < recs.size(); ++i) {
      if (!errors[i].empty()) throw Error(errors[i]);
      if (is_blank(texts[i])) {
        ++stats_.empty_skipped;
        continue;
      }
      stats_.invalid_utf8 += invalid[i];
      stats_.overstruck += struck[i];
      ++stats_.documents;
      out.push_back(std::move(texts[i]));
    }
    if (!out.empty()) return true;
  }
}

MemoryDocuments::MemoryDocuments(std::vector<std::string> docs) : docs_(std::move(docs)) {
  for (const std::string& d : docs_) bytes_total_ += d.size();
}

bool MemoryDocuments::next(std::vector<std::string>& out, size_t max_bytes) {
  out.clear();
  size_t bytes = 0;
  while (next_ < docs_.size() && (bytes < max_bytes || out.empty())) {
    std::string& d = docs_[next_++];
    bytes += d.size();
    bytes_done_ += d.size();
    if (is_blank(d)) {
      ++stats_.empty_skipped;
      continue;
    }
    stats_.invalid_utf8 += !is_valid_utf8(d);
    ++stats_.documents;
    out.push_back(std::move(d));
  }
  return !out.empty();
}

std::vector<std::string> read_documents(const std::vector<std::string>& files,
                                        const DocumentOptions& options, DocumentStats* stats) {
  DocumentReader reader(files, options);
  std::vector<std::string> all, chunk;
  while (reader.next(chunk, size_t(64) << 20))
    for (std::string& d : chunk) all.push_back(std::move(d));
  if (stats) *stats = reader.stats();
  return all;
}

}  // namespace speedrun
