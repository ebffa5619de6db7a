// Tests of the job spec codec (docs/job-spec.md): parsing, defaults, validation errors with their
// field paths, the JSON round trip, id validation, attempts JSON and the enum names.
#include "core/job_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "core/time_util.h"

namespace jobsched {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

TimePoint T(std::string_view text) {
  Result<TimePoint> t = ParseRfc3339(text);
  EXPECT_TRUE(t.ok()) << text << ": " << t.status().ToString();
  return t.ok() ? *t : TimePoint{};
}

std::string Fmt(const std::optional<TimePoint>& t) { return t ? FormatRfc3339(*t) : "none"; }

// Compares every field of two specs; `what` names the case in failure messages.
void ExpectSpecEq(const JobSpec& got, const JobSpec& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.tenant, want.tenant);
  EXPECT_EQ(got.queue, want.queue);
  const Schedule& gs = got.schedule;
  const Schedule& ws = want.schedule;
  EXPECT_EQ(gs.kind, ws.kind);
  EXPECT_EQ(gs.cron, ws.cron);
  EXPECT_EQ(gs.timezone, ws.timezone);
  EXPECT_EQ(Fmt(gs.at), Fmt(ws.at));
  EXPECT_EQ(gs.every.count(), ws.every.count());
  EXPECT_EQ(gs.jitter.count(), ws.jitter.count());
  EXPECT_EQ(Fmt(gs.start_at), Fmt(ws.start_at));
  EXPECT_EQ(Fmt(gs.end_at), Fmt(ws.end_at));
  const HandlerSpec& gh = got.handler;
  const HandlerSpec& wh = want.handler;
  EXPECT_EQ(gh.type, wh.type);
  EXPECT_EQ(gh.name, wh.name);
  EXPECT_EQ(gh.command, wh.command);
  EXPECT_EQ(gh.env, wh.env);
  EXPECT_EQ(gh.cwd, wh.cwd);
  EXPECT_EQ(gh.method, wh.method);
  EXPECT_EQ(gh.url, wh.url);
  EXPECT_EQ(gh.headers, wh.headers);
  EXPECT_EQ(gh.body, wh.body);
  // The payload is JSON text; its spelling (spaces, key order) may be normalised.
  EXPECT_EQ(Json::parse(got.payload), Json::parse(want.payload));
  EXPECT_EQ(got.priority, want.priority);
  EXPECT_EQ(got.retry.max_attempts, want.retry.max_attempts);
  EXPECT_EQ(got.retry.backoff, want.retry.backoff);
  EXPECT_EQ(got.retry.initial_delay.count(), want.retry.initial_delay.count());
  EXPECT_EQ(got.retry.max_delay.count(), want.retry.max_delay.count());
  EXPECT_EQ(got.retry.jitter, want.retry.jitter);
  EXPECT_EQ(got.timeout.count(), want.timeout.count());
  EXPECT_EQ(got.overlap, want.overlap);
  EXPECT_EQ(got.misfire.policy, want.misfire.policy);
  EXPECT_EQ(got.misfire.grace.count(), want.misfire.grace.count());
  EXPECT_EQ(got.limits.cpu_seconds, want.limits.cpu_seconds);
  EXPECT_EQ(got.limits.memory_mb, want.limits.memory_mb);
  EXPECT_EQ(got.limits.max_output_bytes, want.limits.max_output_bytes);
  EXPECT_EQ(got.limits.cpu_cores, want.limits.cpu_cores);
  EXPECT_EQ(got.depends_on, want.depends_on);
  EXPECT_EQ(got.labels, want.labels);
  EXPECT_EQ(got.paused, want.paused);
}

// --- A spec with every field written out ------------------------------------------------------

constexpr std::string_view kDesignExample = R"json({
  "id": "nightly-report",
  "queue": "default",
  "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "jitter_ms": 0,
               "start_at": null, "end_at": null},
  "handler": {"type": "shell", "command": ["/usr/bin/backup", "--full"], "env": {}, "cwd": null},
  "payload": {"any": "json"},
  "priority": 5,
  "retry": {"max_attempts": 3, "backoff": "exponential", "initial_delay_ms": 1000,
            "max_delay_ms": 300000, "jitter": 0.2},
  "timeout_ms": 600000,
  "overlap": "skip",
  "misfire": {"policy": "fire_once", "grace_ms": 60000},
  "limits": {"cpu_seconds": 0, "memory_mb": 0, "max_output_bytes": 65536, "cpu_cores": 0},
  "depends_on": [],
  "labels": {"team": "data"},
  "paused": false
})json";

TEST(ParseJobSpecTest, DesignExampleLandsInEveryField) {
  Result<JobSpec> r = ParseJobSpec(kDesignExample);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const JobSpec& s = *r;
  EXPECT_EQ(s.id, "nightly-report");
  EXPECT_EQ(s.tenant, "default");
  EXPECT_EQ(s.queue, "default");
  EXPECT_EQ(s.schedule.kind, Schedule::Kind::kCron);
  EXPECT_EQ(s.schedule.cron, "0 2 * * *");
  EXPECT_EQ(s.schedule.timezone, "Europe/Berlin");
  EXPECT_EQ(s.schedule.jitter.count(), 0);
  EXPECT_FALSE(s.schedule.start_at.has_value());
  EXPECT_FALSE(s.schedule.end_at.has_value());
  EXPECT_EQ(s.handler.type, HandlerSpec::Type::kShell);
  EXPECT_EQ(s.handler.command, (std::vector<std::string>{"/usr/bin/backup", "--full"}));
  EXPECT_TRUE(s.handler.env.empty());
  EXPECT_EQ(s.handler.cwd, "");
  EXPECT_EQ(Json::parse(s.payload), Json({{"any", "json"}}));
  EXPECT_EQ(s.priority, 5);
  EXPECT_EQ(s.retry.max_attempts, 3);
  EXPECT_EQ(s.retry.backoff, Backoff::kExponential);
  EXPECT_EQ(s.retry.initial_delay.count(), 1000);
  EXPECT_EQ(s.retry.max_delay.count(), 300000);
  EXPECT_DOUBLE_EQ(s.retry.jitter, 0.2);
  EXPECT_EQ(s.timeout.count(), 600000);
  EXPECT_EQ(s.overlap, Overlap::kSkip);
  EXPECT_EQ(s.misfire.policy, Misfire::kFireOnce);
  EXPECT_EQ(s.misfire.grace.count(), 60000);
  EXPECT_EQ(s.limits.cpu_seconds, 0);
  EXPECT_EQ(s.limits.memory_mb, 0);
  EXPECT_EQ(s.limits.max_output_bytes, 65536);
  EXPECT_TRUE(s.depends_on.empty());
  EXPECT_EQ(s.labels, (std::map<std::string, std::string>{{"team", "data"}}));
  EXPECT_FALSE(s.paused);
}

TEST(ParseJobSpecTest, TenantComesFromTheArgument) {
  Result<JobSpec> r = ParseJobSpec(kDesignExample, "acme");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tenant, "acme");
}

