// `jobsched cron next`, single and batch, driven in-process with a fake clock.
#include "cli/cron_cmd.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "core/time_util.h"

namespace jobsched::cli {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

class CronCmdTest : public ::testing::Test {
 protected:
  FakeClock clock_{*ParseRfc3339("2024-06-01T12:00:00Z")};

  std::vector<Json> Batch(const std::string& input) {
    std::istringstream in(input);
    std::ostringstream out;
    EXPECT_EQ(RunCronBatch(in, clock_, out), kExitOk);
    std::vector<Json> lines;
    std::istringstream result(out.str());
    for (std::string line; std::getline(result, line);) lines.push_back(Json::parse(line));
    return lines;
  }
};

TEST_F(CronCmdTest, NextPrintsUtcAndLocalAcrossSpringForward) {
  std::ostringstream out, err;
  CronNextArgs args{
      .expr = "30 2 * * *", .tz = "America/New_York", .from = "2024-03-09T12:00:00Z", .n = 2};
  ASSERT_EQ(RunCronNext(args, clock_, out, err), kExitOk) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("2024-03-10T07:00:00Z   2024-03-10 03:00:00 EDT"));
  EXPECT_THAT(out.str(), HasSubstr("2024-03-11T06:30:00Z   2024-03-11 02:30:00 EDT"));
}

// Zone files list transitions only up to some year (Debian's, to 2037); after that the local
// column follows each file's closing rule, as the fire times do, and not the last listed offset.
TEST_F(CronCmdTest, NextLocalTimeFollowsTheZoneRuleAfterTheLastListedTransition) {
  struct Case {
    CronNextArgs args;
    std::vector<const char*> lines;
  } cases[] = {
      {{.expr = "0 9 * * *", .tz = "America/New_York", .from = "2040-07-01T00:00:00Z", .n = 1},
       {"2040-07-01T13:00:00Z   2040-07-01 09:00:00 EDT"}},
      {{.expr = "0 9 * * *", .tz = "Europe/Berlin", .from = "2045-07-01T00:00:00Z", .n = 1},
       {"2045-07-01T07:00:00Z   2045-07-01 09:00:00 CEST"}},
      // Southern hemisphere: the file's last listed period is summer time, from October 2037.
      {{.expr = "0 9 1 1,7 *", .tz = "Australia/Sydney", .from = "2045-01-01T00:00:00Z", .n = 2},
       {"2045-06-30T23:00:00Z   2045-07-01 09:00:00 AEST",
        "2045-12-31T22:00:00Z   2046-01-01 09:00:00 AEDT"}},
  };
  for (const Case& c : cases) {
    std::ostringstream out, err;
    ASSERT_EQ(RunCronNext(c.args, clock_, out, err), kExitOk) << err.str();
    for (const char* line : c.lines) EXPECT_THAT(out.str(), HasSubstr(line)) << c.args.tz;
  }
}

TEST_F(CronCmdTest, NextLocalTimeAcrossSpringForwardAndAutumnRepeatAfterTheLastListedTransition) {
  std::ostringstream out, err;
  // 2:30 does not exist on 2040-03-11; the job runs at 3:00 EDT.
  CronNextArgs spring{
      .expr = "30 2 * * *", .tz = "America/New_York", .from = "2040-03-10T12:00:00Z", .n = 2};
  ASSERT_EQ(RunCronNext(spring, clock_, out, err), kExitOk) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("2040-03-11T07:00:00Z   2040-03-11 03:00:00 EDT"));
  EXPECT_THAT(out.str(), HasSubstr("2040-03-12T06:30:00Z   2040-03-12 02:30:00 EDT"));
  // 1:00-2:00 happens twice on 2040-11-04, first as EDT and then as EST.
  out.str("");
  CronNextArgs autumn{
      .expr = "30 * * * *", .tz = "America/New_York", .from = "2040-11-04T04:00:00Z", .n = 3};
  ASSERT_EQ(RunCronNext(autumn, clock_, out, err), kExitOk) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("2040-11-04T04:30:00Z   2040-11-04 00:30:00 EDT"));
  EXPECT_THAT(out.str(), HasSubstr("2040-11-04T05:30:00Z   2040-11-04 01:30:00 EDT"));
  EXPECT_THAT(out.str(), HasSubstr("2040-11-04T06:30:00Z   2040-11-04 01:30:00 EST"));
}

TEST_F(CronCmdTest, NextJsonLocalFollowsTheZoneRuleAfterTheLastListedTransition) {
  std::ostringstream out, err;
  CronNextArgs args{.expr = "0 9 * * *",
                    .tz = "America/New_York",
                    .from = "2040-07-01T00:00:00Z",
                    .n = 1,
                    .output = "json"};
  ASSERT_EQ(RunCronNext(args, clock_, out, err), kExitOk) << err.str();
  Json j = Json::parse(out.str());
  EXPECT_EQ(j["next"][0]["utc"], "2040-07-01T13:00:00Z");
  EXPECT_EQ(j["next"][0]["local"], "2040-07-01 09:00:00 EDT");
}

