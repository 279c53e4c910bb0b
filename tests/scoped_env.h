// An environment variable set for a scope (tests of behaviour that reads one).
#pragma once
#include <cstdlib>
#include <optional>
#include <string>

namespace speedrun::test {

// Sets (or, given nullptr, unsets) an environment variable for a scope and restores what
// it was, even when an assertion leaves the test early: later tests see the environment
// they were started with.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace speedrun::test