TEST(ParseJobSpecTest, NonDefaultValuesLandInEveryField) {
  Result<JobSpec> r = ParseJobSpec(R"json({
    "id": "sync:eu-1.a_b",
    "queue": "critical",
    "schedule": {"every_ms": 15000, "jitter_ms": 250, "start_at": "2026-01-01T00:00:00.125Z",
                 "end_at": "2026-12-31T23:59:59Z"},
    "handler": {"type": "http", "method": "POST", "url": "https://example.com/hook",
                "headers": {"X-Token": "abc"}, "body": "{\"k\":1}"},
    "payload": [1, "two", {"three": 3}],
    "priority": 9,
    "retry": {"max_attempts": 100, "backoff": "fixed", "initial_delay_ms": 0,
              "max_delay_ms": 0, "jitter": 0},
    "timeout_ms": 1,
    "overlap": "replace",
    "misfire": {"policy": "fire_all", "grace_ms": 0},
    "limits": {"cpu_seconds": 10, "memory_mb": 512, "max_output_bytes": 0, "cpu_cores": 0.5},
    "labels": {"team": "data", "app.kubernetes.io/name": "x"},
    "paused": true
  })json");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const JobSpec& s = *r;
  EXPECT_EQ(s.id, "sync:eu-1.a_b");
  EXPECT_EQ(s.queue, "critical");
  EXPECT_EQ(s.schedule.kind, Schedule::Kind::kEvery);
  EXPECT_EQ(s.schedule.every.count(), 15000);
  EXPECT_EQ(s.schedule.jitter.count(), 250);
  EXPECT_EQ(Fmt(s.schedule.start_at), "2026-01-01T00:00:00.125Z");
  EXPECT_EQ(Fmt(s.schedule.end_at), "2026-12-31T23:59:59.000Z");
  EXPECT_EQ(s.handler.type, HandlerSpec::Type::kHttp);
  EXPECT_EQ(s.handler.method, "POST");
  EXPECT_EQ(s.handler.url, "https://example.com/hook");
  EXPECT_EQ(s.handler.headers, (std::map<std::string, std::string>{{"X-Token", "abc"}}));
  EXPECT_EQ(s.handler.body, "{\"k\":1}");
  EXPECT_EQ(Json::parse(s.payload), Json::parse(R"([1, "two", {"three": 3}])"));
  EXPECT_EQ(s.priority, 9);
  EXPECT_EQ(s.retry.max_attempts, 100);
  EXPECT_EQ(s.retry.backoff, Backoff::kFixed);
  EXPECT_EQ(s.retry.initial_delay.count(), 0);
  EXPECT_EQ(s.retry.max_delay.count(), 0);
  EXPECT_EQ(s.retry.jitter, 0.0);
  EXPECT_EQ(s.timeout.count(), 1);
  EXPECT_EQ(s.overlap, Overlap::kReplace);
  EXPECT_EQ(s.misfire.policy, Misfire::kFireAll);
  EXPECT_EQ(s.misfire.grace.count(), 0);
  EXPECT_EQ(s.limits.cpu_seconds, 10);
  EXPECT_EQ(s.limits.memory_mb, 512);
  EXPECT_EQ(s.limits.max_output_bytes, 0);
  EXPECT_EQ(s.limits.cpu_cores, 0.5);
  EXPECT_EQ(s.labels.size(), 2u);
  EXPECT_TRUE(s.paused);
}

TEST(ParseJobSpecTest, DefaultsWhenFieldsAreAbsent) {
  Result<JobSpec> r =
      ParseJobSpec(R"({"id": "j", "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const JobSpec& s = *r;
  EXPECT_EQ(s.tenant, "default");
  EXPECT_EQ(s.queue, "default");
  EXPECT_EQ(s.schedule.kind, Schedule::Kind::kNone);
  EXPECT_EQ(s.handler.type, HandlerSpec::Type::kBuiltin);
  EXPECT_EQ(s.handler.name, "noop");
  EXPECT_EQ(Json::parse(s.payload), Json(nullptr));
  EXPECT_EQ(s.priority, 5);
  EXPECT_EQ(s.retry.max_attempts, 1);
  EXPECT_EQ(s.retry.backoff, Backoff::kExponential);
  EXPECT_EQ(s.retry.initial_delay.count(), 1000);
  EXPECT_EQ(s.retry.max_delay.count(), 300000);
  EXPECT_DOUBLE_EQ(s.retry.jitter, 0.2);
  EXPECT_EQ(s.timeout.count(), 0);
  EXPECT_EQ(s.overlap, Overlap::kSkip);
  EXPECT_EQ(s.misfire.policy, Misfire::kFireOnce);
  EXPECT_EQ(s.misfire.grace.count(), 60000);
  EXPECT_EQ(s.limits.cpu_seconds, 0);
  EXPECT_EQ(s.limits.memory_mb, 0);
  EXPECT_EQ(s.limits.max_output_bytes, 65536);
  EXPECT_TRUE(s.depends_on.empty());
  EXPECT_TRUE(s.labels.empty());
  EXPECT_FALSE(s.paused);
}

TEST(ParseJobSpecTest, NullFieldsMeanAbsent) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "queue": null, "schedule": null,
      "handler": {"type": "builtin", "name": "noop"}, "payload": null, "priority": null,
      "retry": null, "timeout_ms": null, "overlap": null, "misfire": null, "limits": null,
      "depends_on": null, "labels": null, "paused": null})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  JobSpec want;
  want.id = "j";
  want.handler.name = "noop";
  ExpectSpecEq(*r, want, "all null");
}

TEST(ParseJobSpecTest, PartialNestedObjectsKeepTheOtherDefaults) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "handler": {"type": "builtin", "name": "noop"},
      "retry": {"max_attempts": 3}, "misfire": {"policy": "skip"},
      "limits": {"memory_mb": 64}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->retry.max_attempts, 3);
  EXPECT_EQ(r->retry.backoff, Backoff::kExponential);
  EXPECT_EQ(r->retry.initial_delay.count(), 1000);
  EXPECT_EQ(r->retry.max_delay.count(), 300000);
  EXPECT_DOUBLE_EQ(r->retry.jitter, 0.2);
  EXPECT_EQ(r->misfire.policy, Misfire::kSkip);
  EXPECT_EQ(r->misfire.grace.count(), 60000);
  EXPECT_EQ(r->limits.memory_mb, 64);
  EXPECT_EQ(r->limits.cpu_seconds, 0);
  EXPECT_EQ(r->limits.max_output_bytes, 65536);
}

TEST(ParseJobSpecTest, CronDefaultsToUtc) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {"cron": "*/5 * * * *"},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.kind, Schedule::Kind::kCron);
  EXPECT_EQ(r->schedule.timezone, "UTC");
  // An empty zone is not a zone: left out, it is UTC.
  r = ParseJobSpec(R"({"id": "j", "schedule": {"cron": "*/5 * * * *", "timezone": ""},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().field(), "schedule.timezone");
  EXPECT_THAT(r.status().message(), HasSubstr("leave it out"));
  // One stored by a version that took it for UTC still reads, as UTC.
  r = ParseStoredJobSpec(R"({"id": "j", "schedule": {"cron": "*/5 * * * *", "timezone": ""},
      "handler": {"type": "builtin", "name": "noop"}})",
                         "default");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.timezone, "UTC");
}

TEST(ParseJobSpecTest, AtSchedule) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {"at": "2026-12-01T11:00:00+01:00"},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.kind, Schedule::Kind::kAt);
  EXPECT_EQ(FormatRfc3339(r->schedule.at), "2026-12-01T10:00:00.000Z");
  EXPECT_EQ(Fmt(r->schedule.at), Fmt(T("2026-12-01T10:00:00Z")));
}

TEST(ParseJobSpecTest, EmptyScheduleObjectIsNoSchedule) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.kind, Schedule::Kind::kNone);
}

TEST(ParseJobSpecTest, AtEverySugarBecomesEveryMs) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {"cron": "@every 90s"},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.kind, Schedule::Kind::kEvery);
  EXPECT_EQ(r->schedule.every.count(), 90000);
  EXPECT_EQ(r->schedule.cron, "");
}

TEST(ParseJobSpecTest, AtEveryCompoundDuration) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {"cron": "@every 1h30m"},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->schedule.kind, Schedule::Kind::kEvery);
  EXPECT_EQ(r->schedule.every.count(), 5400000);
}

TEST(ParseJobSpecTest, DependsOnWithoutScheduleIsAccepted) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "report", "depends_on": ["extract", "load"],
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->depends_on, (std::vector<std::string>{"extract", "load"}));
}

// The whole document may be 32 levels deep; braces inside strings do not count.
TEST(ParseJobSpecTest, NestingOfExactly32LevelsIsAccepted) {
  // The spec object is level 1, so a payload of 31 nested arrays makes 32 levels.
  const std::string payload = std::string(31, '[') + std::string(31, ']');
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "handler": {"type": "builtin", "name": "noop"},
      "payload": )" + payload + "}");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Json::parse(r->payload), Json::parse(payload));
}

TEST(ParseJobSpecTest, NestingOf33LevelsIsRejected) {
  const std::string payload = std::string(32, '[') + std::string(32, ']');
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "handler": {"type": "builtin", "name": "noop"},
      "payload": )" + payload + "}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(StatusCodeName(r.status().code()), "invalid_argument");
  EXPECT_THAT(r.status().message(), HasSubstr("32"));
}

TEST(ParseJobSpecTest, BracketsInsideStringsDoNotCountAsNesting) {
  const std::string deep = std::string(40, '[') + std::string(40, '{');
  Json j = {{"id", "j"}, {"handler", {{"type", "builtin"}, {"name", "noop"}}}, {"payload", deep}};
  Result<JobSpec> r = ParseJobSpec(j.dump());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Json::parse(r->payload), Json(deep));
}

