// The REST API v1 (docs/api.md) over real HTTP: every route with the role it needs, the JSON
// shapes, the error contract, roles and tenant isolation, quotas, the event stream, and a table
// of malformed requests that must each be refused without changing anything.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "api_harness.h"
#include "core/time_util.h"
#include "store/store_wrapper.h"

namespace jobsched::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

const std::string kJobs = "/v1/tenants/acme/jobs";

Json Builtin(const std::string& id, const std::string& name = "noop") {
  return Json{{"id", id}, {"handler", {{"type", "builtin"}, {"name", name}}}};
}

Json Shell(const std::string& id) {
  return Json{{"id", id}, {"handler", {{"type", "shell"}, {"command", {"/bin/true"}}}}};
}

// A cron schedule that fires only on 29 February: it never fires while a test runs, and its next
// five fire times are four years apart.
Json LeapDaySchedule() { return Json{{"cron", "0 0 29 2 *"}, {"timezone", "UTC"}}; }

std::vector<std::string> Ids(const Json& list) {
  std::vector<std::string> out;
  if (!list.is_object() || !list.contains("items")) return out;
  for (const Json& item : list["items"]) out.push_back(item.value("id", ""));
  return out;
}

class ApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }
  void SetUp() override { ASSERT_TRUE(h.ok()); }

  // Every page of a list, following next_cursor (at most 50 pages).
  std::vector<Json> Pages(const std::string& path, Who who) {
    std::vector<Json> pages;
    std::string cursor;
    for (int i = 0; i < 50; ++i) {
      const std::string sep = path.find('?') == std::string::npos ? "?" : "&";
      Response r = h.Get(cursor.empty() ? path : path + sep + "cursor=" + Q(cursor), who);
      EXPECT_EQ(r.status, 200) << path << ": " << r;
      EXPECT_TRUE(IsList(r.json)) << path;
      if (r.status != 200 || !IsList(r.json)) return pages;
      pages.push_back(r.json);
      if (r.json["next_cursor"].is_null()) return pages;
      cursor = r.json["next_cursor"].get<std::string>();
    }
    ADD_FAILURE() << path << ": more than 50 pages";
    return pages;
  }

  ApiHarness h;
};

// ---- Route table ---------------------------------------------------------------------------

TEST(ApiRoutesTest, TheRouteTableHasEveryRouteOfTheDesign) {
  const std::set<std::pair<std::string, std::string>> expected = {
      {"GET", "/healthz"},
      {"GET", "/readyz"},
      {"GET", "/metrics"},
      {"GET", "/"},
      {"GET", "/v1/cron/next"},
      {"POST", "/v1/tenants/{t}/jobs"},
      {"PUT", "/v1/tenants/{t}/jobs/{id}"},
      {"GET", "/v1/tenants/{t}/jobs"},
      {"GET", "/v1/tenants/{t}/jobs/{id}"},
      {"DELETE", "/v1/tenants/{t}/jobs/{id}"},
      {"POST", "/v1/tenants/{t}/jobs/{id}/pause"},
      {"POST", "/v1/tenants/{t}/jobs/{id}/resume"},
      {"POST", "/v1/tenants/{t}/jobs/{id}/trigger"},
      {"GET", "/v1/tenants/{t}/jobs/{id}/runs"},
      {"GET", "/v1/tenants/{t}/runs"},
      {"GET", "/v1/tenants/{t}/runs/{id}"},
      {"POST", "/v1/tenants/{t}/runs/{id}/cancel"},
      {"GET", "/v1/tenants/{t}/events"},
      {"GET", "/v1/tenants/{t}/stats"},
      {"GET", "/v1/nodes"},
      {"GET", "/v1/cluster"},
      {"POST", "/v1/keys"},
      {"GET", "/v1/keys"},
      {"DELETE", "/v1/keys/{id}"},
      {"GET", "/v1/tenants"},
      {"PUT", "/v1/tenants/{t}"},
  };
  std::set<std::pair<std::string, std::string>> actual;
  for (const api::RouteInfo& r : api::Routes()) {
    EXPECT_TRUE(actual.insert({r.method, r.path}).second) << "twice: " << r.method << " " << r.path;
  }
  EXPECT_EQ(actual, expected);
  const std::string md = api::RoutesMarkdown();
  for (const auto& [method, path] : expected) EXPECT_THAT(md, HasSubstr(path));
}

// ---- Public routes -------------------------------------------------------------------------

TEST_F(ApiTest, HealthzAndReadyzNeedNoKey) {
  Response r = h.Get("/healthz", Who::kNone);
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(h.Get("/healthz?probe=lb", Who::kNone).status, 200) << "public routes ignore params";
  EXPECT_THAT(r.content_type, StartsWith("application/json"));
  EXPECT_EQ(r.json.value("status", ""), "ok") << r;

  r = h.Get("/readyz", Who::kNone);
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json.value("status", ""), "ready") << r;
  EXPECT_EQ(r.json.value("node", ""), "t") << r;
}

