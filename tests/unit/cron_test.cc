// Tests of the cron dialect (docs/cron.md) through CronSchedule's public contract.
//
// Every expected instant below was computed independently with Python 3's zoneinfo (a brute-force
// reference of the rules of docs/cron.md over local calendar days), not by hand.
#include "core/cron.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/time_util.h"

namespace jobsched {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

TimePoint At(std::string_view rfc3339) {
  Result<TimePoint> t = ParseRfc3339(rfc3339);
  EXPECT_TRUE(t.ok()) << rfc3339 << ": " << t.status().ToString();
  return t.ok() ? *t : TimePoint{};
}

// Whole seconds print as "…:00Z"; a stray fraction prints with milliseconds so it never compares
// equal to an expectation.
std::string Fmt(TimePoint t) {
  return ToUnixMillis(t) % 1000 == 0 ? FormatRfc3339Seconds(t) : FormatRfc3339(t);
}
std::string Fmt(std::optional<TimePoint> t) { return t ? Fmt(*t) : "nullopt"; }

std::vector<std::string> NextNStrings(const CronSchedule& s, TimePoint from, size_t n) {
  std::vector<TimePoint> out(n);
  const size_t got = s.NextN(from, out);
  EXPECT_LE(got, n);
  std::vector<std::string> result;
  for (size_t i = 0; i < got && i < n; ++i) result.push_back(Fmt(out[i]));
  return result;
}

std::vector<std::string> ChainedNextStrings(const CronSchedule& s, TimePoint from, size_t n) {
  std::vector<std::string> result;
  for (size_t i = 0; i < n; ++i) {
    std::optional<TimePoint> t = s.Next(from);
    if (!t) break;
    result.push_back(Fmt(*t));
    from = *t;
  }
  return result;
}

// --- Next / NextN over tables --------------------------------------------------------------------

struct NextCase {
  const char* name;
  const char* expr;
  const char* tz;
  const char* from;
  std::vector<std::string> want;  // the next want.size() fire times, RFC 3339 UTC
};

void PrintTo(const NextCase& c, std::ostream* os) {
  *os << "'" << c.expr << "' in " << c.tz << " from " << c.from;
}

class CronNextTest : public ::testing::TestWithParam<NextCase> {};

TEST_P(CronNextTest, NextNAndChainedNext) {
  const NextCase& c = GetParam();
  Result<CronSchedule> s = CronSchedule::Parse(c.expr, c.tz);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const TimePoint from = At(c.from);
  EXPECT_THAT(NextNStrings(*s, from, c.want.size()), ElementsAreArray(c.want))
      << "NextN('" << c.expr << "', " << c.tz << ", from " << c.from << ")";
  EXPECT_THAT(ChainedNextStrings(*s, from, c.want.size()), ElementsAreArray(c.want))
      << "Next chained ('" << c.expr << "', " << c.tz << ", from " << c.from << ")";
}

std::string CaseName(const ::testing::TestParamInfo<NextCase>& info) { return info.param.name; }

// clang-format off
const NextCase kBasicsCases[] = {
    {"EveryMinute", "* * * * *", "UTC", "2024-05-05T10:00:00Z",
     {"2024-05-05T10:01:00Z", "2024-05-05T10:02:00Z", "2024-05-05T10:03:00Z"}},
    {"EveryMinuteFromMidMinute", "* * * * *", "UTC", "2024-05-05T10:00:30Z",
     {"2024-05-05T10:01:00Z", "2024-05-05T10:02:00Z"}},
    {"EveryMinuteFromLastMilli", "* * * * *", "UTC", "2024-05-05T10:00:59.999Z",
     {"2024-05-05T10:01:00Z", "2024-05-05T10:02:00Z"}},
    {"EverySecondFromMillis", "* * * * * *", "UTC", "2024-05-05T10:00:00.500Z",
     {"2024-05-05T10:00:01Z", "2024-05-05T10:00:02Z", "2024-05-05T10:00:03Z"}},
    {"StrictlyAfterMatchingInstant", "0 0 * * *", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"}},
    {"StrictlyAfterMatchingSecond", "30 * * * * *", "UTC", "2024-05-05T10:00:30Z",
     {"2024-05-05T10:01:30Z", "2024-05-05T10:02:30Z"}},
    {"MinuteStep", "*/15 * * * *", "UTC", "2024-05-05T10:07:00Z",
     {"2024-05-05T10:15:00Z", "2024-05-05T10:30:00Z", "2024-05-05T10:45:00Z",
      "2024-05-05T11:00:00Z"}},
    {"HourRangeStep", "0 9-17/4 * * *", "UTC", "2024-05-05T08:00:00Z",
     {"2024-05-05T09:00:00Z", "2024-05-05T13:00:00Z", "2024-05-05T17:00:00Z",
      "2024-05-06T09:00:00Z"}},
    {"SecondList", "0,15,30,45 * * * * *", "UTC", "2024-05-05T10:00:50Z",
     {"2024-05-05T10:01:00Z", "2024-05-05T10:01:15Z", "2024-05-05T10:01:30Z",
      "2024-05-05T10:01:45Z"}},
    {"SecondRangeSixFields", "10-12 0 12 * * *", "UTC", "2024-05-05T00:00:00Z",
     {"2024-05-05T12:00:10Z", "2024-05-05T12:00:11Z", "2024-05-05T12:00:12Z",
      "2024-05-06T12:00:10Z"}},
    {"OverlappingList", "0,0-10/5,5 * * * *", "UTC", "2024-05-05T10:00:00Z",
     {"2024-05-05T10:05:00Z", "2024-05-05T10:10:00Z", "2024-05-05T11:00:00Z"}},
    {"MonthNames", "0 0 1 JAN,jul *", "UTC", "2024-02-01T00:00:00Z",
     {"2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-07-01T00:00:00Z"}},
    {"MonthNameRange", "0 0 1 mar-MAY *", "UTC", "2024-01-01T00:00:00Z",
     {"2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z",
      "2025-03-01T00:00:00Z"}},
    {"MonthStep", "0 0 1 */4 *", "UTC", "2024-01-01T00:00:00Z",
     {"2024-05-01T00:00:00Z", "2024-09-01T00:00:00Z", "2025-01-01T00:00:00Z"}},
    {"DowNameRange", "0 0 * * mon-fri", "UTC", "2024-05-03T00:00:00Z",
     {"2024-05-06T00:00:00Z", "2024-05-07T00:00:00Z", "2024-05-08T00:00:00Z",
      "2024-05-09T00:00:00Z", "2024-05-10T00:00:00Z", "2024-05-13T00:00:00Z"}},
    {"DowSevenIsSunday", "0 0 * * 7", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-05T00:00:00Z", "2024-05-12T00:00:00Z", "2024-05-19T00:00:00Z"}},
    {"DowZeroIsSunday", "0 0 * * 0", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-05T00:00:00Z", "2024-05-12T00:00:00Z", "2024-05-19T00:00:00Z"}},
    {"DowNameSun", "0 0 * * Sun", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-05T00:00:00Z", "2024-05-12T00:00:00Z", "2024-05-19T00:00:00Z"}},
    {"DowFriToSun", "0 0 * * FRI-SUN", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-03T00:00:00Z", "2024-05-04T00:00:00Z", "2024-05-05T00:00:00Z",
      "2024-05-10T00:00:00Z"}},
    {"DowFiveToSeven", "0 0 * * 5-7", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-03T00:00:00Z", "2024-05-04T00:00:00Z", "2024-05-05T00:00:00Z",
      "2024-05-10T00:00:00Z"}},
    {"DowStep", "0 0 * * */2", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-02T00:00:00Z", "2024-05-04T00:00:00Z", "2024-05-05T00:00:00Z",
      "2024-05-07T00:00:00Z"}},
    {"QuestionMarkDom", "0 0 ? * MON", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-06T00:00:00Z", "2024-05-13T00:00:00Z", "2024-05-20T00:00:00Z"}},
    {"QuestionMarkDow", "0 0 1 * ?", "UTC", "2024-05-01T00:00:00Z",
     {"2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z", "2024-08-01T00:00:00Z"}},
};

// crontab(5): if day-of-month or day-of-week begins with '*' (or is '?'), both must
// match; otherwise either may.
const NextCase kDayRuleCases[] = {
    {"DayRuleOrBothRestricted", "0 0 1,15 * 5", "UTC", "2024-03-01T00:00:00Z",
     {"2024-03-08T00:00:00Z", "2024-03-15T00:00:00Z", "2024-03-22T00:00:00Z",
      "2024-03-29T00:00:00Z", "2024-04-01T00:00:00Z", "2024-04-05T00:00:00Z",
      "2024-04-12T00:00:00Z", "2024-04-15T00:00:00Z"}},
    {"DayRuleAndDomStar", "0 0 */2 * 1", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-15T00:00:00Z", "2024-01-29T00:00:00Z", "2024-02-05T00:00:00Z",
      "2024-02-19T00:00:00Z", "2024-03-11T00:00:00Z", "2024-03-25T00:00:00Z",
      "2024-04-01T00:00:00Z", "2024-04-15T00:00:00Z"}},
    {"DayRuleOrThirteenthOrFriday", "0 0 13 * 5", "UTC", "2024-09-01T00:00:00Z",
     {"2024-09-06T00:00:00Z", "2024-09-13T00:00:00Z", "2024-09-20T00:00:00Z",
      "2024-09-27T00:00:00Z", "2024-10-04T00:00:00Z"}},
    {"DayRuleAndDowStarStep", "0 0 13 * */7", "UTC", "2024-01-01T00:00:00Z",
     {"2024-10-13T00:00:00Z", "2025-04-13T00:00:00Z", "2025-07-13T00:00:00Z"}},
    {"DayRuleOrFullDomRange", "0 0 1-31 * 1", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z", "2024-05-04T00:00:00Z"}},
    {"DayRuleOrImpossibleDom", "0 0 30 2 MON", "UTC", "2024-01-01T00:00:00Z",
     {"2024-02-05T00:00:00Z", "2024-02-12T00:00:00Z", "2024-02-19T00:00:00Z"}},
    {"DayRuleAndLeapDaySunday", "0 0 29 2 */7", "UTC", "2024-01-01T00:00:00Z",
     {"2032-02-29T00:00:00Z", "2060-02-29T00:00:00Z"}},
    {"DayRuleAndDowStar", "0 0 1,15 * *", "UTC", "2024-05-01T00:00:00Z",
     {"2024-05-15T00:00:00Z", "2024-06-01T00:00:00Z", "2024-06-15T00:00:00Z"}},
};

// L, LW, nW in day-of-month (nW never leaves the month); nL, n#L, n#k in day-of-week.
const NextCase kQuartzCases[] = {
    {"LastDayOfMonth", "0 0 L * *", "UTC", "2023-01-15T00:00:00Z",
     {"2023-01-31T00:00:00Z", "2023-02-28T00:00:00Z", "2023-03-31T00:00:00Z",
      "2023-04-30T00:00:00Z"}},
    {"LastDayOfFebruary", "0 0 L 2 *", "UTC", "2023-01-01T00:00:00Z",
     {"2023-02-28T00:00:00Z", "2024-02-29T00:00:00Z", "2025-02-28T00:00:00Z"}},
    {"LastWeekdayOfMonth", "0 0 LW * *", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-29T00:00:00Z",
      "2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z", "2024-06-28T00:00:00Z"}},
    {"NearestWeekdayFirstNeverCrossesBack", "0 0 1W * *", "UTC", "2024-05-15T00:00:00Z",
     {"2024-06-03T00:00:00Z", "2024-07-01T00:00:00Z", "2024-08-01T00:00:00Z",
      "2024-09-02T00:00:00Z", "2024-10-01T00:00:00Z"}},
    {"NearestWeekdayThirtyFirst", "0 0 31W * *", "UTC", "2024-01-15T00:00:00Z",
     {"2024-01-31T00:00:00Z", "2024-03-29T00:00:00Z", "2024-05-31T00:00:00Z",
      "2024-07-31T00:00:00Z", "2024-08-30T00:00:00Z", "2024-10-31T00:00:00Z",
      "2024-12-31T00:00:00Z"}},
    {"NearestWeekdayFifteenth", "0 0 15W * *", "UTC", "2024-06-01T00:00:00Z",
     {"2024-06-14T00:00:00Z", "2024-07-15T00:00:00Z", "2024-08-15T00:00:00Z",
      "2024-09-16T00:00:00Z"}},
    {"NearestWeekdayThirtiethSkipsFebruary", "0 0 30W * *", "UTC", "2024-01-15T00:00:00Z",
     {"2024-01-30T00:00:00Z", "2024-03-29T00:00:00Z", "2024-04-30T00:00:00Z",
      "2024-05-30T00:00:00Z"}},
    {"NearestWeekdayFeb29", "0 0 29W 2 *", "UTC", "2024-03-01T00:00:00Z",
     {"2028-02-29T00:00:00Z", "2032-02-27T00:00:00Z", "2036-02-29T00:00:00Z"}},
    {"DomListWithLast", "0 0 1,L * *", "UTC", "2024-01-15T00:00:00Z",
     {"2024-01-31T00:00:00Z", "2024-02-01T00:00:00Z", "2024-02-29T00:00:00Z",
      "2024-03-01T00:00:00Z"}},
    {"DomListOfNearestWeekdays", "0 0 1W,15W * *", "UTC", "2024-06-01T00:00:00Z",
     {"2024-06-03T00:00:00Z", "2024-06-14T00:00:00Z", "2024-07-01T00:00:00Z",
      "2024-07-15T00:00:00Z"}},
    {"LastFriday", "0 0 * * 5L", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-26T00:00:00Z", "2024-02-23T00:00:00Z", "2024-03-29T00:00:00Z",
      "2024-04-26T00:00:00Z"}},
    {"LastFridayHashL", "0 0 * * 5#L", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-26T00:00:00Z", "2024-02-23T00:00:00Z", "2024-03-29T00:00:00Z",
      "2024-04-26T00:00:00Z"}},
    {"LastSundaySeven", "0 0 * * 7L", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-28T00:00:00Z", "2024-02-25T00:00:00Z", "2024-03-31T00:00:00Z"}},
    {"SecondSunday", "0 0 * * 0#2", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-14T00:00:00Z", "2024-02-11T00:00:00Z", "2024-03-10T00:00:00Z"}},
    {"SecondSundaySeven", "0 0 * * 7#2", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-14T00:00:00Z", "2024-02-11T00:00:00Z", "2024-03-10T00:00:00Z"}},
    {"FirstMondayAndLastFridayList", "0 0 * * 1#1,5L", "UTC", "2024-01-01T00:00:00Z",
     {"2024-01-26T00:00:00Z", "2024-02-05T00:00:00Z", "2024-02-23T00:00:00Z",
      "2024-03-04T00:00:00Z", "2024-03-29T00:00:00Z", "2024-04-01T00:00:00Z"}},
    {"FifthFridaySkipsMonths", "0 0 * * 5#5", "UTC", "2024-01-01T00:00:00Z",
     {"2024-03-29T00:00:00Z", "2024-05-31T00:00:00Z", "2024-08-30T00:00:00Z",
      "2024-11-29T00:00:00Z"}},
    {"FifthFridayOfFebruary", "0 0 * 2 5#5", "UTC", "2024-01-01T00:00:00Z",
     {"2036-02-29T00:00:00Z", "2064-02-29T00:00:00Z"}},
    {"LastDayOrFriday", "0 0 L * 5", "UTC", "2024-05-20T00:00:00Z",
     {"2024-05-24T00:00:00Z", "2024-05-31T00:00:00Z", "2024-06-07T00:00:00Z",
      "2024-06-14T00:00:00Z"}},
    {"LastDayAndEveryDay", "0 0 L * *", "UTC", "2024-04-30T00:00:00Z",
     {"2024-05-31T00:00:00Z", "2024-06-30T00:00:00Z"}},
};

const NextCase kCalendarCases[] = {
    {"Feb29FromNonLeap", "0 0 29 2 *", "UTC", "2023-01-01T00:00:00Z",
     {"2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z"}},
    {"Feb29Skips2100", "0 0 29 2 *", "UTC", "2097-03-01T00:00:00Z",
     {"2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"}},
    {"Feb29In2000", "0 0 29 2 *", "UTC", "1999-03-01T00:00:00Z",
     {"2000-02-29T00:00:00Z", "2004-02-29T00:00:00Z"}},
    {"ThirtyFirstSkipsShortMonths", "0 0 31 * *", "UTC", "2024-01-31T00:00:00Z",
     {"2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z", "2024-07-31T00:00:00Z",
      "2024-08-31T00:00:00Z", "2024-10-31T00:00:00Z", "2024-12-31T00:00:00Z"}},
    {"YearEnd", "59 23 31 12 *", "UTC", "2024-06-01T00:00:00Z",
     {"2024-12-31T23:59:00Z", "2025-12-31T23:59:00Z"}},
    {"YearEndSixFieldsFromMatch", "59 59 23 31 12 *", "UTC", "2024-12-31T23:59:59Z",
     {"2025-12-31T23:59:59Z"}},
    {"NewYearFromLastMilli", "0 0 1 1 *", "UTC", "2024-12-31T23:59:59.999Z",
     {"2025-01-01T00:00:00Z"}},
    {"BeforeEpochMillis", "* * * * * *", "UTC", "1969-12-31T23:59:59.500Z",
     {"1970-01-01T00:00:00Z", "1970-01-01T00:00:01Z"}},
    {"BeforeEpochYearly", "0 0 1 1 *", "UTC", "1969-06-01T00:00:00Z",
     {"1970-01-01T00:00:00Z"}},
};

const NextCase kMacrosCases[] = {
    {"MacroYearly", "@yearly", "UTC", "2024-05-15T10:30:00Z",
     {"2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"}},
    {"MacroAnnually", "@annually", "UTC", "2024-05-15T10:30:00Z",
     {"2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"}},
    {"MacroMonthly", "@monthly", "UTC", "2024-05-15T10:30:00Z",
     {"2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z"}},
    {"MacroWeekly", "@weekly", "UTC", "2024-05-15T10:30:00Z",
     {"2024-05-19T00:00:00Z", "2024-05-26T00:00:00Z"}},
    {"MacroDaily", "@daily", "UTC", "2024-05-15T10:30:00Z",
     {"2024-05-16T00:00:00Z", "2024-05-17T00:00:00Z"}},
    {"MacroMidnight", "@midnight", "UTC", "2024-05-15T10:30:00Z",
     {"2024-05-16T00:00:00Z", "2024-05-17T00:00:00Z"}},
    {"MacroHourly", "@hourly", "UTC", "2024-05-15T10:30:00Z",
     {"2024-05-15T11:00:00Z", "2024-05-15T12:00:00Z"}},
    {"MacroDailyNewYork", "@daily", "America/New_York", "2024-05-15T10:30:00Z",
     {"2024-05-16T04:00:00Z", "2024-05-17T04:00:00Z"}},
};

// America/New_York: spring forward 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z);
// fall back 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z), 01:00-01:59 local twice.
// Fixed-time (no '*' or '/' in sec/min/hour): a time in the gap fires once at the
// first instant after it; a repeated time fires in the first pass only. Interval:
// gap times are skipped, repeated times fire in both passes.
const NextCase kDstNewYorkCases[] = {
    {"NySpringFixedInGap", "30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"}},
    {"NySpringFixedInGapDayBefore", "30 2 * * *", "America/New_York", "2024-03-08T12:00:00Z",
     {"2024-03-09T07:30:00Z", "2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"}},
    {"NySpringFixedGapStart", "0 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z"}},
    {"NySpringFixedGapLastMinute", "59 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T06:59:00Z"}},
    {"NySpringFixedSecondsInGap", "15 30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T06:30:15Z"}},
    {"NySpringFixedTwoTimesInGapFireOnce",
     "0,30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z", "2024-03-11T06:30:00Z"}},
    {"NySpringFixedHourRange", "0 1-3 * * *", "America/New_York", "2024-03-10T00:00:00Z",
     {"2024-03-10T06:00:00Z", "2024-03-10T07:00:00Z", "2024-03-11T05:00:00Z",
      "2024-03-11T06:00:00Z", "2024-03-11T07:00:00Z"}},
    {"NySpringFixedAfterGap", "0 3 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-10T07:00:00Z", "2024-03-11T07:00:00Z"}},
    {"NySpringFixedYearly", "30 2 10 3 *", "America/New_York", "2024-01-01T00:00:00Z",
     {"2024-03-10T07:00:00Z", "2025-03-10T06:30:00Z"}},
    {"NySpringFixedFromLastSecondBeforeGap",
     "30 2 * * *", "America/New_York", "2024-03-10T06:59:59Z",
     {"2024-03-10T07:00:00Z"}},
    {"NySpringFixedFromLastMilliBeforeGap",
     "30 2 * * *", "America/New_York", "2024-03-10T06:59:59.999Z",
     {"2024-03-10T07:00:00Z"}},
    {"NySpringFixedFromTwoSecondsBeforeGap",
     "30 2 * * *", "America/New_York", "2024-03-10T06:59:58Z",
     {"2024-03-10T07:00:00Z"}},
    {"NySpringFixedChainThroughLastSecondBeforeGap",
     "59 59 1,2 * * *", "America/New_York", "2024-03-10T00:00:00Z",
     {"2024-03-10T06:59:59Z", "2024-03-10T07:00:00Z", "2024-03-11T05:59:59Z"}},
    {"NySpringAfterGapFromLastSecondBeforeGap",
     "0 3 * * *", "America/New_York", "2024-03-10T06:59:59Z",
     {"2024-03-10T07:00:00Z"}},
    {"NySpringIntervalFromLastSecondBeforeGap",
     "*/30 * * * *", "America/New_York", "2024-03-10T06:59:59Z",
     {"2024-03-10T07:00:00Z"}},
    {"NySpringFixedFromGapFire", "30 2 * * *", "America/New_York", "2024-03-10T07:00:00Z",
     {"2024-03-11T06:30:00Z"}},
    {"NySpringIntervalEvery30", "*/30 * * * *", "America/New_York", "2024-03-10T06:00:00Z",
     {"2024-03-10T06:30:00Z", "2024-03-10T07:00:00Z", "2024-03-10T07:30:00Z",
      "2024-03-10T08:00:00Z"}},
    {"NySpringIntervalInGapHour", "*/15 2 * * *", "America/New_York", "2024-03-09T12:00:00Z",
     {"2024-03-11T06:00:00Z", "2024-03-11T06:15:00Z", "2024-03-11T06:30:00Z",
      "2024-03-11T06:45:00Z"}},
    {"NySpringIntervalHourly", "0 * * * *", "America/New_York", "2024-03-10T05:30:00Z",
     {"2024-03-10T06:00:00Z", "2024-03-10T07:00:00Z", "2024-03-10T08:00:00Z"}},
    {"NyFallFixedFirstPassOnly", "30 1 * * *", "America/New_York", "2024-11-02T12:00:00Z",
     {"2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"}},
    {"NyFallFixedOnTheHour", "0 1 * * *", "America/New_York", "2024-11-02T12:00:00Z",
     {"2024-11-03T05:00:00Z", "2024-11-04T06:00:00Z"}},
    {"NyFallFixedSeconds", "59 59 1 * * *", "America/New_York", "2024-11-02T12:00:00Z",
     {"2024-11-03T05:59:59Z", "2024-11-04T06:59:59Z"}},
    {"NyFallFixedTwoAm", "0 2 * * *", "America/New_York", "2024-11-02T12:00:00Z",
     {"2024-11-03T07:00:00Z", "2024-11-04T07:00:00Z"}},
    {"NyFallFixedHourRange", "0 0-3 * * *", "America/New_York", "2024-11-03T00:00:00Z",
     {"2024-11-03T04:00:00Z", "2024-11-03T05:00:00Z", "2024-11-03T07:00:00Z",
      "2024-11-03T08:00:00Z", "2024-11-04T05:00:00Z"}},
    {"NyFallFixedFromFirstPass", "30 1 * * *", "America/New_York", "2024-11-03T05:45:00Z",
     {"2024-11-04T06:30:00Z"}},
    {"NyFallFixedFromSecondPass", "30 1 * * *", "America/New_York", "2024-11-03T06:15:00Z",
     {"2024-11-04T06:30:00Z"}},
    {"NyFallFixedFromLastSecondOfFirstPass",
     "30 1 * * *", "America/New_York", "2024-11-03T05:59:59Z",
     {"2024-11-04T06:30:00Z"}},
    {"NyFallIntervalFromLastSecondOfFirstPass",
     "*/30 1 * * *", "America/New_York", "2024-11-03T05:59:59Z",
     {"2024-11-03T06:00:00Z"}},
    {"NyFallIntervalEvery30", "*/30 * * * *", "America/New_York", "2024-11-03T04:45:00Z",
     {"2024-11-03T05:00:00Z", "2024-11-03T05:30:00Z", "2024-11-03T06:00:00Z",
      "2024-11-03T06:30:00Z", "2024-11-03T07:00:00Z"}},
    {"NyFallIntervalFromSecondPass", "*/30 * * * *", "America/New_York", "2024-11-03T06:15:00Z",
     {"2024-11-03T06:30:00Z", "2024-11-03T07:00:00Z"}},
    {"NyFallIntervalInRepeatedHour", "*/20 1 * * *", "America/New_York", "2024-11-02T12:00:00Z",
     {"2024-11-03T05:00:00Z", "2024-11-03T05:20:00Z", "2024-11-03T05:40:00Z",
      "2024-11-03T06:00:00Z", "2024-11-03T06:20:00Z", "2024-11-03T06:40:00Z",
      "2024-11-04T06:00:00Z"}},
    {"NyFallIntervalHourly", "0 * * * *", "America/New_York", "2024-11-03T04:30:00Z",
     {"2024-11-03T05:00:00Z", "2024-11-03T06:00:00Z", "2024-11-03T07:00:00Z"}},
};

