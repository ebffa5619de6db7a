#include "core/time_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace jobsched {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::HasSubstr;

// --- ParseRfc3339 -----------------------------------------------------------------------------

struct ParseOkCase {
  std::string_view text;
  int64_t unix_millis;
};

void PrintTo(const ParseOkCase& c, std::ostream* os) { *os << "'" << c.text << "'"; }

class ParseRfc3339OkTest : public ::testing::TestWithParam<ParseOkCase> {};

TEST_P(ParseRfc3339OkTest, Parses) {
  const ParseOkCase& c = GetParam();
  Result<TimePoint> t = ParseRfc3339(c.text);
  ASSERT_TRUE(t.ok()) << c.text << ": " << t.status().ToString();
  EXPECT_EQ(ToUnixMillis(*t), c.unix_millis) << c.text;
}

// Expected values computed with Python's datetime.
INSTANTIATE_TEST_SUITE_P(
    Table, ParseRfc3339OkTest,
    ::testing::Values(
        ParseOkCase{"2024-03-10T07:00:00Z", 1710054000000},
        ParseOkCase{"2024-03-10t07:00:00z", 1710054000000},
        ParseOkCase{"2024-03-10 07:00:00Z", 1710054000000},
        ParseOkCase{"2024-03-10T02:00:00-05:00", 1710054000000},
        ParseOkCase{"2024-03-10T12:30:00+05:30", 1710054000000},
        ParseOkCase{"2024-03-10T07:00:00+00:00", 1710054000000},
        ParseOkCase{"2024-03-10T07:00:00-00:00", 1710054000000},
        ParseOkCase{"2024-03-10T07:00:00.5Z", 1710054000500},
        ParseOkCase{"2024-03-10T07:00:00.25Z", 1710054000250},
        ParseOkCase{"2024-03-10T07:00:00.123Z", 1710054000123},
        ParseOkCase{"2024-03-10T07:00:00.1239Z", 1710054000123},  // truncated, not rounded
        ParseOkCase{"2024-03-10T07:00:00.999999999Z", 1710054000999},
        ParseOkCase{"2024-03-10T07:00:00.000000001Z", 1710054000000},
        ParseOkCase{"2024-03-10T02:00:00.250-05:00", 1710054000250},
        ParseOkCase{"1970-01-01T00:00:00Z", 0}, ParseOkCase{"1969-12-31T23:59:59.999Z", -1},
        ParseOkCase{"2024-01-01T00:30:00+01:00", 1704065400000},  // 2023-12-31T23:30:00Z
        ParseOkCase{"2024-02-29T12:34:56.789Z", 1709210096789},
        ParseOkCase{"2000-02-29T00:00:00Z", 951782400000},
        ParseOkCase{"2026-12-01T10:00:00Z", 1796119200000},
        ParseOkCase{"0000-01-01T00:00:00Z", -62167219200000},
        ParseOkCase{"9999-12-31T23:59:59.999Z", 253402300799999}));

struct ParseErrorCase {
  std::string_view text;
  std::string_view want;  // a substring naming the part that is wrong
};

void PrintTo(const ParseErrorCase& c, std::ostream* os) { *os << "'" << c.text << "'"; }

class ParseRfc3339ErrorTest : public ::testing::TestWithParam<ParseErrorCase> {};

TEST_P(ParseRfc3339ErrorTest, Rejects) {
  const ParseErrorCase& c = GetParam();
  Result<TimePoint> t = ParseRfc3339(c.text);
  ASSERT_FALSE(t.ok()) << c.text << " parsed as " << FormatRfc3339(*t);
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr(c.want)) << c.text;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRfc3339ErrorTest,
    ::testing::Values(ParseErrorCase{"2023-02-29T00:00:00Z", "day"},  // not a leap year
                      ParseErrorCase{"2100-02-29T00:00:00Z", "day"},  // not a leap year
                      ParseErrorCase{"2024-04-31T00:00:00Z", "day"},
                      ParseErrorCase{"2024-01-00T00:00:00Z", "day"},
                      ParseErrorCase{"2024-01-32T00:00:00Z", "day"},
                      ParseErrorCase{"2024-13-01T00:00:00Z", "month"},
                      ParseErrorCase{"2024-00-10T00:00:00Z", "month"},
                      ParseErrorCase{"2024-01-01T24:00:00Z", "hour"},
                      ParseErrorCase{"2024-01-01T23:60:00Z", "minute"},
                      ParseErrorCase{"2024-01-01T23:59:60Z", "second"},
                      ParseErrorCase{"2024-01-01T00:00:00", "zone"},
                      ParseErrorCase{"2024-01-01T00:00:00Zjunk", "trailing"},
                      ParseErrorCase{"2024-01-01T00:00:00Z ", "trailing"},
                      ParseErrorCase{"2024-01-01T00:00:00+05:00x", "trailing"},
                      ParseErrorCase{"2024-01-01T00:00:00.Z", "fraction"},
                      ParseErrorCase{"2024-01-01T00:00:00.1234567890Z", "fraction"},
                      ParseErrorCase{"2024-01-01T00:00:00+0500", "offset"},
                      ParseErrorCase{"2024-01-01T00:00:00+05", "offset"},
                      ParseErrorCase{"2024-01-01T00:00:00+24:00", "offset"},
                      ParseErrorCase{"2024-01-01T00:00:00+05:60", "offset"}, ParseErrorCase{"", ""},
                      ParseErrorCase{"2024-01-01", ""}, ParseErrorCase{"2024-1-01T00:00:00Z", ""},
                      ParseErrorCase{"24-01-01T00:00:00Z", ""},
                      ParseErrorCase{"2024-01-01X00:00:00Z", ""},
                      ParseErrorCase{"2024-01-01T0:00:00Z", ""},
                      ParseErrorCase{"2024-01-01T00:00Z", ""},
                      ParseErrorCase{"-2024-01-01T00:00:00Z", ""}));

