// AtomicFileWriter: writes a file so that a crash never leaves a half-written file under
// its real name. Data goes to "<path>.tmp.<pid>"; commit() fsyncs it, renames it over
// `path` and fsyncs the directory. Destroyed without commit() (an exception, a failed
// write), it removes the temporary file and leaves `path` as it was.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace speedrun {

class AtomicFileWriter {
 public:
  // `what` names the file's role in error messages ("shard", "checkpoint").
  AtomicFileWriter(std::string path, std::string_view what);
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  void write(const void* data, size_t n);
  void commit();

  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, temp_, what_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace speedrun