// Europe/London: 2024-03-31 01:00 GMT -> 02:00 BST (01:00Z);
// 2024-10-27 02:00 BST -> 01:00 GMT (01:00Z).
const NextCase kDstLondonCases[] = {
    {"LondonSpringFixedInGap", "30 1 * * *", "Europe/London", "2024-03-30T12:00:00Z",
     {"2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z"}},
    {"LondonSpringFixedFromLastSecondBeforeGap",
     "30 1 * * *", "Europe/London", "2024-03-31T00:59:59Z",
     {"2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z"}},
    {"LondonSpringFixedGapStart", "0 1 * * *", "Europe/London", "2024-03-30T12:00:00Z",
     {"2024-03-31T01:00:00Z", "2024-04-01T00:00:00Z"}},
    {"LondonSpringIntervalEvery30", "*/30 * * * *", "Europe/London", "2024-03-31T00:15:00Z",
     {"2024-03-31T00:30:00Z", "2024-03-31T01:00:00Z", "2024-03-31T01:30:00Z"}},
    {"LondonSpringIntervalInGapHour", "*/30 1 * * *", "Europe/London", "2024-03-30T12:00:00Z",
     {"2024-04-01T00:00:00Z", "2024-04-01T00:30:00Z"}},
    {"LondonFallFixedFirstPassOnly", "30 1 * * *", "Europe/London", "2024-10-26T12:00:00Z",
     {"2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"}},
    {"LondonFallIntervalInRepeatedHour", "*/30 1 * * *", "Europe/London", "2024-10-26T12:00:00Z",
     {"2024-10-27T00:00:00Z", "2024-10-27T00:30:00Z", "2024-10-27T01:00:00Z",
      "2024-10-27T01:30:00Z", "2024-10-28T01:00:00Z"}},
    {"LondonFallIntervalHourly", "0 * * * *", "Europe/London", "2024-10-26T23:30:00Z",
     {"2024-10-27T00:00:00Z", "2024-10-27T01:00:00Z", "2024-10-27T02:00:00Z"}},
};

