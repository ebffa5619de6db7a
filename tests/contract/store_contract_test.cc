#include "contract/store_contract_test.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <jobsched/store.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace jobsched::contract {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

namespace {

const TimePoint kT0 = FromUnixMillis(1'700'000'000'000);

TimePoint At(int64_t seconds) { return kT0 + std::chrono::seconds(seconds); }

std::string Opt(const std::optional<TimePoint>& t) {
  return t ? std::to_string(ToUnixMillis(*t)) : "-";
}
std::string Opt(const std::optional<int>& v) { return v ? std::to_string(*v) : "-"; }

// Everything a state change can touch, as one comparable string.
std::string Describe(const RunRecord& r) {
  std::ostringstream out;
  out << r.tenant << "/" << r.id << " job=" << r.job_id << " state=" << RunStateName(r.state)
      << " attempt=" << r.attempt << " fence=" << r.fence << " node=" << r.node
      << " available=" << ToUnixMillis(r.available_at) << " lease=" << Opt(r.lease_deadline)
      << " started=" << Opt(r.started_at) << " finished=" << Opt(r.finished_at)
      << " exit=" << Opt(r.exit_code) << " http=" << Opt(r.http_status) << " output=" << r.output
      << " error=" << r.error << " cancel=" << r.cancel_requested
      << " leases_lost=" << r.leases_lost << " attempts=[";
  for (const AttemptRecord& a : r.attempts) {
    out << a.number << ":" << a.node << ":" << a.fence << ":" << ToUnixMillis(a.started_at) << ":"
        << Opt(a.finished_at) << ":" << a.outcome << ":" << a.error << ";";
  }
  out << "]";
  return out.str();
}

std::vector<std::string> Ids(const std::vector<RunRecord>& runs) {
  std::vector<std::string> ids;
  for (const RunRecord& r : runs) ids.push_back(r.id);
  return ids;
}
std::vector<std::string> Ids(const std::vector<JobRecord>& jobs) {
  std::vector<std::string> ids;
  for (const JobRecord& j : jobs) ids.push_back(j.spec.id);
  return ids;
}
std::vector<std::string> Types(const std::vector<Event>& events) {
  std::vector<std::string> types;
  for (const Event& e : events) types.push_back(e.type);
  return types;
}

Completion Done(const RunRecord& run, TimePoint now, RunState state = RunState::kSucceeded) {
  Completion c;
  c.tenant = run.tenant;
  c.run_id = run.id;
  c.fence = run.fence;
  c.now = now;
  c.state = state;
  return c;
}

}  // namespace

// ---- Fixture --------------------------------------------------------------------------------

void StoreContractTest::SetUp() {
  store_ = GetParam()();
  ASSERT_NE(store_, nullptr) << "the store factory failed";
}

JobRecord StoreContractTest::MakeJob(const std::string& tenant, const std::string& id,
                                     std::optional<TimePoint> next_fire) {
  JobRecord job;
  job.spec.id = id;
  job.spec.tenant = tenant;
  job.spec.schedule.kind = Schedule::Kind::kEvery;
  job.spec.schedule.every = Duration(60000);
  job.spec.handler.type = HandlerSpec::Type::kBuiltin;
  job.spec.handler.name = "noop";
  job.state = JobState::kActive;
  job.next_fire = next_fire;
  job.dependency_since = kT0;
  job.created_at = kT0;
  job.updated_at = kT0;
  return job;
}

RunRecord StoreContractTest::MakeRun(const std::string& tenant, const std::string& job_id,
                                     const std::string& id, TimePoint at, int priority) {
  RunRecord run;
  run.id = id;
  run.job_id = job_id;
  run.tenant = tenant;
  run.priority = priority;
  run.scheduled_at = at;
  run.available_at = at;
  run.created_at = at;
  run.reason = RunReason::kManual;
  run.state = RunState::kQueued;
  return run;
}

JobRecord StoreContractTest::Create(const JobRecord& job) {
  auto created = store_->CreateJob(job);
  EXPECT_TRUE(created.ok()) << created.status().ToString();
  return created.ok() ? *created : job;
}

void StoreContractTest::Enqueue(const std::vector<RunRecord>& runs) {
  // Grouped by (tenant, job), as EnqueueRuns takes them.
  std::vector<RunRecord> group;
  auto flush = [&] {
    if (group.empty()) return;
    Status s = store_->EnqueueRuns(group[0].tenant, group[0].job_id, group);
    EXPECT_TRUE(s.ok()) << s.ToString();
    group.clear();
  };
  for (const RunRecord& r : runs) {
    if (!group.empty() && (group[0].tenant != r.tenant || group[0].job_id != r.job_id)) flush();
    group.push_back(r);
  }
  flush();
}

std::vector<RunRecord> StoreContractTest::Claim(const std::string& node, TimePoint now,
                                                int max_runs, Duration lease) {
  auto claimed = store_->ClaimRuns(
      ClaimRequest{.node = node, .now = now, .lease = lease, .max_runs = max_runs});
  EXPECT_TRUE(claimed.ok()) << claimed.status().ToString();
  return claimed.ok() ? *claimed : std::vector<RunRecord>{};
}

RunRecord StoreContractTest::MustGetRun(const std::string& tenant, const std::string& run_id) {
  auto run = store_->GetRun(tenant, run_id);
  EXPECT_TRUE(run.ok()) << run_id << ": " << run.status().ToString();
  return run.ok() ? *run : RunRecord{};
}

std::map<RunState, int64_t> StoreContractTest::RunCountsByState(const std::string& tenant,
                                                                 const std::string& job_id) {
  auto counts = store_->CountRuns(tenant, job_id);
  EXPECT_TRUE(counts.ok()) << counts.status().ToString();
  std::map<RunState, int64_t> by_state;
  if (counts.ok()) {
    for (const RunCount& c : *counts) by_state[c.state] += c.count;
  }
  return by_state;
}

std::vector<Event> StoreContractTest::AllEvents(const std::string& tenant) {
  std::vector<Event> all;
  int64_t after = 0;
  for (;;) {
    auto page = store_->ReadEvents(tenant, after, 1000);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok() || page->empty()) return all;
    after = page->back().seq;
    all.insert(all.end(), page->begin(), page->end());
  }
}

// ---- Jobs -----------------------------------------------------------------------------------

TEST_P(StoreContractTest, CreateJobReturnsVersionOneAndGetReadsItBack) {
  JobRecord job = MakeJob("default", "nightly-report", At(60));
  job.spec.queue = "critical";
  job.spec.priority = 7;
  job.spec.labels = {{"team", "data"}};
  job.spec.payload = R"({"a":1})";
  job.version = 42;  // ignored: a new job starts at 1

  auto created = store_->CreateJob(job);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->version, 1);

  auto got = store_->GetJob("default", "nightly-report");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->version, 1);
  EXPECT_EQ(got->spec.id, "nightly-report");
  EXPECT_EQ(got->spec.tenant, "default");
  EXPECT_EQ(got->spec.queue, "critical");
  EXPECT_EQ(got->spec.priority, 7);
  EXPECT_EQ(got->spec.labels, (std::map<std::string, std::string>{{"team", "data"}}));
  EXPECT_EQ(got->spec.payload, R"({"a":1})");
  EXPECT_EQ(got->spec.handler.name, "noop");
  EXPECT_EQ(got->spec.schedule.kind, Schedule::Kind::kEvery);
  EXPECT_EQ(got->spec.schedule.every, Duration(60000));
  EXPECT_EQ(got->state, JobState::kActive);
  EXPECT_EQ(got->next_fire, At(60));
  EXPECT_EQ(got->dependency_since, kT0);
  EXPECT_EQ(got->created_at, kT0);
}

TEST_P(StoreContractTest, CreateJobTwiceIsAlreadyExists) {
  Create(MakeJob("default", "a"));
  JobRecord again = MakeJob("default", "a", At(5));
  auto second = store_->CreateJob(again);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  auto got = store_->GetJob("default", "a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->next_fire, std::nullopt) << "the duplicate must not overwrite";
}

TEST_P(StoreContractTest, GetMissingJobIsNotFound) {
  auto got = store_->GetJob("default", "nope");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, PutJobWithoutExpectedVersionCreatesThenReplaces) {
  JobRecord job = MakeJob("default", "p", At(10));
  auto first = store_->PutJob(job, std::nullopt);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->version, 1);

  job.spec.priority = 9;
  job.next_fire = At(20);
  job.state = JobState::kPaused;
  job.created_at = At(999);  // the stored creation time stays
  job.updated_at = At(1);
  auto second = store_->PutJob(job, std::nullopt);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->version, 2);

  auto got = store_->GetJob("default", "p");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->version, 2);
  EXPECT_EQ(got->spec.priority, 9);
  EXPECT_EQ(got->next_fire, At(20));
  EXPECT_EQ(got->state, JobState::kPaused);
  EXPECT_EQ(got->created_at, kT0);
  EXPECT_EQ(got->updated_at, At(1));
}

TEST_P(StoreContractTest, PutJobWithExpectedVersionChecksIt) {
  Create(MakeJob("default", "p"));
  JobRecord job = MakeJob("default", "p", At(30));

  auto stale = store_->PutJob(job, 7);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  auto unchanged = store_->GetJob("default", "p");
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->version, 1);
  EXPECT_EQ(unchanged->next_fire, std::nullopt);

  auto ok = store_->PutJob(job, 1);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->version, 2);
  EXPECT_EQ(ok->next_fire, At(30));

  auto again_with_old = store_->PutJob(job, 1);
  ASSERT_FALSE(again_with_old.ok());
  EXPECT_EQ(again_with_old.status().code(), StatusCode::kFailedPrecondition);
}

TEST_P(StoreContractTest, PutJobWithExpectedVersionOnMissingJobIsNotFound) {
  auto put = store_->PutJob(MakeJob("default", "ghost"), 1);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob("default", "ghost").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, ListJobsPaginatesInIdOrder) {
  std::vector<std::string> want;
  for (int i = 24; i >= 0; --i) {  // created out of order
    char id[16];
    std::snprintf(id, sizeof id, "job-%02d", i);
    Create(MakeJob("default", id));
  }
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "job-%02d", i);
    want.push_back(id);
  }
  Create(MakeJob("other", "job-00"));  // another tenant's job is not listed

  std::vector<std::string> seen;
  std::vector<size_t> page_sizes;
  JobFilter filter{.limit = 10};
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store_->ListJobs("default", filter);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    page_sizes.push_back(page->items.size());
    for (const std::string& id : Ids(page->items)) seen.push_back(id);
    if (!page->next_cursor) break;
    filter.cursor = *page->next_cursor;
  }
  EXPECT_EQ(seen, want);
  EXPECT_THAT(page_sizes, ElementsAre(10, 10, 5));
}

