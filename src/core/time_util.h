// Text forms of instants and durations used everywhere jobsched talks to people or programs.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <string>
#include <string_view>

namespace jobsched {

// Parses an RFC 3339 instant: "2024-03-10T07:00:00Z", "2024-03-10T02:00:00.250-05:00".
// 'T' may be 't' or a space, 'Z' may be 'z'; a fraction of up to 9 digits is truncated to
// milliseconds. Years 0000-9999. Errors are kInvalidArgument and say which part is wrong.
Result<TimePoint> ParseRfc3339(std::string_view text);
// Whether `t` has a four-digit year in UTC (0000-9999): what RFC 3339 text can carry.
bool InRfc3339Range(TimePoint t);

// "2026-12-01T10:00:00.000Z": UTC with milliseconds (the API's form).
std::string FormatRfc3339(TimePoint t);
// "2024-03-10T07:00:00Z": UTC, whole seconds (the fractional part is dropped).
std::string FormatRfc3339Seconds(TimePoint t);

// Parses a duration as a sequence of <integer><unit>, unit one of ms, s, m, h, d, each unit at
// most once and largest first: "90s", "5m", "1h30m", "250ms". The total must be positive and at
// most 100 years.
Result<Duration> ParseDuration(std::string_view text);
// The shortest form ParseDuration reads back to the same value: "1h30m", "250ms", "0s".
std::string FormatDuration(Duration d);

}  // namespace jobsched