// Australia/Lord_Howe, 30-minute DST: 2024-10-06 02:00 +10:30 -> 02:30 +11:00
// (2024-10-05T15:30Z); 2024-04-07 02:00 +11:00 -> 01:30 +10:30 (2024-04-06T15:00Z).
const NextCase kDstLordHoweCases[] = {
    {"LordHoweSpringFixedInGap", "15 2 * * *", "Australia/Lord_Howe", "2024-10-05T00:00:00Z",
     {"2024-10-05T15:30:00Z", "2024-10-06T15:15:00Z"}},
    {"LordHoweSpringFixedFromLastSecondBeforeGap",
     "15 2 * * *", "Australia/Lord_Howe", "2024-10-05T15:29:59Z",
     {"2024-10-05T15:30:00Z"}},
    {"LordHoweSpringFixedGapStart", "0 2 * * *", "Australia/Lord_Howe", "2024-10-05T00:00:00Z",
     {"2024-10-05T15:30:00Z", "2024-10-06T15:00:00Z"}},
    {"LordHoweSpringIntervalEvery15", "*/15 * * * *", "Australia/Lord_Howe", "2024-10-05T15:00:00Z",
     {"2024-10-05T15:15:00Z", "2024-10-05T15:30:00Z", "2024-10-05T15:45:00Z"}},
    {"LordHoweSpringIntervalInGapHour",
     "*/10 2 * * *", "Australia/Lord_Howe", "2024-10-05T00:00:00Z",
     {"2024-10-05T15:30:00Z", "2024-10-05T15:40:00Z", "2024-10-05T15:50:00Z",
      "2024-10-06T15:00:00Z"}},
    {"LordHoweFallFixedFirstPassOnly", "45 1 * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z",
     {"2024-04-06T14:45:00Z", "2024-04-07T15:15:00Z"}},
    {"LordHoweFallFixedHalfPast", "30 1 * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z",
     {"2024-04-06T14:30:00Z", "2024-04-07T15:00:00Z"}},
    {"LordHoweFallFixedTwoAm", "0 2 * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z",
     {"2024-04-06T15:30:00Z", "2024-04-07T15:30:00Z"}},
    {"LordHoweFallIntervalInRepeatedHalfHour",
     "*/15 1 * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z",
     {"2024-04-06T14:00:00Z", "2024-04-06T14:15:00Z", "2024-04-06T14:30:00Z",
      "2024-04-06T14:45:00Z", "2024-04-06T15:00:00Z", "2024-04-06T15:15:00Z",
      "2024-04-07T14:30:00Z"}},
};

