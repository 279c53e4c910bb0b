#include "data/tokenizer_files.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_input.h"
#include "data/tokenizer.h"

namespace speedrun {
namespace fs = std::filesystem;

namespace {

bool is_default_gpt2_dir(const fs::path& dir) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(dir, ec);
  const fs::path b = fs::weakly_canonical(gpt2_tokenizer_dir(), ec);
  return !ec && a == b;
}

// What to do about a damaged or incomplete tokenizer folder. The default folder holds
// GPT-2's files, which the script fetches again; another may hold a vocabulary trained
// with `tokenizer train`, which only training it again makes (the script would put GPT-2's
// vocabulary elsewhere and the shards made with the folder would not match it).
std::string fix_for(const fs::path& dir) {
  const std::string d = dir.empty() ? "." : dir.string();
  if (is_default_gpt2_dir(dir))
    return "delete " + d + " and run scripts/fetch_gpt2_tokenizer.sh (it holds GPT-2's files)";
  return "make the folder again: for a vocabulary trained with speedrun, re-run `speedrun "
         "tokenizer train ... -o " + d + " --overwrite`; for GPT-2's, run "
         "scripts/fetch_gpt2_tokenizer.sh and pass its folder (or point to a complete "
         "tokenizer folder)";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail("tokenizer: cannot open ", path.string(), ": ", std::strerror(errno), "; ",
         fix_for(path.parent_path()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) fail("tokenizer: cannot write ", path.string(), ": ", std::strerror(errno));
}

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {  // the alphabet stays below U+0800; tokens never need more
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Inverse of the alphabet: code point -> byte, -1 outside it.
const std::array<int16_t, 0x144>& unicode_to_byte() {
  static const std::array<int16_t, 0x144> table = [] {
    std::array<int16_t, 0x144> t;
    t.fill(-1);
    const auto& fwd = gpt2_byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return table;
}

std::string json_string(std::string_view spelled, bool ascii) {
  std::string out = "\"";
  const auto* p = reinterpret_cast<const unsigned char*>(spelled.data());
  for (size_t i = 0; i < spelled.size();) {
    char32_t c = p[i];
    size_t len = 1;
    if (c >= 0xE0) c = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F), len = 3;
    else if (c >= 0xC0) c = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F), len = 2;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || (ascii && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out.append(spelled.substr(i, len));
    }
    i += len;
  }
  return out + "\"";
}

}  // namespace

const std::array<char32_t, 256>& gpt2_byte_to_unicode() {
  // encoder.py's bytes_to_unicode(): bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF spell
  // themselves; the remaining 68 take U+0100, U+0101, ... in increasing byte order.
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = self ? static_cast<char32_t>(b) : 0x100 + n++;
    }
    return t;
  }();
  return table;
}

std::string gpt2_spell(std::string_view bytes) {
  const auto& fwd = gpt2_byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, fwd[b]);
  return out;
}

std::string gpt2_unspell(std::string_view spelled, std::string_view what) {
  const auto& inv = unicode_to_byte();
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(spelled.data());
  for (size_t i = 0; i < spelled.size();) {
    char32_t c = p[i];
    size_t len = 1;
    if (c >= 0xC0 && c < 0xE0 && i + 1 < spelled.size() && (p[i + 1] & 0xC0) == 0x80) {
      c = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F);
      len = 2;
    }
    if (c >= inv.size() || inv[c] < 0 || (len == 1 && c >= 0x80) || (len == 2 && c < 0x80))
      fail(what, ": token '", spelled, "' holds a character outside GPT-2's byte alphabet",
           " (U+0021..U+0143 without space and control characters); the file is not a",
           " byte-level BPE vocabulary or is damaged");
    out += static_cast<char>(inv[c]);
    i += len;
  }
  return out;
}

