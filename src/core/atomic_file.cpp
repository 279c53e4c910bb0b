#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace speedrun {

AtomicFileWriter::AtomicFileWriter(std::string path, std::string_view what)
    : path_(std::move(path)), what_(what) {
  temp_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int e = errno;
    if (e == ENOENT)
      fail(what_, " ", path_, ": cannot create ", temp_, ": ", std::strerror(e),
           " (does the directory exist?)");
    fail(what_, " ", path_, ": cannot create ", temp_, ": ", std::strerror(e),
         " (check the directory's permissions)");
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  check(fd_ >= 0 && !committed_, what_, " ", path_, ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n > (size_t(1) << 30) ? (size_t(1) << 30) : n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      fail(what_, " ", path_, ": write failed: ", std::strerror(e),
           e == ENOSPC ? " (free disk space and retry)" : "");
    }
    p += w;
    n -= size_t(w);
  }
}

void AtomicFileWriter::commit() {
  check(fd_ >= 0 && !committed_, what_, " ", path_, ": commit twice");
  if (::fsync(fd_) != 0) {
    int e = errno;
    fail(what_, " ", path_, ": fsync failed: ", std::strerror(e));
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int e = errno;
    fail(what_, " ", path_, ": close failed: ", std::strerror(e));
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    fail(what_, " ", path_, ": cannot rename ", temp_, " to it: ", std::strerror(e),
         e == EISDIR ? " (a directory has that name)" : "");
  }
  committed_ = true;
  // Make the rename itself durable; failure here does not undo a complete file.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace speedrun