TEST_F(ApiTest, DashboardIsHtmlWithoutAKey) {
  Response r = h.Get("/", Who::kNone);
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_THAT(r.content_type, StartsWith("text/html"));
  std::string lower = r.body;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  EXPECT_THAT(lower, HasSubstr("<html"));
  // It holds an API key: its own inline script and style only, by their hashes, no framing.
  auto header = [&](const std::string& name) {
    auto it = r.headers.find(name);
    return it == r.headers.end() ? std::string() : it->second;
  };
  const std::string policy = header("Content-Security-Policy");
  EXPECT_THAT(policy, HasSubstr("default-src 'none'"));
  EXPECT_THAT(policy, ::testing::MatchesRegex(".*script-src 'sha256-[A-Za-z0-9+/]{43}=';.*"));
  EXPECT_THAT(policy, ::testing::MatchesRegex(".*style-src 'sha256-[A-Za-z0-9+/]{43}=';.*"));
  EXPECT_THAT(policy, HasSubstr("frame-ancestors 'none'"));
  EXPECT_EQ(header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(header("Cache-Control"), "no-store");
  EXPECT_THAT(lower, Not(HasSubstr(" style="))) << "an inline style attribute the policy refuses";
}

TEST_F(ApiTest, UnknownRouteIsAJsonNotFound) {
  Response r = h.Get("/v1/no-such-route", Who::kAdmin);
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(r.ErrorCode(), "not_found");
}

// ---- Metrics -------------------------------------------------------------------------------

TEST_F(ApiTest, MetricsNeedAKeyAndExposeTheDesignSeries) {
  EXPECT_EQ(h.Get("/metrics", Who::kNone).status, 401);

  h.MustCreate("acme", Builtin("metered"));
  const auto ids = h.MustTrigger("acme", "metered");
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, ids[0]));
  // What the engine reports when this node loses a lease and when it recovers expired ones
  // (tests/integration/self_fencing_test.cc makes them happen).
  h.node().events().Emit({.type = EventType::kRunLeaseLost, .tenant = "acme", .queue = "default"});
  for (int i = 0; i < 2; ++i) {
    h.node().events().Emit(
        {.type = EventType::kRunRecovered, .tenant = "acme", .queue = "default"});
  }

  // Requests no route takes are counted too.
  EXPECT_EQ(h.Get("/nope", Who::kViewer).status, 404);
  EXPECT_EQ(h.Send("DELETE", "/metrics", Who::kAdmin).status, 405);

  for (Who who : {Who::kViewer, Who::kAdmin}) {
    SCOPED_TRACE(WhoName(who));
    Response r = h.Get("/metrics", who);
    ASSERT_EQ(r.status, 200) << r;
    EXPECT_THAT(r.content_type, StartsWith("text/plain"));
    EXPECT_THAT(r.body,
                HasSubstr("jobsched_http_requests_total{route=\"unmatched\",code=\"404\"} 1\n"));
    EXPECT_THAT(r.body,
                HasSubstr("jobsched_http_requests_total{route=\"unmatched\",code=\"405\"} 1\n"));
    const std::string& text = r.body;
    EXPECT_THAT(text, HasSubstr("# TYPE jobsched_jobs gauge"));
    EXPECT_THAT(text, HasSubstr("jobsched_jobs{tenant=\"acme\",state=\"active\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE jobsched_runs_total counter"));
    EXPECT_TRUE(std::regex_search(
        text,
        std::regex(
            R"(\njobsched_runs_total\{[^}]*tenant="acme"[^}]*outcome="succeeded"[^}]*\} 1\n)")))
        << text;
    EXPECT_THAT(text, HasSubstr("# TYPE jobsched_fire_delay_seconds histogram"));
    EXPECT_THAT(text, HasSubstr("jobsched_fire_delay_seconds_bucket{"));
    EXPECT_THAT(text, HasSubstr("le=\"+Inf\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("jobsched_run_duration_seconds_bucket{"));
    EXPECT_THAT(text, HasSubstr("# TYPE jobsched_http_requests_total counter"));
    EXPECT_THAT(
        text,
        HasSubstr(
            "jobsched_http_requests_total{route=\"POST /v1/tenants/{t}/jobs\",code=\"201\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("jobsched_nodes_alive 1\n"));
    EXPECT_THAT(text,
                HasSubstr("jobsched_leases_lost_total{tenant=\"acme\",queue=\"default\"} 1\n"));
    EXPECT_THAT(text,
                HasSubstr("jobsched_runs_recovered_total{tenant=\"acme\",queue=\"default\"} 2\n"));
    EXPECT_THAT(text, HasSubstr("process_resident_memory_bytes "));
    EXPECT_THAT(text, HasSubstr("process_cpu_seconds_total "));
  }
}

// docs/api.md: a viewer or operator key reads "its tenant" only; wrong tenant = does not exist.
TEST_F(ApiTest, MetricsReadWithATenantKeyDoNotRevealOtherTenants) {
  h.MustCreate("acme", Builtin("secret-project"));
  Response r = h.Get("/metrics", Who::kOther);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_THAT(r.body, Not(HasSubstr("tenant=\"acme\"")))
      << "a key of tenant 'other' sees acme's series";
}

// ---- Cron preview --------------------------------------------------------------------------

TEST_F(ApiTest, CronNextPreviewsFireTimesForAnyKey) {
  const std::string path = "/v1/cron/next?expr=" + Q("0 2 * * *") + "&tz=" + Q("Europe/Berlin") +
                           "&from=" + Q("2026-03-27T12:00:00.000Z") + "&n=3";
  for (Who who : {Who::kViewer, Who::kOther, Who::kAdmin}) {
    SCOPED_TRACE(WhoName(who));
    Response r = h.Get(path, who);
    ASSERT_EQ(r.status, 200) << r;
    EXPECT_EQ(r.json.value("expr", ""), "0 2 * * *");
    EXPECT_EQ(r.json.value("tz", ""), "Europe/Berlin");
    EXPECT_TRUE(IsTime(r.json["from"]));
    // 02:00 in Berlin: 01:00Z in winter, 00:00Z after the switch to summer time on 29 March
    // (02:00 itself does not exist that day: a fixed-time job runs at the first instant after).
    EXPECT_EQ(r.json["next"], Json({"2026-03-28T01:00:00.000Z", "2026-03-29T01:00:00.000Z",
                                    "2026-03-30T00:00:00.000Z"}))
        << r;
  }
  Response r = h.Get("/v1/cron/next?expr=" + Q("*/5 * * * *"), Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_TRUE(r.json["next"].is_array());
  EXPECT_EQ(r.json["next"].size(), 5u) << "n defaults to 5";
  for (const Json& t : r.json["next"]) EXPECT_TRUE(IsTime(t));
  // Up to 1000, as `jobsched cron next -n`.
  r = h.Get("/v1/cron/next?expr=" + Q("*/5 * * * *") + "&n=1000", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["next"].size(), 1000u);

  EXPECT_EQ(h.Get(path, Who::kNone).status, 401);

  r = h.Get("/v1/cron/next?expr=" + Q("0 25 * * *"), Who::kViewer);
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.ErrorField(), "expr");
  EXPECT_THAT(r.ErrorMessage(), HasSubstr("hour"));
  EXPECT_THAT(r.ErrorMessage(), HasSubstr("25"));

  r = h.Get("/v1/cron/next?expr=" + Q("0 2 * * *") + "&tz=" + Q("Mars/Olympus"), Who::kViewer);
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.ErrorField(), "tz");
  EXPECT_THAT(r.ErrorMessage(), HasSubstr("Mars/Olympus"));
}

// ---- Jobs ----------------------------------------------------------------------------------

// The shape of a job answer (create, put, get, pause, resume).
void ExpectJobDetail(const Json& j, const std::string& id) {
  SCOPED_TRACE("job detail " + j.dump().substr(0, 400));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("id", ""), id);
  EXPECT_EQ(j.value("tenant", ""), "acme");
  EXPECT_TRUE(j["version"].is_number_integer());
  EXPECT_TRUE(j["state"].is_string());
  EXPECT_TRUE(IsTimeOrNull(j["next_fire"]));
  EXPECT_TRUE(IsTime(j["created_at"]));
  EXPECT_TRUE(IsTime(j["updated_at"]));
  ASSERT_TRUE(j["spec"].is_object());
  EXPECT_EQ(j["spec"].value("id", ""), id);
  ASSERT_TRUE(j["next_fire_times"].is_array());
  for (const Json& t : j["next_fire_times"]) EXPECT_TRUE(IsTime(t));
  EXPECT_TRUE(j.contains("last_run"));
  EXPECT_TRUE(j["counts"].is_object());
}

TEST_F(ApiTest, CreateGetReplaceAndDeleteAJob) {
  Json spec = Builtin("nightly");
  spec["schedule"] = LeapDaySchedule();
  spec["labels"] = {{"team", "data"}};

  Response r = h.Post(kJobs, Who::kOperator, spec.dump());
  ASSERT_EQ(r.status, 201) << r;
  ExpectJobDetail(r.json, "nightly");
  EXPECT_EQ(r.json["version"], 1);
  EXPECT_EQ(r.json["state"], "active");
  // The defaults of docs/job-spec.md, written out.
  const Json& s = r.json["spec"];
  EXPECT_EQ(s["queue"], "default");
  EXPECT_EQ(s["priority"], 5);
  EXPECT_EQ(s["retry"]["max_attempts"], 1);
  EXPECT_EQ(s["timeout_ms"], 0);
  EXPECT_TRUE(s["timeout_ms"].is_number_integer());
  EXPECT_EQ(s["overlap"], "skip");
  EXPECT_EQ(s["misfire"]["policy"], "fire_once");
  EXPECT_EQ(s["misfire"]["grace_ms"], 60000);
  EXPECT_EQ(s["limits"]["max_output_bytes"], 65536);
  EXPECT_EQ(s["labels"], Json({{"team", "data"}}));
  EXPECT_EQ(s["paused"], false);
  EXPECT_EQ(s["schedule"]["cron"], "0 0 29 2 *");
  // Next 5 fire times: leap days, increasing, the first is next_fire.
  const Json& next = r.json["next_fire_times"];
  ASSERT_EQ(next.size(), 5u) << r;
  EXPECT_EQ(next[0], r.json["next_fire"]);
  for (size_t i = 0; i < next.size(); ++i) {
    EXPECT_THAT(next[i].get<std::string>(), HasSubstr("-02-29T00:00:00.000Z"));
    if (i > 0) {
      EXPECT_LT(next[i - 1].get<std::string>(), next[i].get<std::string>());
    }
  }
  EXPECT_TRUE(r.json["last_run"].is_null());
  EXPECT_TRUE(r.json["counts"].empty());

  // The same id again.
  r = h.Post(kJobs, Who::kOperator, spec.dump());
  EXPECT_EQ(r.status, 409) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(r.ErrorCode(), "already_exists");

  r = h.Get(kJobs + "/nightly", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  ExpectJobDetail(r.json, "nightly");
  EXPECT_EQ(r.json["version"], 1);
  EXPECT_EQ(r.json["next_fire_times"].size(), 5u);

  // PUT replaces (200), and creates an absent job (201).
  spec["priority"] = 7;
  r = h.Put(kJobs + "/nightly", Who::kOperator, spec.dump());
  ASSERT_EQ(r.status, 200) << r;
  ExpectJobDetail(r.json, "nightly");
  EXPECT_EQ(r.json["version"], 2);
  EXPECT_EQ(r.json["spec"]["priority"], 7);
  // The same spec again changes nothing, not even the version (asked once the clock has moved
  // past its updated_at).
  const Json updated_at = r.json["updated_at"];
  const TimePoint last = *ParseRfc3339(updated_at.get<std::string>());
  while (h.node().clock().Now() <= last) std::this_thread::yield();
  r = h.Put(kJobs + "/nightly", Who::kOperator, spec.dump());
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["version"], 2);
  EXPECT_EQ(r.json["updated_at"], updated_at);

  Json fresh = Builtin("fresh");
  fresh.erase("id");  // the path names it
  r = h.Put(kJobs + "/fresh", Who::kOperator, fresh.dump());
  ASSERT_EQ(r.status, 201) << r;
  ExpectJobDetail(r.json, "fresh");
  EXPECT_EQ(r.json["version"], 1);
  EXPECT_TRUE(r.json["next_fire"].is_null());
  EXPECT_TRUE(r.json["next_fire_times"].empty());

  // If-Match: the version read.
  spec["priority"] = 8;
  r = h.Put(kJobs + "/nightly", Who::kOperator, spec.dump(), {{"If-Match", "2"}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["version"], 3);
  spec["priority"] = 1;
  r = h.Put(kJobs + "/nightly", Who::kOperator, spec.dump(), {{"If-Match", "2"}});
  EXPECT_EQ(r.status, 412) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(r.ErrorCode(), "failed_precondition");
  r = h.Get(kJobs + "/nightly", Who::kViewer);
  EXPECT_EQ(r.json["version"], 3) << "a refused If-Match changed the job";
  EXPECT_EQ(r.json["spec"]["priority"], 8);

  // If-Match on a job that does not exist creates nothing.
  r = h.Put(kJobs + "/ghost", Who::kOperator, Builtin("ghost").dump(), {{"If-Match", "1"}});
  EXPECT_EQ(r.status, 412) << r;
  EXPECT_THAT(r.ErrorMessage(), HasSubstr("does not exist"));
  EXPECT_EQ(h.Get(kJobs + "/ghost", Who::kViewer).status, 404);

  // DELETE: 204 without a body, then the job is gone.
  r = h.Delete(kJobs + "/nightly", Who::kOperator);
  EXPECT_EQ(r.status, 204) << r;
  EXPECT_TRUE(r.body.empty()) << r;
  r = h.Get(kJobs + "/nightly", Who::kViewer);
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(r.ErrorCode(), "not_found");
  EXPECT_EQ(h.Delete(kJobs + "/nightly", Who::kOperator).status, 404);
  EXPECT_EQ(Ids(h.Get(kJobs, Who::kViewer).json), std::vector<std::string>{"fresh"});
}

TEST_F(ApiTest, ListJobsFiltersByQueueStateAndLabelAndPaginates) {
  auto make = [&](const std::string& id, const std::string& queue, const std::string& team,
                  bool paused) {
    Json spec = Builtin(id);
    spec["queue"] = queue;
    if (!team.empty()) spec["labels"] = {{"team", team}};
    spec["paused"] = paused;
    h.MustCreate("acme", spec);
  };
  make("j1", "default", "data", false);
  make("j2", "critical", "data", false);
  make("j3", "critical", "web", true);
  make("j4", "default", "", false);
  make("j5", "critical", "", false);
  h.MustCreate("other", Builtin("elsewhere"));

  // Two per page: three pages, every job once, in id order.
  std::vector<Json> pages = Pages(kJobs + "?limit=2", Who::kViewer);
  ASSERT_EQ(pages.size(), 3u);
  std::vector<std::string> all;
  for (size_t i = 0; i < pages.size(); ++i) {
    EXPECT_EQ(pages[i]["items"].size(), i < 2 ? 2u : 1u);
    EXPECT_EQ(pages[i]["next_cursor"].is_null(), i == 2);
    for (const Json& item : pages[i]["items"]) {
      all.push_back(item.value("id", ""));
      EXPECT_EQ(item["tenant"], "acme");
      EXPECT_TRUE(item["version"].is_number_integer());
      EXPECT_TRUE(item["state"].is_string());
      EXPECT_TRUE(IsTimeOrNull(item["next_fire"]));
      EXPECT_TRUE(IsTime(item["created_at"]));
      EXPECT_TRUE(IsTime(item["updated_at"]));
      EXPECT_TRUE(item["spec"].is_object());
    }
  }
  EXPECT_EQ(all, (std::vector<std::string>{"j1", "j2", "j3", "j4", "j5"}));

  auto ids = [&](const std::string& query) { return Ids(h.Get(kJobs + query, Who::kViewer).json); };
  EXPECT_EQ(ids("?queue=critical"), (std::vector<std::string>{"j2", "j3", "j5"}));
  EXPECT_EQ(ids("?state=paused"), (std::vector<std::string>{"j3"}));
  EXPECT_EQ(ids("?state=active"), (std::vector<std::string>{"j1", "j2", "j4", "j5"}));
  EXPECT_EQ(ids("?label=" + Q("team:data")), (std::vector<std::string>{"j1", "j2"}));
  EXPECT_EQ(ids("?queue=critical&label=" + Q("team:data")), (std::vector<std::string>{"j2"}));
  EXPECT_EQ(ids("?queue=nosuch"), std::vector<std::string>{});

  // Filters hold across pages.
  pages = Pages(kJobs + "?queue=critical&limit=1", Who::kViewer);
  ASSERT_EQ(pages.size(), 3u);
  all.clear();
  for (const Json& p : pages) {
    for (const std::string& id : Ids(p)) all.push_back(id);
  }
  EXPECT_EQ(all, (std::vector<std::string>{"j2", "j3", "j5"}));

  EXPECT_EQ(Ids(h.Get("/v1/tenants/other/jobs", Who::kOther).json),
            std::vector<std::string>{"elsewhere"});
}

TEST_F(ApiTest, PauseAndResumeAJob) {
  Json spec = Builtin("pausable");
  spec["schedule"] = LeapDaySchedule();
  h.MustCreate("acme", spec);

  Response r = h.Post(kJobs + "/pausable/pause", Who::kOperator);
  ASSERT_EQ(r.status, 200) << r;
  ExpectJobDetail(r.json, "pausable");
  EXPECT_EQ(r.json["state"], "paused");
  EXPECT_EQ(r.json["spec"]["paused"], true);
  EXPECT_EQ(r.json.value("changed", false), true);
  EXPECT_EQ(r.json["version"], 2);

  r = h.Post(kJobs + "/pausable/pause", Who::kOperator);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json.value("changed", true), false);
  EXPECT_EQ(Ids(h.Get(kJobs + "?state=paused", Who::kViewer).json),
            std::vector<std::string>{"pausable"});

  r = h.Post(kJobs + "/pausable/resume", Who::kOperator);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["state"], "active");
  EXPECT_EQ(r.json["spec"]["paused"], false);
  EXPECT_EQ(r.json.value("changed", false), true);
  EXPECT_EQ(r.json["next_fire_times"].size(), 5u);

  EXPECT_EQ(h.Post(kJobs + "/nosuch/pause", Who::kOperator).status, 404);
  EXPECT_EQ(h.Post(kJobs + "/nosuch/resume", Who::kOperator).status, 404);
}

// ---- Runs ----------------------------------------------------------------------------------

// The shape of a run answer.
void ExpectRun(const Json& run) {
  SCOPED_TRACE("run " + run.dump().substr(0, 600));
  ASSERT_TRUE(run.is_object());
  for (const char* k : {"id", "job_id", "tenant", "queue", "reason", "state"})
    EXPECT_TRUE(run[k].is_string()) << k;
  for (const char* k : {"attempt", "max_attempts", "priority"})
    EXPECT_TRUE(run[k].is_number_integer()) << k;
  EXPECT_TRUE(IsTime(run["scheduled_at"]));
  EXPECT_TRUE(IsTime(run["created_at"]));
  EXPECT_TRUE(IsTimeOrNull(run["started_at"]));
  EXPECT_TRUE(IsTimeOrNull(run["finished_at"]));
  EXPECT_TRUE(run["duration_ms"].is_null() || run["duration_ms"].is_number_integer());
  EXPECT_TRUE(run.contains("payload"));
  EXPECT_TRUE(run["output"].is_string());
  EXPECT_TRUE(run["error"].is_string());
  ASSERT_TRUE(run["attempts"].is_array());
  for (const Json& a : run["attempts"]) {
    EXPECT_TRUE(a["number"].is_number_integer());
    EXPECT_TRUE(a["node"].is_string());
    EXPECT_TRUE(IsTime(a["started_at"]));
    EXPECT_TRUE(IsTimeOrNull(a["finished_at"]));
    EXPECT_TRUE(a["outcome"].is_string());
  }
}

TEST_F(ApiTest, TriggerRunsTheJobWithTheGivenPayloads) {
  h.node().builtins().Register("echo", [](RunContext& ctx) {
    ctx.Log(ctx.payload());
    return Status::Ok();
  });
  Json spec = Builtin("echo", "echo");
  spec["payload"] = {{"default", true}};
  spec["schedule"] = LeapDaySchedule();
  h.MustCreate("acme", spec);
  h.MustCreate("acme", Builtin("plain"));

  // No body: one run with the job's payload.
  std::vector<std::string> ids = h.MustTrigger("acme", "echo");
  ASSERT_EQ(ids.size(), 1u);
  const std::string default_run = ids[0];
  ids = h.MustTrigger("acme", "echo", R"({"payload": {"x": 1}})");
  ASSERT_EQ(ids.size(), 1u);
  const std::string x_run = ids[0];
  ids = h.MustTrigger("acme", "echo", R"({"payloads": [1, "two", {"n": 3}]})");
  ASSERT_EQ(ids.size(), 3u);
  std::vector<std::string> all = {default_run, x_run, ids[0], ids[1], ids[2]};
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), 5u) << "run ids must differ";
  for (const std::string& id : all) EXPECT_THAT(id, StartsWith("echo@m"));
  const std::vector<std::string> plain = h.MustTrigger("acme", "plain");
  ASSERT_EQ(plain.size(), 1u);
  all.push_back(plain[0]);

  for (const std::string& id : all) ASSERT_TRUE(h.WaitFinished(id));

  Response r = h.Get("/v1/tenants/acme/runs/" + x_run, Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  ExpectRun(r.json);
  EXPECT_EQ(r.json["id"], x_run);
  EXPECT_EQ(r.json["job_id"], "echo");
  EXPECT_EQ(r.json["tenant"], "acme");
  EXPECT_EQ(r.json["state"], "succeeded");
  EXPECT_EQ(r.json["reason"], "manual");
  EXPECT_EQ(r.json["attempt"], 1);
  EXPECT_EQ(r.json["node"], "t");
  EXPECT_EQ(r.json["payload"], Json({{"x", 1}}));
  EXPECT_THAT(r.json["output"].get<std::string>(), HasSubstr(R"({"x":1})"));
  EXPECT_TRUE(IsTime(r.json["started_at"]));
  EXPECT_TRUE(IsTime(r.json["finished_at"]));
  EXPECT_TRUE(r.json["duration_ms"].is_number_integer());
  EXPECT_GE(r.json["duration_ms"].get<int64_t>(), 0);
  ASSERT_EQ(r.json["attempts"].size(), 1u);
  EXPECT_EQ(r.json["attempts"][0]["outcome"], "succeeded");

  r = h.Get("/v1/tenants/acme/runs/" + default_run, Who::kViewer);
  EXPECT_EQ(r.json["payload"], Json({{"default", true}})) << r;
  r = h.Get("/v1/tenants/acme/runs/" + ids[1], Who::kViewer);
  EXPECT_EQ(r.json["payload"], "two") << r;
  EXPECT_EQ(h.Get("/v1/tenants/acme/runs/echo@nosuch", Who::kViewer).status, 404);

  // Job runs: the five of "echo", newest first, pages of two.
  std::vector<Json> pages = Pages(kJobs + "/echo/runs?limit=2", Who::kViewer);
  ASSERT_EQ(pages.size(), 3u);
  std::vector<std::string> listed;
  for (const Json& p : pages) {
    for (const Json& run : p["items"]) {
      ExpectRun(run);
      EXPECT_EQ(run["job_id"], "echo");
      listed.push_back(run["id"]);
    }
  }
  EXPECT_EQ(std::multiset<std::string>(listed.begin(), listed.end()),
            std::multiset<std::string>(all.begin(), all.end() - 1));
  EXPECT_EQ(Ids(h.Get(kJobs + "/echo/runs?state=succeeded", Who::kViewer).json).size(), 5u);
  EXPECT_TRUE(Ids(h.Get(kJobs + "/echo/runs?state=failed", Who::kViewer).json).empty());
  EXPECT_EQ(h.Get(kJobs + "/nosuch/runs", Who::kViewer).status, 404);

  // Tenant runs: both jobs.
  pages = Pages("/v1/tenants/acme/runs?limit=4", Who::kViewer);
  ASSERT_EQ(pages.size(), 2u);
  listed.clear();
  for (const Json& p : pages) {
    for (const std::string& id : Ids(p)) listed.push_back(id);
  }
  EXPECT_EQ(std::multiset<std::string>(listed.begin(), listed.end()),
            std::multiset<std::string>(all.begin(), all.end()));
  EXPECT_EQ(Ids(h.Get("/v1/tenants/acme/runs?state=succeeded", Who::kViewer).json).size(), 6u);

  // The job now shows its last run and counts.
  r = h.Get(kJobs + "/echo", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  ExpectJobDetail(r.json, "echo");
  ASSERT_TRUE(r.json["last_run"].is_object()) << r;
  ExpectRun(r.json["last_run"]);
  EXPECT_THAT(std::vector<std::string>(all.begin(), all.end() - 1),
              ::testing::Contains(r.json["last_run"]["id"]));
  EXPECT_EQ(r.json["counts"], Json({{"succeeded", 5}})) << r;
  EXPECT_EQ(r.json["next_fire_times"].size(), 5u);
}

// An output may be up to 16 MiB: lists carry its tail, the run itself all of it.
TEST_F(ApiTest, ListsCarryTheTailOfEachRunsOutputAndTheRunAllOfIt) {
  h.node().builtins().Register("chatty", [](RunContext& ctx) {
    for (int i = 0; i < 1000; ++i) ctx.Log("line " + std::to_string(i) + " \xE2\x82\xAC");  // €
    return Status::Ok();
  });
  Json spec = Builtin("chatty", "chatty");
  spec["limits"] = {{"max_output_bytes", 1 << 20}};
  h.MustCreate("acme", spec);
  const std::string id = h.MustTrigger("acme", "chatty").at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));

  Response whole = h.Get("/v1/tenants/acme/runs/" + id, Who::kViewer);
  ASSERT_EQ(whole.status, 200) << whole;
  const std::string output = whole.json["output"];
  EXPECT_GT(output.size(), 10000u);
  EXPECT_EQ(whole.json["output_bytes"], output.size());
  EXPECT_EQ(whole.json["output_truncated"], false);
  EXPECT_THAT(output, StartsWith("line 0 "));

  for (const std::string path : {"/v1/tenants/acme/runs", "/v1/tenants/acme/jobs/chatty/runs"}) {
    Response list = h.Get(path, Who::kViewer);
    ASSERT_EQ(list.status, 200) << list;
    ASSERT_EQ(list.json["items"].size(), 1u) << path;
    const std::string tail = list.json["items"][0]["output"];
    EXPECT_LE(tail.size(), 4096u) << path;
    EXPECT_GE(tail.size(), 4090u) << path;
    EXPECT_TRUE(output.ends_with(tail)) << path;
    EXPECT_EQ(list.json["items"][0]["output_bytes"], output.size()) << path;
    EXPECT_EQ(list.json["items"][0]["output_truncated"], true) << path;
  }
  Response job = h.Get("/v1/tenants/acme/jobs/chatty", Who::kViewer);
  ASSERT_EQ(job.status, 200) << job;
  EXPECT_LE(job.json["last_run"]["output"].get<std::string>().size(), 4096u);
}