// --- Malformed specs: one table -----------------------------------------------------------------

constexpr std::string_view kMinimal =
    R"({"id": "j", "handler": {"type": "builtin", "name": "noop"}})";

// The minimal spec with `patch` applied as an RFC 7396 merge patch (null removes a member).
std::string Patched(std::string_view patch) {
  Json j = Json::parse(kMinimal);
  j.merge_patch(Json::parse(patch));
  return j.dump();
}

TEST(FirstDuplicateKeyTest, NamesThePathOfTheFirstRepeatedMember) {
  EXPECT_EQ(FirstDuplicateKey(R"({"a": 1, "b": {"c": 2}, "a": 3})"), "a");
  EXPECT_EQ(FirstDuplicateKey(R"({"a": {"x": 1, "x": 2}})"), "a.x");
  EXPECT_EQ(FirstDuplicateKey(R"([{"id": 1}, {"id": 2, "n": [0, {"k": 1, "k": 1}]}])"),
            "[1].n[1].k");
  // The same name in different objects, or as a value, is no repeat.
  EXPECT_EQ(FirstDuplicateKey(R"({"a": {"a": "a"}, "b": [{"a": 1}, {"a": 2}]})"), std::nullopt);
  EXPECT_EQ(FirstDuplicateKey(R"([1, 2, 3])"), std::nullopt);
  EXPECT_EQ(FirstDuplicateKey("{not json"), std::nullopt);
}

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

struct BadSpecCase {
  std::string name;
  std::string json;
  std::string field;               // expected Status::field(); "" for whole-document errors
  std::vector<std::string> words;  // the message contains at least one of these
};

void PrintTo(const BadSpecCase& c, std::ostream* os) { *os << c.name << ": " << c.json; }

