// safetensors files (core/safetensors.h): header length, header JSON, dtypes, shapes and
// data offsets. Every tensor of an accepted file must be readable in full, and the file
// opened from disk must give the same tensors.
#include "core/safetensors.h"

#include "fuzz_common.h"

namespace {

uint64_t touch(const speedrun::SafetensorsFile::View& v) {
  uint64_t sum = 0;
  const auto* p = static_cast<const uint8_t*>(v.data);
  for (size_t i = 0; i < v.bytes; ++i) sum += p[i];
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz.safetensors";
  std::vector<std::string> names;
  uint64_t sum = 0;
  const bool ok = fuzz::parses(name, [&] {
    const auto f = speedrun::SafetensorsFile::from_bytes(data, size, name);
    names = f.names();
    for (const std::string& n : names) {
      const auto v = f.get(n);
      uint64_t elems = 1;
      for (int64_t d : v.shape) elems *= uint64_t(d);
      fuzz::require(elems * speedrun::dtype_size(v.dtype) == v.bytes, "size != dtype * shape");
      sum += touch(v);
    }
    fuzz::require(!fuzz::parses(name, [&] { f.get("\x01 no such tensor"); }),
                  "get() of a missing name returned");
  });
  fuzz::MemFile file(fuzz::text(data, size));
  fuzz::parses(file.path(), [&] {
    const auto f = speedrun::SafetensorsFile::open(file.path());
    fuzz::require(ok && f.names() == names, "open() disagrees with from_bytes()");
    uint64_t s = 0;
    for (const std::string& n : names) s += touch(f.get(n));
    fuzz::require(s == sum, "open() reads other bytes than from_bytes()");
  });
  return 0;
}