// A handler that writes more than limits.max_output_bytes: the run keeps the end, and says how
// much was written, in the run and in lists.
TEST_F(ApiTest, ARunSaysItsOutputIsTheEndOfALongerOne) {
  h.node().builtins().Register("long", [](RunContext& ctx) {
    for (int i = 0; i < 100; ++i) ctx.Log("line " + std::to_string(i + 1000));  // 10 bytes
    return Status::Ok();
  });
  Json spec = Builtin("long", "long");
  spec["limits"] = {{"max_output_bytes", 100}};
  h.MustCreate("acme", spec);
  h.MustCreate("acme", Builtin("short", "noop"));
  const std::string id = h.MustTrigger("acme", "long").at(0);
  const std::string other = h.MustTrigger("acme", "short").at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, other));

  Response run = h.Get("/v1/tenants/acme/runs/" + id, Who::kViewer);
  ASSERT_EQ(run.status, 200) << run;
  EXPECT_EQ(run.json["output"],
            "line 1090\nline 1091\nline 1092\nline 1093\nline 1094\n"
            "line 1095\nline 1096\nline 1097\nline 1098\nline 1099\n");
  EXPECT_EQ(run.json["output_bytes"], 1000);
  EXPECT_EQ(run.json["output_truncated"], true);
  Response list = h.Get("/v1/tenants/acme/jobs/long/runs", Who::kViewer);
  ASSERT_EQ(list.status, 200) << list;
  EXPECT_EQ(list.json["items"][0]["output_bytes"], 1000);
  EXPECT_EQ(list.json["items"][0]["output_truncated"], true);
  Response whole = h.Get("/v1/tenants/acme/runs/" + other, Who::kViewer);
  EXPECT_EQ(whole.json["output_bytes"], 0);
  EXPECT_EQ(whole.json["output_truncated"], false);
}

TEST_F(ApiTest, CancelAQueuedAndARunningRun) {
  Gate& gate = h.NewGate();
  h.node().builtins().Register("block", [&gate](RunContext& ctx) {
    return gate.Wait(ctx) ? Status::Ok()
                          : Status(StatusCode::kFailedPrecondition, "cancelled while blocked");
  });
  h.MustCreate("acme", Builtin("blocker", "block"));
  // Two runs of the tenant at once: the third one stays queued (not even claimed ahead by a
  // node whose workers are busy), whatever the timing.
  ASSERT_EQ(h.Put("/v1/tenants/acme", Who::kAdmin, R"({"max_concurrent_runs": 2})").status, 200);

  // Both workers (concurrency 2) held, a third run waits in the queue.
  const std::vector<std::string> a = h.MustTrigger("acme", "blocker");
  const std::vector<std::string> b = h.MustTrigger("acme", "blocker");
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_TRUE(h.events.Wait(EventType::kRunStarted, a[0]));
  ASSERT_TRUE(h.events.Wait(EventType::kRunStarted, b[0]));
  const std::vector<std::string> c = h.MustTrigger("acme", "blocker");
  ASSERT_EQ(c.size(), 1u);
  Response r = h.Get("/v1/tenants/acme/runs/" + c[0], Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["state"], "queued");

  r = h.Post("/v1/tenants/acme/runs/" + c[0] + "/cancel", Who::kOperator);
  ASSERT_EQ(r.status, 200) << r;
  ExpectRun(r.json);
  EXPECT_EQ(r.json["state"], "cancelled");
  EXPECT_TRUE(IsTime(r.json["finished_at"]));

  // A running run: asked to stop; its holder ends it as cancelled. The holder may already have
  // done so by the time the answer reads the run back.
  r = h.Post("/v1/tenants/acme/runs/" + a[0] + "/cancel", Who::kOperator);
  ASSERT_EQ(r.status, 200) << r;
  ExpectRun(r.json);
  if (r.json["state"] == "running") {
    EXPECT_EQ(r.json["cancel_requested"], true) << r;
  } else {
    EXPECT_EQ(r.json["state"], "cancelled") << r;
  }
  ASSERT_TRUE(h.events.Wait(EventType::kRunCancelled, a[0]));
  r = h.Get("/v1/tenants/acme/runs/" + a[0], Who::kViewer);
  EXPECT_EQ(r.json["state"], "cancelled") << r;
  ASSERT_EQ(r.json["attempts"].size(), 1u) << r;
  EXPECT_EQ(r.json["attempts"][0]["outcome"], "cancelled");

  // A finished run cannot be cancelled; it stays as it was.
  r = h.Post("/v1/tenants/acme/runs/" + a[0] + "/cancel", Who::kOperator);
  EXPECT_TRUE(r.status == 409 || r.status == 412) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(h.Get("/v1/tenants/acme/runs/" + a[0], Who::kViewer).json["state"], "cancelled");
  EXPECT_EQ(h.Post("/v1/tenants/acme/runs/blocker@nosuch/cancel", Who::kOperator).status, 404);
  EXPECT_EQ(h.Post("/v1/tenants/acme/runs/" + b[0] + "/cancel", Who::kViewer).status, 403);

  gate.Open();
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, b[0]));
}