std::vector<BadSpecCase> BadSpecCases() {
  return {
      // Whole-document errors.
      {"InvalidJson", R"({"id": "j",)", "", {"JSON", "json"}},
      {"EmptyInput", "", "", {"JSON", "json"}},
      {"TrailingGarbage", std::string(kMinimal) + " x", "", {"JSON", "json"}},
      {"NotAnObjectArray", "[1, 2]", "", {"object"}},
      {"NotAnObjectString", R"("job")", "", {"object"}},
      {"NotAnObjectNull", "null", "", {"object"}},
      {"NestingDeeperThan32",
       Patched(R"({"payload": )" + Nested(40) + "}"),
       "",
       {"nesting", "deep"}},
      // Unknown fields.
      {"UnknownTopLevelField", Patched(R"({"colour": "red"})"), "colour", {"unknown"}},
      {"UnknownScheduleField",
       Patched(R"({"schedule": {"crn": "* * * * *"}})"),
       "schedule.crn",
       {"unknown"}},
      {"UnknownRetryField",
       Patched(R"({"retry": {"max_attempt": 3}})"),
       "retry.max_attempt",
       {"unknown"}},
      {"UnknownMisfireField",
       Patched(R"({"misfire": {"grace": 5}})"),
       "misfire.grace",
       {"unknown"}},
      {"UnknownLimitsField", Patched(R"({"limits": {"cpu": 5}})"), "limits.cpu", {"unknown"}},
      {"UrlOnShellHandler",
       Patched(R"({"handler": {"type": "shell", "name": null, "command": ["/bin/true"],
                               "url": "http://x"}})"),
       "handler.url",
       {"unknown"}},
      {"CommandOnBuiltinHandler",
       Patched(R"({"handler": {"command": ["/bin/true"]}})"),
       "handler.command",
       {"unknown"}},
      {"NameOnHttpHandler",
       Patched(R"({"handler": {"type": "http", "url": "https://x.org/"}})"),
       "handler.name",
       {"unknown"}},
      // Handler.
      {"MissingHandler", Patched(R"({"handler": null})"), "handler", {"missing"}},
      {"HandlerNotAnObject", Patched(R"({"handler": "noop"})"), "handler", {"object"}},
      {"MissingHandlerType",
       Patched(R"({"handler": {"type": null}})"),
       "handler.type",
       {"missing"}},
      {"BadHandlerType",
       Patched(R"({"handler": {"type": "python"}})"),
       "handler.type",
       {"one of", "builtin"}},
      {"HandlerTypeNotString",
       Patched(R"({"handler": {"type": 1}})"),
       "handler.type",
       {"one of", "builtin", "string"}},
      {"BuiltinWithoutName",
       Patched(R"({"handler": {"name": null}})"),
       "handler.name",
       {"missing"}},
      {"ShellCommandEmptyArray",
       Patched(R"({"handler": {"type": "shell", "name": null,
                                                         "command": []}})"),
       "handler.command",
       {"missing", "empty"}},
      {"ShellCommandMissing",
       Patched(R"({"handler": {"type": "shell", "name": null}})"),
       "handler.command",
       {"missing"}},
      {"ShellCommandNotArray",
       Patched(R"({"handler": {"type": "shell", "name": null,
                                                       "command": "ls -l"}})"),
       "handler.command",
       {"array"}},
      {"ShellCommandElementNotString",
       Patched(R"({"handler": {"type": "shell", "name": null,
                                                               "command": ["ls", 1]}})"),
       "handler.command[1]",
       {"string"}},
      {"ShellArgv0Empty",
       Patched(R"({"handler": {"type": "shell", "name": null,
                                                  "command": [""]}})"),
       "handler.command[0]",
       {"empty"}},
      {"ShellEnvValueNotString",
       Patched(R"({"handler": {"type": "shell", "name": null,
                                                         "command": ["x"], "env": {"A": 1}}})"),
       "handler.env.A",
       {"string"}},
      {"HttpUrlNotHttp",
       Patched(R"({"handler": {"type": "http", "name": null,
                                                 "url": "ftp://example.com/x"}})"),
       "handler.url",
       {"http"}},
      {"HttpUrlMissing",
       Patched(R"({"handler": {"type": "http", "name": null}})"),
       "handler.url",
       {"http", "missing"}},
      {"HttpBadMethod",
       Patched(R"({"handler": {"type": "http", "name": null, "method": "FETCH",
                                                "url": "https://example.com/x"}})"),
       "handler.method",
       {"one of", "GET"}},
      // Schedule.
      {"ScheduleNotAnObject", Patched(R"({"schedule": "* * * * *"})"), "schedule", {"object"}},
      {"TwoScheduleKinds",
       Patched(R"({"schedule": {"cron": "* * * * *", "every_ms": 1000}})"),
       "schedule",
       {"one of", "exactly one", "only one"}},
      {"ThreeScheduleKinds",
       Patched(R"({"schedule": {"cron": "* * * * *", "every_ms": 1000,
                                                      "at": "2026-01-01T00:00:00Z"}})"),
       "schedule",
       {"one of", "exactly one", "only one"}},
      {"TimezoneWithoutCron",
       Patched(R"({"schedule": {"every_ms": 1000, "timezone": "Europe/Berlin"}})"),
       "schedule.timezone",
       {"cron"}},
      {"TimezoneWithAt",
       Patched(R"({"schedule": {"at": "2026-01-01T00:00:00Z", "timezone": "UTC"}})"),
       "schedule.timezone",
       {"cron"}},
      {"BadCronRange",
       Patched(R"({"schedule": {"cron": "61 * * * *"}})"),
       "schedule.cron",
       {"range"}},
      {"BadCronFieldCount",
       Patched(R"({"schedule": {"cron": "* * * *"}})"),
       "schedule.cron",
       {"fields"}},
      {"CronNeverFires",
       Patched(R"({"schedule": {"cron": "0 0 30 2 *"}})"),
       "schedule.cron",
       {"never"}},
      {"CronEmpty",
       Patched(R"({"schedule": {"cron": ""}})"),
       "schedule.cron",
       {"missing", "empty"}},
      {"CronNotString", Patched(R"({"schedule": {"cron": 5}})"), "schedule.cron", {"string"}},
      {"CronBadEveryDuration",
       Patched(R"({"schedule": {"cron": "@every banana"}})"),
       "schedule.cron",
       {"@every", "duration"}},
      {"BadTimezone",
       Patched(R"({"schedule": {"cron": "0 2 * * *", "timezone": "Mars/Base"}})"),
       "schedule.timezone",
       {"time zone", "timezone"}},
      {"BadTimezoneWithAtEvery",
       Patched(R"({"schedule": {"cron": "@every 90s", "timezone": "Mars/Base"}})"),
       "schedule.timezone",
       {"time zone", "timezone"}},
      {"AtNotRfc3339", Patched(R"({"schedule": {"at": "tomorrow"}})"), "schedule.at", {"RFC 3339"}},
      {"AtNotString",
       Patched(R"({"schedule": {"at": 1767225600000}})"),
       "schedule.at",
       {"RFC 3339", "string"}},
      {"EveryMsZero",
       Patched(R"({"schedule": {"every_ms": 0}})"),
       "schedule.every_ms",
       {"between", "positive", "at least"}},
      {"EveryMsNegative",
       Patched(R"({"schedule": {"every_ms": -1000}})"),
       "schedule.every_ms",
       {"between", "positive", "at least"}},
      {"EveryMsFloat",
       Patched(R"({"schedule": {"every_ms": 1.5}})"),
       "schedule.every_ms",
       {"integer"}},
      {"AtEveryBeyondAYear",
       Patched(R"({"schedule": {"cron": "@every 400d"}})"),
       "schedule.cron",
       {"365 days"}},
      {"EveryMsBeyondIntegers",
       Patched(R"({"schedule": {"every_ms": 99999999999999999999}})"),
       "schedule.every_ms",
       {"between"}},
      {"EveryMsHugeFloat",
       Patched(R"({"schedule": {"every_ms": 1e30}})"),
       "schedule.every_ms",
       {"between"}},
      {"EveryMsString",
       Patched(R"({"schedule": {"every_ms": "90s"}})"),
       "schedule.every_ms",
       {"integer"}},
      {"EveryMsBool",
       Patched(R"({"schedule": {"every_ms": true}})"),
       "schedule.every_ms",
       {"integer"}},
      {"JitterNegative",
       Patched(R"({"schedule": {"cron": "* * * * *", "jitter_ms": -1}})"),
       "schedule.jitter_ms",
       {"between", "negative"}},
      {"StartAtNotRfc3339",
       Patched(R"({"schedule": {"every_ms": 1000, "start_at": "soon"}})"),
       "schedule.start_at",
       {"RFC 3339"}},
      {"EndAtBeforeStartAt",
       Patched(R"({"schedule": {"every_ms": 1000, "start_at": "2026-01-02T00:00:00Z",
                                "end_at": "2026-01-01T00:00:00Z"}})"),
       "schedule.end_at",
       {"after", "before"}},
      // Scalars.
      {"Priority10", Patched(R"({"priority": 10})"), "priority", {"between", "0-9", "range"}},
      {"PriorityNegative", Patched(R"({"priority": -1})"), "priority", {"between", "0-9", "range"}},
      {"PriorityHugeUnsigned",
       Patched(R"({"priority": 18446744073709551615})"),
       "priority",
       {"between", "0-9", "range"}},
      {"PriorityString", Patched(R"({"priority": "5"})"), "priority", {"integer"}},
      {"PriorityFloat", Patched(R"({"priority": 5.5})"), "priority", {"integer"}},
      {"TimeoutNegative", Patched(R"({"timeout_ms": -1})"), "timeout_ms", {"between", "negative"}},
      {"OverlapSometimes", Patched(R"({"overlap": "sometimes"})"), "overlap", {"one of", "skip"}},
      {"PausedYes", Patched(R"({"paused": "yes"})"), "paused", {"true", "bool"}},
      {"IdMissing", Patched(R"({"id": null})"), "id", {"missing"}},
      {"IdEmpty", Patched(R"({"id": ""})"), "id", {"missing", "empty"}},
      {"IdTooLong",
       Patched(R"({"id": ")" + std::string(129, 'a') + R"("})"),
       "id",
       {"128", "long"}},
      {"IdBadCharacters", Patched(R"({"id": "a/b"})"), "id", {"may only contain", "must match"}},
      {"IdWithAt", Patched(R"({"id": "a@b"})"), "id", {"may only contain", "must match"}},
      {"IdNotString", Patched(R"({"id": 5})"), "id", {"string"}},
      {"QueueBadName", Patched(R"({"queue": "my queue"})"), "queue", {"must match", "may only"}},
      {"QueueNotString", Patched(R"({"queue": ["a"]})"), "queue", {"string"}},
      // Retry.
      {"RetryNotAnObject", Patched(R"({"retry": 3})"), "retry", {"object"}},
      {"MaxAttemptsZero",
       Patched(R"({"retry": {"max_attempts": 0}})"),
       "retry.max_attempts",
       {"between"}},
      {"MaxAttempts101",
       Patched(R"({"retry": {"max_attempts": 101}})"),
       "retry.max_attempts",
       {"between"}},
      {"BackoffLinear",
       Patched(R"({"retry": {"backoff": "linear"}})"),
       "retry.backoff",
       {"one of", "exponential"}},
      {"RetryJitterAboveOne",
       Patched(R"({"retry": {"jitter": 1.5}})"),
       "retry.jitter",
       {"between"}},
      {"RetryJitterNegative",
       Patched(R"({"retry": {"jitter": -0.1}})"),
       "retry.jitter",
       {"between"}},
      {"MaxDelayBelowInitialDelay",
       Patched(R"({"retry": {"initial_delay_ms": 5000, "max_delay_ms": 1000}})"),
       "retry.max_delay_ms",
       {"initial_delay"}},
      {"InitialDelayNegative",
       Patched(R"({"retry": {"initial_delay_ms": -1}})"),
       "retry.initial_delay_ms",
       {"between", "negative"}},
      // Misfire and limits.
      {"MisfirePolicyBad",
       Patched(R"({"misfire": {"policy": "later"}})"),
       "misfire.policy",
       {"one of", "fire_once"}},
      {"MisfireGraceNegative",
       Patched(R"({"misfire": {"grace_ms": -5}})"),
       "misfire.grace_ms",
       {"between", "negative"}},
      {"CpuSecondsNegative",
       Patched(R"({"limits": {"cpu_seconds": -1}})"),
       "limits.cpu_seconds",
       {"between", "negative"}},
      {"MemoryMbNegative",
       Patched(R"({"limits": {"memory_mb": -1}})"),
       "limits.memory_mb",
       {"between", "negative"}},
      {"MaxOutputBytesNegative",
       Patched(R"({"limits": {"max_output_bytes": -1}})"),
       "limits.max_output_bytes",
       {"between", "negative"}},
      {"MaxOutputBytesTooBig",
       Patched(R"({"limits": {"max_output_bytes": 1099511627776}})"),
       "limits.max_output_bytes",
       {"between", "large", "at most"}},
      {"CpuCoresNegative",
       Patched(R"({"limits": {"cpu_cores": -0.5}})"),
       "limits.cpu_cores",
       {"between 0 and 1024"}},
      {"CpuCoresTooMany",
       Patched(R"({"limits": {"cpu_cores": 1e9}})"),
       "limits.cpu_cores",
       {"between 0 and 1024"}},
      {"CpuCoresNotANumber",
       Patched(R"({"limits": {"cpu_cores": "2"}})"),
       "limits.cpu_cores",
       {"number"}},
      {"IdDot", Patched(R"({"id": "."})"), "id", {"reserved"}},
      {"MisspeltHandler",
       R"({"id": "q1", "Handler": {"type": "builtin", "name": "noop"}})",
       "Handler",
       {"unknown field"}},
      {"IdDotDot", Patched(R"({"id": ".."})"), "id", {"reserved"}},
      {"DuplicateMember",
       R"({"id": "a", "id": "b", "handler": {"type": "builtin", "name": "noop"}})",
       "id",
       {"given twice"}},
      {"DuplicateNestedMember",
       R"({"id": "a", "handler": {"type": "shell", "command": ["/bin/true"],)"
       R"( "env": {"A": "1", "A": "2"}}})",
       "handler.env.A",
       {"given twice"}},
      // depends_on.
      {"DependsOnNotArray", Patched(R"({"depends_on": "extract"})"), "depends_on", {"array"}},
      {"DependsOnElementNotString",
       Patched(R"({"depends_on": ["a", 1]})"),
       "depends_on[1]",
       {"string"}},
      {"DependsOnSelf", Patched(R"({"depends_on": ["j"]})"), "depends_on[0]", {"itself"}},
      {"DependsOnDuplicate",
       Patched(R"({"depends_on": ["a", "b", "a"]})"),
       "depends_on[2]",
       {"twice", "duplicate"}},
      {"DependsOnBadId",
       Patched(R"({"depends_on": ["a b"]})"),
       "depends_on[0]",
       {"may only contain", "must match"}},
      {"DependsOnEmptyId",
       Patched(R"({"depends_on": [""]})"),
       "depends_on[0]",
       {"missing", "empty"}},
      {"DependsOnWithCron",
       Patched(R"({"depends_on": ["a"], "schedule": {"cron": "0 * * * *"}})"),
       "depends_on",
       {"schedule"}},
      {"DependsOnWithAt",
       Patched(R"({"depends_on": ["a"], "schedule": {"at": "2026-01-01T00:00:00Z"}})"),
       "depends_on",
       {"schedule"}},
      {"DependsOnWithEvery",
       Patched(R"({"depends_on": ["a"], "schedule": {"every_ms": 1000}})"),
       "depends_on",
       {"schedule"}},
      // Labels.
      {"LabelBadKey",
       Patched(R"({"labels": {"bad key": "x"}})"),
       "labels.bad key",
       {"must match", "key"}},
      {"LabelValueNotString", Patched(R"({"labels": {"x": 1}})"), "labels.x", {"string"}},
      {"LabelsNotAnObject", Patched(R"({"labels": ["x"]})"), "labels", {"object"}},
  };
}

