// safetensors files (the format of Hugging Face and of PyTorch's safetensors package):
// 8-byte little-endian uint64 header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then the data; offsets count from the data start.
// Checkpoints use SPEC.md's parameter names, so they load into the record's PyTorch model.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace speedrun {

// One tensor to write: `data` holds product(shape) * dtype_size(dtype) bytes, row-major.
struct TensorRecord {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // {} is a 0-dim scalar
  const void* data;
};

// Writes the tensors, in the given order and back to back, to "<path>.tmp.<pid>", fsyncs
// and renames it to `path`: a crash never leaves a half checkpoint under `path`.
void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const std::map<std::string, std::string>& metadata);

// A validated safetensors file, mapped read-only (move-only).
class SafetensorsFile {
 public:
  // Checks the header length against the file size, the JSON, every dtype (F32, F64,
  // BF16, I32, U16), shape and offsets (inside the data, size = dtype * shape, no
  // overlaps); any defect throws Error naming the file.
  static SafetensorsFile open(const std::string& path);
  // The same checks on a file's bytes in memory (kept as a copy); `name` stands for the
  // path in errors and path().
  static SafetensorsFile from_bytes(const uint8_t* bytes, size_t size, const std::string& name);

  struct View {
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;  // into the mapping; aligned for dtype when the writer kept it so
                       // (every tensor before it a multiple of its size); else memcpy it
    size_t bytes;
  };

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // A missing name throws Error listing some of the names the file has.
  View get(const std::string& name) const;
  std::vector<std::string> names() const;  // in data order (the order they were written)
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  void parse(const uint8_t* bytes, uint64_t size);  // fills the tables from the whole file

  std::string path_;
  MappedFile file_;               // the bytes of open()
  std::vector<uint8_t> owned_;    // the bytes of from_bytes()
  const uint8_t* data_start_ = nullptr;
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The dtype named `name` in a safetensors header ("F32" ...); throws for others.
DType safetensors_dtype(const std::string& name, const std::string& path);

}  // namespace speedrun