TEST_F(ApiTest, DeleteWithKillRunningCancelsTheRunningRun) {
  Gate& gate = h.NewGate();
  h.node().builtins().Register("block", [&gate](RunContext& ctx) {
    return gate.Wait(ctx) ? Status::Ok()
                          : Status(StatusCode::kFailedPrecondition, "cancelled while blocked");
  });
  h.MustCreate("acme", Builtin("doomed", "block"));
  const std::vector<std::string> run = h.MustTrigger("acme", "doomed");
  ASSERT_EQ(run.size(), 1u);
  ASSERT_TRUE(h.events.Wait(EventType::kRunStarted, run[0]));

  Response r = h.Delete(kJobs + "/doomed?kill_running=true", Who::kOperator);
  EXPECT_EQ(r.status, 204) << r;
  EXPECT_EQ(h.Get(kJobs + "/doomed", Who::kViewer).status, 404);
  ASSERT_TRUE(h.events.Wait(EventType::kRunCancelled, run[0]));
  r = h.Get("/v1/tenants/acme/runs/" + run[0], Who::kViewer);
  EXPECT_EQ(r.status, 200) << "run history outlives the job: " << r;
  EXPECT_EQ(r.json["state"], "cancelled") << r;
  // ... and is listed by job, as before the deletion.
  r = h.Get(kJobs + "/doomed/runs", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(Ids(r.json), std::vector<std::string>{run[0]});
  r = h.Get(kJobs + "/doomed/runs?state=succeeded", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(r.json["items"].empty()) << r;
  // A job that never was (and has no history) does not exist.
  EXPECT_EQ(h.Get(kJobs + "/never/runs", Who::kViewer).status, 404);
}

TEST_F(ApiTest, StatsCountRunsByStateAndQueue) {
  h.node().builtins().Register("fail",
                               [](RunContext&) { return Status(StatusCode::kInternal, "boom"); });
  h.MustCreate("acme", Builtin("good"));
  h.MustCreate("acme", Builtin("bad", "fail"));
  std::vector<std::string> runs = h.MustTrigger("acme", "good", R"({"payloads": [1, 2, 3]})");
  const std::vector<std::string> failing = h.MustTrigger("acme", "bad");
  runs.insert(runs.end(), failing.begin(), failing.end());
  ASSERT_EQ(runs.size(), 4u);
  for (const std::string& id : runs) ASSERT_TRUE(h.WaitFinished(id));

  Response r = h.Get("/v1/tenants/acme/stats", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["tenant"], "acme");
  EXPECT_EQ(r.json["by_state"], Json({{"failed", 1}, {"succeeded", 3}})) << r;
  EXPECT_EQ(r.json["by_queue"]["default"]["succeeded"], 3) << r;
  EXPECT_EQ(r.json["by_queue"]["default"]["failed"], 1) << r;
  EXPECT_DOUBLE_EQ(r.json.value("failure_rate", -1.0), 0.25) << r;
  // docs/api.md: durations are integers in ms.
  EXPECT_TRUE(r.json["average_duration_ms"].is_number_integer()) << r;
  EXPECT_GE(r.json.value("average_duration_ms", -1.0), 0.0) << r;

  r = h.Get("/v1/tenants/other/stats", Who::kOther);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(r.json["by_state"].empty()) << r;
  EXPECT_EQ(h.Get("/v1/tenants/acme/stats", Who::kOther).status, 404);
}

// ---- Admin routes --------------------------------------------------------------------------

TEST_F(ApiTest, NodesAndClusterShowThisNode) {
  Response r = h.Get("/v1/nodes", Who::kAdmin);
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_TRUE(IsList(r.json));
  ASSERT_EQ(r.json["items"].size(), 1u) << r;
  const Json& n = r.json["items"][0];
  EXPECT_EQ(n["id"], "t");
  EXPECT_EQ(n["pid"], getpid());
  EXPECT_EQ(n["concurrency"], 2);
  EXPECT_EQ(n["alive"], true);
  EXPECT_TRUE(n["queues"].is_array());
  EXPECT_TRUE(n["host"].is_string());
  EXPECT_TRUE(n["version"].is_string());
  EXPECT_TRUE(n["rss_bytes"].is_number_integer());
  EXPECT_TRUE(IsTime(n["started_at"]));
  EXPECT_TRUE(IsTime(n["heartbeat_at"]));

  r = h.Get("/v1/cluster", Who::kAdmin);
  ASSERT_EQ(r.status, 200) << r;
  // The only node leads and fires every tenant.
  EXPECT_EQ(r.json["leader"]["node"], "t") << r;
  EXPECT_TRUE(IsTime(r.json["leader"]["expires_at"]));
  EXPECT_GE(r.json["epoch"].get<int64_t>(), 1);
  EXPECT_EQ(r.json["leader"]["epoch"], r.json["epoch"]);
  ASSERT_TRUE(r.json["nodes"].is_array());
  ASSERT_EQ(r.json["nodes"].size(), 1u);
  EXPECT_EQ(r.json["nodes"][0]["id"], "t");
  EXPECT_EQ(r.json["nodes"][0]["leader"], true);
  ASSERT_TRUE(r.json["assignment"].is_object());
  for (const auto& [tenant, owner] : r.json["assignment"].items()) EXPECT_EQ(owner, "t") << tenant;
  EXPECT_EQ(r.json["assignment"].value("default", ""), "t");
}

TEST_F(ApiTest, KeysAreCreatedListedAndRevoked) {
  Response r =
      h.Post("/v1/keys", Who::kAdmin, R"({"role": "viewer", "tenant": "acme", "name": "ci"})");
  ASSERT_EQ(r.status, 201) << r;
  const std::string id = r.json.value("id", "");
  const std::string key = r.json.value("key", "");
  EXPECT_EQ(r.json["role"], "viewer");
  EXPECT_EQ(r.json["tenant"], "acme");
  EXPECT_EQ(r.json["name"], "ci");
  EXPECT_EQ(r.json["allow_shell"], false);
  EXPECT_TRUE(IsTime(r.json["created_at"]));
  EXPECT_THAT(key, StartsWith("js_" + id + "_"));
  EXPECT_GE(key.size(), 3 + id.size() + 1 + 43) << "at least 256 bits of secret";

  // The new key works, with its role.
  const httplib::Headers auth = {{"Authorization", "Bearer " + key}};
  EXPECT_EQ(h.Send("GET", kJobs, Who::kNone, "", auth).status, 200);
  EXPECT_EQ(h.Send("POST", kJobs, Who::kNone, Builtin("x").dump(), auth).status, 403);

  // Listed without secrets.
  r = h.Get("/v1/keys", Who::kAdmin);
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_TRUE(IsList(r.json));
  EXPECT_THAT(Ids(r.json), ::testing::Contains(id));
  EXPECT_THAT(Ids(r.json), ::testing::Contains(h.KeyRecord(Who::kViewer).id));
  for (const Json& k : r.json["items"]) {
    EXPECT_FALSE(k.contains("key")) << k;
    EXPECT_FALSE(k.contains("secret_hash")) << k;
    EXPECT_THAT(r.body, Not(HasSubstr(key.substr(key.rfind('_') + 1))));
    EXPECT_TRUE(IsTime(k["created_at"]));
  }

  // An admin key belongs to no tenant.
  r = h.Post("/v1/keys", Who::kAdmin, R"({"role": "admin"})");
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_TRUE(r.json["tenant"].is_null()) << r;

  // Revoked: 401 from then on.
  r = h.Delete("/v1/keys/" + id, Who::kAdmin);
  EXPECT_EQ(r.status, 204) << r;
  r = h.Send("GET", kJobs, Who::kNone, "", auth);
  EXPECT_EQ(r.status, 401) << r;
  EXPECT_EQ(r.ErrorCode(), "unauthenticated");
  EXPECT_THAT(Ids(h.Get("/v1/keys", Who::kAdmin).json), Not(::testing::Contains(id)));
  EXPECT_EQ(h.Delete("/v1/keys/" + id, Who::kAdmin).status, 404);
}

// The last admin key cannot be revoked (nobody could manage keys again); with another admin
// key it can.
TEST_F(ApiTest, TheLastAdminKeyIsNotRevoked) {
  std::vector<std::string> admins;
  const Response keys = h.Get("/v1/keys", Who::kAdmin);
  for (const Json& k : keys.json["items"]) {
    if (k["role"] == "admin") admins.push_back(k["id"]);
  }
  ASSERT_EQ(admins.size(), 1u);
  Response r = h.Delete("/v1/keys/" + admins[0], Who::kAdmin);
  EXPECT_EQ(r.status, 412) << r;
  EXPECT_THAT(r.Error().value("message", ""), HasSubstr("the last admin key"));
  EXPECT_EQ(r.Error().value("field", ""), "id");

  r = h.Post("/v1/keys", Who::kAdmin, R"({"role": "admin", "name": "second"})");
  ASSERT_EQ(r.status, 201) << r;
  const std::string second = r.json["id"];
  EXPECT_EQ(h.Delete("/v1/keys/" + second, Who::kAdmin).status, 204);
  // The first is the last again.
  EXPECT_EQ(h.Delete("/v1/keys/" + admins[0], Who::kAdmin).status, 412);
}

TEST_F(ApiTest, TenantsAreListedAndPut) {
  Response r = h.Get("/v1/tenants", Who::kAdmin);
  ASSERT_EQ(r.status, 200) << r;
  ASSERT_TRUE(IsList(r.json));
  const std::vector<std::string> ids = Ids(r.json);
  for (const char* t : {"default", "acme", "other"}) EXPECT_THAT(ids, ::testing::Contains(t));
  for (const Json& t : r.json["items"]) {
    EXPECT_TRUE(t["max_jobs"].is_number_integer()) << t;
    EXPECT_TRUE(t["max_concurrent_runs"].is_number_integer()) << t;
    if (t["id"] == "default") {
      // Built in and never written: no time is known (it used to say 1970).
      EXPECT_TRUE(t["created_at"].is_null()) << t;
      EXPECT_TRUE(t["updated_at"].is_null()) << t;
      continue;
    }
    EXPECT_TRUE(IsTime(t["created_at"])) << t;
    EXPECT_TRUE(IsTime(t["updated_at"])) << t;
  }

  r = h.Put("/v1/tenants/newt", Who::kAdmin, R"({"max_jobs": 5})");
  ASSERT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.json["id"], "newt");
  EXPECT_EQ(r.json["max_jobs"], 5);
  EXPECT_EQ(r.json["max_concurrent_runs"], 0);
  const Json created_at = r.json["created_at"];

  r = h.Put("/v1/tenants/newt", Who::kAdmin, R"({"max_concurrent_runs": 3})");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["max_jobs"], 5) << "a field left out keeps its value";
  EXPECT_EQ(r.json["max_concurrent_runs"], 3);
  EXPECT_EQ(r.json["created_at"], created_at);
  EXPECT_THAT(Ids(h.Get("/v1/tenants", Who::kAdmin).json), ::testing::Contains("newt"));

  // The same quotas again change nothing, not even updated_at (asked once the clock has moved
  // past it).
  const Json updated_at = r.json["updated_at"];
  const TimePoint last = *ParseRfc3339(updated_at.get<std::string>());
  while (h.node().clock().Now() <= last) std::this_thread::yield();
  r = h.Put("/v1/tenants/newt", Who::kAdmin, R"({"max_concurrent_runs": 3})");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["updated_at"], updated_at);

  // The new tenant is usable at once.
  EXPECT_EQ(h.Post("/v1/keys", Who::kAdmin, R"({"role": "operator", "tenant": "newt"})").status,
            201);
  EXPECT_EQ(h.Post("/v1/tenants/newt/jobs", Who::kAdmin, Builtin("first").dump()).status, 201);
}

// ---- Roles ---------------------------------------------------------------------------------

TEST_F(ApiTest, EachRoleGetsExactlyItsRoutes) {
  h.MustCreate("acme", Builtin("existing"));
  const std::vector<std::string> run = h.MustTrigger("acme", "existing");
  ASSERT_EQ(run.size(), 1u);
  ASSERT_TRUE(h.WaitFinished(run[0]));

  struct Case {
    std::string method, path, body;
    int viewer, op, admin;  // expected status per role
  };
  const std::string job = Builtin("made").dump();
  const std::vector<Case> cases = {
      {"GET", "/metrics", "", 200, 200, 200},
      {"GET", "/v1/cron/next?expr=" + Q("@daily"), "", 200, 200, 200},
      {"GET", kJobs, "", 200, 200, 200},
      {"GET", kJobs + "/existing", "", 200, 200, 200},
      {"GET", kJobs + "/existing/runs", "", 200, 200, 200},
      {"GET", "/v1/tenants/acme/runs", "", 200, 200, 200},
      {"GET", "/v1/tenants/acme/runs/" + run[0], "", 200, 200, 200},
      {"GET", "/v1/tenants/acme/stats", "", 200, 200, 200},
      {"POST", kJobs, job, 403, 201, 409},
      {"PUT", kJobs + "/made", job, 403, 200, 200},
      {"POST", kJobs + "/existing/pause", "", 403, 200, 200},
      {"POST", kJobs + "/existing/resume", "", 403, 200, 200},
      {"POST", kJobs + "/existing/trigger", "", 403, 201, 201},
      {"POST", "/v1/tenants/acme/runs/" + run[0] + "/cancel", "", 403, 412, 412},
      {"GET", "/v1/nodes", "", 403, 403, 200},
      {"GET", "/v1/cluster", "", 403, 403, 200},
      {"GET", "/v1/keys", "", 403, 403, 200},
      {"POST", "/v1/keys", R"({"role": "viewer", "tenant": "acme"})", 403, 403, 201},
      {"GET", "/v1/tenants", "", 403, 403, 200},
      {"PUT", "/v1/tenants/acme", "{}", 403, 403, 200},
      {"DELETE", "/v1/keys/" + h.KeyRecord(Who::kOther).id, "", 403, 403, 204},
      {"DELETE", kJobs + "/made", "", 403, 204, 404},
  };
  for (const Case& c : cases) {
    for (auto [who, expected] : {std::pair{Who::kViewer, c.viewer}, std::pair{Who::kOperator, c.op},
                                 std::pair{Who::kAdmin, c.admin}}) {
      SCOPED_TRACE(c.method + " " + c.path + " as " + WhoName(who));
      Response r = h.Send(c.method, c.path, who, c.body);
      if (expected == 412) {
        EXPECT_TRUE(r.status == 409 || r.status == 412) << r;  // cancelling a finished run
      } else {
        EXPECT_EQ(r.status, expected) << r;
      }
      if (expected == 403) {
        EXPECT_TRUE(IsErrorBody(r));
        EXPECT_EQ(r.ErrorCode(), "permission_denied");
      }
    }
  }
  // Nothing a viewer asked for was done: "made" was created by the operator only (then deleted).
  EXPECT_EQ(h.Get(kJobs + "/made", Who::kAdmin).status, 404);
}

// A request written by hand on a new connection (what curl sends with -X POST and no -d: no
// Content-Length); returns the status of the answer, or -1.
int RawStatus(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int status = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
    std::string answer;
    char buf[4096];
    while (answer.find("\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      answer.append(buf, static_cast<size_t>(n));
    }
    // "HTTP/1.1 200 OK"
    if (answer.size() > 12) status = std::atoi(answer.c_str() + 9);
  }
  ::close(fd);
  return status;
}

// Sends a request written by hand on a new connection and returns the first answer (its head and
// its Content-Length bytes of body).
std::string RawExchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) {
      answer.append(buf, static_cast<size_t>(n));
      const size_t head_end = answer.find("\r\n\r\n");
      const size_t length_at = answer.find("Content-Length: ");
      if (head_end != std::string::npos && length_at != std::string::npos &&
          answer.size() >= head_end + 4 + std::stoul(answer.substr(length_at + 16))) {
        break;
      }
    }
  }
  ::close(fd);
  return answer;
}

// The 1 MiB limit counts the bytes of a body with a Content-Length; a body it cannot count
// (chunked, or compressed: a small upload may inflate to gigabytes) or whose length is ambiguous
// is refused unread, and the answer closes the connection.
TEST_F(ApiTest, BodiesTheSizeLimitCannotCountAreRefusedUnread) {
  const std::string head = "POST " + kJobs +
                           " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                           h.Key(Who::kOperator) + "\r\n";
  const std::string spec = Builtin("sent").dump();
  const std::string body = std::to_string(spec.size()) + "\r\n" + spec + "\r\n0\r\n\r\n";
  struct Case {
    std::string headers;
    int status;
    std::string message;
  };
  for (const Case& c : {
           Case{"Transfer-Encoding: chunked\r\n", 411, "Content-Length"},
           Case{"Content-Encoding: gzip\r\nContent-Length: 4\r\n", 415, "uncompressed"},
           Case{"Content-Length: 4\r\nContent-Length: 9\r\n", 400, "more than one"},
           Case{"Content-Length: -5\r\n", 400, "whole number of bytes, got '-5'"},
       }) {
    SCOPED_TRACE(c.headers);
    const std::string answer = RawExchange(h.port(), head + c.headers + "\r\n" + body);
    EXPECT_THAT(answer, StartsWith("HTTP/1.1 " + std::to_string(c.status))) << answer;
    EXPECT_THAT(answer, HasSubstr(c.message));
    EXPECT_THAT(answer, HasSubstr("\r\nConnection: close\r\n"));
  }
  EXPECT_EQ(h.Get(kJobs, Who::kViewer).json["items"].size(), 0u);
  // A body with a Content-Length, over the same kind of connection, is read as before.
  const std::string answer =
      RawExchange(h.port(), head + "Content-Length: " + std::to_string(spec.size()) +
                                "\r\nConnection: close\r\n\r\n" + spec);
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 201")) << answer;
}

// A GET with a body is refused (no GET route reads one, and an unread body would be taken for
// the next request on the connection); an empty one is no body.
TEST_F(ApiTest, AGetWithABodyIsRefused) {
  const std::string head = "GET " + kJobs +
                           " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                           h.Key(Who::kViewer) + "\r\n";
  const std::string body = R"({"limit": 5})";
  std::string answer = RawExchange(
      h.port(), head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 400")) << answer;
  EXPECT_THAT(answer, HasSubstr("a GET request takes no body"));
  EXPECT_THAT(answer, HasSubstr("\r\nConnection: close\r\n"));
  answer = RawExchange(h.port(), head + "Content-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 200")) << answer;
}