TEST_F(CronCmdTest, NextJsonOutput) {
  std::ostringstream out, err;
  CronNextArgs args{.expr = "0 0 * * *", .from = "2024-01-01T00:00:00Z", .n = 2, .output = "json"};
  ASSERT_EQ(RunCronNext(args, clock_, out, err), kExitOk);
  Json j = Json::parse(out.str());
  EXPECT_EQ(j["next"][0]["utc"], "2024-01-02T00:00:00Z");
  EXPECT_EQ(j["next"][1]["utc"], "2024-01-03T00:00:00Z");
  EXPECT_EQ(j["from"], "2024-01-01T00:00:00.000Z");
}

TEST_F(CronCmdTest, NextDefaultsFromToNow) {
  std::ostringstream out, err;
  CronNextArgs args{.expr = "0 13 * * *", .n = 1, .output = "json"};
  ASSERT_EQ(RunCronNext(args, clock_, out, err), kExitOk);
  EXPECT_EQ(Json::parse(out.str())["next"][0]["utc"], "2024-06-01T13:00:00Z");
}

TEST_F(CronCmdTest, NextErrorsExitWithUsageCodeAndNameTheProblem) {
  struct Case {
    CronNextArgs args;
    const char* message;
  } cases[] = {
      {{.expr = "0 25 * * *"}, "hour: value 25 out of range 0-23"},
      {{.expr = "0 0 * * *", .tz = "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"},
      {{.expr = "0 0 * * *", .from = "yesterday"}, "from: invalid RFC 3339 time 'yesterday'"},
      {{.expr = "0 0 * * *", .n = 0}, "n: must be between 1 and 1000"},
  };
  for (const Case& c : cases) {
    std::ostringstream out, err;
    EXPECT_EQ(RunCronNext(c.args, clock_, out, err), kExitUsage) << c.message;
    EXPECT_THAT(err.str(), HasSubstr(c.message));
    EXPECT_EQ(out.str(), "");
  }
}

TEST_F(CronCmdTest, BatchAnswersEachLineInOrderEchoingInput) {
  auto lines = Batch(
      R"({"id": 1, "expr": "30 2 * * *", "tz": "America/New_York", "from": "2024-03-09T12:00:00Z", "n": 2})"
      "\n"
      R"({"id": "b", "expr": "0 12 * * *", "n": 1})"
      "\n");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["id"], 1);
  EXPECT_EQ(lines[0]["tz"], "America/New_York");
  EXPECT_EQ(lines[0]["from"], "2024-03-09T12:00:00Z");
  EXPECT_EQ(lines[0]["next"], Json::array({"2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"}));
  EXPECT_EQ(lines[1]["id"], "b");
  EXPECT_EQ(lines[1]["tz"], "UTC");
  EXPECT_EQ(lines[1]["from"], "2024-06-01T12:00:00.000Z");  // the clock's now
  EXPECT_EQ(lines[1]["next"], Json::array({"2024-06-02T12:00:00Z"}));
}

TEST_F(CronCmdTest, BatchDefaultsToFiveTimes) {
  auto lines = Batch(R"({"expr": "@hourly", "from": "2024-01-01T00:00:00Z"})"
                     "\n");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["next"].size(), 5u);
  EXPECT_FALSE(lines[0].contains("id"));
}

TEST_F(CronCmdTest, BatchMalformedLinesGetErrorLinesAndProcessingContinues) {
  struct Case {
    const char* line;
    const char* error;
  } cases[] = {
      {"not json", "invalid JSON line"},
      {"", "invalid JSON line"},
      {"[1,2]", "expected a JSON object"},
      {R"({"id": 7})", "expr: missing"},
      {R"({"expr": 5})", "expr: must be a string"},
      {R"({"expr": "* * * * *", "tz": 3})", "tz: must be a string"},
      {R"({"expr": "* * * * *", "from": "soon"})", "from: invalid RFC 3339 time 'soon'"},
      {R"({"expr": "* * * * *", "n": "5"})", "n: must be an integer"},
      {R"({"expr": "* * * * *", "n": 100000})", "n: must be between 1 and 1000"},
      {R"({"expr": "* * * * *", "n": 18446744073709551615})",
       "n: must be between 1 and 1000, got 18446744073709551615"},
      {R"({"expr": "* * * * *", "zone": "UTC"})", "unknown field 'zone'"},
      {R"({"expr": "0 25 * * *"})", "hour: value 25 out of range 0-23"},
      {R"({"expr": "0 0 * * *", "tz": "Nowhere/Land"})", "unknown time zone 'Nowhere/Land'"},
      {"{\"expr\": \"\xff\xfe\"}", "invalid JSON line"},
  };
  std::string input;
  for (const Case& c : cases) input += std::string(c.line) + "\n";
  input += R"({"id": "last", "expr": "0 0 1 1 *", "from": "2024-06-01T00:00:00Z", "n": 1})"
           "\n";
  auto lines = Batch(input);
  ASSERT_EQ(lines.size(), std::size(cases) + 1);
  for (size_t i = 0; i < std::size(cases); ++i) {
    ASSERT_TRUE(lines[i]["next"].is_object()) << cases[i].line;
    EXPECT_THAT(lines[i]["next"]["error"].get<std::string>(), HasSubstr(cases[i].error))
        << cases[i].line;
  }
  EXPECT_EQ(lines.back()["id"], "last");
  EXPECT_EQ(lines.back()["next"], Json::array({"2025-01-01T00:00:00Z"}));
}

}  // namespace
}  // namespace jobsched::cli
