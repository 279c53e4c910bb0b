// The wall-clock time as UTC text, for files and reports that say when they were made.
#pragma once
#include <string>

namespace speedrun {

// Now in UTC, formatted by strftime's `format` (ISO 8601 by default: 2026-12-07T13:45:00Z).
std::string utc_now(const char* format = "%Y-%m-%dT%H:%M:%SZ");

}  // namespace speedrun