class BadSpecTest : public ::testing::TestWithParam<BadSpecCase> {};

TEST_P(BadSpecTest, IsInvalidArgumentNamingTheFieldAndTheProblem) {
  const BadSpecCase& c = GetParam();
  Result<JobSpec> r = ParseJobSpec(c.json);
  ASSERT_FALSE(r.ok()) << "accepted: " << c.json;
  const Status& s = r.status();
  EXPECT_EQ(StatusCodeName(s.code()), "invalid_argument") << s.ToString();
  EXPECT_EQ(s.field(), c.field) << s.ToString();
  if (!c.field.empty()) {
    EXPECT_THAT(s.message(), HasSubstr(c.field));
  }
  std::string expected;
  bool found = false;
  for (const std::string& w : c.words) {
    found = found || s.message().find(w) != std::string::npos;
    expected += (expected.empty() ? "'" : ", '") + w + "'";
  }
  EXPECT_TRUE(found) << "message '" << s.message() << "' contains none of " << expected;
}

INSTANTIATE_TEST_SUITE_P(Table, BadSpecTest, ::testing::ValuesIn(BadSpecCases()),
                         [](const ::testing::TestParamInfo<BadSpecCase>& param_info) {
                           return param_info.param.name;
                         });

TEST(BadSpecTableTest, HasAtLeastFortyCases) { EXPECT_GE(BadSpecCases().size(), 40u); }

// Whole-document errors have no field; their message must not start with a dangling ": ".
TEST(ParseJobSpecTest, NotAnObjectMessageHasNoEmptyFieldPrefix) {
  Result<JobSpec> r = ParseJobSpec("[1, 2]");
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(r.status().message().starts_with(":")) << r.status().message();
}

// The first error wins and is the one about the field, not a later consequence of it.
TEST(ParseJobSpecTest, UnknownHandlerFieldIsReportedForTheHandlerType) {
  Result<JobSpec> r = ParseJobSpec(Patched(
      R"({"handler": {"type": "shell", "name": null, "command": ["x"], "url": "http://x"}})"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("shell"));
}

// --- ValidateJobSpec on specs built in C++ ----------------------------------------------------

JobSpec MinimalSpec() {
  JobSpec s;
  s.id = "j";
  s.handler.type = HandlerSpec::Type::kBuiltin;
  s.handler.name = "noop";
  return s;
}

TEST(ValidateJobSpecTest, MinimalSpecIsValid) {
  Status s = ValidateJobSpec(MinimalSpec());
  EXPECT_TRUE(s.ok()) << s.ToString();
}

struct BadBuiltSpecCase {
  std::string name;
  JobSpec spec;
  std::string field;
};

void PrintTo(const BadBuiltSpecCase& c, std::ostream* os) { *os << c.name; }

std::vector<BadBuiltSpecCase> BadBuiltSpecCases() {
  std::vector<BadBuiltSpecCase> cases;
  auto add = [&](std::string name, std::string field, auto mutate) {
    JobSpec s = MinimalSpec();
    mutate(s);
    // A case that makes the handler another type is about that type: not the builtin's name.
    if (s.handler.type != HandlerSpec::Type::kBuiltin &&
        s.handler.name == MinimalSpec().handler.name)
      s.handler.name.clear();
    cases.push_back({std::move(name), std::move(s), std::move(field)});
  };
  // What only another kind of schedule or handler reads is refused, not ignored.
  add("CronTimezoneEmpty", "schedule.timezone", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "* * * * *";
    s.schedule.timezone = "";
  });
  add("EveryWithATimezone", "schedule.timezone", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.timezone = "Mars/Olympus_Mons";
  });
  add("AtWithACron", "schedule.cron", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kAt;
    s.schedule.at = FromUnixMillis(1);
    s.schedule.cron = "* * * * *";
  });
  add("CronWithAnInterval", "schedule.every_ms", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "* * * * *";
    s.schedule.every = Duration(1000);
  });
  add("EveryWithAnInstant", "schedule.at", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.at = FromUnixMillis(1);
  });
  add("BuiltinWithACommand", "handler.command",
      [](JobSpec& s) { s.handler.command = {"/bin/true"}; });
  add("BuiltinWithAMethod", "handler.method", [](JobSpec& s) { s.handler.method = "POST"; });
  add("ShellWithAUrl", "handler.url", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"/bin/true"};
    s.handler.url = "http://x/";
  });
  add("HttpWithAName", "handler.name", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://x/";
    s.handler.name = "other";
  });
  add("HttpWithAnEnv", "handler.env", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://x/";
    s.handler.env["A"] = "1";
  });
  add("BadTenant", "tenant", [](JobSpec& s) { s.tenant = "Acme"; });
  add("EmptyTenant", "tenant", [](JobSpec& s) { s.tenant = ""; });
  add("EmptyId", "id", [](JobSpec& s) { s.id = ""; });
  add("BadQueue", "queue", [](JobSpec& s) { s.queue = "a:b"; });
  add("CronEmpty", "schedule.cron", [](JobSpec& s) { s.schedule.kind = Schedule::Kind::kCron; });
  add("CronBad", "schedule.cron", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "* 25 * * *";
  });
  add("EveryBeyondAYearInCpp", "schedule.every_ms", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = std::chrono::days(400);
  });
  add("CronAtEveryInCpp", "schedule.cron", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "@every 90s";
  });
  add("TimezoneBad", "schedule.timezone", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "0 2 * * *";
    s.schedule.timezone = "Nowhere/Special";
  });
  add("EveryZero", "schedule.every_ms",
      [](JobSpec& s) { s.schedule.kind = Schedule::Kind::kEvery; });
  add("EveryNegative", "schedule.every_ms", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(-5);
  });
  add("JitterNegative", "schedule.jitter_ms", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.jitter = Duration(-1);
  });
  add("EndAtBeforeStartAt", "schedule.end_at", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.start_at = FromUnixMillis(2000);
    s.schedule.end_at = FromUnixMillis(1000);
  });
  add("BuiltinNoName", "handler.name", [](JobSpec& s) { s.handler.name = ""; });
  add("ShellNoCommand", "handler.command",
      [](JobSpec& s) { s.handler.type = HandlerSpec::Type::kShell; });
  add("HttpLowercaseMethod", "handler.method", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.method = "get";
    s.handler.url = "http://x";
  });
  add("HttpUrlWithSpace", "handler.url", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://x/a b";
  });
  // What every attempt would fail on is refused when the spec is written.
  for (const auto& [name, url] : std::vector<std::pair<std::string, std::string>>{
           {"HttpUrlWithoutHost", "http://"},
           {"HttpUrlPortTooLarge", "http://x:99999/"},
           {"HttpUrlPortNotANumber", "http://x:abc/"},
           {"HttpUrlOpenIpv6", "http://[::1/"},
           {"HttpUrlNul", std::string("http://x/\0", 10)},
           {"HttpUrlUserInfo", "http://u:p@x/"}}) {
    add(name, "handler.url", [url](JobSpec& s) {
      s.handler.type = HandlerSpec::Type::kHttp;
      s.handler.url = url;
    });
  }
  add("HttpHeaderNameWithSpace", "handler.headers.Bad Name", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://x/";
    s.handler.headers["Bad Name"] = "v";
  });
  add("HttpHeaderValueWithCrLf", "handler.headers.X", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://x/";
    s.handler.headers["X"] = "a\r\nInjected: 1";
  });
  // What the node sets itself, in any case.
  for (const std::string name :
       {"Content-Length", "transfer-encoding", "X-Jobsched-Fence", "x-jobsched-run-id"}) {
    add("HttpHeader_" + std::string(name == "Content-Length"      ? "ContentLength"
                                    : name == "transfer-encoding" ? "TransferEncoding"
                                    : name == "X-Jobsched-Fence"  ? "JobschedFence"
                                                                  : "JobschedRunIdLowerCase"),
        "handler.headers." + name, [name](JobSpec& s) {
          s.handler.type = HandlerSpec::Type::kHttp;
          s.handler.url = "http://x/";
          s.handler.headers[name] = "1";
        });
  }
  add("ShellEnvNameEmpty", "handler.env.", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"/bin/true"};
    s.handler.env[""] = "x";
  });
  add("ShellEnvNameWithEquals", "handler.env.A=B", [](JobSpec& s) {
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"/bin/true"};
    s.handler.env["A=B"] = "x";
  });
  add("Priority10", "priority", [](JobSpec& s) { s.priority = 10; });
  add("MaxAttempts0", "retry.max_attempts", [](JobSpec& s) { s.retry.max_attempts = 0; });
  add("JitterNaN", "retry.jitter", [](JobSpec& s) { s.retry.jitter = std::nan(""); });
  add("MaxDelayBelowInitial", "retry.max_delay_ms", [](JobSpec& s) {
    s.retry.initial_delay = Duration(10);
    s.retry.max_delay = Duration(9);
  });
  add("TimeoutNegative", "timeout_ms", [](JobSpec& s) { s.timeout = Duration(-1); });
  add("GraceNegative", "misfire.grace_ms", [](JobSpec& s) { s.misfire.grace = Duration(-1); });
  add("CpuCoresNaN", "limits.cpu_cores", [](JobSpec& s) { s.limits.cpu_cores = std::nan(""); });
  add("MaxOutputTooBig", "limits.max_output_bytes",
      [](JobSpec& s) { s.limits.max_output_bytes = int64_t{1} << 40; });
  add("DependsOnSelf", "depends_on[1]", [](JobSpec& s) { s.depends_on = {"a", "j"}; });
  add("LabelKeyEmpty", "labels.", [](JobSpec& s) { s.labels[""] = "x"; });
  add("LabelValueTooLong", "labels.k", [](JobSpec& s) { s.labels["k"] = std::string(257, 'v'); });
  add("LabelValueWithANewline", "labels.k", [](JobSpec& s) { s.labels["k"] = "a\nb"; });
  add("TooManyLabels", "labels", [](JobSpec& s) {
    for (int i = 0; i < 65; ++i) s.labels["k" + std::to_string(i)] = "v";
  });
  add("TooManyDependencies", "depends_on", [](JobSpec& s) {
    s.schedule = Schedule{};
    for (int i = 0; i < 257; ++i) s.depends_on.push_back("d" + std::to_string(i));
  });
  add("PayloadNotJson", "payload", [](JobSpec& s) { s.payload = "{not json"; });
  // The bounds the JSON reader applies hold for a spec built in C++ too: a spec written
  // beyond them could not be read back.
  const Duration year_and_a_day = std::chrono::days(366);
  add("JitterBeyondAYear", "schedule.jitter_ms", [&](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.jitter = year_and_a_day;
  });
  add("InitialDelayBeyondAYear", "retry.initial_delay_ms", [&](JobSpec& s) {
    s.retry.initial_delay = year_and_a_day;
    s.retry.max_delay = year_and_a_day;
  });
  add("MaxDelayBeyondAYear", "retry.max_delay_ms",
      [&](JobSpec& s) { s.retry.max_delay = year_and_a_day; });
  add("TimeoutBeyondAYear", "timeout_ms", [&](JobSpec& s) { s.timeout = year_and_a_day; });
  add("GraceBeyondAYear", "misfire.grace_ms",
      [&](JobSpec& s) { s.misfire.grace = year_and_a_day; });
  add("CpuSecondsBeyondAWeek", "limits.cpu_seconds",
      [](JobSpec& s) { s.limits.cpu_seconds = 7 * 24 * 3600 + 1; });
  add("MemoryBeyondATebibyte", "limits.memory_mb",
      [](JobSpec& s) { s.limits.memory_mb = (int64_t{1} << 20) + 1; });
  const TimePoint year_10000 = FromUnixMillis(253402300800000);  // 10000-01-01T00:00:00Z
  add("AtInTheYear10000", "schedule.at", [&](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kAt;
    s.schedule.at = year_10000;
  });
  add("AtBeforeTheYear0", "schedule.at", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kAt;
    s.schedule.at = FromUnixMillis(-62167219200001);  // just before 0000-01-01T00:00:00Z
  });
  add("StartAtInTheYear10000", "schedule.start_at", [&](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.start_at = year_10000;
  });
  add("EndAtInTheYear10000", "schedule.end_at", [&](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(1000);
    s.schedule.end_at = year_10000;
  });
  return cases;
}

