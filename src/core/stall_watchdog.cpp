#include "core/stall_watchdog.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>

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
  if (on()) {
    std::lock_guard<std::mutex> g(m_);
    start_thread_locked();
  }
}

void StallWatchdog::start_thread_locked() {
  if (o_.thread && !thread_.joinable()) thread_ = std::thread([this] { loop(); });
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

StallWatchdog::Watch StallWatchdog::watch(std::string what, double limit_s) {
  if (!watching()) return Watch();
  std::lock_guard<std::mutex> g(m_);
  const uint64_t id = next_id_++;
  open_.emplace(id, Mark{std::move(what), Clock::now(), std::max(limit_s, o_.limit_s)});
  return Watch(this, id);
}

StallWatchdog::Watch StallWatchdog::add_probe(Probe probe) {
  std::lock_guard<std::mutex> g(m_);
  const uint64_t id = next_id_++;
  probes_.emplace(id, std::move(probe));
  probe_count_ = int(probes_.size());
  start_thread_locked();
  return Watch(this, id);
}

void StallWatchdog::close(uint64_t id) {
  // Under the lock that check() asks the probes under: once a probe's Watch has ended, the
  // probe is not running and is never called again.
  std::lock_guard<std::mutex> g(m_);
  open_.erase(id);
  probes_.erase(id);
  probe_count_ = int(probes_.size());
}

double StallWatchdog::limit_locked() const {
  double limit = o_.limit_s;
  for (const auto& [id, mark] : open_) limit = std::max(limit, mark.limit_s);
  return limit;
}

std::string StallWatchdog::chain_locked() const {
  std::string chain;
  for (const auto& [id, mark] : open_) chain += (chain.empty() ? "" : " > ") + mark.what;
  return chain;
}

std::string StallWatchdog::failure_message_locked(const std::string& failure) const {
  std::string text = (o_.who.empty() ? "" : o_.who + ": ") + failure +
                     "; this process ends so that the job does not hang";
  if (!open_.empty()) text += " (it was waiting for: " + chain_locked() + ")";
  if (!o_.failure_advice.empty()) text += ". " + o_.failure_advice;
  return text;
}

std::string StallWatchdog::message_locked(Clock::time_point now, double unscheduled_s) const {
  if (open_.empty()) return "";
  const double waited =
      std::chrono::duration<double>(now - open_.begin()->second.since).count();
  const std::string chain = chain_locked();
  // This process did not run for longer than the limit: the wait is its own doing, and the
  // other ranks have likely ended the job meanwhile (their watchdogs saw it stop).
  if (unscheduled_s > limit_locked())
    return fmt::format(
        "{}this process did not run for {:.0f} s (it was stopped: SIGSTOP or Ctrl-Z, a "
        "suspended machine, or memory swapped out) while waiting for: {}; the limit is {:g} "
        "s, so the other ranks have likely ended the job, and this process ends too",
        o_.who.empty() ? "" : o_.who + ": ", unscheduled_s, chain, limit_locked());
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
      o_.who.empty() ? "" : o_.who + ": ", std::max(0.0, waited), limit_locked(), chain, causes);
  if (!o_.advice.empty()) text += ". " + o_.advice;
  return text;
}

std::string StallWatchdog::message(Clock::time_point now) const {
  std::lock_guard<std::mutex> g(m_);
  return message_locked(now);
}

bool StallWatchdog::check(Clock::time_point now, double unscheduled_s) {
  std::string text;
  {
    std::lock_guard<std::mutex> g(m_);
    if (fired_) return false;
    for (const auto& [id, probe] : probes_) {
      std::string failure;
      try {
        failure = probe();
      } catch (const std::exception& e) {  // a probe that cannot ask has failed too
        failure = e.what();
      }
      if (failure.empty()) continue;
      fired_ = true;
      text = failure_message_locked(failure);
      break;
    }
    if (!fired_) {
      if (open_.empty() || !on()) return false;
      const double waited =
          std::chrono::duration<double>(now - open_.begin()->second.since).count();
      if (!(waited > limit_locked())) return false;
      fired_ = true;
      text = message_locked(now, unscheduled_s);
    }
  }
  o_.on_stall(text);  // outside the lock: it may exit, or (in tests) open marks itself
  return true;
}

void StallWatchdog::loop() {
  // A quarter of the limit between checks, at most a second: a stall is seen within 1.25 x
  // the limit, a probe's failure within a second (a second with the limit off).
  const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
      on() ? std::clamp(o_.limit_s / 4, 1e-3, 1.0) : 1.0));
  std::unique_lock<std::mutex> lk(m_);
  while (!stopping_) {
    const Clock::time_point asleep = Clock::now();
    wake_.wait_for(lk, period, [this] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    const Clock::time_point now = Clock::now();
    check(now, std::chrono::duration<double>(now - asleep - period).count());
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