// A path that has routes, asked with a method it has none for, is 405 with the methods it has;
// a request line past the library's limit is 414, said as such.
TEST_F(ApiTest, AWrongMethodIs405AndATooLongPathIs414) {
  h.MustCreate("acme", Builtin("one"));
  Response r = h.Send("PATCH", kJobs + "/one", Who::kOperator, "{}");
  EXPECT_EQ(r.status, 405) << r;
  EXPECT_EQ(r.ErrorCode(), "method_not_allowed");
  EXPECT_EQ(r.headers.find("Allow")->second, "PUT, GET, DELETE");
  EXPECT_THAT(r.Error().value("message", ""), HasSubstr("allowed: PUT, GET, DELETE"));
  EXPECT_EQ(h.Send("DELETE", "/v1/tenants/acme/runs", Who::kOperator).status, 405);
  EXPECT_EQ(h.Send("PATCH", "/v1/nothing/here", Who::kOperator, "{}").status, 404);

  r = h.Get("/v1/tenants/acme/jobs/" + std::string(20000, 'x'), Who::kViewer);
  EXPECT_EQ(r.status, 414) << r;
  EXPECT_EQ(r.ErrorCode(), "uri_too_long");
}

// A POST without a body and without Content-Length (curl -X POST) has an empty body: it is
// answered at once, not refused as malformed after the read times out.
TEST_F(ApiTest, APostWithoutContentLengthHasAnEmptyBody) {
  h.MustCreate("acme", Builtin("quiet"));
  const std::string request = "POST " + kJobs +
                              "/quiet/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                              h.Key(Who::kOperator) + "\r\n\r\n";
  EXPECT_EQ(RawStatus(h.port(), request), 200);
  EXPECT_EQ(h.Get(kJobs + "/quiet", Who::kViewer).json["spec"]["paused"], true);
}

// Every body is read as JSON, whatever its Content-Type: a job spec of 20 KB sent as a form
// (curl -d's default type) is created, not refused by the form parser's 8 KiB limit.
TEST_F(ApiTest, ABodyIsJsonWhateverItsContentType) {
  Json spec = Builtin("big");
  spec["payload"] = {{"data", std::string(20000, 'x')}};
  Response r = h.Post(kJobs, Who::kOperator, spec.dump(),
                      {{"Content-Type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(r.status, 201) << r;
  const Json stored = h.Get(kJobs + "/big", Who::kViewer).json;
  EXPECT_EQ(stored["spec"]["payload"]["data"].get<std::string>().size(), 20000u) << stored;
}

// A form (curl -F) is not a JSON body: refused as invalid JSON, not read as a request without
// a body (which would trigger one run with the job's payload instead of the three asked for).
TEST_F(ApiTest, AMultipartFormIsRefusedNotReadAsNoBody) {
  h.MustCreate("acme", Builtin("formed"));
  const std::string form =
      "--xyz\r\nContent-Disposition: form-data; name=\"payloads\"\r\n\r\n[1,2,3]\r\n--xyz--\r\n";
  Response r = h.Post(kJobs + "/formed/trigger", Who::kOperator, form,
                      {{"Content-Type", "multipart/form-data; boundary=xyz"}});
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_THAT(r.body, HasSubstr("invalid JSON"));
  EXPECT_EQ(h.Get(kJobs + "/formed/runs", Who::kViewer).json["items"].size(), 0u);
  // A JSON body sent with a multipart type is read as JSON.
  r = h.Post(kJobs + "/formed/trigger", Who::kOperator, R"({"payloads": [1, 2, 3]})",
             {{"Content-Type", "multipart/form-data; boundary=xyz"}});
  EXPECT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.json["run_ids"].size(), 3u);
  // Content codings are case-insensitive: "Identity" is no coding.
  r = h.Post(kJobs + "/formed/trigger", Who::kOperator, "", {{"Content-Encoding", "Identity"}});
  EXPECT_EQ(r.status, 201) << r;
}

// A PUT whose spec says "id": null takes the path's id, as for any field set to null.
TEST_F(ApiTest, PutWithANullIdTakesThePathsId) {
  Json spec = Builtin("ignored");
  spec["id"] = nullptr;
  Response r = h.Put(kJobs + "/from-path", Who::kOperator, spec.dump());
  EXPECT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.json["id"], "from-path");
}

// A second server on the port of a running one is refused, and says why (without it, the
// kernel would split the connections between the two).
TEST_F(ApiTest, ASecondServerCannotListenOnTheSamePort) {
  auto second =
      api::ApiServer::Create(h.node(), {.listen = "127.0.0.1:" + std::to_string(h.port())});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  Status started = (*second)->Start();
  EXPECT_EQ(started.code(), StatusCode::kUnavailable) << started.ToString();
  EXPECT_THAT(started.message(), HasSubstr("in use"));
  EXPECT_EQ(h.Get(kJobs, Who::kViewer).status, 200);
}

TEST_F(ApiTest, ShellJobsNeedAKeyWithAllowShell) {
  for (const std::string& method : {std::string("POST"), std::string("PUT")}) {
    SCOPED_TRACE(method);
    Response r = method == "POST" ? h.Post(kJobs, Who::kOperator, Shell("sh").dump())
                                  : h.Put(kJobs + "/sh", Who::kOperator, Shell("sh").dump());
    // The key may not: 403, naming handler.type.
    EXPECT_EQ(r.status, 403) << r;
    EXPECT_TRUE(IsErrorBody(r));
    EXPECT_EQ(r.ErrorField(), "handler.type");
    EXPECT_THAT(r.ErrorMessage(), HasSubstr("allow_shell"));
    EXPECT_EQ(h.Get(kJobs + "/sh", Who::kAdmin).status, 404) << "the refused shell job was stored";
  }
  // An operator without allow_shell cannot turn an existing job into a shell job either.
  h.MustCreate("acme", Builtin("harmless"));
  Response r = h.Put(kJobs + "/harmless", Who::kOperator, Shell("harmless").dump());
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_THAT(r.ErrorMessage(), HasSubstr("allow_shell"));
  EXPECT_EQ(h.Get(kJobs + "/harmless", Who::kAdmin).json["spec"]["handler"]["type"], "builtin");

  r = h.Post(kJobs, Who::kShellOperator, Shell("sh").dump());
  EXPECT_EQ(r.status, 201) << r;
  EXPECT_EQ(r.json["spec"]["handler"]["type"], "shell");
  r = h.Post(kJobs, Who::kAdmin, Shell("sh2").dump());
  EXPECT_EQ(r.status, 201) << r;

  // A shell program reads its payload on stdin: an operator without allow_shell may run the job
  // as it is, but not with a payload of its own; builtin jobs take any operator's payload.
  r = h.Post(kJobs + "/sh/trigger", Who::kOperator, R"({"payload": "rm -rf /"})");
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(r.ErrorField(), "payload");
  r = h.Post(kJobs + "/sh/trigger", Who::kOperator, R"({"payloads": [1, 2]})");
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(r.ErrorField(), "payloads");
  EXPECT_EQ(h.Get(kJobs + "/sh/runs", Who::kViewer).json["items"].size(), 0u);
  EXPECT_EQ(h.Post(kJobs + "/sh/trigger", Who::kOperator).status, 201);
  EXPECT_EQ(h.Post(kJobs + "/sh/trigger", Who::kShellOperator, R"({"payload": 1})").status, 201);
  EXPECT_EQ(h.Post(kJobs + "/harmless/trigger", Who::kOperator, R"({"payload": 1})").status, 201);
  EXPECT_EQ(h.Get(kJobs + "/sh/runs", Who::kViewer).json["items"].size(), 2u);
}

// ---- Tenant isolation ----------------------------------------------------------------------

TEST_F(ApiTest, AnotherTenantsJobsAndRunsDoNotExistForAKey) {
  h.MustCreate("acme", Builtin("private"));
  const std::vector<std::string> run = h.MustTrigger("acme", "private");
  ASSERT_EQ(run.size(), 1u);
  ASSERT_TRUE(h.WaitFinished(run[0]));

  // The same answer whether the job or run exists or not.
  struct Pair {
    std::string method, existing, missing;
  };
  const std::vector<Pair> pairs = {
      {"GET", kJobs + "/private", kJobs + "/missing"},
      {"GET", kJobs + "/private/runs", kJobs + "/missing/runs"},
      {"GET", "/v1/tenants/acme/runs/" + run[0], "/v1/tenants/acme/runs/private@0"},
      {"POST", "/v1/tenants/acme/runs/" + run[0] + "/cancel",
       "/v1/tenants/acme/runs/private@0/cancel"},
      {"POST", kJobs + "/private/pause", kJobs + "/missing/pause"},
      {"POST", kJobs + "/private/trigger", kJobs + "/missing/trigger"},
      {"DELETE", kJobs + "/private", kJobs + "/missing"},
      {"PUT", kJobs + "/private", kJobs + "/missing"},
  };
  for (const Pair& p : pairs) {
    SCOPED_TRACE(p.method + " " + p.existing);
    const std::string body = p.method == "PUT"
                                 ? Json{{"handler", {{"type", "builtin"}, {"name", "noop"}}}}.dump()
                                 : std::string();
    Response a = h.Send(p.method, p.existing, Who::kOther, body);
    Response b = h.Send(p.method, p.missing, Who::kOther, body);
    EXPECT_EQ(a.status, 404) << a;
    EXPECT_TRUE(IsErrorBody(a));
    EXPECT_EQ(a.ErrorCode(), "not_found");
    EXPECT_EQ(a.status, b.status);
    EXPECT_EQ(a.body, b.body) << "the answer tells an existing job or run from a missing one";
    EXPECT_THAT(a.body, Not(HasSubstr("private")));
  }
  for (const std::string& path :
       {kJobs, std::string("/v1/tenants/acme/runs"), std::string("/v1/tenants/acme/stats")}) {
    Response r = h.Get(path, Who::kOther);
    EXPECT_EQ(r.status, 404) << path << ": " << r;
    EXPECT_THAT(r.body, Not(HasSubstr("private")));
  }
  Response r = h.Post(kJobs, Who::kOther, Builtin("intruder").dump());
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_EQ(h.Get(kJobs + "/intruder", Who::kAdmin).status, 404);

  // Nothing changed in acme.
  r = h.Get(kJobs + "/private", Who::kViewer);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["version"], 1);
  EXPECT_EQ(r.json["state"], "active");
  EXPECT_EQ(r.json["counts"], Json({{"succeeded", 1}}));
  // And a key of acme cannot see "other" either.
  EXPECT_EQ(h.Get("/v1/tenants/other/jobs", Who::kViewer).status, 404);
}

// ---- Quotas --------------------------------------------------------------------------------

TEST_F(ApiTest, TenantJobQuotaRefusesTheJobBeyondIt) {
  Response r = h.Put("/v1/tenants/acme", Who::kAdmin, R"({"max_jobs": 2})");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["max_jobs"], 2);
  h.MustCreate("acme", Builtin("q1"));
  h.MustCreate("acme", Builtin("q2"));

  r = h.Post(kJobs, Who::kOperator, Builtin("q3").dump());
  EXPECT_EQ(r.status, 429) << r;
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_EQ(r.ErrorCode(), "resource_exhausted");
  r = h.Put(kJobs + "/q3", Who::kOperator, Builtin("q3").dump());
  EXPECT_EQ(r.status, 429) << r;
  EXPECT_EQ(h.Get(kJobs + "/q3", Who::kViewer).status, 404);
  EXPECT_EQ(Ids(h.Get(kJobs, Who::kViewer).json), (std::vector<std::string>{"q1", "q2"}));

  // Replacing is not creating; deleting makes room.
  Json q1 = Builtin("q1");
  q1["priority"] = 9;
  EXPECT_EQ(h.Put(kJobs + "/q1", Who::kOperator, q1.dump()).status, 200);
  EXPECT_EQ(h.Delete(kJobs + "/q1", Who::kOperator).status, 204);
  EXPECT_EQ(h.Post(kJobs, Who::kOperator, Builtin("q3").dump()).status, 201);
}

// ---- Server-Sent Events --------------------------------------------------------------------

TEST_F(ApiTest, EventsStreamRunChangesAndResumeAfterLastEventId) {
  h.MustCreate("acme", Builtin("streamed"));
  SseStream stream(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer));
  // A keep-alive comment proves the stream is open (and positioned) before anything happens.
  ASSERT_TRUE(stream.WaitUntil(
      [](const std::string& t) { return t.find(": keep-alive\n") != std::string::npos; },
      "a keep-alive comment"));
  EXPECT_EQ(stream.status(), 200);
  EXPECT_THAT(stream.content_type(), StartsWith("text/event-stream"));

  const std::vector<std::string> ids = h.MustTrigger("acme", "streamed", R"({"payload": 42})");
  ASSERT_EQ(ids.size(), 1u);
  const std::optional<SseEvent> queued = stream.WaitEvent("run.queued", ids[0]);
  ASSERT_TRUE(queued);
  const std::optional<SseEvent> succeeded = stream.WaitEvent("run.succeeded", ids[0]);
  ASSERT_TRUE(succeeded);

  // Every event has an id (increasing), a type and a JSON body about acme.
  int64_t last = -1;
  const std::vector<SseEvent> events = stream.Events();
  for (const SseEvent& e : events) {
    SCOPED_TRACE(e.type + " " + e.data);
    ASSERT_FALSE(e.id.empty());
    const int64_t id = std::stoll(e.id);
    EXPECT_GT(id, last);
    last = id;
    EXPECT_NE(e.type, "audit") << "audit lines are not part of the feed";
    ASSERT_TRUE(e.json.is_object());
    EXPECT_EQ(e.json["tenant"], "acme");
    EXPECT_EQ(e.json["type"], e.type);
    EXPECT_EQ(e.json["seq"], id);
    EXPECT_TRUE(IsTime(e.json["time"]));
  }
  EXPECT_EQ(queued->json["job_id"], "streamed");
  stream.Close();

  // Reconnecting with Last-Event-ID replays what came after that event.
  SseStream again(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer), queued->id);
  ASSERT_TRUE(again.WaitEvent("run.succeeded", ids[0]));
  EXPECT_EQ(again.WaitEvent("run.succeeded", ids[0])->id, succeeded->id);
  for (const SseEvent& e : again.Events()) {
    EXPECT_GT(std::stoll(e.id), std::stoll(queued->id)) << e.type;
    EXPECT_FALSE(e.type == "run.queued" && e.json.value("run_id", Json()) == ids[0])
        << "replayed the event itself";
  }
}

