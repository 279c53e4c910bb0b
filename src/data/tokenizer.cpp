#include "data/tokenizer.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>

#include "core/error.h"
#include "data/bpe_merge.h"
#include "data/bpe_pretokenize.h"
#include "data/utf8.h"

namespace speedrun {
namespace fs = std::filesystem;

namespace {

uint64_t hash_bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  auto mix = [&](uint64_t v) {
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  };
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    mix(v);
  }
  if (n > 0) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    mix(v);
  }
  h ^= h >> 29;
  h *= 0x94D049BB133111EBull;
  return h ^ (h >> 32);
}

constexpr size_t kSmallPiece = 128;  // longer pieces merge with the heap (bpe_merge.h)
constexpr size_t kCachedPiece = 256;  // longer pieces are rare; they are not cached

// Per-thread cache: piece bytes -> ids, for pieces that BPE splits into several tokens
// (pieces that are one token are found in the vocabulary table just as fast). Open
// addressing over arenas; at 32K words it starts over, so it stays bounded (~2 MB for
// ordinary text, 40 MB at worst when every word is 256 bytes of single-byte tokens).
class WordCache {
 public:
  static constexpr size_t kSlots = size_t{1} << 16;

  // The ids cached for `piece` (hash h) in `owner`'s vocabulary, or an empty span.
  std::span<const int32_t> find(uint64_t owner, uint64_t h, std::string_view piece) {
    if (owner != owner_) reset(owner);
    for (size_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return {};
      if (s.hash == h && s.key_len == piece.size() &&
          std::memcmp(keys_.data() + s.key_off, piece.data(), piece.size()) == 0)
        return {ids_.data() + s.ids_off, s.n_ids};
    }
  }

  void insert(uint64_t h, std::string_view piece, std::span<const int32_t> ids) {
    if (count_ >= kSlots / 2) reset(owner_);
    size_t i = h & (kSlots - 1);
    while (slots_[i].key_len != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = {h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(ids_.size()),
                 static_cast<uint16_t>(piece.size()), static_cast<uint16_t>(ids.size())};
    keys_.append(piece);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    ++count_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, ids_off = 0;
    uint16_t key_len = 0, n_ids = 0;  // key_len 0: empty slot (pieces are never empty)
  };
  void reset(uint64_t owner) {
    owner_ = owner;
    slots_.assign(kSlots, Slot{});
    keys_.clear();
    ids_.clear();
    count_ = 0;
  }
  uint64_t owner_ = 0;  // serial of the tokenizer whose words these are
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t count_ = 0;
};

struct Scratch {
  WordCache cache;
  std::vector<uint32_t> starts;
  std::vector<int32_t> ids;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

std::atomic<uint64_t> next_serial{1};

}  // namespace

fs::path gpt2_tokenizer_dir() {
  if (const char* d = std::getenv("SPEEDRUN_GPT2_DIR"); d && *d) return d;
  if (const char* c = std::getenv("SPEEDRUN_CACHE"); c && *c) return fs::path(c) / "gpt2";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : ".") / ".cache" / "speedrun" / "gpt2";
}

struct Tokenizer::Impl {
  BpeVocab vocab;
  std::string blob;                 // every ordinary token's bytes, back to back
  std::vector<uint32_t> offset;     // [V + 1] token id -> start in blob
  std::vector<uint64_t> table;      // open addressing: (hash high 32 bits << 32) | (id + 1)
  uint64_t mask = 0;
  int32_t byte_id[256];             // single byte -> its token id
  Pretokenizer pre;
  uint64_t serial = next_serial.fetch_add(1);

  std::string_view bytes(int32_t id) const {
    return {blob.data() + offset[id], offset[id + 1] - offset[id]};
  }

  // Ordinary token with exactly these bytes (its id is also its merge rank), or -1.
  int32_t find(uint64_t h, std::string_view s) const {
    const uint64_t tag = h >> 32;
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
      const uint64_t e = table[i];
      if (e == 0) return -1;
      const int32_t id = static_cast<int32_t>((e & 0xFFFFFFFFu) - 1);
      if ((e >> 32) == tag && bytes(id) == s) return id;
    }
  }
  int32_t find(std::string_view s) const { return find(hash_bytes(s), s); }

  void encode_piece(std::string_view piece, std::vector<int32_t>& out, Scratch& sc) const {
    if (piece.size() == 1) {
      out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
      return;
    }
    const uint64_t h = hash_bytes(piece);
    if (const int32_t id = find(h, piece); id >= 0) {
      out.push_back(id);
      return;
    }
    const bool cacheable = piece.size() <= kCachedPiece;
    if (cacheable) {
      const auto hit = sc.cache.find(serial, h, piece);
      if (!hit.empty()) {
        out.insert(out.end(), hit.begin(), hit.end());
        return;
      }
    }
    auto rank = [this](std::string_view s) {
      const int32_t id = find(s);
      return id < 0 ? bpe::kNoRank : static_cast<uint32_t>(id);
    };
    if (piece.size() <= kSmallPiece) bpe::merge_small(piece, rank, sc.starts);
    else bpe::merge_heap(piece, rank, sc.starts);
    const size_t first = out.size();
    for (size_t k = 0; k + 1 < sc.starts.size(); ++k)
      out.push_back(find(piece.substr(sc.starts[k], sc.starts[k + 1] - sc.starts[k])));
    if (cacheable) sc.cache.insert(h, piece, std::span(out).subspan(first));
  }
};