// Europe/Dublin has the same wall clock as London, but the tz database models it as
// negative DST (IST is standard time): only the total UTC offset may matter.
const NextCase kDstDublinCases[] = {
    {"DublinSpringFixedInGap", "30 1 * * *", "Europe/Dublin", "2024-03-30T12:00:00Z",
     {"2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z"}},
    {"DublinFallFixedFirstPassOnly", "30 1 * * *", "Europe/Dublin", "2024-10-26T12:00:00Z",
     {"2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"}},
    {"DublinFallIntervalInRepeatedHour", "*/30 1 * * *", "Europe/Dublin", "2024-10-26T12:00:00Z",
     {"2024-10-27T00:00:00Z", "2024-10-27T00:30:00Z", "2024-10-27T01:00:00Z",
      "2024-10-27T01:30:00Z", "2024-10-28T01:00:00Z"}},
};

// Asia/Kolkata: constant +05:30, no DST.
const NextCase kKolkataCases[] = {
    {"KolkataFixed", "30 2 * * *", "Asia/Kolkata", "2024-03-09T12:00:00Z",
     {"2024-03-09T21:00:00Z", "2024-03-10T21:00:00Z", "2024-03-11T21:00:00Z"}},
    {"KolkataMidnight", "0 0 * * *", "Asia/Kolkata", "2024-11-02T12:00:00Z",
     {"2024-11-02T18:30:00Z", "2024-11-03T18:30:00Z", "2024-11-04T18:30:00Z"}},
    {"KolkataInterval", "*/45 * * * *", "Asia/Kolkata", "2024-03-10T06:50:00Z",
     {"2024-03-10T07:15:00Z", "2024-03-10T07:30:00Z", "2024-03-10T08:15:00Z"}},
};