TEST_F(ApiTest, EventsCanBeLimitedToOneJob) {
  h.MustCreate("acme", Builtin("watched"));
  h.MustCreate("acme", Builtin("ignored"));
  SseStream stream(h.port(), "/v1/tenants/acme/events?job=watched", h.Key(Who::kViewer));
  ASSERT_TRUE(stream.WaitUntil(
      [](const std::string& t) { return t.find(": keep-alive\n") != std::string::npos; },
      "a keep-alive comment"));
  // "ignored" first: its events are older than watched's in the feed.
  const std::vector<std::string> ignored = h.MustTrigger("acme", "ignored");
  ASSERT_EQ(ignored.size(), 1u);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, ignored[0]));
  const std::vector<std::string> watched = h.MustTrigger("acme", "watched");
  ASSERT_EQ(watched.size(), 1u);
  ASSERT_TRUE(stream.WaitEvent("run.succeeded", watched[0]));
  for (const SseEvent& e : stream.Events())
    EXPECT_EQ(e.json.value("job_id", ""), "watched") << e.data;
}

// A revoked key's open stream ends: revoking a leaked key ends its access.
TEST_F(ApiTest, AnEventStreamEndsWhenItsKeyIsRevoked) {
  Response created =
      h.Post("/v1/keys", Who::kAdmin, R"({"role": "viewer", "tenant": "acme", "name": "leaked"})");
  ASSERT_EQ(created.status, 201) << created;
  SseStream stream(h.port(), "/v1/tenants/acme/events", created.json["key"]);
  ASSERT_TRUE(stream.WaitUntil(
      [](const std::string& t) { return t.find(": keep-alive\n") != std::string::npos; },
      "a keep-alive comment"));
  SseStream kept(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer));
  ASSERT_TRUE(kept.WaitUntil(
      [](const std::string& t) { return t.find(": keep-alive\n") != std::string::npos; },
      "a keep-alive comment"));
  ASSERT_EQ(h.Delete("/v1/keys/" + created.json["id"].get<std::string>(), Who::kAdmin).status, 204);
  ASSERT_TRUE(stream.WaitDone()) << "the stream of the revoked key ended";
  // Another key's stream goes on.
  h.MustCreate("acme", Builtin("after-revoke"));
  EXPECT_TRUE(kept.WaitEvent("job.created", ""));
}

// Event streams hold a request thread each: a node keeps some threads for the other routes,
// whoever opens streams, and refuses streams beyond that (503) until one closes.
TEST(ApiStreamLimitTest, EventStreamsLeaveThreadsForTheOtherRoutes) {
  ApiHarness h({.threads = 8});  // at most 4 streams
  ASSERT_TRUE(h.ok());
  const auto keep_alive = [](const std::string& t) {
    return t.find(": keep-alive\n") != std::string::npos;
  };
  std::vector<std::unique_ptr<SseStream>> streams;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(
        std::make_unique<SseStream>(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer)));
    ASSERT_TRUE(streams.back()->WaitUntil(keep_alive, "a keep-alive comment"));
  }
  SseStream refused(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer));
  ASSERT_TRUE(refused.WaitDone());
  EXPECT_EQ(refused.status(), 503);
  EXPECT_EQ(h.Get("/healthz", Who::kNone).status, 200);
  EXPECT_EQ(h.Get("/v1/tenants/acme/jobs", Who::kViewer).status, 200);

  // One closed: its place is free once the server has seen it go (its next keep-alive write
  // fails), within a second or two.
  streams.front()->Close();
  bool opened = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!opened && std::chrono::steady_clock::now() < deadline) {
    SseStream again(h.port(), "/v1/tenants/acme/events", h.Key(Who::kViewer));
    opened = again.WaitStatus() == 200;
    if (!opened) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(opened);
}

TEST_F(ApiTest, EventsOfAnotherTenantAreNotFound) {
  SseStream stream(h.port(), "/v1/tenants/acme/events", h.Key(Who::kOther));
  ASSERT_TRUE(stream.WaitDone());
  EXPECT_EQ(stream.status(), 404);
  SseStream anonymous(h.port(), "/v1/tenants/acme/events", "");
  ASSERT_TRUE(anonymous.WaitDone());
  EXPECT_EQ(anonymous.status(), 401);
}

// ---- Audit and store failures --------------------------------------------------------------

TEST_F(ApiTest, EveryChangeIsAuditedWithWhoWhatAndStatus) {
  h.MustCreate("acme", Builtin("audited"));  // by the allow_shell operator
  ASSERT_EQ(h.Post(kJobs + "/audited/pause", Who::kOperator).status, 200);
  ASSERT_EQ(h.Get(kJobs + "/audited", Who::kViewer).status, 200);
  ASSERT_EQ(h.Post(kJobs + "/audited/pause", Who::kViewer).status, 403);
  ASSERT_EQ(h.Post("/v1/keys", Who::kAdmin, R"({"role": "viewer", "tenant": "acme"})").status, 201);

  auto events = h.store().ReadEvents("", 0, 10000);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  std::vector<Json> audit;
  for (const Event& e : *events) {
    if (e.type == "audit") audit.push_back(Json::parse(e.data, nullptr, false));
  }
  auto find = [&](const std::string& what, const std::string& who) {
    return std::count_if(audit.begin(), audit.end(), [&](const Json& a) {
      return a.is_object() && a.value("what", "") == what && a.value("who", "") == who;
    });
  };
  EXPECT_EQ(find("POST " + kJobs, h.KeyRecord(Who::kShellOperator).id), 1);
  EXPECT_EQ(find("POST " + kJobs + "/audited/pause", h.KeyRecord(Who::kOperator).id), 1);
  EXPECT_EQ(find("POST /v1/keys", h.KeyRecord(Who::kAdmin).id), 1);
  // Reads and refused requests change nothing.
  EXPECT_EQ(find("GET " + kJobs + "/audited", h.KeyRecord(Who::kViewer).id), 0);
  EXPECT_EQ(find("POST " + kJobs + "/audited/pause", h.KeyRecord(Who::kViewer).id), 0);
  for (const Json& a : audit) EXPECT_TRUE(a.contains("status")) << a;
}

// A store that can be made unreachable.
class SwitchableStore final : public StoreWrapper {
 public:
  explicit SwitchableStore(std::unique_ptr<Store> target)
      : StoreWrapper(*target), owned_(std::move(target)) {}
  Status Before(std::string_view) override {
    return down ? Unavailable("injected: the store is unreachable") : Status::Ok();
  }
  std::atomic<bool> down{false};

 private:
  std::unique_ptr<Store> owned_;
};

TEST(ApiStoreDownTest, AnUnreachableStoreIsA503AndLivenessStaysUp) {
  spdlog::set_level(spdlog::level::off);  // every actor complains while the store is down
  auto sqlite = OpenStore("sqlite::memory:");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status().ToString();
  auto store = std::make_shared<SwitchableStore>(std::move(sqlite).value());
  {
    ApiHarness h({.store = store});
    ASSERT_TRUE(h.ok());
    h.MustCreate("acme", Builtin("kept"));
    Response metrics = h.Get("/metrics", Who::kViewer);  // the key is verified in the store
    ASSERT_EQ(metrics.status, 200) << metrics;
    // A key verified, then revoked through this node.
    Response made = h.Post("/v1/keys", Who::kAdmin, R"({"role": "viewer", "tenant": "acme"})");
    ASSERT_EQ(made.status, 201) << made;
    const httplib::Headers revoked = {{"Authorization", "Bearer " + made.json.value("key", "")}};
    ASSERT_EQ(h.Send("GET", "/metrics", Who::kNone, "", revoked).status, 200);
    ASSERT_EQ(h.Delete("/v1/keys/" + made.json.value("id", ""), Who::kAdmin).status, 204);
    EXPECT_THAT(metrics.body, HasSubstr("\njobsched_store_up 1\n"));
    EXPECT_THAT(metrics.body, HasSubstr("jobsched_jobs{tenant=\"acme\""));

    store->down = true;
    // /metrics still answers a key verified before the outage: the node's own series, and
    // jobsched_store_up 0 instead of the gauges read from the store.
    metrics = h.Get("/metrics", Who::kViewer);
    ASSERT_EQ(metrics.status, 200) << metrics;
    EXPECT_THAT(metrics.body, HasSubstr("\njobsched_store_up 0\n"));
    EXPECT_THAT(metrics.body, HasSubstr("\njobsched_is_leader "));
    EXPECT_THAT(metrics.body, HasSubstr("process_resident_memory_bytes"));
    EXPECT_THAT(metrics.body, Not(HasSubstr("jobsched_jobs")));
    // The 503s of an outage are expected: logged once, not once each.
    std::ostringstream log;
    const auto logger = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
    // A key this node has not verified, or has seen revoked, is not taken on trust.
    EXPECT_EQ(h.Get("/metrics", Who::kOther).status, 503);
    EXPECT_EQ(h.Send("GET", "/metrics", Who::kNone, "", revoked).status, 503);
    for (const auto& [method, path, who] :
         {std::tuple{"GET", kJobs, Who::kViewer},
          std::tuple{"POST", kJobs + "/kept/trigger", Who::kOperator},
          std::tuple{"GET", std::string("/readyz"), Who::kNone},
          std::tuple{"GET", std::string("/v1/keys"), Who::kAdmin}}) {
      SCOPED_TRACE(std::string(method) + " " + path);
      Response r = h.Send(method, path, who);
      EXPECT_EQ(r.status, 503) << r;
      EXPECT_TRUE(IsErrorBody(r));
      EXPECT_EQ(r.ErrorCode(), "unavailable");
    }
    EXPECT_EQ(h.Get("/healthz", Who::kNone).status, 200);
    spdlog::set_default_logger(logger);
    const std::string lines = log.str();
    size_t logged = 0;
    for (size_t at = lines.find("answered 503"); at != std::string::npos;
         at = lines.find("answered 503", at + 1)) {
      ++logged;
    }
    EXPECT_EQ(logged, 1u) << lines;

    store->down = false;
    // A heartbeat that failed meanwhile unregisters the node until the next one: do it now.
    ASSERT_TRUE(h.node().heartbeater().Tick().ok());
    EXPECT_EQ(h.Get("/readyz", Who::kNone).status, 200);
    Response r = h.Get(kJobs, Who::kViewer);
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_EQ(Ids(r.json), std::vector<std::string>{"kept"});
    EXPECT_THAT(h.Get("/metrics", Who::kViewer).body, HasSubstr("\njobsched_store_up 1\n"));
  }
  spdlog::set_level(spdlog::level::warn);
}

// ---- Malformed requests --------------------------------------------------------------------

// One request that must be refused. Header values may contain "{key}", replaced by the key of
// `who`; a request with its own Authorization header gets no other.
struct BadRequest {
  std::string name;
  std::string method;
  std::string path;
  Who who = Who::kOperator;
  std::string body;
  httplib::Headers headers;
  int status = 400;
  std::string message;               // a substring of error.message; "" = not checked
  std::optional<std::string> field;  // error.field; none = not checked
  int alt_status = 0;                // also accepted where either status is right
};

void PrintTo(const BadRequest& b, std::ostream* out) { *out << b.name; }

const std::string kNoop = R"("handler": {"type": "builtin", "name": "noop"})";

std::string JobBody(const std::string& rest, const std::string& id = "new-job") {
  return "{\"id\": \"" + id + "\", " + kNoop + (rest.empty() ? "" : ", " + rest) + "}";
}