std::pair<fs::path, fs::path> find_bpe_files(const fs::path& dir) {
  const std::pair<const char*, const char*> layouts[] = {{"encoder.json", "vocab.bpe"},
                                                         {"vocab.json", "merges.txt"}};
  for (const auto& [a, b] : layouts) {
    // A folder (or another non-file) under a tokenizer file's name is said as such: "holds
    // vocab.bpe but not encoder.json" would send one looking for a missing file.
    for (const char* f : {a, b}) {
      std::error_code ec;
      const fs::file_status st = fs::status(dir / f, ec);
      check(!fs::exists(st) || fs::is_regular_file(st), "tokenizer: ", (dir / f).string(),
            " is not a regular file (", fs::is_directory(st) ? "a directory" : "a special file",
            "): remove it, then ", fix_for(dir));
    }
    const bool has_a = fs::is_regular_file(dir / a), has_b = fs::is_regular_file(dir / b);
    if (has_a && has_b) return {dir / a, dir / b};
    if (has_a != has_b)
      fail("tokenizer: ", dir.string(), " holds ", has_a ? a : b, " but not ", has_a ? b : a,
           "; the two files belong together: ", fix_for(dir));
  }
  fail("tokenizer: ", dir.string(),
       " holds neither encoder.json + vocab.bpe nor vocab.json + merges.txt; run "
       "scripts/fetch_gpt2_tokenizer.sh (puts GPT-2's into ~/.cache/speedrun/gpt2) or pass "
       "the folder that holds them (one that `speedrun tokenizer train -o` wrote)");
}

BpeVocab read_bpe_files(const fs::path& vocab_json, const fs::path& merges_file) {
  const std::string vocab_text = read_file(vocab_json);
  return parse_bpe_files(vocab_text, read_file(merges_file), vocab_json.string(),
                         merges_file.string());
}

