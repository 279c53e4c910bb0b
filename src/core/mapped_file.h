// MappedFile: a whole file mapped read-only (move-only; unmapped on destruction).
// Used for token shards and safetensors checkpoints, so big files cost no copy.
// A file that shrinks while it is mapped (another program truncates it or rewrites it in
// place) makes the reads past its new end fault with SIGBUS; for a mapped file that ends the
// process with exit status 1 and "error: <what> <path>: the file shrank while it was being
// read ...", instead of a bare crash (a SIGBUS handler installed on the first mapping,
// passing other faults on to the handler before it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace speedrun {

class MappedFile {
 public:
  // Maps `path` read-only. `what` names the file's role in error messages ("shard",
  // "checkpoint"). Missing files, directories and unreadable files throw Error.
  // An empty file maps to data() == nullptr, size() == 0.
  static MappedFile open(const std::string& path, std::string_view what);

  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool is_open() const { return !path_.empty(); }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int guard_ = -1;  // the SIGBUS handler's slot for this mapping (-1: none)
};

// Opens `path` for reading with the same checks and messages as MappedFile::open
// (exists, is a regular file, readable). Returns the descriptor; the caller closes it.
// The file's size is stored in *size.
int open_regular_file(const std::string& path, std::string_view what, size_t* size);

}  // namespace speedrun