std::string Nested(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

std::vector<BadRequest> BadRequests() {
  const std::string tenant_runs = "/v1/tenants/acme/runs";
  const std::string cron = "/v1/cron/next";
  const std::string long_id(129, 'a');
  return {
      // Bodies that are not a job spec.
      {.name = "bad_json",
       .method = "POST",
       .path = kJobs,
       .body = R"({"id": "x", )",
       .message = "invalid JSON"},
      {.name = "empty_body",
       .method = "POST",
       .path = kJobs,
       .body = "",
       .message = "a job spec must be a JSON object; the body is empty"},
      {.name = "json_array",
       .method = "POST",
       .path = kJobs,
       .body = R"([{"id": "x"}])",
       .message = "object"},
      {.name = "json_string",
       .method = "POST",
       .path = kJobs,
       .body = R"("new-job")",
       .message = "object"},
      {.name = "put_json_null",
       .method = "PUT",
       .path = kJobs + "/new-job",
       .body = "null",
       .message = "object"},
      {.name = "invalid_utf8", .method = "POST", .path = kJobs, .body = JobBody("", "bad\xff\xfe")},
      {.name = "invalid_utf8_job_id_in_path",
       .method = "PUT",
       .path = kJobs + "/%FF%FE",
       .body = "{" + kNoop + "}",
       .field = "id"},
      {.name = "invalid_utf8_cron_expr",
       .method = "GET",
       .path = "/v1/cron/next?expr=%FF%FE",
       .who = Who::kViewer,
       .field = "expr"},
      // Wrong types and values.
      {.name = "priority_string",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("priority": "5")"),
       .message = "priority",
       .field = "priority"},
      {.name = "priority_float",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("priority": 5.5)"),
       .field = "priority"},
      {.name = "priority_out_of_range",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("priority": 10)"),
       .message = "0 and 9",
       .field = "priority"},
      {.name = "priority_huge",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("priority": 18446744073709551615)"),
       .field = "priority"},
      {.name = "every_ms_string",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"every_ms": "x"})"),
       .message = "every_ms",
       .field = "schedule.every_ms"},
      {.name = "every_ms_zero",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"every_ms": 0})"),
       .field = "schedule.every_ms"},
      {.name = "timeout_negative",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("timeout_ms": -1)"),
       .field = "timeout_ms"},
      {.name = "retry_zero_attempts",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("retry": {"max_attempts": 0})"),
       .field = "retry.max_attempts"},
      {.name = "label_value_not_string",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("labels": {"team": 5})"),
       .field = "labels.team"},
      {.name = "overlap_unknown",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("overlap": "sometimes")"),
       .message = "skip",
       .field = "overlap"},
      {.name = "handler_missing",
       .method = "POST",
       .path = kJobs,
       .body = R"({"id": "new-job"})",
       .field = "handler"},
      {.name = "handler_type_unknown",
       .method = "POST",
       .path = kJobs,
       .body = R"({"id": "new-job", "handler": {"type": "python"}})",
       .field = "handler.type"},
      {.name = "http_handler_bad_url",
       .method = "POST",
       .path = kJobs,
       .body = R"({"id": "new-job", "handler": {"type": "http", "url": "ftp://example.com"}})",
       .field = "handler.url"},
      // Unknown fields.
      {.name = "unknown_top_level_field",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("colour": "red")"),
       .message = "unknown field",
       .field = "colour"},
      {.name = "unknown_nested_field",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("retry": {"max_attempts": 2, "bakoff": "fixed"})"),
       .message = "unknown field",
       .field = "retry.bakoff"},
      {.name = "unknown_schedule_field",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 2 * * *", "tz": "UTC"})"),
       .field = "schedule.tz"},
      {.name = "unknown_handler_field",
       .method = "POST",
       .path = kJobs,
       .body =
           R"({"id": "new-job", "handler": {"type": "builtin", "name": "noop", "command": ["x"]}})",
       .field = "handler.command"},
      // Schedules.
      {.name = "bad_cron_hour",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 25 * * *"})"),
       .message = "hour",
       .field = "schedule.cron"},
      {.name = "cron_four_fields",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 2 * *"})"),
       .field = "schedule.cron"},
      {.name = "cron_never_fires",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 0 30 2 *"})"),
       .message = "never fires",
       .field = "schedule.cron"},
      {.name = "bad_timezone",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"})"),
       .message = "Mars/Olympus",
       .field = "schedule.timezone"},
      {.name = "timezone_without_cron",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"every_ms": 1000, "timezone": "UTC"})"),
       .field = "schedule.timezone"},
      {.name = "two_schedule_kinds",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 2 * * *", "every_ms": 1000})"),
       .field = "schedule"},
      {.name = "at_not_rfc3339",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"at": "next tuesday"})"),
       .field = "schedule.at"},
      {.name = "at_without_offset",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"at": "2030-01-01T00:00:00"})"),
       .field = "schedule.at"},
      {.name = "at_not_a_string",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"at": 1893456000000})"),
       .field = "schedule.at"},
      // Dependencies.
      {.name = "depends_on_with_cron",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("schedule": {"cron": "0 2 * * *"}, "depends_on": ["existing"])"),
       .message = "schedule",
       .field = "depends_on"},
      {.name = "depends_on_itself",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("depends_on": ["selfish"])", "selfish"),
       .field = "depends_on[0]"},
      {.name = "depends_on_cycle_by_replace",
       .method = "PUT",
       .path = kJobs + "/dep-b",
       .body = "{" + kNoop + R"(, "depends_on": ["dep-a"]})",
       .message = "cycle",
       .field = "depends_on"},
      {.name = "depends_on_cycle_by_create",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(R"("depends_on": ["cyc-a"])", "cyc-b"),
       .message = "cycle",
       .field = "depends_on"},
      // Size and depth.
      {.name = "body_over_1_mib",
       .method = "POST",
       .path = kJobs,
       .body = JobBody("\"payload\": \"" + std::string(size_t{1} << 20, 'x') + "\"", "big"),
       .status = 413,
       .message = "MiB"},
      {.name = "deep_nesting",
       .method = "POST",
       .path = kJobs,
       .body = JobBody("\"payload\": " + Nested(40), "deep"),
       .message = "nesting"},
      // Ids.
      {.name = "bad_job_id_chars",
       .method = "POST",
       .path = kJobs,
       .body = JobBody("", "bad id!"),
       .field = "id"},
      {.name = "bad_job_id_length",
       .method = "POST",
       .path = kJobs,
       .body = JobBody("", long_id),
       .message = "128",
       .field = "id"},
      {.name = "bad_job_id_in_path",
       .method = "PUT",
       .path = kJobs + "/bad$id",
       .body = "{" + kNoop + "}",
       .field = "id"},
      {.name = "too_long_job_id_in_path",
       .method = "PUT",
       .path = kJobs + "/" + long_id,
       .body = "{" + kNoop + "}",
       .field = "id"},
      {.name = "id_in_body_differs_from_path",
       .method = "PUT",
       .path = kJobs + "/new-job",
       .body = JobBody("", "other-job"),
       .field = "id"},
      {.name = "bad_tenant_in_tenant_path",
       .method = "PUT",
       .path = "/v1/tenants/Bad_Tenant",
       .who = Who::kAdmin,
       .body = "{}",
       .field = "tenant"},
      {.name = "bad_tenant_in_job_path",
       .method = "POST",
       .path = "/v1/tenants/No$uch/jobs",
       .who = Who::kAdmin,
       .body = JobBody(""),
       .status = 404,
       .alt_status = 400},
      // Authentication.
      {.name = "missing_authorization",
       .method = "GET",
       .path = kJobs,
       .who = Who::kNone,
       .status = 401,
       .message = "Authorization"},
      {.name = "missing_authorization_on_write",
       .method = "POST",
       .path = kJobs,
       .who = Who::kNone,
       .body = JobBody(""),
       .status = 401},
      {.name = "authorization_without_bearer",
       .method = "GET",
       .path = kJobs,
       .headers = {{"Authorization", "{key}"}},
       .status = 401},
      {.name = "authorization_basic",
       .method = "POST",
       .path = kJobs,
       .body = JobBody(""),
       .headers = {{"Authorization", "Basic {key}"}},
       .status = 401},
      {.name = "unknown_key",
       .method = "GET",
       .path = kJobs,
       .headers = {{"Authorization", "Bearer js_0123456789abcdef_" + std::string(64, '0')}},
       .status = 401},
      {.name = "malformed_key",
       .method = "GET",
       .path = kJobs,
       .headers = {{"Authorization", "Bearer not-a-key"}},
       .status = 401},
      {.name = "key_with_a_wrong_secret",
       .method = "GET",
       .path = kJobs,
       .headers = {{"Authorization", "Bearer {key}0"}},
       .status = 401},
      {.name = "empty_bearer",
       .method = "GET",
       .path = kJobs,
       .headers = {{"Authorization", "Bearer "}},
       .status = 401},
      // Roles.
      {.name = "viewer_creates",
       .method = "POST",
       .path = kJobs,
       .who = Who::kViewer,
       .body = JobBody(""),
       .status = 403},
      {.name = "operator_creates_a_key",
       .method = "POST",
       .path = "/v1/keys",
       .body = R"({"role": "admin"})",
       .status = 403},
      {.name = "operator_puts_a_tenant",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .body = R"({"max_jobs": 0})",
       .status = 403},
      {.name = "shell_without_allow_shell",
       .method = "POST",
       .path = kJobs,
       .body = R"({"id": "new-job", "handler": {"type": "shell", "command": ["/bin/true"]}})",
       .status = 403,
       .message = "allow_shell",
       .field = "handler.type"},
      {.name = "other_tenant_creates",
       .method = "POST",
       .path = kJobs,
       .who = Who::kOther,
       .body = JobBody(""),
       .status = 404},
      {.name = "duplicate_create",
       .method = "POST",
       .path = kJobs,
       .body = JobBody("", "existing"),
       .status = 409},
      // Headers and query parameters.
      {.name = "bad_if_match",
       .method = "PUT",
       .path = kJobs + "/existing",
       .body = "{" + kNoop + "}",
       .headers = {{"If-Match", "abc"}},
       .message = "If-Match",
       .field = "If-Match"},
      {.name = "negative_if_match",
       .method = "PUT",
       .path = kJobs + "/existing",
       .body = "{" + kNoop + "}",
       .headers = {{"If-Match", "-1"}},
       .message = "If-Match: must be a job version (a whole number), got '-1'",
       .field = "If-Match"},
      // A typo in a query parameter would drop its filter (or its option) unseen.
      {.name = "unknown_list_filter",
       .method = "GET",
       .path = kJobs + "?stat=paused",
       .who = Who::kViewer,
       .message = "stat: unknown query parameter (this route takes queue, state, label, limit, "
                  "cursor)",
       .field = "stat"},
      {.name = "unknown_delete_option",
       .method = "DELETE",
       .path = kJobs + "/existing?kill_runing=true",
       .message = "kill_runing: unknown query parameter (this route takes kill_running)",
       .field = "kill_runing"},
      {.name = "parameter_on_a_route_without_any",
       .method = "GET",
       .path = "/v1/tenants/acme/stats?queue=x",
       .who = Who::kViewer,
       .message = "queue: unknown query parameter (this route takes none)",
       .field = "queue"},
      {.name = "repeated_parameter",
       .method = "GET",
       .path = "/v1/tenants/acme/runs?limit=1&limit=2",
       .who = Who::kViewer,
       .message = "limit: given more than once",
       .field = "limit"},
      {.name = "limit_zero", .method = "GET", .path = kJobs + "?limit=0", .field = "limit"},
      {.name = "limit_1001", .method = "GET", .path = kJobs + "?limit=1001", .field = "limit"},
      {.name = "limit_not_a_number", .method = "GET", .path = kJobs + "?limit=x", .field = "limit"},
      {.name = "limit_with_a_space",
       .method = "GET",
       .path = kJobs + "?limit=%201",
       .field = "limit"},
      {.name = "limit_with_a_plus",
       .method = "GET",
       .path = kJobs + "?limit=%2B1",
       .field = "limit"},
      {.name = "runs_limit_zero",
       .method = "GET",
       .path = tenant_runs + "?limit=0",
       .field = "limit"},
      {.name = "bad_job_state_filter",
       .method = "GET",
       .path = kJobs + "?state=sleeping",
       .field = "state"},
      {.name = "bad_run_state_filter",
       .method = "GET",
       .path = tenant_runs + "?state=done",
       .field = "state"},
      {.name = "bad_job_runs_state_filter",
       .method = "GET",
       .path = kJobs + "/existing/runs?state=done",
       .field = "state"},
      {.name = "label_filter_without_colon",
       .method = "GET",
       .path = kJobs + "?label=team",
       .field = "label"},
      {.name = "label_filter_without_key",
       .method = "GET",
       .path = kJobs + "?label=" + Q(":data"),
       .field = "label"},
      {.name = "bad_runs_cursor",
       .method = "GET",
       .path = tenant_runs + "?cursor=garbage",
       .field = "cursor"},
      {.name = "bad_job_runs_cursor",
       .method = "GET",
       .path = kJobs + "/existing/runs?cursor=" + Q("x:y"),
       .field = "cursor"},
      {.name = "kill_running_maybe",
       .method = "DELETE",
       .path = kJobs + "/existing?kill_running=maybe",
       .field = "kill_running"},
      {.name = "bad_last_event_id",
       .method = "GET",
       .path = "/v1/tenants/acme/events",
       .who = Who::kViewer,
       .headers = {{"Last-Event-ID", "abc"}},
       .field = "Last-Event-ID"},
      {.name = "bad_queue_filter",
       .method = "GET",
       .path = kJobs + "?queue=" + Q("a b"),
       .field = "queue"},
      {.name = "bad_events_job_filter",
       .method = "GET",
       .path = "/v1/tenants/acme/events?job=" + Q("a b"),
       .who = Who::kViewer,
       .field = "job"},
      {.name = "bad_after",
       .method = "GET",
       .path = "/v1/tenants/acme/events?after=abc",
       .who = Who::kViewer,
       .message = "after: must be an event id",
       .field = "after"},
      {.name = "empty_after",
       .method = "GET",
       .path = "/v1/tenants/acme/events?after=",
       .who = Who::kViewer,
       .field = "after"},
      // Trigger bodies.
      {.name = "trigger_unknown_field",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = R"({"payload": 1, "priority": 3})",
       .message = "unknown field",
       .field = "priority"},
      {.name = "trigger_payloads_not_an_array",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = R"({"payloads": {"a": 1}})",
       .field = "payloads"},
      {.name = "trigger_payloads_empty",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = R"({"payloads": []})",
       .field = "payloads"},
      {.name = "trigger_payload_and_payloads",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = R"({"payload": 1, "payloads": [2]})",
       .field = "payloads"},
      {.name = "trigger_body_not_an_object",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = "[1, 2]",
       .message = "object"},
      {.name = "trigger_bad_json",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = R"({"payload": )",
       .message = "invalid JSON"},
      {.name = "trigger_deep_payload",
       .method = "POST",
       .path = kJobs + "/existing/trigger",
       .body = "{\"payload\": " + Nested(40) + "}",
       .message = "nesting"},
      {.name = "trigger_unknown_job",
       .method = "POST",
       .path = kJobs + "/nosuch/trigger",
       .status = 404},
      // Keys.
      {.name = "key_bad_role",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "root", "tenant": "acme"})",
       .message = "role",
       .field = "role"},
      {.name = "key_without_role",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"tenant": "acme"})",
       .field = "role"},
      {.name = "key_operator_without_tenant",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "operator"})",
       .message = "tenant",
       .field = "tenant"},
      {.name = "key_unknown_tenant",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "nosuch"})",
       .message = "nosuch",
       .alt_status = 404},
      {.name = "key_bad_tenant_id",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "Bad!"})",
       .field = "tenant"},
      {.name = "key_admin_with_tenant",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "admin", "tenant": "acme"})",
       .field = "tenant"},
      {.name = "key_unknown_field",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "acme", "scopes": []})",
       .field = "scopes"},
      {.name = "key_allow_shell_not_bool",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "operator", "tenant": "acme", "allow_shell": "yes"})",
       .field = "allow_shell"},
      {.name = "key_for_a_missing_tenant",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "nosuch"})",
       .status = 404,
       .message = "tenant: no tenant 'nosuch'",
       .field = "tenant"},
      {.name = "key_admin_without_shell",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "admin", "allow_shell": false})",
       .message = "admin keys may always create shell jobs",
       .field = "allow_shell"},
      {.name = "key_viewer_with_shell",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "acme", "allow_shell": true})",
       .message = "viewer keys create no jobs",
       .field = "allow_shell"},
      {.name = "key_name_with_control_characters",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = R"({"role": "viewer", "tenant": "acme", "name": "a\n\u001b[31mred"})",
       .message = "control characters",
       .field = "name"},
      {.name = "body_on_a_route_without_one",
       .method = "POST",
       .path = kJobs + "/existing/pause",
       .body = "{bad",
       .message = "this route takes no body"},
      {.name = "tenant_member_given_twice",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .who = Who::kAdmin,
       .body = R"({"max_jobs": 1, "max_jobs": 0})",
       .message = "max_jobs: given twice",
       .field = "max_jobs"},
      {.name = "key_body_not_an_object",
       .method = "POST",
       .path = "/v1/keys",
       .who = Who::kAdmin,
       .body = "[]",
       .message = "object"},
      {.name = "delete_unknown_key",
       .method = "DELETE",
       .path = "/v1/keys/0123456789abcdef",
       .who = Who::kAdmin,
       .status = 404},
      // Tenants.
      {.name = "tenant_negative_quota",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .who = Who::kAdmin,
       .body = R"({"max_jobs": -1})",
       .field = "max_jobs"},
      {.name = "tenant_quota_not_a_number",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .who = Who::kAdmin,
       .body = R"({"max_concurrent_runs": "3"})",
       .field = "max_concurrent_runs"},
      {.name = "tenant_unknown_field",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .who = Who::kAdmin,
       .body = R"({"max_runs": 1})",
       .field = "max_runs"},
      {.name = "tenant_bad_json",
       .method = "PUT",
       .path = "/v1/tenants/acme",
       .who = Who::kAdmin,
       .body = R"({"max_jobs": )",
       .message = "invalid JSON"},
      // Cron preview.
      {.name = "cron_next_without_expr",
       .method = "GET",
       .path = cron,
       .who = Who::kViewer,
       .field = "expr"},
      {.name = "cron_next_n_zero",
       .method = "GET",
       .path = cron + "?expr=" + Q("@daily") + "&n=0",
       .who = Who::kViewer,
       .field = "n"},
      {.name = "cron_next_n_too_large",
       .method = "GET",
       .path = cron + "?expr=" + Q("@daily") + "&n=1001",
       .who = Who::kViewer,
       .field = "n"},
      {.name = "cron_next_bad_from",
       .method = "GET",
       .path = cron + "?expr=" + Q("@daily") + "&from=yesterday",
       .who = Who::kViewer,
       .field = "from"},
      {.name = "cron_next_bad_expr",
       .method = "GET",
       .path = cron + "?expr=" + Q("0 25 * * *"),
       .who = Who::kViewer,
       .message = "hour",
       .field = "expr"},
      {.name = "cron_next_bad_tz",
       .method = "GET",
       .path = cron + "?expr=" + Q("@daily") + "&tz=" + Q("Mars/Olympus"),
       .who = Who::kViewer,
       .message = "Mars/Olympus",
       .field = "tz"},
      {.name = "cron_next_without_key",
       .method = "GET",
       .path = cron + "?expr=" + Q("@daily"),
       .who = Who::kNone,
       .status = 401},
      // Things that do not exist.
      {.name = "unknown_route",
       .method = "GET",
       .path = "/v1/nope",
       .who = Who::kAdmin,
       .status = 404},
      {.name = "get_unknown_job", .method = "GET", .path = kJobs + "/nosuch", .status = 404},
      {.name = "cancel_unknown_run",
       .method = "POST",
       .path = tenant_runs + "/nosuch@1/cancel",
       .status = 404},
  };
}