// Pacific/Kiritimati is UTC+14 and Pacific/Pago_Pago UTC-11 (no DST): day-of-month,
// month and weekday are those of the local date.
const NextCase kFarZonesCases[] = {
    {"KiritimatiNewYear", "0 0 1 1 *", "Pacific/Kiritimati", "2024-06-01T00:00:00Z",
     {"2024-12-31T10:00:00Z", "2025-12-31T10:00:00Z"}},
    {"KiritimatiMonday", "0 9 * * MON", "Pacific/Kiritimati", "2024-06-01T00:00:00Z",
     {"2024-06-02T19:00:00Z", "2024-06-09T19:00:00Z"}},
    {"KiritimatiLastDay", "0 0 L * *", "Pacific/Kiritimati", "2024-06-01T00:00:00Z",
     {"2024-06-29T10:00:00Z", "2024-07-30T10:00:00Z"}},
    {"PagoPagoNewYear", "0 0 1 1 *", "Pacific/Pago_Pago", "2024-06-01T00:00:00Z",
     {"2025-01-01T11:00:00Z", "2026-01-01T11:00:00Z"}},
    {"PagoPagoFriday", "0 20 * * 5", "Pacific/Pago_Pago", "2024-06-01T00:00:00Z",
     {"2024-06-01T07:00:00Z", "2024-06-08T07:00:00Z"}},
};

// America/Sao_Paulo, transitions at local midnight: 2018-11-04 00:00 -03 -> 01:00 -02
// (the day starts at 01:00); 2019-02-17 00:00 -02 -> 2019-02-16 23:00 -03 (23:00-23:59
// of Feb 16 happens twice).
const NextCase kDstSaoPauloCases[] = {
    {"SaoPauloSpringMidnightInGap", "0 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00:00Z",
     {"2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z"}},
    {"SaoPauloSpringDomInGap", "30 0 4 11 *", "America/Sao_Paulo", "2018-01-01T00:00:00Z",
     {"2018-11-04T03:00:00Z", "2019-11-04T03:30:00Z"}},
    {"SaoPauloSpringIntervalInGap", "*/30 0 * * *", "America/Sao_Paulo", "2018-11-03T12:00:00Z",
     {"2018-11-05T02:00:00Z", "2018-11-05T02:30:00Z"}},
    {"SaoPauloFallFixedBeforeMidnight", "30 23 * * *", "America/Sao_Paulo", "2019-02-16T12:00:00Z",
     {"2019-02-17T01:30:00Z", "2019-02-18T02:30:00Z"}},
    {"SaoPauloFallIntervalBeforeMidnight",
     "*/30 23 * * *", "America/Sao_Paulo", "2019-02-16T12:00:00Z",
     {"2019-02-17T01:00:00Z", "2019-02-17T01:30:00Z", "2019-02-17T02:00:00Z",
      "2019-02-17T02:30:00Z", "2019-02-18T02:00:00Z"}},
};

// Past the last transition a zone file lists (2037 in Debian's), the rule at the file's end
// continues: New York keeps its second-Sunday-of-March and first-Sunday-of-November changes
// (2038-03-14, 2040-03-11 and 2040-11-04 at 02:00 local), Sydney its October-April daylight time
// across the new year, Lord Howe its 30-minute change (2040-10-07 02:00 +10:30 -> 02:30 +11).
// Without the rule the last listed offset (New York: EST, from 2037-11-01) would continue.
const NextCase kBeyondListedTransitionsCases[] = {
    {"NyWinterAfterLastListedTransition", "0 9 * * *", "America/New_York", "2037-12-01T00:00:00Z",
     {"2037-12-01T14:00:00Z", "2037-12-02T14:00:00Z"}},
    {"NyFirstTransitionOfTheRule", "30 2 * * *", "America/New_York", "2038-03-13T12:00:00Z",
     {"2038-03-14T07:00:00Z", "2038-03-15T06:30:00Z"}},
    {"NySummer2040", "0 9 * * *", "America/New_York", "2040-07-01T00:00:00Z",
     {"2040-07-01T13:00:00Z", "2040-07-02T13:00:00Z"}},
    {"NySpring2040FixedInGap", "30 2 * * *", "America/New_York", "2040-03-10T12:00:00Z",
     {"2040-03-11T07:00:00Z", "2040-03-12T06:30:00Z"}},
    {"NyFall2040FixedFirstPassOnly", "30 1 * * *", "America/New_York", "2040-11-03T12:00:00Z",
     {"2040-11-04T05:30:00Z", "2040-11-05T06:30:00Z"}},
    {"NyFall2040IntervalBothPasses", "*/30 1 * * *", "America/New_York", "2040-11-03T12:00:00Z",
     {"2040-11-04T05:00:00Z", "2040-11-04T05:30:00Z", "2040-11-04T06:00:00Z",
      "2040-11-04T06:30:00Z", "2040-11-05T06:00:00Z"}},
    {"SydneySummer2045", "0 9 * * *", "Australia/Sydney", "2045-01-15T00:00:00Z",
     {"2045-01-15T22:00:00Z", "2045-01-16T22:00:00Z"}},
    {"SydneyWinter2045", "0 9 * * *", "Australia/Sydney", "2045-07-01T00:00:00Z",
     {"2045-07-01T23:00:00Z", "2045-07-02T23:00:00Z"}},
    {"SydneyFall2045FixedFirstPassOnly", "30 2 * * *", "Australia/Sydney", "2045-04-01T00:00:00Z",
     {"2045-04-01T15:30:00Z", "2045-04-02T16:30:00Z"}},
    {"LordHoweSpring2040FixedInGap", "15 2 * * *", "Australia/Lord_Howe", "2040-10-06T00:00:00Z",
     {"2040-10-06T15:30:00Z", "2040-10-07T15:15:00Z"}},
    {"KolkataFarFuture", "30 2 * * *", "Asia/Kolkata", "2300-01-01T00:00:00Z",
     {"2300-01-01T21:00:00Z", "2300-01-02T21:00:00Z"}},
};

// clang-format on

INSTANTIATE_TEST_SUITE_P(Basics, CronNextTest, ::testing::ValuesIn(kBasicsCases), CaseName);
INSTANTIATE_TEST_SUITE_P(DayRule, CronNextTest, ::testing::ValuesIn(kDayRuleCases), CaseName);
INSTANTIATE_TEST_SUITE_P(Quartz, CronNextTest, ::testing::ValuesIn(kQuartzCases), CaseName);
INSTANTIATE_TEST_SUITE_P(Calendar, CronNextTest, ::testing::ValuesIn(kCalendarCases), CaseName);
INSTANTIATE_TEST_SUITE_P(Macros, CronNextTest, ::testing::ValuesIn(kMacrosCases), CaseName);
INSTANTIATE_TEST_SUITE_P(DstNewYork, CronNextTest, ::testing::ValuesIn(kDstNewYorkCases), CaseName);
INSTANTIATE_TEST_SUITE_P(DstLondon, CronNextTest, ::testing::ValuesIn(kDstLondonCases), CaseName);
INSTANTIATE_TEST_SUITE_P(DstLordHowe, CronNextTest, ::testing::ValuesIn(kDstLordHoweCases),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(DstDublin, CronNextTest, ::testing::ValuesIn(kDstDublinCases), CaseName);
INSTANTIATE_TEST_SUITE_P(BeyondListedTransitions, CronNextTest,
                         ::testing::ValuesIn(kBeyondListedTransitionsCases), CaseName);
INSTANTIATE_TEST_SUITE_P(Kolkata, CronNextTest, ::testing::ValuesIn(kKolkataCases), CaseName);
INSTANTIATE_TEST_SUITE_P(FarZones, CronNextTest, ::testing::ValuesIn(kFarZonesCases), CaseName);
INSTANTIATE_TEST_SUITE_P(DstSaoPaulo, CronNextTest, ::testing::ValuesIn(kDstSaoPauloCases),
                         CaseName);

// --- The end of time -----------------------------------------------------------------------------

TEST(CronScheduleTest, NothingAtOrAfterYear10000) {
  Result<CronSchedule> feb29 = CronSchedule::Parse("0 0 29 2 *");
  ASSERT_TRUE(feb29.ok()) << feb29.status().ToString();
  std::array<TimePoint, 5> out{};
  ASSERT_EQ(feb29->NextN(At("9990-01-01T00:00:00Z"), out), 2u);
  EXPECT_EQ(Fmt(out[0]), "9992-02-29T00:00:00Z");
  EXPECT_EQ(Fmt(out[1]), "9996-02-29T00:00:00Z");
  // 10000 would be a leap year, but it is out of range.
  EXPECT_EQ(Fmt(feb29->Next(At("9996-02-29T00:00:00Z"))), "nullopt");

  Result<CronSchedule> every_second = CronSchedule::Parse("* * * * * *");
  ASSERT_TRUE(every_second.ok());
  EXPECT_EQ(Fmt(every_second->Next(At("9999-12-31T23:59:58Z"))), "9999-12-31T23:59:59Z");
  EXPECT_EQ(Fmt(every_second->Next(At("9999-12-31T23:59:59Z"))), "nullopt");
}

TEST(CronScheduleTest, NextNWithEmptySpan) {
  Result<CronSchedule> s = CronSchedule::Parse("* * * * *");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->NextN(At("2024-01-01T00:00:00Z"), std::span<TimePoint>()), 0u);
}