// --- FormatRfc3339 ----------------------------------------------------------------------------

TEST(FormatRfc3339Test, MillisecondsAndZ) {
  EXPECT_EQ(FormatRfc3339(FromUnixMillis(1796119200000)), "2026-12-01T10:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(FromUnixMillis(1796119200250)), "2026-12-01T10:00:00.250Z");
  EXPECT_EQ(FormatRfc3339(FromUnixMillis(0)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(FromUnixMillis(-1)), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatRfc3339(FromUnixMillis(253402300799999)), "9999-12-31T23:59:59.999Z");
}

TEST(FormatRfc3339Test, SecondsDropsFraction) {
  EXPECT_EQ(FormatRfc3339Seconds(FromUnixMillis(1710054000000)), "2024-03-10T07:00:00Z");
  EXPECT_EQ(FormatRfc3339Seconds(FromUnixMillis(1710054000999)), "2024-03-10T07:00:00Z");
  EXPECT_EQ(FormatRfc3339Seconds(FromUnixMillis(-1)), "1969-12-31T23:59:59Z");
  EXPECT_EQ(FormatRfc3339Seconds(FromUnixMillis(0)), "1970-01-01T00:00:00Z");
}

TEST(FormatRfc3339Test, RoundTrips) {
  const int64_t kMillis[] = {0,
                             1,
                             -1,
                             999,
                             1710054000000,
                             1710054000123,
                             1709210096789,
                             -62167219200000,
                             253402300799999,
                             951782400001,
                             -86400001};
  for (int64_t ms : kMillis) {
    SCOPED_TRACE(ms);
    const TimePoint t = FromUnixMillis(ms);
    Result<TimePoint> back = ParseRfc3339(FormatRfc3339(t));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, t);

    const TimePoint whole = std::chrono::floor<seconds>(t);
    Result<TimePoint> back_seconds = ParseRfc3339(FormatRfc3339Seconds(t));
    ASSERT_TRUE(back_seconds.ok()) << back_seconds.status().ToString();
    EXPECT_EQ(*back_seconds, whole);
  }
}

// --- ParseDuration / FormatDuration -----------------------------------------------------------

struct DurationCase {
  std::string_view text;
  int64_t millis;
};

void PrintTo(const DurationCase& c, std::ostream* os) { *os << "'" << c.text << "'"; }

class ParseDurationOkTest : public ::testing::TestWithParam<DurationCase> {};

TEST_P(ParseDurationOkTest, Parses) {
  const DurationCase& c = GetParam();
  Result<Duration> d = ParseDuration(c.text);
  ASSERT_TRUE(d.ok()) << c.text << ": " << d.status().ToString();
  EXPECT_EQ(d->count(), c.millis) << c.text;
}

INSTANTIATE_TEST_SUITE_P(Table, ParseDurationOkTest,
                         ::testing::Values(DurationCase{"90s", 90'000}, DurationCase{"5m", 300'000},
                                           DurationCase{"1h30m", 5'400'000},
                                           DurationCase{"250ms", 250},
                                           DurationCase{"1d", 86'400'000},
                                           DurationCase{"1h", 3'600'000}, DurationCase{"1ms", 1},
                                           DurationCase{"1m30s", 90'000},
                                           DurationCase{"1d2h3m4s5ms", 93'784'005},
                                           DurationCase{"36500d", int64_t{36500} * 86'400'000}));

struct DurationErrorCase {
  std::string_view text;
};

void PrintTo(const DurationErrorCase& c, std::ostream* os) { *os << "'" << c.text << "'"; }

class ParseDurationErrorTest : public ::testing::TestWithParam<DurationErrorCase> {};

TEST_P(ParseDurationErrorTest, Rejects) {
  const std::string_view text = GetParam().text;
  Result<Duration> d = ParseDuration(text);
  ASSERT_FALSE(d.ok()) << "'" << text << "' parsed as " << d->count() << "ms";
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(d.status().message().empty());
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseDurationErrorTest,
    ::testing::Values(DurationErrorCase{""}, DurationErrorCase{"5"}, DurationErrorCase{"5x"},
                      DurationErrorCase{"-5s"}, DurationErrorCase{"0s"}, DurationErrorCase{"0ms"},
                      DurationErrorCase{"0h0m"}, DurationErrorCase{"abc"}, DurationErrorCase{"s"},
                      DurationErrorCase{"1.5h"}, DurationErrorCase{"1h 30m"},
                      DurationErrorCase{" 5m"}, DurationErrorCase{"5m "}, DurationErrorCase{"5M"},
                      DurationErrorCase{"1000000d"}, DurationErrorCase{"999999999999d"},
                      // 640511947004 * 86400000 wraps around 2^64 to 16945152 (~4.7 hours): a
                      // multiplication overflow must not turn a huge duration into a small one.
                      DurationErrorCase{"640511947004d"},
                      DurationErrorCase{"99999999999999999999s"}));

TEST(ParseDurationTest, AFractionIsRefusedWithTheWayToWriteIt) {
  for (const char* text : {"1.5s", "2,5m", "1h0.5m"}) {
    Result<Duration> d = ParseDuration(text);
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_THAT(d.status().message(), HasSubstr("fractions are not allowed")) << text;
  }
  EXPECT_THAT(ParseDuration("15").status().message(), HasSubstr("missing unit"));
}

// "1h1h" is not two hours, nor "30m1h" ninety minutes: a repeated or out-of-order unit is more
// likely a typo than a sum.
TEST(ParseDurationTest, EachUnitComesOnceLargestFirst) {
  for (const char* text : {"1h1h", "30m1h", "1s1m", "5ms5ms", "1h30m1h"}) {
    Result<Duration> d = ParseDuration(text);
    ASSERT_FALSE(d.ok()) << text << " parsed as " << d->count() << "ms";
    EXPECT_THAT(d.status().message(), HasSubstr("each unit once, largest first")) << text;
  }
}

TEST(FormatDurationTest, Examples) {
  EXPECT_EQ(FormatDuration(hours(1) + minutes(30)), "1h30m");
  EXPECT_EQ(FormatDuration(Duration(250)), "250ms");
  EXPECT_EQ(FormatDuration(Duration(0)), "0s");
  EXPECT_EQ(FormatDuration(hours(24)), "1d");
  EXPECT_EQ(FormatDuration(minutes(5)), "5m");
  EXPECT_EQ(FormatDuration(Duration(1)), "1ms");
}

TEST(FormatDurationTest, RoundTrips) {
  const int64_t kMillis[] = {1,
                             250,
                             999,
                             1'000,
                             90'000,
                             300'000,
                             5'400'000,
                             86'400'000,
                             93'784'005,
                             86'399'999,
                             3'601'000,
                             7'200'000,
                             int64_t{36500} * 86'400'000};
  for (int64_t ms : kMillis) {
    const std::string text = FormatDuration(Duration(ms));
    Result<Duration> back = ParseDuration(text);
    ASSERT_TRUE(back.ok()) << ms << " -> '" << text << "': " << back.status().ToString();
    EXPECT_EQ(back->count(), ms) << text;
  }
  // And the other way: canonical texts survive parse + format unchanged.
  for (std::string_view text : {"90s", "5m", "1h30m", "250ms", "1d"}) {
    Result<Duration> d = ParseDuration(text);
    ASSERT_TRUE(d.ok()) << text;
    Result<Duration> again = ParseDuration(FormatDuration(*d));
    ASSERT_TRUE(again.ok()) << text;
    EXPECT_EQ(*again, *d) << text;
  }
}

// Found by time_fuzz: an offset that moves the instant past 9999-12-31 in UTC could not be
// formatted back in four digits.
TEST(ParseRfc3339Regression, InstantsOutsideFourDigitUtcYearsAreRejected) {
  for (const char* text : {"9999-12-31t23:00:00.50-05:00", "0000-01-01T00:30:00+01:00"}) {
    auto t = ParseRfc3339(text);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.status().message().find("outside the years 0000-9999"), std::string::npos)
        << t.status().message();
  }
  auto last = ParseRfc3339("9999-12-31T23:59:59.999Z");
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(FormatRfc3339(*last), "9999-12-31T23:59:59.999Z");
}

}  // namespace
}  // namespace jobsched