class MalformedRequestTest : public ::testing::TestWithParam<BadRequest> {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override {
    ASSERT_TRUE(h.ok());
    h.MustCreate("acme", Builtin("existing"));
    h.MustCreate("acme", Builtin("dep-b"));
    Json a = Builtin("dep-a");
    a["depends_on"] = {"dep-b"};
    h.MustCreate("acme", a);
    // Depends on a job that does not exist yet (allowed: it may be created later).
    Json c = Builtin("cyc-a");
    c["depends_on"] = {"cyc-b"};
    h.MustCreate("acme", c);
  }

  // Everything the API can show of the store's state.
  Json Snapshot() {
    Json s;
    auto get = [&](const std::string& path) {
      Response r = h.Get(path, Who::kAdmin);
      EXPECT_EQ(r.status, 200) << path << ": " << r;
      return r.json.is_object() && r.json.contains("items") ? r.json["items"] : Json();
    };
    for (const char* t : {"acme", "other", "default"}) {
      s["jobs"][t] = get(std::string("/v1/tenants/") + t + "/jobs?limit=1000");
      s["runs"][t] = get(std::string("/v1/tenants/") + t + "/runs?limit=1000");
    }
    s["keys"] = get("/v1/keys");
    s["tenants"] = get("/v1/tenants");
    return s;
  }

  ApiHarness h;
};

TEST_P(MalformedRequestTest, IsRefusedAndChangesNothing) {
  const BadRequest& c = GetParam();
  const Json before = Snapshot();

  httplib::Headers headers;
  for (auto [name, value] : c.headers) {
    if (const size_t at = value.find("{key}"); at != std::string::npos)
      value.replace(at, 5, h.Key(c.who));
    headers.emplace(name, value);
  }
  const Response r = h.Send(c.method, c.path, c.who, c.body, headers);

  if (c.alt_status != 0) {
    EXPECT_TRUE(r.status == c.status || r.status == c.alt_status)
        << "expected " << c.status << " or " << c.alt_status << ", got " << r;
  } else {
    EXPECT_EQ(r.status, c.status) << r;
  }
  EXPECT_TRUE(IsErrorBody(r));
  EXPECT_THAT(r.content_type, StartsWith("application/json"));
  EXPECT_EQ(r.ErrorCode(), CodeForStatus(r.status)) << r;
  if (!c.message.empty()) {
    EXPECT_THAT(r.ErrorMessage(), HasSubstr(c.message)) << r;
  }
  // The parser's words, without its exception tags.
  EXPECT_THAT(r.ErrorMessage(), Not(HasSubstr("json.exception"))) << r;
  if (c.field && r.status == c.status) {
    EXPECT_EQ(r.ErrorField(), *c.field) << r;
  }

  // The server is still healthy, and nothing changed.
  Response health = h.Get("/healthz", Who::kNone);
  EXPECT_EQ(health.status, 200) << health;
  const Json after = Snapshot();
  EXPECT_EQ(after, before) << "before: " << before.dump() << "\nafter: " << after.dump();
}

INSTANTIATE_TEST_SUITE_P(Api, MalformedRequestTest, ::testing::ValuesIn(BadRequests()),
                         [](const ::testing::TestParamInfo<BadRequest>& param) {
                           return param.param.name;
                         });

TEST(MalformedRequestTableTest, HasAtLeastFortyDistinctCases) {
  const std::vector<BadRequest> cases = BadRequests();
  EXPECT_GE(cases.size(), 40u);
  std::set<std::string> names;
  for (const BadRequest& c : cases)
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate name " << c.name;
}

// ---- Randomly mutated requests ---------------------------------------------------------------

// Valid requests of every kind the API takes input in (bodies, path ids, query parameters),
// mutated at random (a fixed seed: a failure reproduces): whatever a request becomes, the
// server answers it, never with a 5xx, and every error is the JSON error of its status. Job
// specs name builtin handlers and the operator key may not create shell jobs, so no mutation
// can start a program.
TEST(MutatedRequestTest, AreAnsweredWithoutServerErrors) {
  spdlog::set_level(spdlog::level::err);
  ApiHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate("acme", Builtin("existing"));

  struct Template {
    const char* method;
    const char* path;  // {id}: a job or run id, mutated
    Who who;
    std::string body;
    std::vector<std::string> query;  // "name=value" pairs; some are kept, each maybe mutated
  };
  const std::string spec = R"({"id": "m1", "schedule": {"cron": "*/5 * * * *", "timezone": )"
                           R"("Europe/Berlin"}, "handler": {"type": "builtin", "name": "noop"}, )"
                           R"("payload": {"a": [1, 2.5, "x"]}, "priority": 7, "retry": )"
                           R"({"max_attempts": 3, "backoff": "exponential", "initial_delay_ms": )"
                           R"(1000}, "timeout_ms": 5000, "labels": {"team": "data"}})";
  // clang-format off
  const std::vector<Template> templates = {
      {"POST", "/v1/tenants/acme/jobs", Who::kOperator, spec, {}},
      {"PUT", "/v1/tenants/acme/jobs/{id}", Who::kOperator, spec, {}},
      {"POST", "/v1/tenants/acme/jobs/{id}/trigger", Who::kOperator,
       R"({"payloads": [{"k": 1}, null, "s"]})", {}},
      {"POST", "/v1/tenants/acme/jobs/{id}/pause", Who::kOperator, "", {}},
      {"POST", "/v1/tenants/acme/jobs/{id}/resume", Who::kOperator, "", {}},
      {"DELETE", "/v1/tenants/acme/jobs/{id}", Who::kOperator, "", {"kill_running=true"}},
      {"GET", "/v1/tenants/acme/jobs", Who::kViewer, "",
       {"limit=10", "cursor=existing", "state=active", "queue=default", "label=team:data"}},
      {"GET", "/v1/tenants/acme/jobs/{id}", Who::kViewer, "", {}},
      {"GET", "/v1/tenants/acme/jobs/{id}/runs", Who::kViewer, "", {"limit=5", "state=queued"}},
      {"GET", "/v1/tenants/acme/runs", Who::kViewer, "", {"limit=5", "cursor=x", "state=failed"}},
      {"GET", "/v1/tenants/acme/runs/{id}", Who::kViewer, "", {}},
      {"POST", "/v1/tenants/acme/runs/{id}/cancel", Who::kOperator, "", {}},
      {"GET", "/v1/tenants/acme/stats", Who::kViewer, "", {}},
      {"GET", "/v1/cron/next", Who::kViewer, "",
       {"expr=0%209%20*%20*%20MON-FRI", "tz=America/New_York", "from=2026-01-01T00:00:00Z", "n=5"}},
      {"POST", "/v1/keys", Who::kAdmin, R"({"name": "k", "role": "viewer", "tenant": "acme"})", {}},
      {"DELETE", "/v1/keys/{id}", Who::kAdmin, "", {}},
      {"PUT", "/v1/tenants/mutated", Who::kAdmin,
       R"({"max_jobs": 100, "max_concurrent_runs": 4, "queue_limits": {"default": 2}})", {}},
  };
  const std::vector<std::string> tokens = {
      "{", "}", "[", "]", ",", ":", "\"", "\\", "null", "true", "-1", "0", "1e999", "-0.5",
      "18446744073709551616", "\"\"", "\\u0000", "\\ud800", "\xff", "\xc3", "%", "%00", "%zz",
      "..", "/", "?", "&", "=", "#", " ", "\t", "\n", "@", "*", "{}", "[]", std::string(300, 'a')};
  // clang-format on

  std::mt19937 rng(20261128);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  auto mutate = [&](std::string s, int max_edits) {
    const int edits = 1 + static_cast<int>(pick(static_cast<size_t>(max_edits)));
    for (int e = 0; e < edits; ++e) {
      const size_t at = s.empty() ? 0 : pick(s.size() + 1);
      switch (pick(5)) {
        case 0:  // insert a token
          s.insert(at, tokens[pick(tokens.size())]);
          break;
        case 1:  // delete a span
          if (!s.empty()) s.erase(std::min(at, s.size() - 1), 1 + pick(8));
          break;
        case 2:  // replace a byte with any byte
          if (!s.empty()) s[std::min(at, s.size() - 1)] = static_cast<char>(pick(256));
          break;
        case 3:  // cut the end
          s.resize(at);
          break;
        default:  // duplicate a span
          if (!s.empty()) {
            const size_t from = std::min(at, s.size() - 1);
            s.insert(at, s.substr(from, 1 + pick(16)));
          }
      }
    }
    return s;
  };
  // Keeps what can go in a request target: bytes below 0x21 and above 0x7e percent-encoded.
  auto target = [](const std::string& s) {
    return PercentEncode(s, [](unsigned char c) { return c > 0x20 && c < 0x7f; });
  };

  constexpr int kRequests = 3000;
  int answered = 0, refused = 0;
  for (int i = 0; i < kRequests; ++i) {
    const Template& t = templates[pick(templates.size())];
    std::string path = t.path;
    if (const size_t at = path.find("{id}"); at != std::string::npos) {
      const char* ids[] = {"existing", "m1", "nosuch", "existing@1"};
      std::string id = ids[pick(4)];
      if (pick(2) == 0) id = mutate(id, 3);
      path.replace(at, 4, target(id));
    }
    std::string query;
    for (const std::string& q : t.query) {
      if (pick(3) == 0) continue;
      query += query.empty() ? "?" : "&";
      query += pick(2) == 0 ? target(mutate(q, 3)) : q;
    }
    const std::string body = t.body.empty() || pick(5) == 0 ? t.body : mutate(t.body, 6);
    const Response r = h.Send(t.method, path + query, t.who, body);
    const std::string what = std::string(t.method) + " " + path + query + " body " + body;
    ASSERT_NE(r.status, -1) << what << ": " << r;
    EXPECT_LT(r.status, 500) << what << ": " << r;
    if (r.status >= 400) {
      ++refused;
      EXPECT_TRUE(IsErrorBody(r)) << what << ": " << r;
      EXPECT_EQ(r.ErrorCode(), CodeForStatus(r.status)) << what << ": " << r;
    }
    ++answered;
  }
  EXPECT_EQ(answered, kRequests);
  // Most mutations break their request; the rest are valid requests (not all refused).
  EXPECT_GT(refused, kRequests / 2);
  EXPECT_LT(refused, kRequests);
  EXPECT_EQ(h.Get("/healthz", Who::kNone).status, 200);
  EXPECT_EQ(h.Get("/v1/tenants/acme/jobs", Who::kViewer).status, 200);
}

}  // namespace
}  // namespace jobsched::testing