TEST_P(StoreContractTest, ListJobsFiltersByQueueStateAndLabel) {
  for (int i = 0; i < 12; ++i) {
    JobRecord job = MakeJob("default", "j" + std::to_string(100 + i));
    job.spec.queue = i % 2 == 0 ? "even" : "odd";
    job.state = i % 3 == 0 ? JobState::kPaused : JobState::kActive;
    job.spec.labels = {{"team", i < 6 ? "data" : "web"}};
    Create(job);
  }
  auto all_pages = [&](JobFilter filter) {
    std::vector<std::string> ids;
    for (int guard = 0; guard < 20; ++guard) {
      auto page = store_->ListJobs("default", filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      for (const std::string& id : Ids(page->items)) ids.push_back(id);
      if (!page->next_cursor) break;
      filter.cursor = *page->next_cursor;
    }
    return ids;
  };
  EXPECT_THAT(all_pages({.queue = "even", .limit = 2}),
              ElementsAre("j100", "j102", "j104", "j106", "j108", "j110"));
  EXPECT_THAT(all_pages({.state = JobState::kPaused, .limit = 3}),
              ElementsAre("j100", "j103", "j106", "j109"));
  EXPECT_THAT(all_pages({.label_key = "team", .label_value = "web", .limit = 4}),
              ElementsAre("j106", "j107", "j108", "j109", "j110", "j111"));
  EXPECT_THAT(all_pages({.queue = "odd",
                         .state = JobState::kActive,
                         .label_key = "team",
                         .label_value = "data",
                         .limit = 1}),
              ElementsAre("j101", "j105"));
  EXPECT_THAT(all_pages({.label_key = "team", .label_value = "nobody"}), IsEmpty());
}

TEST_P(StoreContractTest, ListJobsClampsTheLimit) {
  for (int i = 0; i < 3; ++i) Create(MakeJob("default", "j" + std::to_string(i)));
  auto tiny = store_->ListJobs("default", {.limit = 0});
  ASSERT_TRUE(tiny.ok());
  EXPECT_THAT(tiny->items, SizeIs(1));
  EXPECT_TRUE(tiny->next_cursor.has_value());
  auto huge = store_->ListJobs("default", {.limit = 1'000'000});
  ASSERT_TRUE(huge.ok());
  EXPECT_THAT(huge->items, SizeIs(3));
  EXPECT_FALSE(huge->next_cursor.has_value());
}

TEST_P(StoreContractTest, DeleteJobCancelsQueuedAndLeavesRunningUnlessKilled) {
  Create(MakeJob("default", "d"));
  Enqueue({MakeRun("default", "d", "d@1", At(1)), MakeRun("default", "d", "d@2", At(2)),
           MakeRun("default", "d", "d@3", At(3))});
  // d@1 running; d@2 retry-waiting; d@3 queued.
  std::vector<RunRecord> claimed = Claim("n1", At(10), 2);
  ASSERT_THAT(Ids(claimed), ElementsAre("d@1", "d@2"));
  Completion retry = Done(claimed[1], At(11), RunState::kRetryWait);
  retry.retry_at = At(100);
  ASSERT_TRUE(store_->Complete(retry).ok());

  ASSERT_TRUE(store_->DeleteJob("default", "d", At(20), /*kill_running=*/false).ok());
  EXPECT_EQ(store_->GetJob("default", "d").status().code(), StatusCode::kNotFound);
  RunRecord running = MustGetRun("default", "d@1");
  EXPECT_EQ(running.state, RunState::kRunning);
  EXPECT_FALSE(running.cancel_requested);
  for (const char* id : {"d@2", "d@3"}) {
    RunRecord run = MustGetRun("default", id);
    EXPECT_EQ(run.state, RunState::kCancelled) << id;
    EXPECT_EQ(run.finished_at, At(20)) << id;
  }
  // History stays, listed by job as before; nothing is claimable any more.
  auto history = store_->ListRuns("default", {.job_id = "d"});
  ASSERT_TRUE(history.ok()) << history.status().ToString();
  EXPECT_EQ(history->items.size(), 3u);
  EXPECT_THAT(Claim("n1", At(1000), 10), IsEmpty());
  EXPECT_THAT(AllEvents("default"),
              ::testing::Contains(::testing::Field(&Event::type, "job.deleted")));
}

TEST_P(StoreContractTest, DeleteJobWithKillRunningRequestsCancellation) {
  Create(MakeJob("default", "d"));
  Enqueue({MakeRun("default", "d", "d@1", At(1))});
  RunRecord run = Claim("n1", At(10)).at(0);
  ASSERT_TRUE(store_->DeleteJob("default", "d", At(20), /*kill_running=*/true).ok());
  RunRecord after = MustGetRun("default", "d@1");
  EXPECT_EQ(after.state, RunState::kRunning);
  EXPECT_TRUE(after.cancel_requested);
  // The holder learns of it at its next renewal and completes the run as cancelled.
  LeaseRef ref{.tenant = "default", .run_id = "d@1", .fence = run.fence};
  auto renewed = store_->RenewLeases({&ref, 1}, At(21), Duration(15000));
  ASSERT_TRUE(renewed.ok());
  EXPECT_THAT(*renewed, ElementsAre(LeaseStatus::kCancelRequested));
  ASSERT_TRUE(store_->Complete(Done(run, At(22), RunState::kCancelled)).ok());
  EXPECT_EQ(MustGetRun("default", "d@1").state, RunState::kCancelled);
}

TEST_P(StoreContractTest, DeleteMissingJobIsNotFound) {
  EXPECT_EQ(store_->DeleteJob("default", "nope", At(0), false).code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, DueJobsAreActiveDueAndOrderedByNextFire) {
  Create(MakeJob("default", "third", At(3)));
  Create(MakeJob("default", "first", At(1)));
  Create(MakeJob("other", "second", At(2)));
  Create(MakeJob("default", "future", At(100)));
  Create(MakeJob("default", "unscheduled", std::nullopt));
  JobRecord paused = MakeJob("default", "paused", At(0));
  paused.state = JobState::kPaused;
  Create(paused);
  JobRecord spec_paused = MakeJob("default", "spec-paused", At(0));
  spec_paused.spec.paused = true;
  Create(spec_paused);
  JobRecord completed = MakeJob("default", "completed", At(0));
  completed.state = JobState::kCompleted;
  Create(completed);

  auto due = store_->DueJobs(At(10), 100, TenantScope{});
  ASSERT_TRUE(due.ok()) << due.status().ToString();
  EXPECT_THAT(Ids(*due), ElementsAre("first", "second", "third"));
  EXPECT_EQ((*due)[1].spec.tenant, "other");

  auto two = store_->DueJobs(At(10), 2, TenantScope{});
  ASSERT_TRUE(two.ok());
  EXPECT_THAT(Ids(*two), ElementsAre("first", "second"));

  auto exactly_now = store_->DueJobs(At(2), 100, TenantScope{});
  ASSERT_TRUE(exactly_now.ok());
  EXPECT_THAT(Ids(*exactly_now), ElementsAre("first", "second"));

  auto next = store_->NextFireTime(TenantScope{});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(1));
}

TEST_P(StoreContractTest, DueJobsAndNextFireTimeLeaveOutExcludedTenants) {
  Create(MakeJob("default", "d1", At(1)));
  Create(MakeJob("other", "o1", At(0)));
  Create(MakeJob("third", "t1", At(2)));
  TenantScope scope{.excluded = {"other", "third"}};

  auto due = store_->DueJobs(At(10), 100, scope);
  ASSERT_TRUE(due.ok()) << due.status().ToString();
  EXPECT_THAT(Ids(*due), ElementsAre("d1"));
  // Excluded tenants' jobs do not use up the limit either.
  auto one = store_->DueJobs(At(10), 1, TenantScope{.excluded = {"other"}});
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(Ids(*one), ElementsAre("d1"));

  auto next = store_->NextFireTime(scope);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(1));
  next = store_->NextFireTime(TenantScope{.excluded = {"default", "other", "third"}});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, std::nullopt);
}

TEST_P(StoreContractTest, NextFireTimeOfEmptyStoreIsNone) {
  auto next = store_->NextFireTime(TenantScope{});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, std::nullopt);
  JobRecord paused = MakeJob("default", "paused", At(0));
  paused.state = JobState::kPaused;
  Create(paused);
  next = store_->NextFireTime(TenantScope{});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, std::nullopt);
}

// ---- Fire -----------------------------------------------------------------------------------

TEST_P(StoreContractTest, FireCreatesRunsAndMovesNextFireWithoutBumpingVersion) {
  Create(MakeJob("default", "cron", At(60)));
  FireRequest fire{.tenant = "default",
                   .job_id = "cron",
                   .expected_version = 1,
                   .expected_next_fire = At(60),
                   .next_fire = At(120),
                   .runs = {MakeRun("default", "cron", "cron@60000", At(60))}};
  auto result = store_->Fire(fire);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->created, 1);
  EXPECT_EQ(result->existed, 0);

  auto job = store_->GetJob("default", "cron");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->version, 1);
  EXPECT_EQ(job->next_fire, At(120));
  RunRecord run = MustGetRun("default", "cron@60000");
  EXPECT_EQ(run.state, RunState::kQueued);
  EXPECT_EQ(run.job_id, "cron");
  EXPECT_THAT(Types(AllEvents("default")), ElementsAre("job.created", "run.queued"));
}

TEST_P(StoreContractTest, FireWithTheSameExpectationTwiceSucceedsOnce) {
  Create(MakeJob("default", "cron", At(60)));
  FireRequest first{.tenant = "default",
                    .job_id = "cron",
                    .expected_version = 1,
                    .expected_next_fire = At(60),
                    .next_fire = At(120),
                    .runs = {MakeRun("default", "cron", "cron@60000", At(60))}};
  FireRequest second = first;  // another node read the same job
  second.next_fire = At(999);
  second.runs = {MakeRun("default", "cron", "cron@other", At(60))};

  ASSERT_TRUE(store_->Fire(first).ok());
  auto lost = store_->Fire(second);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), StatusCode::kFailedPrecondition);

  auto job = store_->GetJob("default", "cron");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->next_fire, At(120)) << "the losing Fire must write nothing";
  EXPECT_EQ(store_->GetRun("default", "cron@other").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, FireAfterTheJobChangedIsRejected) {
  JobRecord job = Create(MakeJob("default", "cron", At(60)));
  job.spec.priority = 1;
  ASSERT_TRUE(store_->PutJob(job, 1).ok());  // version 2, same next_fire
  auto fire = store_->Fire({.tenant = "default",
                            .job_id = "cron",
                            .expected_version = 1,
                            .expected_next_fire = At(60),
                            .next_fire = At(120),
                            .runs = {MakeRun("default", "cron", "cron@60000", At(60))}});
  ASSERT_FALSE(fire.ok());
  EXPECT_EQ(fire.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetRun("default", "cron@60000").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, FireOnMissingJobIsNotFound) {
  auto fire = store_->Fire({.tenant = "default", .job_id = "ghost", .expected_version = 1});
  ASSERT_FALSE(fire.ok());
  EXPECT_EQ(fire.status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, FireWithAnExistingRunIdCountsItAndChangesNothing) {
  Create(MakeJob("default", "cron", At(60)));
  RunRecord run = MakeRun("default", "cron", "cron@60000", At(60));
  run.payload = R"({"first":true})";
  FireRequest fire{.tenant = "default",
                   .job_id = "cron",
                   .expected_version = 1,
                   .expected_next_fire = At(60),
                   .next_fire = At(60),
                   .runs = {run}};
  ASSERT_TRUE(store_->Fire(fire).ok());
  RunRecord claimed = Claim("n1", At(61)).at(0);
  const std::string before = Describe(MustGetRun("default", "cron@60000"));

  run.payload = R"({"first":false})";
  run.priority = 9;
  fire.runs = {run, MakeRun("default", "cron", "cron@120000", At(120))};
  auto again = store_->Fire(fire);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->created, 1);
  EXPECT_EQ(again->existed, 1);
  RunRecord after = MustGetRun("default", "cron@60000");
  EXPECT_EQ(Describe(after), before);
  EXPECT_EQ(after.payload, R"({"first":true})");
  EXPECT_EQ(after.priority, 5);
  EXPECT_EQ(claimed.state, RunState::kRunning);
}

// An occurrence cancelled before any attempt began (its job paused, or deleted and created
// again, before its time) and fired again gets its run: the new one takes the id and the place
// of the cancelled one. A run whose attempt began is left alone, by a queued run or a skip.
TEST_P(StoreContractTest, FireReplacesARunCancelledBeforeItsFirstAttempt) {
  Create(MakeJob("default", "cron", At(60)));
  FireRequest fire{.tenant = "default",
                   .job_id = "cron",
                   .expected_version = 1,
                   .expected_next_fire = At(60),
                   .next_fire = At(120),
                   .runs = {MakeRun("default", "cron", "cron@60000", At(60)),
                            MakeRun("default", "cron", "cron@30000", At(30))}};
  ASSERT_TRUE(store_->Fire(fire).ok());
  RunRecord began = Claim("n1", At(31)).at(0);
  ASSERT_EQ(began.id, "cron@30000");
  ASSERT_TRUE(store_
                  ->Complete({.tenant = "default",
                              .run_id = began.id,
                              .fence = began.fence,
                              .now = At(32),
                              .state = RunState::kCancelled,
                              .attempt_outcome = "cancelled"})
                  .ok());
  ASSERT_TRUE(store_->CancelRun("default", "cron@60000", At(40)).ok());
  ASSERT_EQ(MustGetRun("default", "cron@60000").state, RunState::kCancelled);

  RunRecord again = MakeRun("default", "cron", "cron@60000", At(60));
  again.payload = R"({"again":true})";
  again.created_at = At(50);
  RunRecord skipped = MakeRun("default", "cron", "cron@30000", At(30));
  skipped.state = RunState::kSkipped;
  RunRecord queued_again = MakeRun("default", "cron", "cron@30000", At(30));
  fire.expected_next_fire = At(120);
  fire.next_fire = At(180);
  fire.runs = {again, skipped};
  auto result = store_->Fire(fire);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->created, 1);
  EXPECT_EQ(result->existed, 1) << "a skip does not replace a run whose attempt began";
  fire.expected_next_fire = At(180);
  fire.runs = {queued_again};
  result = store_->Fire(fire);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->existed, 1) << "a run whose attempt began is not replaced";
  EXPECT_EQ(MustGetRun("default", "cron@30000").state, RunState::kCancelled);

  RunRecord replaced = MustGetRun("default", "cron@60000");
  EXPECT_EQ(replaced.state, RunState::kQueued);
  EXPECT_EQ(replaced.payload, R"({"again":true})");
  EXPECT_EQ(replaced.created_at, At(50));
  EXPECT_EQ(replaced.finished_at, std::nullopt);
  EXPECT_EQ(replaced.error, "");
  auto page = store_->ListRuns("default", {.job_id = "cron"});
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  std::vector<std::string> ids;
  for (const RunRecord& r : page->items) ids.push_back(r.id);
  EXPECT_THAT(ids, UnorderedElementsAre("cron@60000", "cron@30000")) << "listed once";
  EXPECT_EQ(RunCountsByState("default", "cron"),
            (std::map<RunState, int64_t>{{RunState::kQueued, 1}, {RunState::kCancelled, 1}}));
  RunRecord claimed = Claim("n1", At(60)).at(0);
  EXPECT_EQ(claimed.id, "cron@60000");
  EXPECT_EQ(claimed.attempt, 1);
}