// NextN is strictly increasing, starts strictly after `from`, and equals chained Next — over long
// runs that cross DST transitions in both directions.
struct SequenceCase {
  const char* expr;
  const char* tz;
  const char* from;
};

TEST(CronScheduleTest, NextNIsIncreasingAndMatchesChainedNext) {
  const SequenceCase cases[] = {
      {"*/7 * * * *", "America/New_York", "2024-03-09T00:00:00Z"},
      {"*/7 * * * *", "America/New_York", "2024-11-02T00:00:00Z"},
      {"*/10 * * * *", "Australia/Lord_Howe", "2024-10-05T00:00:00Z"},
      {"*/10 * * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z"},
      {"0 30 1,2 * * *", "Europe/London", "2024-03-25T00:00:00Z"},
      {"0 30 1,2 * * *", "Europe/London", "2024-10-20T00:00:00Z"},
      {"0 0-3 * * *", "America/New_York", "2024-03-01T00:00:00Z"},
      {"*/13 * * * * *", "UTC", "2024-12-31T23:50:00.250Z"},
      {"0 0 * * 1#1,5L", "Asia/Kolkata", "2024-01-01T00:00:00Z"},
      {"0 12 LW * *", "Europe/London", "2020-01-01T00:00:00Z"},
      {"0 0 29 2 *", "America/Sao_Paulo", "2000-01-01T00:00:00Z"},
  };
  for (const SequenceCase& c : cases) {
    SCOPED_TRACE(std::string(c.expr) + " in " + c.tz + " from " + c.from);
    Result<CronSchedule> s = CronSchedule::Parse(c.expr, c.tz);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    const TimePoint from = At(c.from);
    std::vector<TimePoint> out(300);
    ASSERT_EQ(s->NextN(from, out), out.size());
    TimePoint prev = from;
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_GT(out[i], prev) << "index " << i << ": " << Fmt(out[i]) << " after " << Fmt(prev);
      ASSERT_EQ(ToUnixMillis(out[i]) % 1000, 0) << Fmt(out[i]);
      ASSERT_EQ(Fmt(s->Next(prev)), Fmt(out[i])) << "index " << i;
      prev = out[i];
    }
  }
}

// --- @every ----------------------------------------------------------------------------------

struct EveryCase {
  const char* expr;
  Duration every;
};

TEST(CronEveryTest, IntervalFromFrom) {
  const EveryCase cases[] = {
      {"@every 90s", seconds(90)},
      {"@every 5m", minutes(5)},
      {"@every 1h30m", hours(1) + minutes(30)},
      {"@every 250ms", milliseconds(250)},
  };
  for (const EveryCase& c : cases) {
    SCOPED_TRACE(c.expr);
    Result<CronSchedule> s = CronSchedule::Parse(c.expr, "America/New_York");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE(s->every().has_value());
    EXPECT_EQ(*s->every(), c.every);
    EXPECT_FALSE(s->fixed_time());
    // Not aligned to anything, not affected by DST: from + D, from + 2D, ...
    for (const char* from_text :
         {"2024-05-05T10:00:00Z", "2024-03-10T06:59:59.123Z", "2024-11-03T05:30:00.001Z"}) {
      const TimePoint from = At(from_text);
      EXPECT_EQ(Fmt(s->Next(from)), Fmt(from + c.every)) << from_text;
      std::array<TimePoint, 3> out{};
      ASSERT_EQ(s->NextN(from, out), 3u);
      EXPECT_EQ(Fmt(out[0]), Fmt(from + c.every));
      EXPECT_EQ(Fmt(out[1]), Fmt(from + 2 * c.every));
      EXPECT_EQ(Fmt(out[2]), Fmt(from + 3 * c.every));
    }
  }
}

TEST(CronEveryTest, CalendarExpressionsHaveNoEvery) {
  for (const char* expr : {"* * * * *", "@daily", "@hourly", "0 0 * * * *"}) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    ASSERT_TRUE(s.ok()) << expr << ": " << s.status().ToString();
    EXPECT_FALSE(s->every().has_value()) << expr;
  }
}

// --- Parsing: accepted forms -----------------------------------------------------------------

TEST(CronParseTest, AcceptsValidExpressions) {
  const char* const kValid[] = {
      "* * * * *",
      "* * * * * *",
      "0 0 * * *",
      "0\t0\t*\t*\t*",
      "0  0   * *  *",
      "0 \t0 * * *",
      "*/60 * * * *",
      "*/1 * * * *",
      "0 */24 * * *",
      "0 0 */31 * *",
      "0 0 1 */12 *",
      "0 0 * * */7",
      "*/60 * * * * *",
      "0-59/59 * * * *",
      "1,1,1 * * * *",
      "0-30,15-45 * * * *",
      "0 0 * * 0-7",
      "0 0 * * SUN-SAT",
      "0 0 * * MON-SUN",
      "0 0 * * SAT-SUN",
      "0 0 * * mon,WED,Fri",
      "0 0 * * MON-FRI/2",
      "0 0 1 jan-dec *",
      "0 0 1 Jan-Jun/2 *",
      "0 0 ? * *",
      "0 0 * * ?",
      "0 0 L * ?",
      "0 0 LW * *",
      "0 0 1W * *",
      "0 0 31W * *",
      "0 0 ? * 5L",
      "0 0 * * 5#L",
      "0 0 * * 5#1",
      "0 0 * * 5#5",
      "0 0 * * 1#1,5L",
      "0 0 * * 0#1,7#2",
      "0 0 29 2 *",
      "0 0 30 2 5",  // impossible day-of-month, but either day field may match
      "@yearly",
      "@annually",
      "@monthly",
      "@weekly",
      "@daily",
      "@midnight",
      "@hourly",
      "@every 90s",
      "@every 1h30m",
  };
  for (const char* expr : kValid) {
    Result<CronSchedule> s = CronSchedule::Parse(expr, "Europe/London");
    EXPECT_TRUE(s.ok()) << "'" << expr << "': " << s.status().ToString();
  }
}

TEST(CronParseTest, KeepsExpressionAndTimeZone) {
  Result<CronSchedule> s = CronSchedule::Parse("30 2 * * *", "America/New_York");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->expression(), "30 2 * * *");
  EXPECT_EQ(s->timezone(), "America/New_York");
}

TEST(CronParseTest, EmptyTimeZoneIsUtc) {
  Result<CronSchedule> empty = CronSchedule::Parse("0 12 * * *", "");
  Result<CronSchedule> utc = CronSchedule::Parse("0 12 * * *", "UTC");
  Result<CronSchedule> defaulted = CronSchedule::Parse("0 12 * * *");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  ASSERT_TRUE(utc.ok()) << utc.status().ToString();
  ASSERT_TRUE(defaulted.ok()) << defaulted.status().ToString();
  const TimePoint from = At("2024-07-01T13:00:00Z");
  EXPECT_EQ(Fmt(empty->Next(from)), "2024-07-02T12:00:00Z");
  EXPECT_EQ(Fmt(utc->Next(from)), "2024-07-02T12:00:00Z");
  EXPECT_EQ(Fmt(defaulted->Next(from)), "2024-07-02T12:00:00Z");
}

