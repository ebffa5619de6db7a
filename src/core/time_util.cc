#include "core/time_util.h"

#include <date/date.h>

#include <charconv>
#include <cstdint>

namespace jobsched {
namespace {

// Reads exactly `n` digits at `pos`, advancing it; -1 if they are not all digits.
int ReadDigits(std::string_view s, size_t& pos, size_t n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool Expect(std::string_view s, size_t& pos, char a, char b = 0) {
  if (pos < s.size() && (s[pos] == a || (b != 0 && s[pos] == b))) {
    ++pos;
    return true;
  }
  return false;
}

Status TimeError(std::string_view text, std::string_view what) {
  std::string msg = "invalid RFC 3339 time '";
  msg += text;
  msg += "': ";
  msg += what;
  return InvalidArgument(std::move(msg));
}

}  // namespace

Result<TimePoint> ParseRfc3339(std::string_view text) {
  size_t pos = 0;
  const int year = ReadDigits(text, pos, 4);
  if (year < 0 || !Expect(text, pos, '-')) return TimeError(text, "expected YYYY-MM-DD");
  const int month = ReadDigits(text, pos, 2);
  if (month < 0 || !Expect(text, pos, '-')) return TimeError(text, "expected YYYY-MM-DD");
  const int day = ReadDigits(text, pos, 2);
  if (day < 0) return TimeError(text, "expected YYYY-MM-DD");
  if (!Expect(text, pos, 'T', 't') && !Expect(text, pos, ' ')) {
    return TimeError(text, "expected 'T' between date and time");
  }
  const int hour = ReadDigits(text, pos, 2);
  if (hour < 0 || !Expect(text, pos, ':')) return TimeError(text, "expected hh:mm:ss");
  const int minute = ReadDigits(text, pos, 2);
  if (minute < 0 || !Expect(text, pos, ':')) return TimeError(text, "expected hh:mm:ss");
  const int second = ReadDigits(text, pos, 2);
  if (second < 0) return TimeError(text, "expected hh:mm:ss");

  int64_t millis = 0;
  if (Expect(text, pos, '.')) {
    size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (text[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return TimeError(text, "fraction must have 1 to 9 digits");
    for (size_t i = digits; i < 3; ++i) millis *= 10;
  }

  int offset_minutes = 0;
  if (Expect(text, pos, 'Z', 'z')) {
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    const int oh = ReadDigits(text, pos, 2);
    if (oh < 0 || !Expect(text, pos, ':')) return TimeError(text, "offset must be +hh:mm");
    const int om = ReadDigits(text, pos, 2);
    if (om < 0) return TimeError(text, "offset must be +hh:mm");
    if (oh > 23 || om > 59) return TimeError(text, "offset out of range");
    offset_minutes = sign * (oh * 60 + om);
  } else {
    return TimeError(text, "missing time zone ('Z' or +hh:mm)");
  }
  if (pos != text.size()) return TimeError(text, "unexpected trailing characters");

  if (month < 1 || month > 12) return TimeError(text, "month out of range 01-12");
  const date::year_month_day ymd{date::year(year), date::month(static_cast<unsigned>(month)),
                                 date::day(static_cast<unsigned>(day))};
  if (day < 1 || !ymd.ok()) return TimeError(text, "day does not exist in that month");
  if (hour > 23) return TimeError(text, "hour out of range 00-23");
  if (minute > 59) return TimeError(text, "minute out of range 00-59");
  if (second > 59)
    return TimeError(text, "second out of range 00-59 (leap seconds are not supported)");

  const auto local = date::sys_days(ymd) + std::chrono::hours(hour) + std::chrono::minutes(minute) +
                     std::chrono::seconds(second);
  const TimePoint utc = TimePoint(local) + Duration(millis) - std::chrono::minutes(offset_minutes);
  // Every instant must have a four-digit year in UTC too, so that it formats and parses back.
  if (!InRfc3339Range(utc)) return TimeError(text, "outside the years 0000-9999 in UTC");
  return utc;
}

bool InRfc3339Range(TimePoint t) {
  static const TimePoint kFirst = TimePoint(date::sys_days(date::year(0) / 1 / 1));
  static const TimePoint kEnd = TimePoint(date::sys_days(date::year(10000) / 1 / 1));
  return t >= kFirst && t < kEnd;
}

std::string FormatRfc3339(TimePoint t) { return date::format("%FT%TZ", t); }

std::string FormatRfc3339Seconds(TimePoint t) {
  return date::format("%FT%TZ", std::chrono::floor<std::chrono::seconds>(t));
}

Result<Duration> ParseDuration(std::string_view text) {
  auto error = [&](std::string_view what) {
    std::string msg = "invalid duration '";
    msg += text;
    msg += "': ";
    msg += what;
    return InvalidArgument(std::move(msg));
  };
  if (text.empty()) return error("empty (expected e.g. 90s, 5m, 1h30m)");
  constexpr int64_t kMaxMillis = int64_t{100} * 366 * 24 * 3600 * 1000;
  int64_t total = 0;
  int64_t last_scale = 0;  // of the previous unit: each unit is smaller than the one before
  size_t pos = 0;
  while (pos < text.size()) {
    size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
    if (pos == start) return error("expected a number before each unit");
    if (pos - start > 12) return error("number too large");
    int64_t n = 0;
    std::from_chars(text.data() + start, text.data() + pos, n);
    size_t unit_start = pos;
    while (pos < text.size() && ((text[pos] >= 'a' && text[pos] <= 'z'))) ++pos;
    std::string_view unit = text.substr(unit_start, pos - unit_start);
    int64_t scale = 0;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60'000;
    } else if (unit == "h") {
      scale = 3'600'000;
    } else if (unit == "d") {
      scale = 86'400'000;
    } else if (unit.empty() && pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
      return error("fractions are not allowed: use a smaller unit (1500ms, not 1.5s)");
    } else if (unit.empty()) {
      return error("missing unit (ms, s, m, h or d)");
    } else {
      return error("unknown unit '" + std::string(unit) + "' (expected ms, s, m, h or d)");
    }
    if (last_scale != 0 && scale >= last_scale) {
      return error("each unit once, largest first (e.g. 1h30m, not 30m1h or 1h1h)");
    }
    last_scale = scale;
    if (n > (kMaxMillis - total) / scale) return error("longer than 100 years");
    total += n * scale;
  }
  if (total <= 0) return error("must be positive");
  return Duration(total);
}

std::string FormatDuration(Duration d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out += '-';
    ms = -ms;
  }
  constexpr std::pair<int64_t, const char*> kUnits[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}, {1, "ms"}};
  for (const auto& [scale, name] : kUnits) {
    if (ms >= scale) {
      out += std::to_string(ms / scale);
      out += name;
      ms %= scale;
    }
  }
  return out;
}

}  // namespace jobsched