// An occurrence whose run a pause cancelled before it began, fired again as skipped (missed while
// paused, under misfire "skip"): the skip takes the cancelled run's place, as if the occurrence
// had not been fired ahead. A run held with its cancellation requested keeps it: the occurrence
// is skipped, not run.
TEST_P(StoreContractTest, AnOccurrenceFiredAgainAsSkippedReplacesItsRunCancelledBeforeItBegan) {
  Create(MakeJob("default", "cron", At(60)));
  FireRequest fire{.tenant = "default",
                   .job_id = "cron",
                   .expected_version = 1,
                   .expected_next_fire = At(60),
                   .next_fire = At(120),
                   .runs = {MakeRun("default", "cron", "cron@60000", At(60)),
                            MakeRun("default", "cron", "cron@120000", At(120))},
                   .now = At(59)};
  ASSERT_TRUE(store_->Fire(fire).ok());
  auto held = store_->ClaimRuns(
      {.node = "n1", .now = At(119), .max_runs = 1, .horizon = At(120), .after = At(119)});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  ASSERT_EQ(held->size(), 1u);
  ASSERT_EQ(held->at(0).id, "cron@120000");
  ASSERT_TRUE(store_->CancelRun("default", "cron@60000", At(59)).ok());
  ASSERT_TRUE(store_->CancelRun("default", "cron@120000", At(119)).ok());

  std::vector<RunRecord> skips;
  for (const char* id : {"cron@60000", "cron@120000"}) {
    RunRecord skip = MakeRun("default", "cron", id, At(200));
    skip.state = RunState::kSkipped;
    skip.error = "misfire: missed while paused";
    skips.push_back(skip);
  }
  fire.expected_next_fire = At(120);
  fire.next_fire = At(300);
  fire.runs = skips;
  fire.now = At(200);
  auto result = store_->Fire(fire);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->created, 1);
  EXPECT_EQ(result->existed, 1);
  RunRecord run = MustGetRun("default", "cron@60000");
  EXPECT_EQ(run.state, RunState::kSkipped);
  EXPECT_EQ(run.error, "misfire: missed while paused");
  run = MustGetRun("default", "cron@120000");
  EXPECT_EQ(run.state, RunState::kRunning);
  EXPECT_TRUE(run.cancel_requested) << "a skip does not withdraw a cancellation";
  EXPECT_EQ(RunCountsByState("default", "cron"),
            (std::map<RunState, int64_t>{{RunState::kSkipped, 1}, {RunState::kRunning, 1}}));
}

// A completion whose attempt never began (cancelled while held for its time) records no attempt:
// a first one leaves the run at attempt 0 with no start, so its occurrence fired again replaces
// it; a later one leaves the attempts before it. It can only end cancelled.
TEST_P(StoreContractTest, ACancellationBeforeTheHandlerBeganRecordsNoAttempt) {
  Create(MakeJob("default", "cron", At(60)));
  Enqueue({MakeRun("default", "cron", "cron@60000", At(60)),
           MakeRun("default", "cron", "retried", At(10))});
  RunRecord retried = Claim("n1", At(10)).at(0);
  ASSERT_EQ(retried.id, "retried");
  ASSERT_TRUE(store_
                  ->Complete({.tenant = "default",
                              .run_id = retried.id,
                              .fence = retried.fence,
                              .now = At(11),
                              .state = RunState::kRetryWait,
                              .retry_at = At(20),
                              .attempt_outcome = "failed",
                              .error = "boom"})
                  .ok());
  retried = Claim("n1", At(20)).at(0);
  RunRecord held = Claim("n1", At(60)).at(0);
  ASSERT_EQ(held.id, "cron@60000");
  ASSERT_TRUE(store_->CancelRun("default", held.id, At(58)).ok());
  ASSERT_TRUE(store_->CancelRun("default", retried.id, At(58)).ok());

  Completion never_began{.tenant = "default",
                         .run_id = held.id,
                         .fence = held.fence,
                         .now = At(60),
                         .state = RunState::kSucceeded,
                         .error = "cancelled before it started",
                         .began = false};
  Status s = store_->Complete(never_began);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(s.field(), "began");
  never_began.state = RunState::kCancelled;
  ASSERT_TRUE(store_->Complete(never_began).ok());
  RunRecord run = MustGetRun("default", held.id);
  EXPECT_EQ(run.state, RunState::kCancelled);
  EXPECT_EQ(run.attempt, 0);
  EXPECT_TRUE(run.attempts.empty());
  EXPECT_EQ(run.started_at, std::nullopt);
  EXPECT_EQ(run.finished_at, At(60));
  EXPECT_EQ(run.error, "cancelled before it started");
  EXPECT_EQ(store_->Complete(never_began).message(), "stale_token") << "once";

  never_began.run_id = retried.id;
  never_began.fence = retried.fence;
  ASSERT_TRUE(store_->Complete(never_began).ok());
  run = MustGetRun("default", retried.id);
  EXPECT_EQ(run.state, RunState::kCancelled);
  EXPECT_EQ(run.attempt, 1);
  ASSERT_EQ(run.attempts.size(), 1u);
  EXPECT_EQ(run.attempts[0].outcome, "failed");
  EXPECT_EQ(run.attempts[0].error, "boom");
  EXPECT_EQ(run.started_at, At(10));

  auto fired = store_->Fire({.tenant = "default",
                             .job_id = "cron",
                             .expected_version = 1,
                             .expected_next_fire = At(60),
                             .next_fire = At(120),
                             .runs = {MakeRun("default", "cron", "cron@60000", At(60))},
                             .now = At(61)});
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  EXPECT_EQ(fired->created, 1) << "the occurrence fired again replaces it";
  EXPECT_EQ(MustGetRun("default", held.id).state, RunState::kQueued);
  EXPECT_EQ(RunCountsByState("default", "cron"),
            (std::map<RunState, int64_t>{{RunState::kQueued, 1}, {RunState::kCancelled, 1}}));
}

// An occurrence fired again while its run is held with its cancellation requested (a pause, or a
// delete with kill_running, then a resume or a re-create, before its time): the request is
// withdrawn, and the holder's cancellation before the handler began is refused
// ("cancel_withdrawn", nothing recorded), so it runs the run after all. A never-began
// cancellation that nothing requested is refused too while the job exists, and taken once the
// job is gone (deleted without kill_running: the held run is cancelled when it would start).
TEST_P(StoreContractTest, AnOccurrenceFiredAgainWithdrawsItsHeldRunsCancellation) {
  Create(MakeJob("default", "cron", At(60)));
  FireRequest fire{.tenant = "default",
                   .job_id = "cron",
                   .expected_version = 1,
                   .expected_next_fire = At(60),
                   .next_fire = At(120),
                   .runs = {MakeRun("default", "cron", "cron@60000", At(60))},
                   .now = At(59)};
  ASSERT_TRUE(store_->Fire(fire).ok());
  auto claimed = store_->ClaimRuns(
      {.node = "n1", .now = At(59), .max_runs = 1, .horizon = At(60), .after = At(59)});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u) << "held for its time";
  const RunRecord held = claimed->at(0);
  ASSERT_TRUE(store_->CancelRun("default", held.id, At(59)).ok());
  ASSERT_TRUE(MustGetRun("default", held.id).cancel_requested);

  fire.expected_next_fire = At(120);
  fire.next_fire = At(180);
  fire.now = At(59) + Duration(500);
  auto fired = store_->Fire(fire);
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  EXPECT_EQ(fired->existed, 1);
  RunRecord run = MustGetRun("default", held.id);
  EXPECT_EQ(run.state, RunState::kRunning);
  EXPECT_FALSE(run.cancel_requested) << "withdrawn";
  EXPECT_EQ(run.fence, held.fence) << "still its holder's";
  const std::vector<Event> events = AllEvents("default");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, "run.cancel_withdrawn");
  EXPECT_EQ(events.back().run_id, held.id);
  auto renewed = store_->RenewLeases(std::vector<LeaseRef>{{"default", held.id, held.fence}},
                                     At(60), Duration(15000));
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(renewed->at(0), LeaseStatus::kRenewed) << "no longer asked to stop";

  Completion never_began{.tenant = "default",
                         .run_id = held.id,
                         .fence = held.fence,
                         .now = At(60),
                         .state = RunState::kCancelled,
                         .error = "cancelled before it started",
                         .began = false};
  Status refused = store_->Complete(never_began);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(), kCancelWithdrawn);
  run = MustGetRun("default", held.id);
  EXPECT_EQ(run.state, RunState::kRunning) << "nothing recorded";
  EXPECT_EQ(run.attempt, 1);
  ASSERT_TRUE(store_
                  ->Complete({.tenant = "default",
                              .run_id = held.id,
                              .fence = held.fence,
                              .now = At(61),
                              .state = RunState::kSucceeded,
                              .started_at = At(60)})
                  .ok());
  run = MustGetRun("default", held.id);
  EXPECT_EQ(run.state, RunState::kSucceeded);
  EXPECT_EQ(run.attempt, 1);

  // Nothing asked to cancel it: refused while the job exists, taken once it is gone.
  Enqueue({MakeRun("default", "cron", "manual", At(70))});
  RunRecord other = Claim("n1", At(70)).at(0);
  never_began.run_id = other.id;
  never_began.fence = other.fence;
  never_began.error = "job deleted before the run started";
  EXPECT_EQ(store_->Complete(never_began).message(), kCancelWithdrawn);
  ASSERT_TRUE(store_->DeleteJob("default", "cron", At(71), /*kill_running=*/false).ok());
  ASSERT_TRUE(store_->Complete(never_began).ok());
  run = MustGetRun("default", other.id);
  EXPECT_EQ(run.state, RunState::kCancelled);
  EXPECT_EQ(run.attempt, 0);
  EXPECT_EQ(run.error, "job deleted before the run started");
}

// A list that asks for the tail of each output gets it cut in the store, at a character
// start, with the whole length; a short output, and a list that does not ask, are whole. A run
// whose handler wrote more than it kept (output_bytes at its completion) keeps that length.
TEST_P(StoreContractTest, ListRunsCutsEachOutputToTheTailAskedFor) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1)), MakeRun("default", "j", "j@2", At(2)),
           MakeRun("default", "j", "j@3", At(3))});
  const std::string e_acute = "\xc3\xa9";
  // 15 bytes; the last 5 start with the second byte of an e-acute.
  const std::string long_output = "abc" + e_acute + "xyzw" + e_acute + "xyzw";
  const std::map<std::string, std::string> outputs = {
      {"j@1", long_output}, {"j@2", "short"}, {"j@3", long_output}};
  const std::map<std::string, std::optional<int64_t>> written = {
      {"j@1", std::nullopt}, {"j@2", std::nullopt}, {"j@3", 1000}};
  for (const RunRecord& r : Claim("n1", At(4), 3)) {
    ASSERT_TRUE(store_
                    ->Complete({.tenant = r.tenant,
                                .run_id = r.id,
                                .fence = r.fence,
                                .now = At(5),
                                .state = RunState::kSucceeded,
                                .attempt_outcome = "succeeded",
                                .output = outputs.at(r.id),
                                .output_bytes = written.at(r.id)})
                    .ok());
  }
  auto cut = store_->ListRuns("default", {.job_id = "j", .output_tail = 5});
  ASSERT_TRUE(cut.ok()) << cut.status().ToString();
  auto whole = store_->ListRuns("default", {.job_id = "j"});
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  ASSERT_EQ(cut->items.size(), 3u);
  ASSERT_EQ(whole->items.size(), 3u);
  const std::map<std::string, std::optional<int64_t>> listed_bytes = {
      {"j@1", 15}, {"j@2", std::nullopt}, {"j@3", 1000}};
  for (size_t i = 0; i < 3; ++i) {
    const RunRecord& c = cut->items[i];
    const RunRecord& w = whole->items[i];
    EXPECT_EQ(w.output, outputs.at(w.id));
    EXPECT_EQ(w.output_bytes, written.at(w.id)) << w.id;
    EXPECT_EQ(c.output, c.id == "j@2" ? "short" : "xyzw") << c.id;
    EXPECT_EQ(c.output_bytes, listed_bytes.at(c.id)) << c.id;
  }
  EXPECT_EQ(MustGetRun("default", "j@1").output, long_output) << "the run is whole";
  EXPECT_EQ(MustGetRun("default", "j@3").output_bytes, 1000);
}

TEST_P(StoreContractTest, FireSetsStateAndDependencyBarrier) {
  Create(MakeJob("default", "once", At(60)));
  auto fire = store_->Fire({.tenant = "default",
                            .job_id = "once",
                            .expected_version = 1,
                            .expected_next_fire = At(60),
                            .next_fire = std::nullopt,
                            .new_state = JobState::kCompleted,
                            .dependency_since = At(60),
                            .runs = {MakeRun("default", "once", "once@60000", At(60))}});
  ASSERT_TRUE(fire.ok()) << fire.status().ToString();
  auto job = store_->GetJob("default", "once");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kCompleted);
  EXPECT_EQ(job->next_fire, std::nullopt);
  EXPECT_EQ(job->dependency_since, At(60));
  EXPECT_EQ(job->version, 1);
  auto due = store_->DueJobs(At(1000), 10, TenantScope{});
  ASSERT_TRUE(due.ok());
  EXPECT_THAT(*due, IsEmpty());
}

TEST_P(StoreContractTest, FireRecordsSkippedRuns) {
  Create(MakeJob("default", "cron", At(60)));
  RunRecord skipped = MakeRun("default", "cron", "cron@60000", At(60));
  skipped.state = RunState::kSkipped;
  skipped.error = "overlap: previous run still running";
  auto fire = store_->Fire({.tenant = "default",
                            .job_id = "cron",
                            .expected_version = 1,
                            .expected_next_fire = At(60),
                            .next_fire = At(120),
                            .runs = {skipped}});
  ASSERT_TRUE(fire.ok()) << fire.status().ToString();
  RunRecord got = MustGetRun("default", "cron@60000");
  EXPECT_EQ(got.state, RunState::kSkipped);
  EXPECT_EQ(got.error, "overlap: previous run still running");
  EXPECT_THAT(Claim("n1", At(1000)), IsEmpty());
  EXPECT_THAT(Types(AllEvents()), ElementsAre("job.created", "run.skipped"));
}