// Equivalent spellings give the same schedule.
TEST(CronParseTest, EquivalentSpellings) {
  const std::array<const char*, 2> kPairs[] = {
      {"0 0 * * 7", "0 0 * * 0"},
      {"0 0 * * SUN", "0 0 * * 0"},
      {"0 0 * * sun", "0 0 * * 7"},
      {"0 0 * * FRI-SUN", "0 0 * * 5,6,0"},
      {"0 0 * * 5-7", "0 0 * * 5,6,0"},
      {"0 0 * * 5-SUN", "0 0 * * 5,6,0"},
      {"0 0 * * SAT-SUN", "0 0 * * 6,0"},
      {"0 0 * * MON-SUN", "0 0 * * *"},
      {"0 0 * * SUN-SAT", "0 0 * * *"},
      {"0 0 * * 0-7", "0 0 * * *"},
      {"0 0 * * MON-FRI", "0 0 * * 1-5"},
      {"0 0 1 JAN-MAR *", "0 0 1 1-3 *"},
      {"0 0 1 jan,Feb,MAR *", "0 0 1 1-3 *"},
      {"0 0 ? * 1", "0 0 * * 1"},
      {"0 0 1 * ?", "0 0 1 * *"},
      {"0 0 * * 5#L", "0 0 * * 5L"},
      {"0 0 * * 7#2", "0 0 * * 0#2"},
      {"0 0 * * 7L", "0 0 * * 0L"},
      {"*/20 * * * *", "0,20,40 * * * *"},
      {"0 0 */10 * *", "0 0 1,11,21,31 * *"},
      {"0 0 * * */3", "0 0 * * 0,3,6"},
      {"5 4 * * *", "0 5 4 * * *"},
      {"@yearly", "0 0 1 1 *"},
      {"@annually", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},
      {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"},
  };
  for (const auto& [a, b] : kPairs) {
    SCOPED_TRACE(std::string(a) + " vs " + b);
    Result<CronSchedule> sa = CronSchedule::Parse(a, "America/New_York");
    Result<CronSchedule> sb = CronSchedule::Parse(b, "America/New_York");
    ASSERT_TRUE(sa.ok()) << sa.status().ToString();
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    const TimePoint from = At("2024-01-01T00:00:00Z");
    EXPECT_EQ(NextNStrings(*sa, from, 40), NextNStrings(*sb, from, 40));
    EXPECT_EQ(sa->fixed_time(), sb->fixed_time());
  }
}

// A range ending in the name SUN means "up to the Sunday that ends the week" only when it would
// otherwise be reversed (FRI-SUN); SUN-SUN is not reversed and is just Sunday.
TEST(CronParseTest, DowRangeSunToSunIsSundayOnly) {
  Result<CronSchedule> s = CronSchedule::Parse("0 0 * * SUN-SUN");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_THAT(
      NextNStrings(*s, At("2024-05-01T00:00:00Z"), 3),
      ElementsAreArray({"2024-05-05T00:00:00Z", "2024-05-12T00:00:00Z", "2024-05-19T00:00:00Z"}));
}

// Fields is public "for tests and tools"; a few spot checks of the parsed bit sets.
TEST(CronParseTest, FieldBits) {
  auto fields = [](const char* expr) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    EXPECT_TRUE(s.ok()) << expr << ": " << s.status().ToString();
    return s.ok() ? s->fields() : CronSchedule::Fields{};
  };
  EXPECT_EQ(fields("* * * * *").seconds, uint64_t{1});  // 5 fields fire at second 0
  EXPECT_EQ(fields("*/15 * * * *").minutes,
            (uint64_t{1} << 0) | (uint64_t{1} << 15) | (uint64_t{1} << 30) | (uint64_t{1} << 45));
  EXPECT_EQ(fields("0 9-17/4 * * *").hours, (1u << 9) | (1u << 13) | (1u << 17));
  EXPECT_EQ(fields("0 0 * * 7").weekdays, 1u);
  EXPECT_EQ(fields("0 0 * * 0,7").weekdays, 1u);
  EXPECT_EQ(fields("0 0 * * FRI-SUN").weekdays, (1u << 5) | (1u << 6) | 1u);
  EXPECT_EQ(fields("0 0 * * mon-fri").weekdays, 0x3Eu);
  EXPECT_EQ(fields("0 0 * JAN-MAR *").months, 0b1110u);
  EXPECT_EQ(fields("0 0 */2 * *").days & 0b111u, 0b010u);  // 1, 3, 5, ... (bit 0 unused)
  EXPECT_TRUE(fields("0 0 L * *").last_day);
  EXPECT_TRUE(fields("0 0 LW * *").last_weekday_of_month);
  EXPECT_EQ(fields("0 0 15W * *").nearest_weekday, 1u << 15);
  const CronSchedule::Fields list = fields("0 0 * * 1#1,5L");
  EXPECT_EQ(list.last_of_month, 1u << 5);
  EXPECT_EQ(list.nth[1], 1u << 1);
  EXPECT_EQ(fields("0 0 * * 5#L").last_of_month, 1u << 5);

  EXPECT_TRUE(fields("0 0 */2 * 1").day_and);
  EXPECT_TRUE(fields("0 0 1 * *").day_and);
  EXPECT_TRUE(fields("0 0 ? * 1").day_and);
  EXPECT_TRUE(fields("0 0 1 * ?").day_and);
  EXPECT_FALSE(fields("0 0 1,15 * 5").day_and);
  EXPECT_FALSE(fields("0 0 1-31 * 1").day_and);
}

// Vixie's classes: fixed-time iff second, minute and hour contain no '*' or '/'.
struct FixedTimeCase {
  const char* expr;
  bool fixed_time;
};

TEST(CronParseTest, FixedTimeClass) {
  const FixedTimeCase cases[] = {
      {"30 2 * * *", true},       {"0 30 2 * * *", true}, {"0,30 2 * * *", true},
      {"0 1-3 * * *", true},      {"0 0 L * *", true},    {"0 0 * * 5#2", true},
      {"59 59 23 31 12 *", true}, {"@daily", true},       {"@midnight", true},
      {"@weekly", true},          {"@monthly", true},     {"@yearly", true},
      {"*/30 * * * *", false},    {"0 * * * *", false},   {"0 */2 * * *", false},
      {"0 1-5/2 * * *", false},   {"* 0 0 * * *", false}, {"*/5 0 0 * * *", false},
      {"30 */1 * * *", false},    {"* * * * *", false},   {"@hourly", false},
      {"@every 5m", false},
  };
  for (const FixedTimeCase& c : cases) {
    Result<CronSchedule> s = CronSchedule::Parse(c.expr, "America/New_York");
    ASSERT_TRUE(s.ok()) << c.expr << ": " << s.status().ToString();
    EXPECT_EQ(s->fixed_time(), c.fixed_time) << c.expr;
  }
}

// --- Parsing: errors -------------------------------------------------------------------------

TEST(CronParseErrorTest, ExactMessageForOutOfRangeHour) {
  for (const char* expr : {"0 25 * * *", "0 0 25 * * *"}) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    ASSERT_FALSE(s.ok()) << expr;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.status().message(), "hour: value 25 out of range 0-23") << expr;
    EXPECT_EQ(s.status().ToString(), "invalid_argument: hour: value 25 out of range 0-23");
  }
}

TEST(CronParseErrorTest, OccurrenceOutOfRange) {
  Result<CronSchedule> s = CronSchedule::Parse("0 0 * * 5#6");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("day-of-week"));
  EXPECT_THAT(s.status().message(), HasSubstr("'5#6'"));
  EXPECT_THAT(s.status().message(), HasSubstr("occurrence must be 1-5"));
}

TEST(CronParseErrorTest, UnknownTimeZone) {
  for (const char* tz :
       {"Mars/Base", "America/Nowhere", "EST5EDT6", "../etc/passwd", "localtime", "posixrules"}) {
    Result<CronSchedule> s = CronSchedule::Parse("0 0 * * *", tz);
    ASSERT_FALSE(s.ok()) << tz;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("timezone")) << tz;
    EXPECT_THAT(s.status().message(), HasSubstr(tz));
  }
}

// The host's zone file is no zone to schedule by: each node of a cluster may have another.
TEST(CronParseErrorTest, LocaltimeAsksForTheZonesName) {
  Result<CronSchedule> s = CronSchedule::Parse("0 0 * * *", "localtime");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("name the zone"));
}

TEST(CronParseErrorTest, NeverFires) {
  for (const char* expr : {"0 0 30 2 *", "0 0 31 2 *", "0 0 31 4 *", "0 0 31 4,6,9,11 *",
                           "0 0 30,31 2 ?", "0 0 30W 2 *", "0 0 31W 6 *", "0 0 0 31 11 *"}) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    ASSERT_FALSE(s.ok()) << expr;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << expr;
    EXPECT_THAT(s.status().message(), HasSubstr("never fires")) << expr;
  }
}

