#include "core/stall_watchdog.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace speedrun {

namespace {
std::atomic<StallWatchdog*> g_process_dog{nullptr};
}  // namespace

void StallWatchdog::set_process_watchdog(StallWatchdog* dog) { g_process_dog.store(dog); }

StallWatchdog::Watch StallWatchdog::watch_process_wait(std::string what) {
  StallWatchdog* dog = g_process_dog.load();
  return dog ? dog->watch(std::move(what)) : Watch();
}

StallWatchdog::Watch& StallWatchdog::Watch::operator=(Watch&& o) noexcept {
  if (this != &o) {
    end();
    dog_ = o.dog_;
    id_ = o.id_;
    o.dog_ = nullptr;
  }
  return *this;
}

void StallWatchdog::Watch::end() {
  if (dog_) dog_->close(id_);
  dog_ = nullptr;
}

StallWatchdog::StallWatchdog(Options o) : o_(std::move(o)) {
  if (!o_.on_stall) o_.on_stall = &StallWatchdog::exit_process;
  if (on() && o_.thread) thread_ = std::thread([this] { loop(); });
}

StallWatchdog::~StallWatchdog() {
  StallWatchdog* self = this;
  g_process_dog.compare_exchange_strong(self, nullptr);
  {
    std::lock_guard<std::mutex> g(m_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StallWatchdog::Watch StallWatchdog::watch(std::string what) {
  if (!on()) return Watch();
  std::lock_guard<std::mutex> g(m_);
  const uint64_t id = next_id_++;
  open_.emplace(id, Mark{std::move(what), Clock::now()});
  return Watch(this, id);
}

void StallWatchdog::close(uint64_t id) {
  std::lock_guard<std::mutex> g(m_);
  open_.erase(id);
}

std::string StallWatchdog::message_locked(Clock::time_point now) const {
  if (open_.empty()) return "";
  const double waited =
      std::chrono::duration<double>(now - open_.begin()->second.since).count();
  std::string chain;
  for (const auto& [id, mark] : open_) chain += (chain.empty() ? "" : " > ") + mark.what;
  // A process of one names only the GPU: there is no other rank to wait for.
  const char* causes = o_.who.empty()
                           ? "The GPU did not finish its work (a kernel that does not end, a "
                             "GPU fault)"
                           : "Another rank may be frozen or gone without its process ending "
                             "(a stopped process, a lost network link), or a GPU did not "
                             "finish its work (a kernel that does not end, a GPU fault)";
  std::string text = fmt::format(
      "{}no progress for {:.0f} s (the limit is {:g} s) while waiting for: {}. {}; this "
      "process ends so that the job does not hang",
      o_.who.empty() ? "" : o_.who + ": ", std::max(0.0, waited), o_.limit_s, chain, causes);
  if (!o_.advice.empty()) text += ". " + o_.advice;
  return text;
}

std::string StallWatchdog::message(Clock::time_point now) const {
  std::lock_guard<std::mutex> g(m_);
  return message_locked(now);
}

bool StallWatchdog::check(Clock::time_point now) {
  std::string text;
  {
    std::lock_guard<std::mutex> g(m_);
    if (fired_ || open_.empty()) return false;
    const double waited =
        std::chrono::duration<double>(now - open_.begin()->second.since).count();
    if (!(waited > o_.limit_s)) return false;
    fired_ = true;
    text = message_locked(now);
  }
  o_.on_stall(text);  // outside the lock: it may exit, or (in tests) open marks itself
  return true;
}

void StallWatchdog::loop() {
  // A quarter of the limit between checks: a stall is seen within 1.25 x the limit.
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::clamp(o_.limit_s / 4, 1e-3, 1.0)));
  std::unique_lock<std::mutex> lk(m_);
  while (!stopping_) {
    wake_.wait_for(lk, period, [this] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    check(Clock::now());
    lk.lock();
  }
}

void StallWatchdog::exit_process(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace speedrun