TEST_P(StoreContractTest, FireCancelsListedRunsOfTheJob) {
  Create(MakeJob("default", "cron", At(60)));
  Create(MakeJob("default", "other"));
  Enqueue({MakeRun("default", "cron", "cron@old-running", At(1)),
           MakeRun("default", "cron", "cron@old-queued", At(2)),
           MakeRun("default", "other", "other@1", At(3))});
  RunRecord running = Claim("n1", At(5)).at(0);
  ASSERT_EQ(running.id, "cron@old-running");

  auto fire = store_->Fire(
      {.tenant = "default",
       .job_id = "cron",
       .expected_version = 1,
       .expected_next_fire = At(60),
       .next_fire = At(120),
       .runs = {MakeRun("default", "cron", "cron@60000", At(60))},
       .cancel_run_ids = {"cron@old-running", "cron@old-queued", "other@1", "cron@never-existed"}});
  ASSERT_TRUE(fire.ok()) << fire.status().ToString();
  EXPECT_EQ(fire->created, 1);
  RunRecord queued = MustGetRun("default", "cron@old-queued");
  EXPECT_EQ(queued.state, RunState::kCancelled);
  EXPECT_TRUE(queued.finished_at.has_value());
  RunRecord still_running = MustGetRun("default", "cron@old-running");
  EXPECT_EQ(still_running.state, RunState::kRunning);
  EXPECT_TRUE(still_running.cancel_requested);
  EXPECT_EQ(MustGetRun("default", "other@1").state, RunState::kQueued)
      << "a run of another job is not cancelled";
}

TEST_P(StoreContractTest, FireManyAppliesEachRequestOnItsOwn) {
  Create(MakeJob("default", "a", At(60)));
  Create(MakeJob("default", "b", At(60)));
  Create(MakeJob("default", "c", At(60)));
  auto fire = [](const std::string& job, int64_t version, int64_t next_s) {
    return FireRequest{
        .tenant = "default",
        .job_id = job,
        .expected_version = version,
        .expected_next_fire = At(60),
        .next_fire = At(next_s),
        .runs = {MakeRun("default", job, job + "@" + std::to_string(next_s), At(60))}};
  };
  std::vector<FireRequest> batch = {
      fire("a", 1, 120), fire("b", 7, 120),  // stale version
      fire("c", 1, 120), fire("ghost", 1, 120),
      fire("a", 1, 180),  // a second fire of the same reading: its next_fire moved already
  };
  std::vector<Result<FireResult>> results = store_->FireMany(batch);
  ASSERT_THAT(results, SizeIs(5));
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[0]->created, 1);
  EXPECT_EQ(results[1].status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(results[2].ok()) << results[2].status().ToString();
  EXPECT_EQ(results[3].status().code(), StatusCode::kNotFound);
  EXPECT_EQ(results[4].status().code(), StatusCode::kFailedPrecondition);

  for (const char* id : {"a", "c"}) {
    auto job = store_->GetJob("default", id);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->next_fire, At(120)) << id;
    EXPECT_EQ(MustGetRun("default", std::string(id) + "@120").state, RunState::kQueued);
  }
  auto b = store_->GetJob("default", "b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->next_fire, At(60)) << "a rejected request writes nothing";
  EXPECT_EQ(store_->GetRun("default", "b@120").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetRun("default", "a@180").status().code(), StatusCode::kNotFound);
  EXPECT_THAT(store_->FireMany({}), IsEmpty());
}

// ---- Enqueue, get, list ---------------------------------------------------------------------

TEST_P(StoreContractTest, EnqueueRunsChecksTheJobAndIdsAtomically) {
  EXPECT_EQ(store_
                ->EnqueueRuns("default", "ghost",
                              std::vector<RunRecord>{MakeRun("default", "ghost", "g@1", At(1))})
                .code(),
            StatusCode::kNotFound);
  Create(MakeJob("default", "m"));
  Enqueue({MakeRun("default", "m", "m@1", At(1))});

  std::vector<RunRecord> batch = {MakeRun("default", "m", "m@2", At(2)),
                                  MakeRun("default", "m", "m@1", At(3))};
  EXPECT_EQ(store_->EnqueueRuns("default", "m", batch).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->GetRun("default", "m@2").status().code(), StatusCode::kNotFound)
      << "nothing of a failed batch is inserted";
  EXPECT_EQ(MustGetRun("default", "m@1").available_at, At(1));

  RunRecord run = MakeRun("default", "m", "m@3", At(3));
  run.payload = R"({"n":3})";
  run.queue = "critical";
  run.max_attempts = 4;
  run.reason = RunReason::kManual;
  Enqueue({run});
  RunRecord got = MustGetRun("default", "m@3");
  EXPECT_EQ(got.payload, R"({"n":3})");
  EXPECT_EQ(got.queue, "critical");
  EXPECT_EQ(got.max_attempts, 4);
  EXPECT_EQ(got.reason, RunReason::kManual);
  EXPECT_EQ(got.state, RunState::kQueued);
  EXPECT_EQ(got.attempt, 0);
  EXPECT_THAT(got.attempts, IsEmpty());
}

TEST_P(StoreContractTest, GetMissingRunIsNotFound) {
  EXPECT_EQ(store_->GetRun("default", "nope").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, ListRunsNewestFirstWithPagesAndFilters) {
  Create(MakeJob("default", "a"));
  Create(MakeJob("default", "b"));
  std::vector<RunRecord> runs;
  for (int i = 0; i < 7; ++i)
    runs.push_back(MakeRun("default", "a", "a@" + std::to_string(i), At(i)));
  for (int i = 0; i < 5; ++i)
    runs.push_back(MakeRun("default", "b", "b@" + std::to_string(i), At(i)));
  Enqueue(runs);
  // Two runs with the same created_at: ordered by id, descending.
  Enqueue({MakeRun("default", "a", "a@x", At(6))});

  auto all_pages = [&](RunFilter filter) {
    std::vector<std::string> ids;
    for (int guard = 0; guard < 30; ++guard) {
      auto page = store_->ListRuns("default", filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      EXPECT_LE(static_cast<int>(page->items.size()), filter.limit);
      for (const std::string& id : Ids(page->items)) ids.push_back(id);
      if (!page->next_cursor) break;
      filter.cursor = *page->next_cursor;
    }
    return ids;
  };
  EXPECT_THAT(all_pages({.job_id = "a", .limit = 3}),
              ElementsAre("a@x", "a@6", "a@5", "a@4", "a@3", "a@2", "a@1", "a@0"));
  std::vector<std::string> tenant_wide = all_pages({.limit = 4});
  EXPECT_THAT(tenant_wide, SizeIs(13));
  EXPECT_EQ(tenant_wide.front(), "a@x");
  EXPECT_EQ(tenant_wide.back(), "a@0") << "same created_at: id descending";

  RunRecord claimed = Claim("n1", At(100)).at(0);
  EXPECT_EQ(claimed.id, "a@0");
  EXPECT_THAT(all_pages({.state = RunState::kRunning, .limit = 1}), ElementsAre("a@0"));
  EXPECT_THAT(all_pages({.job_id = "b", .state = RunState::kRunning}), IsEmpty());
  EXPECT_THAT(all_pages({.job_id = "b", .state = RunState::kQueued, .limit = 2}),
              ElementsAre("b@4", "b@3", "b@2", "b@1", "b@0"));
}

TEST_P(StoreContractTest, ListRunsRejectsACursorItDidNotMake) {
  Create(MakeJob("default", "a"));
  Enqueue({MakeRun("default", "a", "a@1", At(1))});
  auto page = store_->ListRuns("default", {.cursor = "not a cursor"});
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.status().code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreContractTest, BatchReadsAnswerLikeTheirSingleCallsInOrder) {
  Create(MakeJob("default", "a"));
  Create(MakeJob("other", "b"));
  Enqueue({MakeRun("default", "a", "a@1", At(1)), MakeRun("default", "a", "a@2", At(2))});
  const std::vector<JobRef> refs = {
      {"other", "b"}, {"default", "missing"}, {"default", "a"}, {"nobody", "a"}};

  std::vector<Result<JobRecord>> jobs = store_->GetJobs(refs);
  ASSERT_EQ(jobs.size(), refs.size());
  ASSERT_TRUE(jobs[0].ok()) << jobs[0].status().ToString();
  EXPECT_EQ(jobs[0]->spec.id, "b");
  EXPECT_EQ(jobs[0]->spec.tenant, "other");
  EXPECT_EQ(jobs[1].status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(jobs[2].ok());
  auto single = store_->GetJob("default", "a");
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(jobs[2]->version, single->version);
  EXPECT_EQ(jobs[2]->next_fire, single->next_fire);
  EXPECT_EQ(jobs[2]->spec.handler.name, single->spec.handler.name);
  EXPECT_EQ(jobs[3].status().code(), StatusCode::kNotFound);

  std::vector<Result<std::vector<RunRecord>>> actives = store_->ActiveRunsMany(refs);
  ASSERT_EQ(actives.size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    auto one = store_->ActiveRuns(refs[i].tenant, refs[i].job_id);
    ASSERT_TRUE(actives[i].ok()) << i << ": " << actives[i].status().ToString();
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(Ids(*actives[i]), Ids(*one)) << i;
  }
  EXPECT_THAT(Ids(*actives[2]), ElementsAre("a@1", "a@2"));
  EXPECT_TRUE(store_->GetJobs({}).empty());
  EXPECT_TRUE(store_->ActiveRunsMany({}).empty());
}

TEST_P(StoreContractTest, ActiveRunsAndFinishedRunsSince) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1)), MakeRun("default", "j", "j@2", At(2)),
           MakeRun("default", "j", "j@3", At(3)), MakeRun("default", "j", "j@4", At(4)),
           MakeRun("default", "j", "j@5", At(5))});
  std::vector<RunRecord> c = Claim("n1", At(10), 4);
  ASSERT_THAT(c, SizeIs(4));
  ASSERT_TRUE(store_->Complete(Done(c[0], At(20), RunState::kSucceeded)).ok());
  ASSERT_TRUE(store_->Complete(Done(c[1], At(30), RunState::kFailed)).ok());
  Completion retry = Done(c[2], At(40), RunState::kRetryWait);
  retry.retry_at = At(50);
  ASSERT_TRUE(store_->Complete(retry).ok());
  // c[3] (j@4) running, j@5 queued.

  auto active = store_->ActiveRuns("default", "j");
  ASSERT_TRUE(active.ok());
  std::vector<std::string> active_ids = Ids(*active);
  std::sort(active_ids.begin(), active_ids.end());
  EXPECT_THAT(active_ids, ElementsAre("j@3", "j@4", "j@5"));

  auto finished = store_->FinishedRunsSince("default", "j", At(20));
  ASSERT_TRUE(finished.ok());
  EXPECT_THAT(Ids(*finished), ElementsAre("j@2")) << "finished_at must be strictly after";
  finished = store_->FinishedRunsSince("default", "j", At(0));
  ASSERT_TRUE(finished.ok());
  EXPECT_THAT(Ids(*finished), ElementsAre("j@1", "j@2"));

  ASSERT_TRUE(store_->CancelRun("default", "j@5", At(60)).ok());
  finished = store_->FinishedRunsSince("default", "j", At(0));
  ASSERT_TRUE(finished.ok());
  EXPECT_THAT(Ids(*finished), ElementsAre("j@1", "j@2")) << "cancelled runs do not count";
}

TEST_P(StoreContractTest, DependentsAreJobsThatNameTheJob) {
  Create(MakeJob("default", "extract"));
  Create(MakeJob("default", "load"));
  auto dependent = [](const std::string& id, std::vector<std::string> deps) {
    JobRecord job = MakeJob("default", id);
    job.spec.schedule = Schedule{};
    job.spec.depends_on = std::move(deps);
    return job;
  };
  Create(dependent("transform", {"extract"}));
  Create(dependent("report", {"extract", "load"}));
  Create(dependent("audit", {"load"}));
  JobRecord elsewhere = dependent("transform", {"extract"});
  elsewhere.spec.tenant = "other";
  Create(elsewhere);

  auto deps = store_->Dependents("default", "extract");
  ASSERT_TRUE(deps.ok()) << deps.status().ToString();
  EXPECT_THAT(Ids(*deps), ElementsAre("report", "transform"));

  // A replaced spec replaces its dependencies; a deleted job is no dependent.
  JobRecord report = dependent("report", {"load"});
  ASSERT_TRUE(store_->PutJob(report, std::nullopt).ok());
  ASSERT_TRUE(store_->DeleteJob("default", "transform", At(1), false).ok());
  deps = store_->Dependents("default", "extract");
  ASSERT_TRUE(deps.ok());
  EXPECT_THAT(*deps, IsEmpty());
  deps = store_->Dependents("default", "load");
  ASSERT_TRUE(deps.ok());
  EXPECT_THAT(Ids(*deps), ElementsAre("audit", "report"));
}

// ---- Claim ----------------------------------------------------------------------------------

TEST_P(StoreContractTest, ClaimOrdersByPriorityThenAvailableTimeThenId) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "low-early", At(1), 1),
           MakeRun("default", "j", "high-late", At(5), 9),
           MakeRun("default", "j", "mid-b", At(3), 5), MakeRun("default", "j", "mid-a", At(3), 5),
           MakeRun("default", "j", "mid-early", At(2), 5),
           MakeRun("default", "j", "high-early", At(4), 9)});
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) {
    std::vector<RunRecord> one = Claim("n1", At(10));
    ASSERT_THAT(one, SizeIs(1));
    order.push_back(one[0].id);
  }
  EXPECT_THAT(order,
              ElementsAre("high-early", "high-late", "mid-early", "mid-a", "mid-b", "low-early"));
  EXPECT_THAT(Claim("n1", At(10)), IsEmpty());
}