// Errors with no single field to blame: the number of fields, macros.
TEST(CronParseErrorTest, WholeExpressionErrors) {
  for (const char* expr :
       {"", " ", "* * * *", "* * * * * * *", "0 0 1 1 * 2024", "* * * *\n*", "@DAILY", "@Daily",
        "@foo", "@", "@every", "@every ", "@every 0s", "@every 5", "@every 5x", "@every -5s",
        "@every90s", "@daily *", "@every 5m 5m"}) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    ASSERT_FALSE(s.ok()) << "'" << expr << "'";
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << "'" << expr << "'";
    EXPECT_FALSE(s.status().message().empty()) << "'" << expr << "'";
  }
}

TEST(CronParseErrorTest, UnknownMacroNamesTheMacro) {
  for (const char* expr : {"@DAILY", "@Hourly", "@foo", "@reboot"}) {
    Result<CronSchedule> s = CronSchedule::Parse(expr);
    ASSERT_FALSE(s.ok()) << expr;
    EXPECT_THAT(s.status().message(), HasSubstr(expr));
  }
}

struct ErrorCase {
  const char* expr;
  const char* field;  // as named in messages
  const char* token;  // the offending token (or its offending number)
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << "'" << c.expr << "'"; }

class CronParseFieldErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(CronParseFieldErrorTest, NamesFieldAndToken) {
  const ErrorCase& c = GetParam();
  Result<CronSchedule> s = CronSchedule::Parse(c.expr);
  ASSERT_FALSE(s.ok()) << "'" << c.expr << "' parsed";
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr(std::string(c.field) + ":")) << "'" << c.expr << "'";
  EXPECT_THAT(s.status().message(), HasSubstr(c.token)) << "'" << c.expr << "'";
}

INSTANTIATE_TEST_SUITE_P(
    OutOfRange, CronParseFieldErrorTest,
    ::testing::Values(
        ErrorCase{"60 * * * * *", "second", "60"}, ErrorCase{"0 60 * * * *", "minute", "60"},
        ErrorCase{"60 * * * *", "minute", "60"}, ErrorCase{"0-60 * * * *", "minute", "60"},
        ErrorCase{"0 24 * * *", "hour", "24"}, ErrorCase{"0 0 0 * *", "day-of-month", "0"},
        ErrorCase{"0 0 32 * *", "day-of-month", "32"},
        ErrorCase{"0 0 1-32 * *", "day-of-month", "32"}, ErrorCase{"0 0 * 0 *", "month", "0"},
        ErrorCase{"0 0 * 13 *", "month", "13"}, ErrorCase{"0 0 * * 8", "day-of-week", "8"},
        ErrorCase{"0 0 * * 1-8", "day-of-week", "8"},
        ErrorCase{"0 0 32W * *", "day-of-month", "32"},
        ErrorCase{"0 0 * * 8#1", "day-of-week", "8"}, ErrorCase{"0 0 * * 8L", "day-of-week", "8"}));

INSTANTIATE_TEST_SUITE_P(
    Steps, CronParseFieldErrorTest,
    ::testing::Values(
        ErrorCase{"*/0 * * * *", "minute", "0"}, ErrorCase{"*/100 * * * *", "minute", "100"},
        ErrorCase{"*/61 * * * * *", "second", "61"}, ErrorCase{"0 */25 * * *", "hour", "25"},
        ErrorCase{"0 0 */32 * *", "day-of-month", "32"}, ErrorCase{"0 0 1 */13 *", "month", "13"},
        ErrorCase{"0 0 * * */8", "day-of-week", "8"}, ErrorCase{"0 0 * * */0", "day-of-week", "0"},
        ErrorCase{"5-10/0 * * * *", "minute", "0"}, ErrorCase{"5/15 * * * *", "minute", "5/15"},
        ErrorCase{"/5 * * * *", "minute", "/5"}, ErrorCase{"*/ * * * *", "minute", "*/"},
        ErrorCase{"0 0 1/2 * *", "day-of-month", "1/2"},
        ErrorCase{"*/5/2 * * * *", "minute", "*/5/2"}, ErrorCase{"0 */x * * *", "hour", "x"}));

INSTANTIATE_TEST_SUITE_P(Ranges, CronParseFieldErrorTest,
                         ::testing::Values(ErrorCase{"0 0 * * 5-1", "day-of-week", "5-1"},
                                           ErrorCase{"0 0 * * FRI-MON", "day-of-week", "FRI-MON"},
                                           ErrorCase{"0 0 * * 5-0", "day-of-week", "5-0"},
                                           ErrorCase{"30-10 * * * *", "minute", "30-10"},
                                           ErrorCase{"0 0 20-10 * *", "day-of-month", "20-10"},
                                           ErrorCase{"0 0 * DEC-JAN *", "month", "DEC-JAN"},
                                           ErrorCase{"1-2-3 * * * *", "minute", "1-2-3"},
                                           ErrorCase{"1- * * * *", "minute", "1-"},
                                           ErrorCase{"-1 * * * *", "minute", "-1"},
                                           ErrorCase{"*-5 * * * *", "minute", "*-5"}));

INSTANTIATE_TEST_SUITE_P(Lists, CronParseFieldErrorTest,
                         ::testing::Values(ErrorCase{"1,,2 * * * *", "minute", ""},
                                           ErrorCase{"1, * * * *", "minute", ""},
                                           ErrorCase{",1 * * * *", "minute", ""},
                                           ErrorCase{"0 0 * * 1,,5", "day-of-week", ""},
                                           ErrorCase{"0 0 1,,15 * *", "day-of-month", ""}));

INSTANTIATE_TEST_SUITE_P(Names, CronParseFieldErrorTest,
                         ::testing::Values(ErrorCase{"0 0 * FOO *", "month", "FOO"},
                                           ErrorCase{"0 0 * * FOO", "day-of-week", "FOO"},
                                           ErrorCase{"0 0 * MON *", "month", "MON"},
                                           ErrorCase{"0 0 * * JAN", "day-of-week", "JAN"},
                                           ErrorCase{"0 MON * * *", "hour", "MON"},
                                           ErrorCase{"0 0 JAN * *", "day-of-month", "JAN"},
                                           ErrorCase{"0 0 * JANUARY *", "month", "JANUARY"},
                                           ErrorCase{"0 0 * * MONDAY", "day-of-week", "MONDAY"},
                                           ErrorCase{"a * * * *", "minute", "a"},
                                           ErrorCase{"1.5 * * * *", "minute", "1.5"},
                                           ErrorCase{"0 0 * * 1x", "day-of-week", "1x"}));

INSTANTIATE_TEST_SUITE_P(QuestionMark, CronParseFieldErrorTest,
                         ::testing::Values(ErrorCase{"? * * * *", "minute", "?"},
                                           ErrorCase{"? * * * * *", "second", "?"},
                                           ErrorCase{"0 ? * * *", "hour", "?"},
                                           ErrorCase{"0 0 * ? *", "month", "?"},
                                           ErrorCase{"0 0 1,? * *", "day-of-month", "?"},
                                           ErrorCase{"0 0 * * ?,1", "day-of-week", "?"},
                                           ErrorCase{"0 0 ?/2 * *", "day-of-month", "?"}));

INSTANTIATE_TEST_SUITE_P(Quartz, CronParseFieldErrorTest,
                         ::testing::Values(ErrorCase{"0 0 * * 5#0", "day-of-week", "5#0"},
                                           ErrorCase{"0 0 * * 5#", "day-of-week", "5#"},
                                           ErrorCase{"0 0 * * #2", "day-of-week", "#2"},
                                           ErrorCase{"0 0 * * 5W", "day-of-week", "5W"},
                                           ErrorCase{"0 0 * * LW", "day-of-week", "LW"},
                                           ErrorCase{"0 0 1#1 * *", "day-of-month", "1#1"},
                                           ErrorCase{"0 0 W * *", "day-of-month", "W"},
                                           ErrorCase{"0 0 0W * *", "day-of-month", "0"},
                                           ErrorCase{"0 0 1-5W * *", "day-of-month", "1-5W"},
                                           ErrorCase{"0 0 * L *", "month", "L"},
                                           ErrorCase{"L * * * *", "minute", "L"},
                                           ErrorCase{"0 L * * *", "hour", "L"}));

}  // namespace
}  // namespace jobsched