class BadBuiltSpecTest : public ::testing::TestWithParam<BadBuiltSpecCase> {};

TEST_P(BadBuiltSpecTest, IsInvalidArgumentNamingTheField) {
  const BadBuiltSpecCase& c = GetParam();
  Status s = ValidateJobSpec(c.spec);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(StatusCodeName(s.code()), "invalid_argument") << s.ToString();
  EXPECT_EQ(s.field(), c.field) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr(c.field));
}

INSTANTIATE_TEST_SUITE_P(Table, BadBuiltSpecTest, ::testing::ValuesIn(BadBuiltSpecCases()),
                         [](const ::testing::TestParamInfo<BadBuiltSpecCase>& param_info) {
                           return param_info.param.name;
                         });

TEST(ValidateJobSpecTest, LabelKeysMayContainSlashesAndDots) {
  JobSpec s = MinimalSpec();
  s.labels["app.kubernetes.io/name"] = "x";
  s.labels[std::string(63, 'k')] = std::string(256, 'v');
  Status st = ValidateJobSpec(s);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

// --- Round trip: JobSpecToJson -> ParseJobSpec ---------------------------------------------------

struct RoundTripCase {
  std::string name;
  JobSpec spec;
};

void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << c.name; }

std::vector<RoundTripCase> RoundTripCases() {
  std::vector<RoundTripCase> cases;
  auto add = [&](std::string name, auto mutate) {
    JobSpec s = MinimalSpec();
    mutate(s);
    cases.push_back({std::move(name), std::move(s)});
  };
  add("Minimal", [](JobSpec&) {});
  add("Cron", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "0 2 * * 1-5";
    s.schedule.timezone = "Europe/Berlin";
    s.schedule.jitter = Duration(1500);
    s.schedule.start_at = FromUnixMillis(1767225600123);
    s.schedule.end_at = FromUnixMillis(1798761600000);
  });
  add("CronSixFieldsUtc", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kCron;
    s.schedule.cron = "*/10 * * * * *";
  });
  add("At", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kAt;
    s.schedule.at = FromUnixMillis(1796119200250);
  });
  add("EveryMs", [](JobSpec& s) {
    s.schedule.kind = Schedule::Kind::kEvery;
    s.schedule.every = Duration(90000);
    s.schedule.start_at = FromUnixMillis(1767225600000);
  });
  add("NoneWithDependencies", [](JobSpec& s) { s.depends_on = {"extract", "load.v2"}; });
  add("Shell", [](JobSpec& s) {
    s.handler = HandlerSpec{};
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"sh", "-c", "echo \"$X\" | tr a-z A-Z"};
    s.handler.env = {{"X", "hello"}, {"EMPTY", ""}};
    s.handler.cwd = "/tmp";
  });
  add("ShellNoCwd", [](JobSpec& s) {
    s.handler = HandlerSpec{};
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"/bin/true"};
  });
  add("Http", [](JobSpec& s) {
    s.handler = HandlerSpec{};
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.method = "PUT";
    s.handler.url = "https://example.com/api?x=1&y=2";
    s.handler.headers = {{"Content-Type", "application/json"}, {"X-A", "b"}};
    s.handler.body = R"({"k": [1, 2]})";
  });
  add("HttpDefaultMethod", [](JobSpec& s) {
    s.handler = HandlerSpec{};
    s.handler.type = HandlerSpec::Type::kHttp;
    s.handler.url = "http://127.0.0.1:8080/";
  });
  add("Builtin", [](JobSpec& s) { s.handler.name = "sleep"; });
  add("EveryOtherField", [](JobSpec& s) {
    s.id = "etl:daily.v2_final-1";
    s.queue = "critical";
    s.payload = R"({"b": [1, 2.5, "x", null, true], "a": {"nested": {}}})";
    s.priority = 0;
    s.retry = {.max_attempts = 7,
               .backoff = Backoff::kFixed,
               .initial_delay = Duration(250),
               .max_delay = Duration(250),
               .jitter = 0.35};
    s.timeout = Duration(3600000);
    s.overlap = Overlap::kQueue;
    s.misfire = {.policy = Misfire::kSkip, .grace = Duration(0)};
    s.limits = {.cpu_seconds = 30, .memory_mb = 256, .max_output_bytes = 1024, .cpu_cores = 1.5};
    s.labels = {{"team", "data"}, {"tier", ""}, {"k", "välue ünïcode"}};
    s.paused = true;
  });
  add("UnicodeStrings", [](JobSpec& s) {
    s.handler = HandlerSpec{};
    s.handler.type = HandlerSpec::Type::kShell;
    s.handler.command = {"/bin/echo", "grüße", "\xF0\x9F\x98\x80", "tab\there", "quote\"s"};
  });
  return cases;
}

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, ParsesBackToAnEqualSpec) {
  const JobSpec& spec = GetParam().spec;
  ASSERT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  const std::string json = JobSpecToJson(spec);
  Result<JobSpec> back = ParseJobSpec(json, spec.tenant);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << json;
  ExpectSpecEq(*back, spec, json);
  // Serialising again gives the same text.
  EXPECT_EQ(JobSpecToJson(*back), json);
}