TEST_P(StoreContractTest, ClaimBatchKeepsTheOrder) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "c", At(3), 5), MakeRun("default", "j", "a", At(1), 5),
           MakeRun("default", "j", "p", At(9), 8), MakeRun("default", "j", "b", At(2), 5)});
  EXPECT_THAT(Ids(Claim("n1", At(10), 3)), ElementsAre("p", "a", "b"));
  EXPECT_THAT(Ids(Claim("n1", At(10), 3)), ElementsAre("c"));
}

TEST_P(StoreContractTest, ClaimRespectsAvailableTimeAndQueues) {
  Create(MakeJob("default", "j"));
  RunRecord later = MakeRun("default", "j", "later", At(50), 9);
  RunRecord critical = MakeRun("default", "j", "critical", At(1));
  critical.queue = "critical";
  RunRecord bulk = MakeRun("default", "j", "bulk", At(2));
  bulk.queue = "bulk";
  Enqueue({later, critical, bulk});

  auto next = store_->NextAvailableTime();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(1));

  auto only_critical = store_->ClaimRuns(
      {.node = "n1", .queues = {"critical", "nothing"}, .now = At(100), .max_runs = 10});
  ASSERT_TRUE(only_critical.ok());
  EXPECT_THAT(Ids(*only_critical), ElementsAre("critical"));

  auto too_early = store_->ClaimRuns({.node = "n1", .now = At(49), .max_runs = 10});
  ASSERT_TRUE(too_early.ok());
  EXPECT_THAT(Ids(*too_early), ElementsAre("bulk")) << "'later' is not available before 50 s";

  next = store_->NextAvailableTime();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(50));
  EXPECT_THAT(Ids(Claim("n1", At(50), 10)), ElementsAre("later"));
  next = store_->NextAvailableTime();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, std::nullopt);
}

TEST_P(StoreContractTest, ClaimStartsAnAttemptWithALease) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1))});
  std::vector<RunRecord> claimed = Claim("node-a", At(10), 1, Duration(15000));
  ASSERT_THAT(claimed, SizeIs(1));
  const RunRecord& run = claimed[0];
  EXPECT_EQ(run.state, RunState::kRunning);
  EXPECT_EQ(run.attempt, 1);
  EXPECT_GT(run.fence, 0);
  EXPECT_EQ(run.node, "node-a");
  EXPECT_EQ(run.lease_deadline, At(25));
  EXPECT_EQ(run.started_at, At(10));
  ASSERT_THAT(run.attempts, SizeIs(1));
  EXPECT_EQ(run.attempts[0].number, 1);
  EXPECT_EQ(run.attempts[0].node, "node-a");
  EXPECT_EQ(run.attempts[0].fence, run.fence);
  EXPECT_EQ(run.attempts[0].started_at, At(10));
  EXPECT_EQ(run.attempts[0].outcome, "running");
  EXPECT_EQ(Describe(MustGetRun("default", "j@1")), Describe(run));

  std::vector<Event> events = AllEvents("default");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, "run.running");
  EXPECT_EQ(events.back().run_id, "j@1");
  EXPECT_EQ(events.back().job_id, "j");
}

TEST_P(StoreContractTest, ClaimAheadTakesRunsUpToTheHorizonStartingAtTheirTime) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "now", At(9)), MakeRun("default", "j", "soon", At(11)),
           MakeRun("default", "j", "later", At(13))});
  auto claimed = store_->ClaimRuns(
      {.node = "n1", .now = At(10), .lease = Duration(15000), .max_runs = 10, .horizon = At(12)});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_THAT(Ids(*claimed), ElementsAre("now", "soon")) << "'later' is past the horizon";
  // The lease counts from the claim; the attempt (and the run) start when the run is due.
  EXPECT_EQ((*claimed)[0].started_at, At(10));
  EXPECT_EQ((*claimed)[1].started_at, At(11));
  ASSERT_THAT((*claimed)[1].attempts, SizeIs(1));
  EXPECT_EQ((*claimed)[1].attempts[0].started_at, At(11));
  EXPECT_EQ((*claimed)[1].lease_deadline, At(25));
  EXPECT_EQ(Describe(MustGetRun("default", "soon")), Describe((*claimed)[1]));

  // A horizon before now claims what is available now, no less.
  auto behind = store_->ClaimRuns({.node = "n1", .now = At(13), .max_runs = 10, .horizon = At(1)});
  ASSERT_TRUE(behind.ok());
  EXPECT_THAT(Ids(*behind), ElementsAre("later"));
}

TEST_P(StoreContractTest, ClaimAfterTakesOnlyRunsNotYetAvailable) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "due", At(9)), MakeRun("default", "j", "now", At(10)),
           MakeRun("default", "j", "soon", At(11)), MakeRun("default", "j", "later", At(13))});
  auto claimed = store_->ClaimRuns(
      {.node = "n1", .now = At(10), .max_runs = 10, .horizon = At(12), .after = At(10)});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  EXPECT_THAT(Ids(*claimed), ElementsAre("soon")) << "'due' and 'now' are available at 10";
  // The runs left are claimed as usual.
  auto rest = store_->ClaimRuns({.node = "n1", .now = At(10), .max_runs = 10});
  ASSERT_TRUE(rest.ok());
  EXPECT_THAT(Ids(*rest), ElementsAre("due", "now"));
  // A bound at or past the horizon claims nothing.
  auto none = store_->ClaimRuns(
      {.node = "n1", .now = At(10), .max_runs = 10, .horizon = At(14), .after = At(14)});
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_P(StoreContractTest, CompleteRecordsWhenTheAttemptReallyBegan) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(11))});
  RunRecord run =
      store_->ClaimRuns({.node = "n1", .now = At(10), .max_runs = 1, .horizon = At(11)})->at(0);
  Completion failed = Done(run, At(13), RunState::kRetryWait);
  failed.retry_at = At(20);
  failed.started_at = TimePoint(At(11) + Duration(7));
  ASSERT_TRUE(store_->Complete(failed).ok());
  RunRecord got = MustGetRun("default", "j@1");
  EXPECT_EQ(got.started_at, At(11) + Duration(7)) << "the run began with its first attempt";
  ASSERT_THAT(got.attempts, SizeIs(1));
  EXPECT_EQ(got.attempts[0].started_at, At(11) + Duration(7));

  // A second attempt's real start changes that attempt only.
  run = Claim("n1", At(20)).at(0);
  Completion ok = Done(run, At(22));
  ok.started_at = TimePoint(At(21));
  ASSERT_TRUE(store_->Complete(ok).ok());
  got = MustGetRun("default", "j@1");
  EXPECT_EQ(got.started_at, At(11) + Duration(7));
  ASSERT_THAT(got.attempts, SizeIs(2));
  EXPECT_EQ(got.attempts[0].started_at, At(11) + Duration(7));
  EXPECT_EQ(got.attempts[1].started_at, At(21));
  EXPECT_EQ(got.attempts[1].finished_at, At(22));
  EXPECT_EQ(got.state, RunState::kSucceeded);
}

TEST_P(StoreContractTest, ExclusiveRunWaitsWhileAnotherRunOfItsJobRuns) {
  Create(MakeJob("default", "q"));
  Create(MakeJob("default", "free"));
  RunRecord first = MakeRun("default", "q", "q@1", At(1));
  first.exclusive = true;
  RunRecord second = MakeRun("default", "q", "q@2", At(2));
  second.exclusive = true;
  Enqueue({first, second, MakeRun("default", "free", "free@3", At(3))});

  std::vector<RunRecord> claimed = Claim("n1", At(10), 5);
  EXPECT_THAT(Ids(claimed), ElementsAre("q@1", "free@3"));
  EXPECT_THAT(Claim("n1", At(11), 5), IsEmpty());
  ASSERT_TRUE(store_->Complete(Done(claimed[0], At(12))).ok());
  EXPECT_THAT(Ids(Claim("n1", At(13), 5)), ElementsAre("q@2"));
}

TEST_P(StoreContractTest, ExclusiveRunWaitsForANonExclusiveRunningRun) {
  Create(MakeJob("default", "q"));
  Enqueue({MakeRun("default", "q", "q@1", At(1))});
  RunRecord running = Claim("n1", At(2)).at(0);
  RunRecord exclusive = MakeRun("default", "q", "q@2", At(3));
  exclusive.exclusive = true;
  Enqueue({exclusive});
  EXPECT_THAT(Claim("n1", At(4)), IsEmpty());
  ASSERT_TRUE(store_->Complete(Done(running, At(5))).ok());
  EXPECT_THAT(Ids(Claim("n1", At(6))), ElementsAre("q@2"));
}

TEST_P(StoreContractTest, FencingTokensIncreaseAcrossTheStore) {
  Create(MakeJob("t1", "j"));
  Create(MakeJob("t2", "j"));
  Enqueue({MakeRun("t1", "j", "r1", At(1)), MakeRun("t2", "j", "r2", At(2)),
           MakeRun("t1", "j", "r3", At(3))});
  int64_t last = 0;
  for (int i = 0; i < 3; ++i) {
    RunRecord run = Claim("n1", At(10)).at(0);
    EXPECT_GT(run.fence, last) << run.id;
    last = run.fence;
    Completion retry = Done(run, At(11), RunState::kRetryWait);
    retry.retry_at = At(1000);
    ASSERT_TRUE(store_->Complete(retry).ok());
  }
  for (int i = 0; i < 3; ++i) {
    RunRecord run = Claim("n1", At(1000)).at(0);
    EXPECT_GT(run.fence, last) << run.id << " attempt " << run.attempt;
    last = run.fence;
  }
}

// ---- Leases and completion ------------------------------------------------------------------

TEST_P(StoreContractTest, RenewLeasesReportsEachLease) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "a", At(1)), MakeRun("default", "j", "b", At(2)),
           MakeRun("default", "j", "c", At(3))});
  std::vector<RunRecord> c = Claim("n1", At(10), 3, Duration(15000));
  ASSERT_THAT(c, SizeIs(3));
  ASSERT_TRUE(store_->CancelRun("default", "c", At(11)).ok());

  std::vector<LeaseRef> refs = {{"default", "a", c[0].fence},
                                {"default", "b", c[1].fence + 1000},
                                {"default", "c", c[2].fence},
                                {"default", "missing", 1},
                                {"other", "a", c[0].fence}};
  auto statuses = store_->RenewLeases(refs, At(20), Duration(15000));
  ASSERT_TRUE(statuses.ok()) << statuses.status().ToString();
  EXPECT_THAT(*statuses,
              ElementsAre(LeaseStatus::kRenewed, LeaseStatus::kStale, LeaseStatus::kCancelRequested,
                          LeaseStatus::kStale, LeaseStatus::kStale));
  EXPECT_EQ(MustGetRun("default", "a").lease_deadline, At(35));
  EXPECT_EQ(MustGetRun("default", "b").lease_deadline, At(25)) << "a stale ref renews nothing";
  EXPECT_EQ(MustGetRun("default", "c").lease_deadline, At(35));

  ASSERT_TRUE(store_->Complete(Done(c[0], At(21))).ok());
  auto after = store_->RenewLeases({&refs[0], 1}, At(22), Duration(15000));
  ASSERT_TRUE(after.ok());
  EXPECT_THAT(*after, ElementsAre(LeaseStatus::kStale)) << "a finished run has no lease";
}

TEST_P(StoreContractTest, RenewedLeaseIsNotRecovered) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "a", At(1))});
  RunRecord run = Claim("n1", At(10), 1, Duration(15000)).at(0);
  LeaseRef ref{"default", "a", run.fence};
  ASSERT_TRUE(store_->RenewLeases({&ref, 1}, At(20), Duration(15000)).ok());
  auto recovered = store_->RecoverLostRuns(At(30), "", 3, 100);
  ASSERT_TRUE(recovered.ok());
  EXPECT_THAT(*recovered, IsEmpty()) << "the deadline moved to 35 s";
  recovered = store_->RecoverLostRuns(At(36), "", 3, 100);
  ASSERT_TRUE(recovered.ok());
  EXPECT_THAT(Ids(*recovered), ElementsAre("a"));
}

TEST_P(StoreContractTest, CompleteWithTheRightFenceRecordsTheAttempt) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1))});
  RunRecord run = Claim("n1", At(10)).at(0);
  Completion done = Done(run, At(12), RunState::kFailed);
  done.attempt_outcome = "failed";
  done.exit_code = 3;
  done.output = "boom\n";
  done.error = "exit status 3";
  ASSERT_TRUE(store_->Complete(done).ok());

  RunRecord got = MustGetRun("default", "j@1");
  EXPECT_EQ(got.state, RunState::kFailed);
  EXPECT_EQ(got.finished_at, At(12));
  EXPECT_EQ(got.exit_code, 3);
  EXPECT_EQ(got.http_status, std::nullopt);
  EXPECT_EQ(got.output, "boom\n");
  EXPECT_EQ(got.error, "exit status 3");
  EXPECT_EQ(got.lease_deadline, std::nullopt);
  ASSERT_THAT(got.attempts, SizeIs(1));
  EXPECT_EQ(got.attempts[0].outcome, "failed");
  EXPECT_EQ(got.attempts[0].finished_at, At(12));
  EXPECT_EQ(got.attempts[0].error, "exit status 3");
  EXPECT_EQ(AllEvents("default").back().type, "run.failed");

  Completion http = Done(run, At(13));
  EXPECT_EQ(store_->Complete(http).message(), "stale_token") << "a run completes once";
}

