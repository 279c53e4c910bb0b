#include "core/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>

#include <fmt/format.h>

#include "core/error.h"

namespace speedrun {

namespace {

// What the SIGBUS handler knows of the live mappings. A mapped file that shrinks while it
// is mapped (another program truncates it, or rewrites it in place) turns every read of the
// pages past its new end into a SIGBUS: the process would die with no word of why. The
// handler finds the address among these slots and prints the file's message instead.
// Lock-free, as a signal handler needs: a slot is claimed by its state 0 -> 1, filled,
// published as 2, and freed as 0.
struct GuardSlot {
  std::atomic<int> state{0};
  uintptr_t begin = 0, end = 0;
  size_t length = 0;
  char message[768];
};
constexpr int kGuardSlots = 256;  // mapped files at once (a run maps its shards one by one)
GuardSlot g_slots[kGuardSlots];
struct sigaction g_previous {};
std::once_flag g_install_once;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  for (GuardSlot& s : g_slots) {
    if (s.state.load(std::memory_order_acquire) != 2 || a < s.begin || a >= s.end) continue;
    (void)!::write(2, s.message, s.length);
    ::_exit(1);
  }
  // Not a mapped file of ours: what would have happened without this handler.
  if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction) {
    g_previous.sa_sigaction(sig, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
  } else {
    ::signal(sig, SIG_DFL);  // the faulting read runs again and ends the process the default way
  }
}

void install_sigbus_handler() {
  std::call_once(g_install_once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO;
    ::sigaction(SIGBUS, &sa, &g_previous);
  });
}

// Claims a slot for [p, p + size) with the file's message; -1 when all are taken (the file
// is then read unguarded: a SIGBUS ends the process the default way).
int guard(const void* p, size_t size, std::string_view what, const std::string& path) {
  install_sigbus_handler();
  for (int i = 0; i < kGuardSlots; ++i) {
    int free = 0;
    if (!g_slots[i].state.compare_exchange_strong(free, 1, std::memory_order_acquire)) continue;
    GuardSlot& s = g_slots[i];
    s.begin = reinterpret_cast<uintptr_t>(p);
    s.end = s.begin + size;
    const std::string m = fmt::format(
        "error: {} {}: the file shrank while it was being read (another program truncated it "
        "or rewrote it in place); restore it, write new files under a new name (or to a "
        "temporary name, then rename), and resume from the last checkpoint\n",
        what, path);
    s.length = std::min(m.size(), sizeof(s.message));
    std::memcpy(s.message, m.data(), s.length);
    s.state.store(2, std::memory_order_release);
    return i;
  }
  return -1;
}

void unguard(int slot) {
  if (slot >= 0) g_slots[slot].state.store(0, std::memory_order_release);
}

}  // namespace

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
    f.guard_ = guard(p, size, what, path);
  } else {
    ::close(fd);
  }
  return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)), guard_(std::exchange(o.guard_, -1)) {
  o.path_.clear();
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    o.path_.clear();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    guard_ = std::exchange(o.guard_, -1);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  unguard(std::exchange(guard_, -1));
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  path_.clear();
}

}  // namespace speedrun