TEST_P(RoundTripTest, TheCompactFormParsesBackToAnEqualSpec) {
  const JobSpec& spec = GetParam().spec;
  const std::string compact = JobSpecToCompactJson(spec);
  for (bool stored : {true, false}) {
    Result<JobSpec> back =
        stored ? ParseStoredJobSpec(compact, spec.tenant) : ParseJobSpec(compact, spec.tenant);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << compact;
    ExpectSpecEq(*back, spec, compact);
  }
  EXPECT_LE(compact.size(), JobSpecToJson(spec).size());
}

TEST(JobSpecToCompactJsonTest, LeavesOutDefaultsButKeepsWhatTheScheduleAndHandlerAre) {
  JobSpec spec = MinimalSpec();
  spec.schedule.kind = Schedule::Kind::kCron;
  spec.schedule.cron = "0 * * * * *";
  spec.handler = HandlerSpec{.type = HandlerSpec::Type::kBuiltin, .name = "noop"};
  spec.retry.max_attempts = 3;
  const Json j = Json::parse(JobSpecToCompactJson(spec));
  EXPECT_EQ(j, Json::parse(R"({"id": ")" + spec.id + R"(",
      "schedule": {"cron": "0 * * * * *"}, "handler": {"type": "builtin", "name": "noop"},
      "retry": {"max_attempts": 3}})"))
      << j.dump();
}

TEST_P(RoundTripTest, WritesEveryTopLevelField) {
  const Json j = Json::parse(JobSpecToJson(GetParam().spec));
  for (const char* key :
       {"id", "queue", "schedule", "handler", "payload", "priority", "retry", "timeout_ms",
        "overlap", "misfire", "limits", "depends_on", "labels", "paused"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_FALSE(j.contains("tenant")) << "specs do not carry the tenant";
}

INSTANTIATE_TEST_SUITE_P(Table, RoundTripTest, ::testing::ValuesIn(RoundTripCases()),
                         [](const ::testing::TestParamInfo<RoundTripCase>& param_info) {
                           return param_info.param.name;
                         });

TEST(JobSpecToJsonTest, DesignExampleSurvivesTwoTrips) {
  Result<JobSpec> first = ParseJobSpec(kDesignExample, "acme");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  Result<JobSpec> second = ParseJobSpec(JobSpecToJson(*first), "acme");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ExpectSpecEq(*second, *first, "design example");
  EXPECT_EQ(second->payload, first->payload);
}

TEST(JobSpecToJsonTest, AtEverySugarSerialisesAsEveryMs) {
  Result<JobSpec> r = ParseJobSpec(R"({"id": "j", "schedule": {"cron": "@every 90s"},
      "handler": {"type": "builtin", "name": "noop"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Json j = Json::parse(JobSpecToJson(*r));
  EXPECT_EQ(j["schedule"]["every_ms"], 90000);
  EXPECT_FALSE(j["schedule"].contains("cron"));
  Result<JobSpec> back = ParseJobSpec(j.dump());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSpecEq(*back, *r, "@every");
}

// A schedule object with bounds but no kind: either rejected, or kept through the round trip.
TEST(JobSpecToJsonTest, ScheduleWithOnlyBoundsIsRejectedOrKept) {
  for (std::string_view schedule :
       {R"({"start_at": "2026-01-01T00:00:00Z"})", R"({"end_at": "2026-01-01T00:00:00Z"})",
        R"({"jitter_ms": 500})"}) {
    SCOPED_TRACE(schedule);
    Result<JobSpec> r = ParseJobSpec(Patched(R"({"schedule": )" + std::string(schedule) + "}"));
    if (!r.ok()) {
      EXPECT_EQ(StatusCodeName(r.status().code()), "invalid_argument");
      EXPECT_THAT(r.status().field(), ::testing::StartsWith("schedule"));
      continue;
    }
    Result<JobSpec> back = ParseJobSpec(JobSpecToJson(*r));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ExpectSpecEq(*back, *r, JobSpecToJson(*r));
  }
}

// --- Ids ----------------------------------------------------------------------------------------

TEST(ValidateJobIdTest, AcceptsTheAllowedAlphabetUpTo128) {
  for (const std::string& id :
       {std::string("a"), std::string("Z"), std::string("0"), std::string("nightly-report"),
        std::string("a.b_c:d-e"), std::string("..."), std::string(":"), std::string(128, 'x')}) {
    Status s = ValidateJobId(id);
    EXPECT_TRUE(s.ok()) << "'" << id << "': " << s.ToString();
  }
}

TEST(ValidateJobIdTest, RejectsEmptyTooLongAndOtherCharacters) {
  for (const std::string& id :
       {std::string(""), std::string(129, 'x'), std::string("a b"), std::string("a/b"),
        std::string("a@b"), std::string("a#b"), std::string("a\nb"), std::string("caf\xC3\xA9"),
        std::string("a\0b", 3), std::string("{t}")}) {
    Status s = ValidateJobId(id);
    EXPECT_EQ(StatusCodeName(s.code()), "invalid_argument") << "'" << id << "'";
    EXPECT_EQ(s.field(), "id") << "'" << id << "'";
  }
}

TEST(ValidateJobIdTest, ErrorsNameTheGivenField) {
  Status s = ValidateJobId("a b", "depends_on[3]");
  EXPECT_EQ(s.field(), "depends_on[3]");
  EXPECT_THAT(s.message(), HasSubstr("depends_on[3]"));
}

TEST(ValidateTenantIdTest, AcceptsLowercaseUpTo63) {
  for (const std::string& id :
       {std::string("default"), std::string("a"), std::string("0"), std::string("acme_corp-2"),
        std::string("9-_"), std::string(63, 'x')}) {
    Status s = ValidateTenantId(id);
    EXPECT_TRUE(s.ok()) << "'" << id << "': " << s.ToString();
  }
}

TEST(ValidateTenantIdTest, RejectsBadFirstCharacterUppercaseAndLength) {
  for (const std::string& id :
       {std::string(""), std::string(64, 'x'), std::string("_a"), std::string("-a"),
        std::string("Acme"), std::string("acmE"), std::string("a.b"), std::string("a:b"),
        std::string("a b"), std::string("a}b"), std::string("a/b")}) {
    Status s = ValidateTenantId(id);
    EXPECT_EQ(StatusCodeName(s.code()), "invalid_argument") << "'" << id << "'";
    EXPECT_EQ(s.field(), "tenant") << "'" << id << "'";
  }
  EXPECT_EQ(ValidateTenantId("X", "path.tenant").field(), "path.tenant");
}

TEST(ValidateQueueNameTest, AcceptsTheAllowedAlphabetUpTo64) {
  for (const std::string& name : {std::string("default"), std::string("critical"),
                                  std::string("A.b_c-1"), std::string(64, 'q')}) {
    Status s = ValidateQueueName(name);
    EXPECT_TRUE(s.ok()) << "'" << name << "': " << s.ToString();
  }
}

TEST(ValidateQueueNameTest, RejectsEmptyTooLongColonsAndSpaces) {
  for (const std::string& name : {std::string(""), std::string(65, 'q'), std::string("a b"),
                                  std::string("a:b"), std::string("a/b"), std::string("a@b")}) {
    Status s = ValidateQueueName(name);
    EXPECT_EQ(StatusCodeName(s.code()), "invalid_argument") << "'" << name << "'";
    EXPECT_EQ(s.field(), "queue") << "'" << name << "'";
  }
  EXPECT_EQ(ValidateQueueName("", "queues[2]").field(), "queues[2]");
}

// --- Attempts JSON ------------------------------------------------------------------------------

TEST(AttemptsJsonTest, RoundTrip) {
  std::vector<AttemptRecord> attempts(3);
  attempts[0] = {.number = 1,
                 .node = "node-a",
                 .fence = 41,
                 .started_at = FromUnixMillis(1767225600123),
                 .finished_at = FromUnixMillis(1767225601999),
                 .outcome = "failed",
                 .error = "exit code 3: \"quoted\"\nsecond line"};
  attempts[1] = {.number = 2,
                 .node = "node-b",
                 .fence = 42,
                 .started_at = FromUnixMillis(1767225700000),
                 .finished_at = FromUnixMillis(1767225715000),
                 .outcome = "lease_lost",
                 .error = ""};
  attempts[2] = {.number = 3,
                 .node = "nöde-ç",
                 .fence = int64_t{1} << 53,
                 .started_at = FromUnixMillis(1767225800000),
                 .finished_at = std::nullopt,
                 .outcome = "running",
                 .error = ""};
  Result<std::vector<AttemptRecord>> back = AttemptsFromJson(AttemptsToJson(attempts));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), attempts.size());
  for (size_t i = 0; i < attempts.size(); ++i) {
    SCOPED_TRACE(i);
    const AttemptRecord& a = attempts[i];
    const AttemptRecord& b = (*back)[i];
    EXPECT_EQ(b.number, a.number);
    EXPECT_EQ(b.node, a.node);
    EXPECT_EQ(b.fence, a.fence);
    EXPECT_EQ(Fmt(b.started_at), Fmt(a.started_at));
    EXPECT_EQ(Fmt(b.finished_at), Fmt(a.finished_at));
    EXPECT_EQ(b.outcome, a.outcome);
    EXPECT_EQ(b.error, a.error);
  }
}

TEST(AttemptsJsonTest, EmptyList) {
  EXPECT_EQ(Json::parse(AttemptsToJson({})), Json::array());
  Result<std::vector<AttemptRecord>> back = AttemptsFromJson("[]");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->empty());
}

TEST(AttemptsJsonTest, CorruptInputIsAnErrorNotACrash) {
  for (std::string_view text : {std::string_view("not json"), std::string_view("[{\"number\": 1}]"),
                                std::string_view(R"([{"number": "1", "node": "n", "fence": 1,
            "started_at": "2026-01-01T00:00:00Z", "finished_at": null, "outcome": "x",
            "error": ""}])"),
                                std::string_view(R"([{"number": 1, "node": "n", "fence": 1,
            "started_at": "yesterday", "finished_at": null, "outcome": "x", "error": ""}])"),
                                std::string_view("[1, 2]"), std::string_view("")}) {
    Result<std::vector<AttemptRecord>> r = AttemptsFromJson(text);
    EXPECT_FALSE(r.ok()) << text;
  }
}

