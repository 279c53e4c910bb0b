#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/error.h"

namespace speedrun {

static_assert(std::endian::native == std::endian::little,
              "shards are little-endian; this build assumes a little-endian host");

namespace {

// Checks a shard's first 1024 bytes against the file's size; returns N.
int64_t validate_header(const std::string& path, const uint8_t* header, uint64_t file_size) {
  int32_t h[3];
  std::memcpy(h, header, sizeof h);
  check(h[0] == kShardMagic, "shard ", path, ": header magic ", h[0], " != ", kShardMagic,
        ": not a speedrun/llm.c token shard (was it written by `speedrun prepare`?)");
  check(h[1] == kShardVersion, "shard ", path, ": header version ", h[1], " != ", kShardVersion,
        ": unsupported shard version (re-create it with `speedrun prepare`)");
  check(h[2] >= 0, "shard ", path, ": header token count ", h[2],
        " is negative: corrupt header (re-create it with `speedrun prepare`)");
  const int64_t n = h[2];
  const uint64_t want = uint64_t(kShardHeaderBytes) + 2 * uint64_t(n);
  if (file_size < want)
    fail("shard ", path, ": file is ", file_size, " bytes but its header says ", n,
         " tokens, which need 1024 + 2*", n, " = ", want,
         " bytes: truncated (an interrupted copy or write? re-create or re-copy it)");
  if (file_size > want)
    fail("shard ", path, ": file is ", file_size, " bytes but its header says ", n,
         " tokens, which need 1024 + 2*", n, " = ", want, " bytes: ", file_size - want,
         " trailing bytes (not a shard, or a corrupt one: re-create it with `speedrun prepare`)");
  return n;
}

void check_min_size(const std::string& path, uint64_t size) {
  check(size >= uint64_t(kShardHeaderBytes), "shard ", path, ": file is ", size,
        " bytes, smaller than the 1024-byte header: not a token shard (was it written by "
        "`speedrun prepare`?)");
}

}  // namespace

int64_t check_shard_bytes(const uint8_t* bytes, uint64_t size, const std::string& name) {
  check_min_size(name, size);
  return validate_header(name, bytes, size);
}

Shard Shard::open(const std::string& path) {
  Shard s;
  s.file_ = MappedFile::open(path, "shard");
  s.n_ = check_shard_bytes(s.file_.data(), s.file_.size(), path);
  // The mapping is page-aligned and the header 1024 bytes, so the tokens are aligned.
  s.tokens_ = reinterpret_cast<const uint16_t*>(s.file_.data() + kShardHeaderBytes);
  return s;
}

int64_t read_shard_header(const std::string& path) {
  size_t size = 0;
  int fd = open_regular_file(path, "shard", &size);
  uint8_t header[kShardHeaderBytes];
  ssize_t got = 0;
  if (size >= size_t(kShardHeaderBytes)) {
    while (got < kShardHeaderBytes) {
      ssize_t r = ::pread(fd, header + got, size_t(kShardHeaderBytes - got), got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += r;
    }
  }
  int e = errno;
  ::close(fd);
  check_min_size(path, size);
  check(got == kShardHeaderBytes, "shard ", path, ": cannot read its header: ", std::strerror(e));
  return validate_header(path, header, size);
}

void write_shard(const std::string& path, const uint16_t* tokens, int64_t n) {
  check(n >= 0 && n <= INT32_MAX, "shard ", path, ": cannot write ", n,
        " tokens: a shard holds 0 .. 2147483647 tokens (split the data into more shards)");
  check(n == 0 || tokens != nullptr, "shard ", path, ": no token buffer given for ", n, " tokens");
  int32_t header[256] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = int32_t(n);
  AtomicFileWriter out(path, "shard");
  out.write(header, sizeof header);
  out.write(tokens, size_t(n) * sizeof(uint16_t));
  out.commit();
}

std::vector<std::string> expand_glob(const std::string& pattern, const char* what) {
  glob_t g{};
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && files.empty()))
    fail("no files match ", what, " '", pattern,
         "' (check the path; quote the pattern so the shell does not expand it; "
         "`speedrun prepare` writes shards)");
  if (rc == GLOB_NOSPACE) fail(what, " '", pattern, "': out of memory while expanding the pattern");
  if (rc != 0)
    fail(what, " '", pattern, "': cannot read a directory while expanding the pattern (check permissions)");
  std::sort(files.begin(), files.end());
  return files;
}

std::string shard_sample_hash(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, "shard ", path, ": cannot open: ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const off_t end = ::lseek(fd, 0, SEEK_END);
  check(end >= 0, "shard ", path, ": cannot read its size: ", std::strerror(errno));
  const uint64_t size = uint64_t(end);
  constexpr uint64_t kSample = 4096, kSamples = 16;
  // FNV-1a over the size, then each sample's bytes: 64 KiB at most, whatever the shard.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  };
  mix(reinterpret_cast<const uint8_t*>(&size), sizeof size);
  std::vector<uint8_t> buf(kSample);
  for (uint64_t k = 0; k < kSamples; ++k) {
    const uint64_t n = std::min(kSample, size);
    if (n == 0) break;
    // Sample k starts at k/15 of the way to the last whole sample: the first at 0 (the
    // header), the last ending at the file's end.
    const uint64_t at = (size - n) * k / (kSamples - 1);
    const ssize_t got = ::pread(fd, buf.data(), n, off_t(at));
    check(got == ssize_t(n), "shard ", path, ": could not read ", n, " bytes at offset ", at,
          " (the file changed while it was read?)");
    mix(buf.data(), n);
  }
  return fmt::format("{:016x}", h);
}

}  // namespace speedrun
