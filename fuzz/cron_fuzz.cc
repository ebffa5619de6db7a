// Fuzzes the cron parser and Next(): no input may crash, hang or break the ordering contract.
// Input: byte 0 picks a time zone, bytes 1-2 a start instant, the rest is the expression.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/cron.h"

namespace {
constexpr std::string_view kZones[] = {"UTC",           "America/New_York",
                                       "Europe/London", "Australia/Lord_Howe",
                                       "Asia/Kolkata",  "Pacific/Chatham"};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using jobsched::CronSchedule;
  if (size < 3) return 0;
  const std::string_view zone = kZones[data[0] % std::size(kZones)];
  // Any day from 2000-01-01 over ~180 years, at a varying second of the day.
  const int64_t from_s = 946684800 + int64_t{(data[1] << 8) | data[2]} * 86400 + data[1] * 337;
  const std::string_view expr(reinterpret_cast<const char*>(data + 3), size - 3);

  auto schedule = CronSchedule::Parse(expr, zone);
  if (!schedule.ok()) {
    if (schedule.status().message().empty()) std::abort();
    return 0;
  }
  jobsched::TimePoint times[8];
  const jobsched::TimePoint from = jobsched::FromUnixMillis(from_s * 1000);
  const size_t n = schedule->NextN(from, times);
  jobsched::TimePoint prev = from;
  for (size_t i = 0; i < n; ++i) {
    if (times[i] <= prev) std::abort();  // strictly increasing, strictly after from
    prev = times[i];
  }
  return 0;
}