// --- Enum names ---------------------------------------------------------------------------------

TEST(EnumNamesTest, RunStatesRoundTrip) {
  const std::pair<RunState, const char*> kAll[] = {
      {RunState::kQueued, "queued"},        {RunState::kRunning, "running"},
      {RunState::kRetryWait, "retry_wait"}, {RunState::kSucceeded, "succeeded"},
      {RunState::kFailed, "failed"},        {RunState::kTimedOut, "timed_out"},
      {RunState::kCancelled, "cancelled"},  {RunState::kSkipped, "skipped"}};
  for (const auto& [state, name] : kAll) {
    EXPECT_STREQ(RunStateName(state), name);
    Result<RunState> parsed = ParseRunState(name);
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, state) << name;
  }
}

TEST(EnumNamesTest, TerminalRunStates) {
  EXPECT_FALSE(IsTerminal(RunState::kQueued));
  EXPECT_FALSE(IsTerminal(RunState::kRunning));
  EXPECT_FALSE(IsTerminal(RunState::kRetryWait));
  EXPECT_TRUE(IsTerminal(RunState::kSucceeded));
  EXPECT_TRUE(IsTerminal(RunState::kFailed));
  EXPECT_TRUE(IsTerminal(RunState::kTimedOut));
  EXPECT_TRUE(IsTerminal(RunState::kCancelled));
  EXPECT_TRUE(IsTerminal(RunState::kSkipped));
}

TEST(EnumNamesTest, JobStatesRoundTrip) {
  const std::pair<JobState, const char*> kAll[] = {{JobState::kActive, "active"},
                                                   {JobState::kPaused, "paused"},
                                                   {JobState::kCompleted, "completed"}};
  for (const auto& [state, name] : kAll) {
    EXPECT_STREQ(JobStateName(state), name);
    Result<JobState> parsed = ParseJobState(name);
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, state) << name;
  }
}

TEST(EnumNamesTest, RunReasonsRoundTrip) {
  const std::pair<RunReason, const char*> kAll[] = {
      {RunReason::kSchedule, "schedule"},
      {RunReason::kManual, "manual"},
      {RunReason::kDependency, "dependency"},
      {RunReason::kMisfireCatchup, "misfire_catchup"}};
  for (const auto& [reason, name] : kAll) {
    EXPECT_STREQ(RunReasonName(reason), name);
    Result<RunReason> parsed = ParseRunReason(name);
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, reason) << name;
  }
}

TEST(EnumNamesTest, OverlapAndMisfireNamesMatchTheJson) {
  EXPECT_STREQ(OverlapName(Overlap::kSkip), "skip");
  EXPECT_STREQ(OverlapName(Overlap::kAllow), "allow");
  EXPECT_STREQ(OverlapName(Overlap::kQueue), "queue");
  EXPECT_STREQ(OverlapName(Overlap::kReplace), "replace");
  EXPECT_STREQ(MisfireName(Misfire::kFireOnce), "fire_once");
  EXPECT_STREQ(MisfireName(Misfire::kSkip), "skip");
  EXPECT_STREQ(MisfireName(Misfire::kFireAll), "fire_all");
  // The names are the ones the spec parser accepts.
  for (Overlap o : {Overlap::kSkip, Overlap::kAllow, Overlap::kQueue, Overlap::kReplace}) {
    Result<JobSpec> r =
        ParseJobSpec(Patched(std::string(R"({"overlap": ")") + OverlapName(o) + "\"}"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->overlap, o);
  }
  for (Misfire m : {Misfire::kFireOnce, Misfire::kSkip, Misfire::kFireAll}) {
    Result<JobSpec> r =
        ParseJobSpec(Patched(std::string(R"({"misfire": {"policy": ")") + MisfireName(m) + "\"}}"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->misfire.policy, m);
  }
}

TEST(EnumNamesTest, UnknownNamesAreInvalidArgument) {
  for (std::string_view name : {"", "QUEUED", "queued ", "done", "retry-wait"}) {
    EXPECT_EQ(StatusCodeName(ParseRunState(name).status().code()), "invalid_argument") << name;
  }
  for (std::string_view name : {"", "Active", "deleted"}) {
    EXPECT_EQ(StatusCodeName(ParseJobState(name).status().code()), "invalid_argument") << name;
  }
  for (std::string_view name : {"", "cron", "misfire", "Manual"}) {
    EXPECT_EQ(StatusCodeName(ParseRunReason(name).status().code()), "invalid_argument") << name;
  }
  EXPECT_THAT(ParseRunState("done").status().message(), HasSubstr("done"));
}

}  // namespace
}  // namespace jobsched
