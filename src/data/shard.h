// Token shards (SPEC.md, Data): a header of 256 little-endian int32 — [0] magic 20240520,
// [1] version 1, [2] token count N — then N uint16 tokens; the file is exactly 1024 + 2N
// bytes. The format of llm.c and of the speedrun record's fineweb_*.bin files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace speedrun {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderBytes = 256 * 4;

// A validated shard, mapped read-only (move-only; unmapped on destruction).
class Shard {
 public:
  // Maps and validates `path`; any defect (missing, a directory, short, bad magic or
  // version, size != 1024 + 2N) throws Error naming the file.
  static Shard open(const std::string& path);

  const uint16_t* tokens() const { return tokens_; }  // [size()]
  int64_t size() const { return n_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  const uint16_t* tokens_ = nullptr;
  int64_t n_ = 0;
};

// Validates the shard's header and size without mapping its tokens; returns N.
int64_t read_shard_header(const std::string& path);

// The checks of Shard::open on a whole shard's bytes in memory (`name` in the errors);
// returns N.
int64_t check_shard_bytes(const uint8_t* bytes, uint64_t size, const std::string& name);

// Writes tokens[0..n) as a shard. Written to "<path>.tmp.<pid>", fsynced and renamed, so
// a crash never leaves a half shard under `path`. n must fit the int32 header.
void write_shard(const std::string& path, const uint16_t* tokens, int64_t n);

// A fingerprint of a shard's content (16 hex digits): its size and 16 samples of 4 KiB
// spread over it, the header and the end included (all of a file below 64 KiB). A
// checkpoint records it for each training shard, so that a resume notices a shard
// regenerated under the same name and size (another tokenizer, another order) without
// reading gigabytes. Read with pread, not mapped: a file cut short meanwhile gives an
// Error naming it, never SIGBUS.
std::string shard_sample_hash(const std::string& path);

// Files matching the glob(3) `pattern`, sorted by path (byte order, as Python's sorted()).
// No match throws "no files match <what> '<pattern>'"; `what` names the flag ("--train").
std::vector<std::string> expand_glob(const std::string& pattern, const char* what);

}  // namespace speedrun