TEST_P(StoreContractTest, CompleteWithAStaleFenceRecordsNothing) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1)), MakeRun("default", "j", "j@2", At(2))});
  RunRecord run = Claim("n1", At(10)).at(0);
  const std::string before = Describe(MustGetRun("default", "j@1"));
  const size_t events_before = AllEvents().size();

  Completion stale = Done(run, At(12));
  stale.fence = run.fence + 1;
  stale.output = "should not be recorded";
  Status s = store_->Complete(stale);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "stale_token");
  EXPECT_EQ(Describe(MustGetRun("default", "j@1")), before);
  EXPECT_EQ(AllEvents().size(), events_before) << "no event for a rejected completion";

  // Not running at all: queued, or absent.
  RunRecord queued = MustGetRun("default", "j@2");
  Status on_queued = store_->Complete(Done(queued, At(12)));
  EXPECT_EQ(on_queued.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(on_queued.message(), "stale_token");
  EXPECT_EQ(MustGetRun("default", "j@2").state, RunState::kQueued);
  Completion absent = Done(run, At(12));
  absent.run_id = "nope";
  EXPECT_EQ(store_->Complete(absent).message(), "stale_token");
}

TEST_P(StoreContractTest, CompleteRejectsStatesAnAttemptCannotEndIn) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "j@1", At(1))});
  RunRecord run = Claim("n1", At(10)).at(0);
  EXPECT_EQ(store_->Complete(Done(run, At(11), RunState::kQueued)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Complete(Done(run, At(11), RunState::kRetryWait)).code(),
            StatusCode::kInvalidArgument)
      << "retry_wait needs retry_at";
  EXPECT_EQ(MustGetRun("default", "j@1").state, RunState::kRunning);
}

TEST_P(StoreContractTest, RetryWaitRunIsClaimableAtRetryAt) {
  Create(MakeJob("default", "j"));
  RunRecord fresh = MakeRun("default", "j", "j@1", At(1));
  fresh.max_attempts = 3;
  Enqueue({fresh});
  RunRecord first = Claim("n1", At(10)).at(0);
  Completion retry = Done(first, At(12), RunState::kRetryWait);
  retry.retry_at = At(20);
  retry.attempt_outcome = "timed_out";
  retry.error = "timeout after 2s";
  ASSERT_TRUE(store_->Complete(retry).ok());

  RunRecord waiting = MustGetRun("default", "j@1");
  EXPECT_EQ(waiting.state, RunState::kRetryWait);
  EXPECT_EQ(waiting.available_at, At(20));
  EXPECT_EQ(waiting.finished_at, std::nullopt);
  EXPECT_EQ(AllEvents().back().type, "run.retry_wait");

  EXPECT_THAT(Claim("n2", At(19)), IsEmpty());
  auto next = store_->NextAvailableTime();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(20));
  std::vector<RunRecord> second = Claim("n2", At(20));
  ASSERT_THAT(second, SizeIs(1));
  EXPECT_EQ(second[0].attempt, 2);
  EXPECT_GT(second[0].fence, first.fence);
  EXPECT_EQ(second[0].node, "n2");
  EXPECT_EQ(second[0].started_at, At(10)) << "started_at is the first attempt's start";
  ASSERT_THAT(second[0].attempts, SizeIs(2));
  EXPECT_EQ(second[0].attempts[0].outcome, "timed_out");
  EXPECT_EQ(second[0].attempts[0].node, "n1");
  EXPECT_EQ(second[0].attempts[1].number, 2);
  EXPECT_EQ(second[0].attempts[1].outcome, "running");

  Completion old = Done(first, At(21));
  EXPECT_EQ(store_->Complete(old).message(), "stale_token");
  ASSERT_TRUE(store_->Complete(Done(second[0], At(22))).ok());
  EXPECT_EQ(MustGetRun("default", "j@1").state, RunState::kSucceeded);
}

TEST_P(StoreContractTest, CompleteManyChecksEachFence) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "r1", At(1)), MakeRun("default", "j", "r2", At(2)),
           MakeRun("default", "j", "r3", At(3))});
  std::vector<RunRecord> c = Claim("n1", At(10), 3);
  ASSERT_THAT(Ids(c), ElementsAre("r1", "r2", "r3"));
  const std::string r2_before = Describe(MustGetRun("default", "r2"));

  Completion stale = Done(c[1], At(11), RunState::kFailed);
  stale.fence += 1000;
  Completion retry = Done(c[2], At(11), RunState::kRetryWait);
  retry.retry_at = At(30);
  std::vector<Completion> batch = {Done(c[0], At(11)), stale, retry,
                                   Done(c[0], At(12), RunState::kFailed)};
  std::vector<Status> statuses = store_->CompleteMany(batch);
  ASSERT_THAT(statuses, SizeIs(4));
  EXPECT_TRUE(statuses[0].ok()) << statuses[0].ToString();
  EXPECT_EQ(statuses[1].code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(statuses[1].message(), "stale_token");
  EXPECT_TRUE(statuses[2].ok()) << statuses[2].ToString();
  EXPECT_EQ(statuses[3].message(), "stale_token") << "r1 was completed earlier in the batch";

  EXPECT_EQ(MustGetRun("default", "r1").state, RunState::kSucceeded);
  EXPECT_EQ(Describe(MustGetRun("default", "r2")), r2_before);
  EXPECT_EQ(MustGetRun("default", "r3").state, RunState::kRetryWait);
  EXPECT_THAT(store_->CompleteMany({}), IsEmpty());
}

// ---- Cancel ---------------------------------------------------------------------------------

TEST_P(StoreContractTest, CancelRunInEachState) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "running", At(1)), MakeRun("default", "j", "waiting", At(2)),
           MakeRun("default", "j", "queued", At(3))});
  std::vector<RunRecord> c = Claim("n1", At(10), 2);
  ASSERT_THAT(Ids(c), ElementsAre("running", "waiting"));
  Completion retry = Done(c[1], At(11), RunState::kRetryWait);
  retry.retry_at = At(100);
  ASSERT_TRUE(store_->Complete(retry).ok());

  ASSERT_TRUE(store_->CancelRun("default", "queued", At(20)).ok());
  RunRecord queued = MustGetRun("default", "queued");
  EXPECT_EQ(queued.state, RunState::kCancelled);
  EXPECT_EQ(queued.finished_at, At(20));

  ASSERT_TRUE(store_->CancelRun("default", "waiting", At(21)).ok());
  EXPECT_EQ(MustGetRun("default", "waiting").state, RunState::kCancelled);
  EXPECT_THAT(Claim("n1", At(1000), 10), IsEmpty());

  ASSERT_TRUE(store_->CancelRun("default", "running", At(22)).ok());
  RunRecord running = MustGetRun("default", "running");
  EXPECT_EQ(running.state, RunState::kRunning);
  EXPECT_TRUE(running.cancel_requested);
  EXPECT_TRUE(store_->CancelRun("default", "running", At(23)).ok()) << "asking twice is fine";
  ASSERT_TRUE(store_->Complete(Done(c[0], At(24), RunState::kCancelled)).ok());
  EXPECT_EQ(MustGetRun("default", "running").state, RunState::kCancelled);

  for (const char* id : {"queued", "waiting", "running"}) {
    EXPECT_EQ(store_->CancelRun("default", id, At(30)).code(), StatusCode::kFailedPrecondition)
        << id << " already ended";
  }
  EXPECT_EQ(store_->CancelRun("default", "nope", At(30)).code(), StatusCode::kNotFound);
  std::vector<std::string> types = Types(AllEvents());
  EXPECT_EQ(std::count(types.begin(), types.end(), "run.cancelled"), 3);
}

// ---- Lost leases ----------------------------------------------------------------------------

TEST_P(StoreContractTest, RecoverLostRunsByDeadlineRequeuesWithANewAttempt) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "lost", At(1)), MakeRun("default", "j", "alive", At(2))});
  RunRecord lost = Claim("dead-node", At(10), 1, Duration(5000)).at(0);    // deadline 15 s
  RunRecord alive = Claim("live-node", At(10), 1, Duration(60000)).at(0);  // deadline 70 s

  auto early = store_->RecoverLostRuns(At(15), "", 3, 100);
  ASSERT_TRUE(early.ok());
  EXPECT_THAT(*early, IsEmpty()) << "a lease is lost only after its deadline";

  auto recovered = store_->RecoverLostRuns(At(16), "", 3, 100);
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  ASSERT_THAT(Ids(*recovered), ElementsAre("lost"));
  const RunRecord& r = (*recovered)[0];
  EXPECT_EQ(r.state, RunState::kQueued);
  EXPECT_EQ(r.available_at, At(16));
  EXPECT_EQ(r.leases_lost, 1);
  EXPECT_EQ(r.lease_deadline, std::nullopt);
  ASSERT_THAT(r.attempts, SizeIs(1));
  EXPECT_EQ(r.attempts[0].outcome, "lease_lost");
  EXPECT_EQ(r.attempts[0].finished_at, At(16));
  EXPECT_EQ(Describe(MustGetRun("default", "lost")), Describe(r));
  EXPECT_EQ(MustGetRun("default", "alive").state, RunState::kRunning);
  EXPECT_EQ(AllEvents().back().type, "run.lease_lost");

  // The old holder is fenced off; the new attempt has a new token.
  LeaseRef old_ref{"default", "lost", lost.fence};
  auto renew = store_->RenewLeases({&old_ref, 1}, At(17), Duration(5000));
  ASSERT_TRUE(renew.ok());
  EXPECT_THAT(*renew, ElementsAre(LeaseStatus::kStale));
  RunRecord again = Claim("other-node", At(17)).at(0);
  EXPECT_EQ(again.id, "lost");
  EXPECT_EQ(again.attempt, 2);
  EXPECT_GT(again.fence, alive.fence);
  ASSERT_THAT(again.attempts, SizeIs(2));
  EXPECT_EQ(again.attempts[1].fence, again.fence);
  EXPECT_EQ(again.attempts[1].node, "other-node");
  EXPECT_EQ(store_->Complete(Done(lost, At(18))).message(), "stale_token");
  ASSERT_TRUE(store_->Complete(Done(again, At(19))).ok());
}

TEST_P(StoreContractTest, RecoverLostRunsByNodeTakesAllItsRunningRuns) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "a1", At(1)), MakeRun("default", "j", "a2", At(2)),
           MakeRun("default", "j", "b1", At(3))});
  Claim("node-a", At(10), 2, Duration(60000));
  Claim("node-b", At(10), 1, Duration(60000));

  auto recovered = store_->RecoverLostRuns(At(11), "node-a", 3, 100);
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  std::vector<std::string> ids = Ids(*recovered);
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre("a1", "a2"));
  for (const RunRecord& r : *recovered) {
    EXPECT_EQ(r.state, RunState::kQueued);
    EXPECT_EQ(r.attempts.back().outcome, "lease_lost");
  }
  EXPECT_EQ(MustGetRun("default", "b1").state, RunState::kRunning);
}

TEST_P(StoreContractTest, RecoverLostRunsRespectsTheLimit) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "a", At(1)), MakeRun("default", "j", "b", At(2)),
           MakeRun("default", "j", "c", At(3))});
  Claim("n1", At(10), 3, Duration(1000));
  auto first = store_->RecoverLostRuns(At(100), "", 3, 2);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(*first, SizeIs(2));
  auto second = store_->RecoverLostRuns(At(100), "", 3, 2);
  ASSERT_TRUE(second.ok());
  EXPECT_THAT(*second, SizeIs(1));
}

TEST_P(StoreContractTest, RunFailsAfterLosingMoreThanMaxLeases) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "flaky", At(1))});
  const int max_leases_lost = 2;
  for (int loss = 1; loss <= 3; ++loss) {
    RunRecord run = Claim("n1", At(loss * 100), 1, Duration(1000)).at(0);
    auto recovered = store_->RecoverLostRuns(At(loss * 100 + 2), "", max_leases_lost, 100);
    ASSERT_TRUE(recovered.ok());
    ASSERT_THAT(*recovered, SizeIs(1));
    EXPECT_EQ((*recovered)[0].leases_lost, loss);
    if (loss <= max_leases_lost) {
      EXPECT_EQ((*recovered)[0].state, RunState::kQueued) << "loss " << loss;
    } else {
      EXPECT_EQ((*recovered)[0].state, RunState::kFailed);
      EXPECT_EQ((*recovered)[0].error, "lease lost 3 times");
      EXPECT_EQ((*recovered)[0].finished_at, At(loss * 100 + 2));
    }
    EXPECT_EQ(run.attempt, loss);
  }
  EXPECT_THAT(Claim("n1", At(10000)), IsEmpty());
  std::vector<std::string> types = Types(AllEvents());
  EXPECT_EQ(std::count(types.begin(), types.end(), "run.lease_lost"), 3);
  EXPECT_EQ(types.back(), "run.failed");
}

// ---- Retention ------------------------------------------------------------------------------

