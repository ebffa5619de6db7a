// The cron engine: parses the dialect of docs/cron.md once into bit sets and answers "when next?".
//
//   ASSIGN_OR_RETURN(CronSchedule s, CronSchedule::Parse("30 2 * * *", "America/New_York"));
//   std::optional<TimePoint> t = s.Next(now);   // strictly after now
//
// A CronSchedule is immutable after Parse: Next() and NextN() are const, thread-safe and do not
// allocate. Time zones come from the system tz database (IANA names); DST follows Vixie cron:
//   - fixed-time expressions (no '*' or '/' in the second, minute and hour fields): a time in a
//     spring-forward gap fires once at the first instant after the gap; a time repeated by a
//     fall-back fires only in the first pass;
//   - interval expressions: times in a gap are skipped; repeated times fire in both passes.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace jobsched {

class Zone;

class CronSchedule {
 public:
  // Parses `expr` for the IANA time zone `tz` ("UTC" when empty). Errors (kInvalidArgument) name
  // the field and the token: "hour: value 25 out of range 0-23",
  // "day-of-week: '5#6' — occurrence must be 1-5", "timezone: unknown time zone 'Mars/Base'".
  static Result<CronSchedule> Parse(std::string_view expr, std::string_view tz = "UTC");

  // The first fire time strictly after `from`, or nullopt when there is none before the year
  // 10000. `@every D` fires at from + D.
  std::optional<TimePoint> Next(TimePoint from) const;

  // Fills `out` with the next out.size() fire times after `from`, in order; returns how many
  // were written (fewer only when the schedule ends before the year 10000).
  size_t NextN(TimePoint from, std::span<TimePoint> out) const;

  const std::string& expression() const { return expr_; }
  const std::string& timezone() const { return tz_name_; }
  // Set for "@every <duration>", which is an interval, not a calendar schedule.
  std::optional<Duration> every() const { return every_; }
  // Vixie's fixed-time class (see above); false for interval expressions and @every.
  bool fixed_time() const { return fields_.fixed_time; }

  // Parsed fields, public for tests and tools; bit i set = value i allowed.
  struct Fields {
    uint64_t seconds = 0;  // bits 0-59
    uint64_t minutes = 0;  // bits 0-59
    uint32_t hours = 0;    // bits 0-23
    uint32_t days = 0;     // bits 1-31
    uint16_t months = 0;   // bits 1-12
    uint8_t weekdays = 0;  // bits 0-6, Sunday = 0
    // Quartz day-of-month extensions.
    bool last_day = false;               // L
    bool last_weekday_of_month = false;  // LW
    uint32_t nearest_weekday = 0;        // nW: bit n
    // Quartz day-of-week extensions, per weekday.
    uint8_t last_of_month = 0;  // nL / n#L: bit = weekday
    uint8_t nth[7] = {};        // n#k: nth[weekday] bit k (1-5)
    // crontab(5): when either day field begins with '*' (or is '?'), both must match.
    bool day_and = false;
    bool fixed_time = false;

    bool DayMatches(int year, unsigned month, unsigned day, unsigned weekday) const;
    // The first matching local time (seconds since the epoch, no zone) in (after, before).
    std::optional<int64_t> NextLocal(int64_t after, int64_t before) const;
    // The first matching second of the day at or after `second_of_day`, or -1.
    int NextTimeOfDay(int second_of_day) const;
  };
  const Fields& fields() const { return fields_; }

 private:
  CronSchedule() = default;
  std::optional<int64_t> NextZoned(int64_t after) const;

  std::string expr_;
  std::string tz_name_;
  const Zone* zone_ = nullptr;  // nullptr = UTC
  std::optional<Duration> every_;
  Fields fields_;
};

}  // namespace jobsched
