#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace speedrun {

int open_regular_file(const std::string& path, std::string_view what, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) fail(what, " ", path, ": no such file (check the path)");
    fail(what, " ", path, ": cannot open: ", std::strerror(e), " (check the path and its permissions)");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(what, " ", path, ": cannot stat: ", std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(what, " ", path, ": is a directory, not a file (give the file itself, or a glob such as ",
         path, "/*.bin)");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(what, " ", path, ": is not a regular file (give the path of a file on disk)");
  }
  *size = size_t(st.st_size);
  return fd;
}

MappedFile MappedFile::open(const std::string& path, std::string_view what) {
  size_t size = 0;
  int fd = open_regular_file(path, what, &size);
  MappedFile f;
  f.path_ = path;
  f.size_ = size;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) fail(what, " ", path, ": cannot map ", size, " bytes: ", std::strerror(e));
    f.data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {
  o.path_.clear();
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    o.path_.clear();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  path_.clear();
}

}  // namespace speedrun