TEST_P(StoreContractTest, PruneRunsKeepsTheNewestPerJobAndAnythingYoung) {
  Create(MakeJob("default", "a"));
  Create(MakeJob("default", "b"));
  // Job a: a0..a4 created and finished at 0..4 s, a5 created at 5 s and still queued; job b: b0
  // created at 0 s, queued.
  for (int i = 0; i < 6; ++i) Enqueue({MakeRun("default", "a", "a" + std::to_string(i), At(i))});
  for (int i = 0; i < 6; ++i) {
    RunRecord run = Claim("n1", At(i)).at(0);
    if (run.id == "a5") break;
    ASSERT_TRUE(store_->Complete(Done(run, At(i))).ok()) << run.id;
  }
  // a5 is left queued (claimed, then requeued by a lost lease), b0 queued too.
  ASSERT_TRUE(store_->RecoverLostRuns(At(1000), "n1", 10, 100).ok());
  Enqueue({MakeRun("default", "b", "b0", At(0))});

  // Older than 3 s and not among the newest 2 of its job: a0, a1, a2. a3 is young, a4 and a5 are
  // the newest two, b0 is not terminal.
  auto pruned = store_->PruneRuns(At(3), 2);
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(*pruned, 3);
  for (const char* gone : {"a0", "a1", "a2"}) {
    EXPECT_EQ(store_->GetRun("default", gone).status().code(), StatusCode::kNotFound) << gone;
  }
  for (const char* kept : {"a3", "a4", "a5", "b0"}) {
    EXPECT_TRUE(store_->GetRun("default", kept).ok()) << kept;
  }
  auto again = store_->PruneRuns(At(3), 2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
  // keep 0: every old terminal run goes.
  auto all_old = store_->PruneRuns(At(1000), 0);
  ASSERT_TRUE(all_old.ok());
  EXPECT_EQ(*all_old, 2);  // a3, a4
  EXPECT_TRUE(store_->GetRun("default", "a5").ok());
}

// ---- Events ---------------------------------------------------------------------------------

TEST_P(StoreContractTest, EventsHaveIncreasingSeqAndFilterByTenant) {
  Create(MakeJob("t1", "j"));
  Create(MakeJob("t2", "j"));
  Enqueue({MakeRun("t1", "j", "r", At(1))});
  ASSERT_TRUE(
      store_
          ->AppendEvent(
              {.tenant = "t2", .time = At(2), .type = "audit", .data = R"({"who":"admin"})"})
          .ok());

  std::vector<Event> all = AllEvents();
  ASSERT_THAT(Types(all), ElementsAre("job.created", "job.created", "run.queued", "audit"));
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq, all[i - 1].seq);
  EXPECT_EQ(all[2].tenant, "t1");
  EXPECT_EQ(all[2].job_id, "j");
  EXPECT_EQ(all[2].run_id, "r");
  EXPECT_EQ(all[3].data, R"({"who":"admin"})");
  EXPECT_EQ(all[3].time, At(2));

  std::vector<Event> t2 = AllEvents("t2");
  EXPECT_THAT(Types(t2), ElementsAre("job.created", "audit"));
  for (const Event& e : t2) EXPECT_EQ(e.tenant, "t2");

  auto after = store_->ReadEvents("", all[1].seq, 1);
  ASSERT_TRUE(after.ok());
  ASSERT_THAT(*after, SizeIs(1));
  EXPECT_EQ((*after)[0].seq, all[2].seq);
}

TEST_P(StoreContractTest, EventsCarryJsonData) {
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("default", "j", "r", At(1))});
  Claim("node-7", At(2));
  Event running = AllEvents().back();
  EXPECT_EQ(running.type, "run.running");
  EXPECT_EQ(running.time, At(2));
  EXPECT_NE(running.data.find("\"node\":\"node-7\""), std::string::npos) << running.data;
  EXPECT_NE(running.data.find("\"attempt\":1"), std::string::npos) << running.data;
}

TEST_P(StoreContractTest, PruneEventsKeepsTheNewestAcrossTenants) {
  // 30 events in three tenants, each tenant's appended in runs of different lengths.
  const std::vector<std::string> order = {"a", "a", "b", "c", "c", "c", "a", "b", "b", "a"};
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(
        store_->AppendEvent({.tenant = order[i % order.size()], .time = At(i), .type = "audit"})
            .ok());
  }
  std::vector<Event> all = AllEvents();
  ASSERT_THAT(all, SizeIs(30));
  ASSERT_TRUE(store_->PruneEvents(12).ok());
  std::vector<Event> kept = AllEvents();
  ASSERT_THAT(kept, SizeIs(12));
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].seq, all[18 + i].seq) << i;
    EXPECT_EQ(kept[i].tenant, all[18 + i].tenant) << i;
  }
  ASSERT_TRUE(store_->PruneEvents(12).ok());
  EXPECT_THAT(AllEvents(), SizeIs(12)) << "nothing more to prune";
}

TEST_P(StoreContractTest, PruneEventsKeepsTheNewest) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store_->AppendEvent({.tenant = "t", .time = At(i), .type = "audit"}).ok());
  }
  std::vector<Event> all = AllEvents();
  ASSERT_THAT(all, SizeIs(10));
  ASSERT_TRUE(store_->PruneEvents(4).ok());
  std::vector<Event> kept = AllEvents();
  ASSERT_THAT(kept, SizeIs(4));
  EXPECT_EQ(kept.front().seq, all[6].seq);
  ASSERT_TRUE(store_->PruneEvents(100).ok());
  EXPECT_THAT(AllEvents(), SizeIs(4));
  // seq keeps increasing after pruning.
  ASSERT_TRUE(store_->AppendEvent({.tenant = "t", .time = At(11), .type = "audit"}).ok());
  EXPECT_GT(AllEvents().back().seq, all.back().seq);
  ASSERT_TRUE(store_->PruneEvents(0).ok());
  EXPECT_THAT(AllEvents(), IsEmpty());
}

TEST_P(StoreContractTest, EveryStateChangeAppendsItsEvent) {
  Create(MakeJob("default", "j", At(60)));
  JobRecord job = MakeJob("default", "j", At(60));
  ASSERT_TRUE(store_->PutJob(job, 1).ok());
  ASSERT_TRUE(store_
                  ->Fire({.tenant = "default",
                          .job_id = "j",
                          .expected_version = 2,
                          .expected_next_fire = At(60),
                          .next_fire = At(120),
                          .runs = {MakeRun("default", "j", "j@60000", At(60))}})
                  .ok());
  RunRecord run = Claim("n1", At(61)).at(0);
  ASSERT_TRUE(store_->Complete(Done(run, At(62))).ok());
  ASSERT_TRUE(store_->DeleteJob("default", "j", At(63), false).ok());
  EXPECT_THAT(Types(AllEvents()), ElementsAre("job.created", "job.updated", "run.queued",
                                              "run.running", "run.succeeded", "job.deleted"));
}

// ---- Nodes and keys -------------------------------------------------------------------------

TEST_P(StoreContractTest, NodesHeartbeatListAndRemove) {
  NodeInfo a{.id = "node-a",
             .host = "host-a",
             .pid = 123,
             .version = "0.1.0",
             .queues = {"default", "critical"},
             .concurrency = 8,
             .cpu_seconds = 1.5,
             .rss_bytes = 1 << 20,
             .started_at = At(0),
             .heartbeat_at = At(1)};
  NodeInfo b = a;
  b.id = "node-b";
  b.queues = {};
  ASSERT_TRUE(store_->Heartbeat(b).ok());
  ASSERT_TRUE(store_->Heartbeat(a).ok());
  a.heartbeat_at = At(3);
  a.cpu_seconds = 2.5;
  ASSERT_TRUE(store_->Heartbeat(a).ok());

  auto nodes = store_->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  ASSERT_THAT(*nodes, SizeIs(2));
  const NodeInfo& got = (*nodes)[0];
  EXPECT_EQ(got.id, "node-a");
  EXPECT_EQ(got.host, "host-a");
  EXPECT_EQ(got.pid, 123);
  EXPECT_EQ(got.version, "0.1.0");
  EXPECT_THAT(got.queues, ElementsAre("default", "critical"));
  EXPECT_EQ(got.concurrency, 8);
  EXPECT_DOUBLE_EQ(got.cpu_seconds, 2.5);
  EXPECT_EQ(got.rss_bytes, 1 << 20);
  EXPECT_EQ(got.started_at, At(0));
  EXPECT_EQ(got.heartbeat_at, At(3));
  EXPECT_EQ((*nodes)[1].id, "node-b");
  EXPECT_THAT((*nodes)[1].queues, IsEmpty());

  ASSERT_TRUE(store_->RemoveNode("node-a").ok());
  ASSERT_TRUE(store_->RemoveNode("node-a").ok()) << "removing an absent node is not an error";
  nodes = store_->ListNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_THAT(*nodes, SizeIs(1));
  EXPECT_EQ((*nodes)[0].id, "node-b");
}

TEST_P(StoreContractTest, ApiKeysPutGetListDelete) {
  ApiKeyRecord admin{.id = "k1",
                     .secret_hash = std::string(64, 'a'),
                     .tenant = "",
                     .role = "admin",
                     .name = "bootstrap",
                     .created_at = At(1)};
  ApiKeyRecord op{.id = "k0",
                  .secret_hash = std::string(64, 'b'),
                  .tenant = "team-a",
                  .role = "operator",
                  .allow_shell = true,
                  .name = "ci",
                  .created_at = At(2)};
  ASSERT_TRUE(store_->PutApiKey(admin).ok());
  ASSERT_TRUE(store_->PutApiKey(op).ok());
  ApiKeyRecord dup = op;
  dup.secret_hash = std::string(64, 'c');
  EXPECT_EQ(store_->PutApiKey(dup).code(), StatusCode::kAlreadyExists);

  auto got = store_->GetApiKeyByHash(std::string(64, 'b'));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->id, "k0");
  EXPECT_EQ(got->tenant, "team-a");
  EXPECT_EQ(got->role, "operator");
  EXPECT_TRUE(got->allow_shell);
  EXPECT_EQ(got->name, "ci");
  EXPECT_EQ(got->created_at, At(2));
  EXPECT_EQ(store_->GetApiKeyByHash(std::string(64, 'c')).status().code(), StatusCode::kNotFound);

  auto list = store_->ListApiKeys();
  ASSERT_TRUE(list.ok());
  ASSERT_THAT(*list, SizeIs(2));
  EXPECT_EQ((*list)[0].id, "k0");
  EXPECT_EQ((*list)[1].id, "k1");
  EXPECT_EQ((*list)[1].tenant, "");

  ASSERT_TRUE(store_->DeleteApiKey("k0").ok());
  EXPECT_EQ(store_->DeleteApiKey("k0").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetApiKeyByHash(std::string(64, 'b')).status().code(), StatusCode::kNotFound);
  list = store_->ListApiKeys();
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, SizeIs(1));
}

// Without an admin key nobody could create or revoke keys again: the store keeps the last one,
// also against two revocations at once (the check and the delete are one step).
TEST_P(StoreContractTest, TheLastAdminKeyIsKept) {
  auto key = [](const std::string& id, const std::string& role) {
    return ApiKeyRecord{.id = id,
                        .secret_hash = std::string(64 - id.size(), 'a') + id,
                        .tenant = role == "admin" ? "" : "team-a",
                        .role = role,
                        .created_at = At(1)};
  };
  ASSERT_TRUE(store_->PutApiKey(key("v0", "viewer")).ok());
  EXPECT_TRUE(store_->DeleteApiKey("v0").ok()) << "not an admin key: no rule";
  ASSERT_TRUE(store_->PutApiKey(key("a0", "admin")).ok());
  ASSERT_TRUE(store_->PutApiKey(key("o1", "operator")).ok());
  const Status last = store_->DeleteApiKey("a0");
  EXPECT_EQ(last.code(), StatusCode::kFailedPrecondition) << last.ToString();
  EXPECT_EQ(last.field(), "id");
  EXPECT_THAT(last.message(), HasSubstr("last admin key"));
  EXPECT_TRUE(store_->GetApiKeyByHash(key("a0", "admin").secret_hash).ok());

  // Two admins revoked at once, again and again: one of them stays each time.
  std::string kept = "a0";
  for (int round = 1; round <= 8; ++round) {
    const std::string other = "a" + std::to_string(round);
    ASSERT_TRUE(store_->PutApiKey(key(other, "admin")).ok());
    Status results[2];
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        ++ready;
        while (ready.load() < 2) std::this_thread::yield();
        results[t] = store_->DeleteApiKey(t == 0 ? kept : other);
      });
    }
    for (std::thread& th : threads) th.join();
    ASSERT_NE(results[0].ok(), results[1].ok())
        << results[0].ToString() << " / " << results[1].ToString();
    kept = results[0].ok() ? other : kept;
    auto list = store_->ListApiKeys();
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(std::count_if(list->begin(), list->end(),
                            [](const ApiKeyRecord& k) { return k.role == "admin"; }),
              1);
  }
}

// ---- Tenants --------------------------------------------------------------------------------

