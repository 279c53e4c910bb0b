// Token shard files (data/shard.h): the header check on bytes, and the same bytes as a
// file through read_shard_header and Shard::open, which must agree with it.
#include "data/shard.h"

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t n = -1, n_header = -1;
  const bool ok = fuzz::parses("fuzz.bin", [&] { n = speedrun::check_shard_bytes(data, size, "fuzz.bin"); });
  fuzz::MemFile file(fuzz::text(data, size));
  const bool ok_header = fuzz::parses(file.path(), [&] { n_header = speedrun::read_shard_header(file.path()); });
  fuzz::require(ok == ok_header && n == n_header, "read_shard_header disagrees with check_shard_bytes");
  fuzz::parses(file.path(), [&] {
    const speedrun::Shard s = speedrun::Shard::open(file.path());
    fuzz::require(ok && s.size() == n, "Shard::open disagrees with check_shard_bytes");
    uint64_t sum = 0;
    for (int64_t i = 0; i < s.size(); ++i) sum += s.tokens()[i];  // every token is readable
    fuzz::require(sum <= uint64_t(s.size()) * 65535, "token sum");
  });
  if (!ok) return 0;
  fuzz::require(uint64_t(speedrun::kShardHeaderBytes) + 2 * uint64_t(n) == size,
                "an accepted shard's size is not 1024 + 2N");
  return 0;
}
