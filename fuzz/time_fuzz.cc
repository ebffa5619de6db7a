// Fuzzes the RFC 3339 and duration parsers: no crash, and whatever parses round-trips.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/time_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto t = jobsched::ParseRfc3339(text); t.ok()) {
    auto again = jobsched::ParseRfc3339(jobsched::FormatRfc3339(*t));
    if (!again.ok() || *again != *t) std::abort();
  }
  if (auto d = jobsched::ParseDuration(text); d.ok()) {
    auto again = jobsched::ParseDuration(jobsched::FormatDuration(*d));
    if (!again.ok() || *again != *d) std::abort();
  }
  return 0;
}
