// What the fuzz targets share (fuzz/README.md): the input as text, files in memory for
// parsers that take a path, and the one rule of every target: a parser may reject its
// input only with speedrun::Error, whose message names the input; anything else that
// escapes (another exception, a crash, a sanitizer report, an invariant below) is a finding.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"

namespace fuzz {

inline std::string_view text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Stops the run with `what` (libFuzzer saves the input that got here).
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what.c_str());
  std::abort();
}

inline void require(bool ok, const std::string& what) {
  if (!ok) finding(what);
}

// Runs parse(); true when it returned, false when it threw speedrun::Error naming `name`.
template <class F>
bool parses(const std::string& name, F&& parse) {
  try {
    parse();
    return true;
  } catch (const speedrun::Error& e) {
    require(std::string_view(e.what()).find(name) != std::string_view::npos,
            "an error does not name its input '" + name + "': " + e.what());
    return false;
  }
}

// Runs check(); true when it returned, false when it threw speedrun::Error (for checks
// whose errors name a flag or a setting rather than a file).
template <class F>
bool passes(F&& check) {
  try {
    check();
    return true;
  } catch (const speedrun::Error&) {
    return false;
  }
}

// A file in memory (memfd), for parsers that take a path: path() is /proc/self/fd/N.
class MemFile {
 public:
  explicit MemFile(std::string_view bytes) {
    fd_ = ::memfd_create("fuzz", MFD_CLOEXEC);
    require(fd_ >= 0, "memfd_create failed");
    for (size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      require(n > 0, "writing a memfd failed");
      done += size_t(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  ~MemFile() { ::close(fd_); }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace fuzz