BpeVocab parse_bpe_files(std::string_view vocab_json_text, std::string_view merges_text,
                         const std::string& vj, const std::string& mf) {
  const std::string fix = fix_for(fs::path(vj).parent_path());
  // gpt2_unspell's error says what is wrong; the fix depends on this folder.
  auto unspell = [&fix](std::string_view spelled, const std::string& what) {
    try {
      return gpt2_unspell(spelled, what);
    } catch (const Error& e) {
      fail(e.what(), ": ", fix);
    }
  };
  nlohmann::json j;
  try {
    j = parse_json(vocab_json_text);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer: ", vj, " is not valid JSON (", e.what(), "); ", fix);
  }
  check(j.is_object(), "tokenizer: ", vj, " must be a JSON object {token: id}; ", fix);
  const size_t n = j.size();
  check(n >= 257, "tokenizer: ", vj, " has ", n, " entries; a byte-level vocabulary has the ",
        "256 bytes and <|endoftext|> at least; ", fix);

  BpeVocab v;
  v.tokens.resize(n - 1);
  std::vector<bool> seen(n, false);
  int64_t eot = -1;
  for (const auto& [key, value] : j.items()) {
    check(value.is_number_integer() && value.get<int64_t>() >= 0 &&
              value.get<int64_t>() < static_cast<int64_t>(n),
          "tokenizer: ", vj, ": token '", key, "' has id ", value.dump(), "; ids must be the ",
          "integers 0..", n - 1, "; ", fix);
    const int64_t id = value.get<int64_t>();
    check(!seen[id], "tokenizer: ", vj, ": id ", id, " is used twice; ", fix);
    seen[id] = true;
    if (key == kEndOfText) {
      eot = id;
      continue;
    }
    check(id < static_cast<int64_t>(n) - 1, "tokenizer: ", vj, ": ordinary token '", key,
          "' has the last id ", id, ", which belongs to <|endoftext|>; ", fix);
    v.tokens[id] = unspell(key, vj);
  }
  check(eot == static_cast<int64_t>(n) - 1, "tokenizer: ", vj, ": <|endoftext|> ",
        eot < 0 ? std::string("is missing") : "has id " + std::to_string(eot),
        "; it must have the last id, ", n - 1, "; ", fix);

  std::unordered_map<std::string_view, int32_t> id_of;
  id_of.reserve(n);
  for (size_t id = 0; id + 1 < n; ++id) {
    const std::string& t = v.tokens[id];
    check(id >= 256 || t.size() == 1, "tokenizer: ", vj, ": id ", id, " is '", gpt2_spell(t),
          "', but ids 0..255 must be the 256 single bytes (GPT-2's numbering); ", fix);
    check(id < 256 || t.size() >= 2, "tokenizer: ", vj, ": id ", id, " is '", gpt2_spell(t),
          "', a single byte; only ids 0..255 may be single bytes; ", fix);
    const bool fresh = id_of.emplace(t, static_cast<int32_t>(id)).second;
    check(fresh, "tokenizer: ", vj, ": token '", gpt2_spell(t), "' appears twice; ", fix);
  }

  const std::string_view text = merges_text;
  size_t line_no = 0, pos = 0;
  const size_t want = n - 1 - 256;
  v.merges.reserve(want);
  size_t empty_line = 0;  // first empty line: only empty lines may follow it
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_no == 1 && line.starts_with("#version")) continue;
    if (line.empty()) {
      if (empty_line == 0) empty_line = line_no;
      continue;
    }
    check(empty_line == 0, "tokenizer: ", mf, " line ", empty_line,
          ": empty line inside the merge list; ", fix);
    const size_t sp = line.find(' ');
    check(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
              line.find(' ', sp + 1) == std::string_view::npos,
          "tokenizer: ", mf, " line ", line_no, ": expected two tokens separated by one space, ",
          "got '", line, "'; ", fix);
    const std::string where = mf + " line " + std::to_string(line_no);
    const std::string left = unspell(line.substr(0, sp), where);
    const std::string right = unspell(line.substr(sp + 1), where);
    const size_t rank = v.merges.size();
    check(rank < want, "tokenizer: ", where, ": more merges than ", vj, " has merged tokens (",
          want, "); the two files do not belong together; ", fix);
    const int32_t result = static_cast<int32_t>(256 + rank);
    int32_t ids[2];
    for (int k = 0; k < 2; ++k) {
      const std::string& part = k == 0 ? left : right;
      auto it = id_of.find(part);
      check(it != id_of.end() && it->second < result, "tokenizer: ", where, ": '",
            gpt2_spell(part), "' is not a token made by an earlier merge; ", fix);
      ids[k] = it->second;
    }
    check(left + right == v.tokens[result], "tokenizer: ", where, ": merge '", line,
          "' makes '", gpt2_spell(left + right), "' but ", vj, " gives id ", result, " to '",
          gpt2_spell(v.tokens[result]), "'; the two files do not belong together; ", fix);
    v.merges.emplace_back(ids[0], ids[1]);
  }
  check(v.merges.size() == want, "tokenizer: ", mf, " has ", v.merges.size(), " merges but ",
        vj, " has ", want, " merged tokens; the file is truncated or the two do not belong ",
        "together; ", fix);
  return v;
}

void write_bpe_files(const BpeVocab& vocab, const fs::path& vocab_json,
                     const fs::path& merges_file, bool ascii_json) {
  check(vocab.tokens.size() == 256 + vocab.merges.size(), "tokenizer: cannot write ",
        vocab_json.string(), ": ", vocab.tokens.size(), " tokens for ", vocab.merges.size(),
        " merges (must be 256 more)");
  std::string js = "{";
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    js += json_string(gpt2_spell(vocab.tokens[id]), ascii_json);
    js += ": " + std::to_string(id) + ", ";
  }
  js += json_string(kEndOfText, ascii_json) + ": " + std::to_string(vocab.eot()) + "}";
  std::string bpe = "#version: 0.2\n";
  for (const auto& [l, r] : vocab.merges)
    bpe += gpt2_spell(vocab.tokens[l]) + " " + gpt2_spell(vocab.tokens[r]) + "\n";
  write_file(vocab_json, js);
  write_file(merges_file, bpe);
}

}  // namespace speedrun
