// How much memory this process may still take, so that a block too large for it is refused
// with a message naming the fix instead of the kernel's OOM killer ending the process
// without one (Linux lets an allocation beyond the free memory succeed and kills whoever
// touches the pages; the CPU backend touches every page it allocates at once).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace speedrun {

// Bytes this process may still allocate and touch: the kernel's MemAvailable plus free
// swap, capped by the room left under the memory limit of each cgroup (v2) the process is
// in, up to the root. nullopt where /proc/meminfo cannot be read (not Linux).
std::optional<size_t> host_memory_available();
// The same for a process whose /proc/meminfo text is `meminfo` and whose cgroup levels,
// innermost first, have these memory.max and memory.current texts (pairs of files read
// from /sys/fs/cgroup; "max" or missing: no limit). Exposed for tests.
struct CgroupLevel {
  std::string max, current;
};
std::optional<size_t> host_memory_available(const std::string& meminfo,
                                            const std::vector<CgroupLevel>& cgroups);

// What to lower when a block does not fit, on any device (the message before it names the
// block's largest tensor, which says which half applies).
inline constexpr const char* kMemoryAdvice =
    "Activations grow with the tokens of a micro-batch: lower --seq-len, split each step into "
    "more micro-batches (train's --grad-accum, bench's --micro-batch), or lower --batch; the "
    "weights, their gradients and the optimizer's state grow with the model: --vocab, "
    "--layers, --heads x --head-dim";

// The CPU backend's out-of-memory message: what was asked, what this process has (`room`:
// host_memory_available(); nullopt: unknown) and what to lower.
std::string host_oom_message(size_t asked, std::optional<size_t> room);

}  // namespace speedrun