TEST_P(StoreContractTest, TenantsAreIsolated) {
  JobRecord a = MakeJob("team-a", "same", At(1));
  a.spec.priority = 1;
  JobRecord b = MakeJob("team-b", "same", At(2));
  b.spec.priority = 2;
  Create(a);
  Create(b);
  auto got_a = store_->GetJob("team-a", "same");
  auto got_b = store_->GetJob("team-b", "same");
  ASSERT_TRUE(got_a.ok() && got_b.ok());
  EXPECT_EQ(got_a->spec.priority, 1);
  EXPECT_EQ(got_b->spec.priority, 2);
  EXPECT_EQ(got_b->spec.tenant, "team-b");
  EXPECT_EQ(store_->GetJob("team-c", "same").status().code(), StatusCode::kNotFound);

  // The same run id in both tenants: two runs.
  Enqueue({MakeRun("team-a", "same", "same@1", At(1))});
  Enqueue({MakeRun("team-b", "same", "same@1", At(1))});
  RunRecord claimed = Claim("n1", At(5)).at(0);
  EXPECT_EQ(MustGetRun(claimed.tenant, "same@1").state, RunState::kRunning);
  const std::string other = claimed.tenant == "team-a" ? "team-b" : "team-a";
  EXPECT_EQ(MustGetRun(other, "same@1").state, RunState::kQueued);
  Completion wrong_tenant = Done(claimed, At(6));
  wrong_tenant.tenant = other;
  EXPECT_EQ(store_->Complete(wrong_tenant).message(), "stale_token");

  auto list_a = store_->ListRuns("team-a", {});
  ASSERT_TRUE(list_a.ok());
  ASSERT_THAT(list_a->items, SizeIs(1));
  EXPECT_EQ(list_a->items[0].tenant, "team-a");
  auto jobs_b = store_->ListJobs("team-b", {});
  ASSERT_TRUE(jobs_b.ok());
  ASSERT_THAT(jobs_b->items, SizeIs(1));
  EXPECT_EQ(jobs_b->items[0].spec.tenant, "team-b");

  ASSERT_TRUE(store_->DeleteJob("team-a", "same", At(7), true).ok());
  EXPECT_TRUE(store_->GetJob("team-b", "same").ok());
  EXPECT_EQ(store_->GetJob("team-a", "same").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(MustGetRun("team-b", "same@1").cancel_requested);
}

// ---- Concurrency ----------------------------------------------------------------------------

TEST_P(StoreContractTest, ConcurrentClaimsNeverShareARun) {
  constexpr int kRuns = 400;
  constexpr int kThreads = 4;
  Create(MakeJob("default", "bulk"));
  std::vector<RunRecord> runs;
  for (int i = 0; i < kRuns; ++i) {
    runs.push_back(MakeRun("default", "bulk", "bulk@" + std::to_string(i), At(i % 7), i % 3));
  }
  ASSERT_TRUE(store_->EnqueueRuns("default", "bulk", runs).ok());

  std::vector<std::vector<RunRecord>> per_thread(kThreads);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string node = "node-" + std::to_string(t);
      for (;;) {
        auto claimed = store_->ClaimRuns({.node = node, .now = At(1000), .max_runs = 1 + t % 3});
        if (!claimed.ok()) {
          errors.fetch_add(1);
          return;
        }
        if (claimed->empty()) return;
        for (RunRecord& r : *claimed) per_thread[t].push_back(std::move(r));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);

  std::set<std::string> ids;
  std::set<int64_t> fences;
  size_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (const RunRecord& r : per_thread[t]) {
      EXPECT_TRUE(ids.insert(r.id).second) << r.id << " claimed twice";
      EXPECT_TRUE(fences.insert(r.fence).second) << "fence " << r.fence << " given twice";
      EXPECT_EQ(r.node, "node-" + std::to_string(t));
      EXPECT_EQ(r.attempt, 1);
      ++total;
    }
  }
  EXPECT_EQ(total, static_cast<size_t>(kRuns));
  EXPECT_EQ(ids.size(), static_cast<size_t>(kRuns));
}

TEST_P(StoreContractTest, ConcurrentFiresOfOneOccurrenceCommitOnce) {
  constexpr int kThreads = 8;
  Create(MakeJob("default", "cron", At(60)));
  std::atomic<int> succeeded{0}, rejected{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      RunRecord run = MakeRun("default", "cron", "cron@60000", At(60));
      run.payload = std::to_string(t);
      auto result = store_->Fire({.tenant = "default",
                                  .job_id = "cron",
                                  .expected_version = 1,
                                  .expected_next_fire = At(60),
                                  .next_fire = At(120),
                                  .runs = {run}});
      if (result.ok() && result->created == 1) {
        succeeded.fetch_add(1);
      } else if (result.status().code() == StatusCode::kFailedPrecondition) {
        rejected.fetch_add(1);
      } else {
        other.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(succeeded.load(), 1);
  EXPECT_EQ(rejected.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  auto runs = store_->ListRuns("default", {.job_id = "cron"});
  ASSERT_TRUE(runs.ok());
  EXPECT_THAT(runs->items, SizeIs(1));
  auto job = store_->GetJob("default", "cron");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->next_fire, At(120));
}

// ---- Tenants and quotas -----------------------------------------------------------------

TEST_P(StoreContractTest, DefaultTenantAlwaysExistsAndTenantsCanBeAddedAndReplaced) {
  auto def = store_->GetTenant("default");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->max_jobs, 0);
  EXPECT_EQ(store_->GetTenant("acme").status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(
      store_->PutTenant({.id = "acme", .max_jobs = 2, .created_at = At(0), .updated_at = At(0)})
          .ok());
  ASSERT_TRUE(store_
                  ->PutTenant({.id = "acme",
                               .max_jobs = 3,
                               .max_concurrent_runs = 1,
                               .created_at = At(9),
                               .updated_at = At(9)})
                  .ok());
  auto acme = store_->GetTenant("acme");
  ASSERT_TRUE(acme.ok());
  EXPECT_EQ(acme->max_jobs, 3);
  EXPECT_EQ(acme->max_concurrent_runs, 1);
  EXPECT_EQ(acme->created_at, At(0));  // kept on replace
  auto all = store_->ListTenants();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "acme");
  EXPECT_EQ((*all)[1].id, "default");
  EXPECT_EQ(store_->PutTenant({.id = "Bad Id"}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutTenant({.id = "neg", .max_jobs = -1}).code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreContractTest, MaxJobsQuotaRejectsTheExtraJobAndStoresNothing) {
  ASSERT_TRUE(store_->PutTenant({.id = "small", .max_jobs = 2}).ok());
  Create(MakeJob("small", "a"));
  Create(MakeJob("small", "b"));
  auto third = store_->CreateJob(MakeJob("small", "c"));
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
  auto put = store_->PutJob(MakeJob("small", "d"), std::nullopt);
  EXPECT_EQ(put.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->GetJob("small", "c").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob("small", "d").status().code(), StatusCode::kNotFound);
  // Replacing an existing job is not a new job.
  EXPECT_TRUE(store_->PutJob(MakeJob("small", "a", At(5)), std::nullopt).ok());
  // Other tenants are not limited.
  Create(MakeJob("default", "c"));
}

TEST_P(StoreContractTest, MaxConcurrentRunsLimitsClaimsPerTenant) {
  ASSERT_TRUE(store_->PutTenant({.id = "slow", .max_concurrent_runs = 2}).ok());
  Create(MakeJob("slow", "j"));
  Create(MakeJob("default", "j"));
  Enqueue({MakeRun("slow", "j", "j@1", At(1)), MakeRun("slow", "j", "j@2", At(2)),
           MakeRun("slow", "j", "j@3", At(3)), MakeRun("default", "j", "j@4", At(4))});
  auto first = Claim("n1", At(10), 10);
  ASSERT_EQ(first.size(), 3u);  // two of "slow", the one of "default"
  int slow = 0;
  for (const RunRecord& r : first) slow += r.tenant == "slow";
  EXPECT_EQ(slow, 2);
  EXPECT_TRUE(Claim("n1", At(11), 10).empty());
  // One finishes: one more slot.
  for (const RunRecord& r : first) {
    if (r.tenant != "slow") continue;
    ASSERT_TRUE(store_
                    ->Complete({.tenant = r.tenant,
                                .run_id = r.id,
                                .fence = r.fence,
                                .now = At(12),
                                .state = RunState::kSucceeded,
                                .attempt_outcome = "succeeded"})
                    .ok());
    break;
  }
  auto second = Claim("n1", At(13), 10);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, "j@3");
}

TEST_P(StoreContractTest, QueueLimitsCapRunningRunsPerQueueOfATenant) {
  ASSERT_TRUE(store_->PutTenant({.id = "q", .queue_limits = {{"slow", 1}}}).ok());
  auto tenant = store_->GetTenant("q");
  ASSERT_TRUE(tenant.ok());
  EXPECT_EQ(tenant->queue_limits, (std::map<std::string, int64_t>{{"slow", 1}}));
  JobRecord slow = MakeJob("q", "slow-job");
  slow.spec.queue = "slow";
  Create(slow);
  Create(MakeJob("q", "fast-job"));
  RunRecord s1 = MakeRun("q", "slow-job", "s1", At(1));
  RunRecord s2 = MakeRun("q", "slow-job", "s2", At(2));
  s1.queue = s2.queue = "slow";
  Enqueue({s1, s2, MakeRun("q", "fast-job", "f1", At(3)), MakeRun("q", "fast-job", "f2", At(4))});
  auto claimed = Claim("n1", At(10), 10);
  std::vector<std::string> ids;
  for (const RunRecord& r : claimed) ids.push_back(r.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"s1", "f1", "f2"}));
  EXPECT_TRUE(Claim("n1", At(11), 10).empty());
  EXPECT_EQ(store_->PutTenant({.id = "q", .queue_limits = {{"slow", 0}}}).code(),
            StatusCode::kInvalidArgument);
}

// ---- Cluster --------------------------------------------------------------------------------

TEST_P(StoreContractTest, LeaderLeaseHasOneHolderAndItsEpochGrowsOnEachChange) {
  auto none = store_->GetLeader(At(0));
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, std::nullopt);

  auto a = store_->AcquireLeadership("a", At(0), std::chrono::seconds(10));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->node, "a");
  EXPECT_EQ(a->expires_at, At(10));
  const int64_t first = a->epoch;
  EXPECT_GE(first, 1);

  // Someone else while a's lease runs: a's lease comes back, unchanged.
  auto b = store_->AcquireLeadership("b", At(5), std::chrono::seconds(10));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->node, "a");
  EXPECT_EQ(b->epoch, first);
  EXPECT_EQ(b->expires_at, At(10));

  // The holder renews: same epoch, later expiry.
  auto renewed = store_->AcquireLeadership("a", At(8), std::chrono::seconds(10));
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(renewed->node, "a");
  EXPECT_EQ(renewed->epoch, first);
  EXPECT_EQ(renewed->expires_at, At(18));
  auto current = store_->GetLeader(At(17));
  ASSERT_TRUE(current.ok());
  ASSERT_TRUE(current->has_value());
  EXPECT_EQ((*current)->node, "a");

  // Expired: b takes it with a new epoch; a coming back later does not get it.
  EXPECT_EQ(*store_->GetLeader(At(18)), std::nullopt);
  b = store_->AcquireLeadership("b", At(18), std::chrono::seconds(10));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->node, "b");
  EXPECT_EQ(b->epoch, first + 1);
  auto late = store_->AcquireLeadership("a", At(19), std::chrono::seconds(10));
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->node, "b");

  // A holder coming back after its own lease expired gets a new epoch too.
  auto again = store_->AcquireLeadership("b", At(40), std::chrono::seconds(10));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->node, "b");
  EXPECT_EQ(again->epoch, first + 2);

  // Release: only by the holder of that epoch; the next holder's epoch still grows.
  ASSERT_TRUE(store_->ReleaseLeadership("a", first + 2).ok());
  EXPECT_TRUE(store_->GetLeader(At(41))->has_value()) << "not a's to release";
  ASSERT_TRUE(store_->ReleaseLeadership("b", first + 1).ok());
  EXPECT_TRUE(store_->GetLeader(At(41))->has_value()) << "an old epoch releases nothing";
  ASSERT_TRUE(store_->ReleaseLeadership("b", first + 2).ok());
  EXPECT_EQ(*store_->GetLeader(At(41)), std::nullopt);
  auto c = store_->AcquireLeadership("c", At(41), std::chrono::seconds(10));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node, "c");
  EXPECT_EQ(c->epoch, first + 3);
}

TEST_P(StoreContractTest, OnlyTheCurrentLeaderWritesTheAssignment) {
  auto empty = store_->GetAssignment();
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->epoch, 0);
  EXPECT_THAT(empty->owners, IsEmpty());

  auto a = store_->AcquireLeadership("a", At(0), std::chrono::seconds(10));
  ASSERT_TRUE(a.ok());
  const TenantOwners owners = {{"default", "a"}, {"acme", "b"}};
  ASSERT_TRUE(store_->PutAssignment("a", a->epoch, At(1), owners).ok());
  auto got = store_->GetAssignment();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->epoch, a->epoch);
  EXPECT_EQ(got->owners, owners);
  EXPECT_EQ(got->updated_at, At(1));

  // Not the holder, a wrong epoch, an expired lease: refused, nothing written.
  const TenantOwners other = {{"default", "b"}};
  EXPECT_EQ(store_->PutAssignment("b", a->epoch, At(2), other).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->PutAssignment("a", a->epoch + 1, At(2), other).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->PutAssignment("a", a->epoch, At(10), other).code(),
            StatusCode::kFailedPrecondition);
  // A deposed leader (b took over) cannot overwrite b's assignment.
  auto b = store_->AcquireLeadership("b", At(11), std::chrono::seconds(10));
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->node, "b");
  EXPECT_EQ(store_->PutAssignment("a", a->epoch, At(12), other).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetAssignment()->owners, owners);
  ASSERT_TRUE(store_->PutAssignment("b", b->epoch, At(12), other).ok());
  EXPECT_EQ(store_->GetAssignment()->owners, other);
  EXPECT_EQ(store_->GetAssignment()->epoch, b->epoch);
}

}  // namespace jobsched::contract