Tokenizer::Tokenizer(BpeVocab vocab) {
  auto impl = std::make_shared<Impl>();
  const size_t V = vocab.tokens.size();
  check(V >= 256 && V == 256 + vocab.merges.size(), "tokenizer: a vocabulary needs the 256 ",
        "bytes plus one token per merge; got ", V, " tokens for ", vocab.merges.size(), " merges");
  impl->offset.reserve(V + 1);
  for (const std::string& t : vocab.tokens) {
    impl->offset.push_back(static_cast<uint32_t>(impl->blob.size()));
    impl->blob += t;
  }
  impl->offset.push_back(static_cast<uint32_t>(impl->blob.size()));
  size_t slots = 1024;
  while (slots < 2 * V) slots *= 2;
  impl->table.assign(slots, 0);
  impl->mask = slots - 1;
  for (size_t id = 0; id < V; ++id) {
    const std::string& t = vocab.tokens[id];
    check(!t.empty() && (id < 256) == (t.size() == 1), "tokenizer: token ", id, " has ",
          t.size(), " bytes; ids 0..255 must be the single bytes and the others longer");
    const uint64_t h = hash_bytes(t);
    check(impl->find(h, t) < 0, "tokenizer: token ", id, " repeats token ", impl->find(h, t));
    uint64_t i = h & impl->mask;
    while (impl->table[i] != 0) i = (i + 1) & impl->mask;
    impl->table[i] = ((h >> 32) << 32) | (id + 1);
    if (id < 256) impl->byte_id[static_cast<unsigned char>(t[0])] = static_cast<int32_t>(id);
  }
  for (size_t i = 0; i < vocab.merges.size(); ++i) {
    const auto [l, r] = vocab.merges[i];
    const int32_t result = static_cast<int32_t>(256 + i);
    check(l >= 0 && r >= 0 && l < result && r < result &&
              vocab.tokens[l] + vocab.tokens[r] == vocab.tokens[result],
          "tokenizer: merge ", i, " (", l, ", ", r, ") does not make token ", result);
  }
  impl->vocab = std::move(vocab);
  impl_ = std::move(impl);
}

Tokenizer Tokenizer::load(const fs::path& dir) {
  const auto [vocab_json, merges] = find_bpe_files(dir);
  return load_files(vocab_json, merges);
}

Tokenizer Tokenizer::load_files(const fs::path& vocab_json, const fs::path& merges_file) {
  return Tokenizer(read_bpe_files(vocab_json, merges_file));
}

int32_t Tokenizer::eot() const { return impl_->vocab.eot(); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab.eot() + 1; }
const BpeVocab& Tokenizer::vocab() const { return impl_->vocab; }

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = sanitize_utf8(text);
    text = repaired;
  }
  Scratch& sc = scratch();
  const Impl& im = *impl_;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = im.pre.next(text, pos);
    im.encode_piece(text.substr(pos, end - pos), out, sc);
    pos = end;
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 4);
  encode_append(text, out);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(
    const std::vector<std::string_view>& texts) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  std::exception_ptr error;
  std::once_flag first_error;
  const int64_t n = static_cast<int64_t>(texts.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      out[i] = encode(texts[i]);
    } catch (...) {  // an exception must not leave an OpenMP region
      std::call_once(first_error, [&] { error = std::current_exception(); });
    }
  }
  if (error) std::rethrow_exception(error);
  return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  check(id >= 0 && id <= eot(), "tokenizer: token id ", id, " is outside the vocabulary [0, ",
        vocab_size(), ")");
  return id == eot() ? kEndOfText : impl_->bytes(id);
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (const int32_t id : ids) out += token_bytes(id);
  return out;
}

int32_t Tokenizer::token_id(std::string_view bytes) const {
  return bytes.empty() ? -1 : impl_->find(bytes);
}

void Tokenizer::save(const fs::path& dir, Layout layout) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "tokenizer: cannot create ", dir.string(), ": ", ec.message());
  if (layout == Layout::OpenAI)
    write_bpe_files(impl_->vocab, dir / "encoder.json", dir / "vocab.bpe", true);
  else
    write_bpe_files(impl_->vocab, dir / "vocab.json", dir / "merges.txt", false);
}

}  // namespace speedrun
