// Errors: every failure the user can cause is a speedrun::Error whose message says what
// was wrong, where (op, file, flag) and what to do. The command line prints it and exits 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace speedrun {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// fail("shard ", path, ": bad magic ", m) throws Error with the pieces streamed together.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}

// check(cond, pieces...) throws like fail() when cond is false.
template <class... Args>
inline void check(bool cond, const Args&... args) {
  if (!cond) fail(args...);
}

}  // namespace speedrun
