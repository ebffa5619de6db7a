// Engine tests: a whole Node (SQLite in memory, FakeClock) driven through its actors, checking
// the job and run semantics of docs/engine.md and the guarantees of README.md on the stored run
// records.
//
// Time: the scheduler, reaper, janitor and dependency actor are ticked by hand at instants set on
// the fake clock; the processor runs its own threads and the tests wait for its results through
// the EventBus (with a generous real-time guard that fails the test). Nothing sleeps to
// synchronise. Only the builtin timeout test depends on real time, because the watchdog measures
// timeouts on the steady clock by design.
#include <gtest/gtest.h>
#include <jobsched/scheduler.h>
#include <jobsched/store.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/node.h"
#include "engine_harness.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"
#include "support/cgroup.h"

namespace jobsched {
namespace {

using namespace std::chrono_literals;
using testing::BuiltinSpec;
using testing::CronSpec;
using testing::EngineHarness;
using testing::HarnessOptions;
using testing::kT0;
using testing::RunId;
using testing::Utc;

[[maybe_unused]] const bool kQuietLogs = [] {
  spdlog::set_level(spdlog::level::warn);
  return true;
}();

std::vector<std::string> Ids(const std::vector<RunRecord>& runs) {
  std::vector<std::string> ids;
  for (const RunRecord& r : runs) ids.push_back(r.id);
  return ids;
}

int CountState(const std::vector<RunRecord>& runs, RunState state) {
  return static_cast<int>(std::count_if(runs.begin(), runs.end(),
                                        [&](const RunRecord& r) { return r.state == state; }));
}

std::string Describe(const std::vector<RunRecord>& runs) {
  std::string out;
  for (const RunRecord& r : runs) {
    out += "  " + r.id + " " + RunStateName(r.state) + " reason=" + RunReasonName(r.reason) +
           " attempt=" + std::to_string(r.attempt) + (r.error.empty() ? "" : " error=" + r.error) +
           "\n";
  }
  return out;
}

// ---- Interval firing -----------------------------------------------------------------------

// An interval counts from the job's creation; replaced by another interval, it counts from the
// replace: its occurrences are replaced + k·every, the second one included.
TEST(EngineIntervalTest, AReplacedIntervalCountsFromTheReplace) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  JobSpec spec = BuiltinSpec("tick");
  spec.schedule.kind = Schedule::Kind::kEvery;
  spec.schedule.every = 10s;
  EXPECT_EQ(h.MustCreate(spec).next_fire, kT0 + 10s);
  h.Advance(10s);
  EXPECT_EQ(h.Tick(), 1);
  EXPECT_EQ(h.store().GetJob("default", "tick")->next_fire, kT0 + 20s);

  h.Advance(3s);
  spec.schedule.every = 7s;
  auto replaced = h.node().jobs().Put(spec, std::nullopt);
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  EXPECT_EQ(replaced->next_fire, kT0 + 20s);  // 13 s + 7 s
  h.Advance(7s);
  EXPECT_EQ(h.Tick(), 1);
  EXPECT_EQ(h.store().GetJob("default", "tick")->next_fire, kT0 + 27s);
  h.Advance(7s);
  EXPECT_EQ(h.Tick(), 1);
  EXPECT_EQ(h.store().GetJob("default", "tick")->next_fire, kT0 + 34s);
  EXPECT_EQ(Ids(h.Runs("tick")), (std::vector<std::string>{RunId("tick", kT0 + 10s),
                                                          RunId("tick", kT0 + 20s),
                                                          RunId("tick", kT0 + 27s)}));
}

// ---- Cron firing ---------------------------------------------------------------------------

TEST(EngineCronTest, FiresOneRunPerOccurrenceAndASecondTickAtTheSameInstantCreatesNothing) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.StartProcessor();
  const JobRecord job = h.MustCreate(CronSpec("every-minute", "* * * * *"));
  EXPECT_EQ(job.next_fire, kT0 + 1min);

  std::vector<std::string> expected;
  for (int i = 1; i <= 3; ++i) {
    h.Advance(1min);
    EXPECT_EQ(h.Tick(), 1) << "minute " << i;
    EXPECT_EQ(h.Tick(), 0) << "a second pass at the same instant must create nothing (minute " << i
                           << ")";
    expected.push_back(RunId("every-minute", kT0 + i * 1min));
    ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, expected.back()));
  }
  EXPECT_EQ(h.Tick(), 0);

  const std::vector<RunRecord> runs = h.Runs("every-minute");
  ASSERT_EQ(Ids(runs), expected) << Describe(runs);
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(runs[i].id);
    EXPECT_EQ(runs[i].state, RunState::kSucceeded);
    EXPECT_EQ(runs[i].reason, RunReason::kSchedule);
    EXPECT_EQ(runs[i].scheduled_at, kT0 + static_cast<int>(i + 1) * 1min);
    EXPECT_EQ(runs[i].attempt, 1);
    ASSERT_EQ(runs[i].attempts.size(), 1u);
    EXPECT_EQ(runs[i].attempts[0].outcome, "succeeded");
    EXPECT_EQ(runs[i].attempts[0].node, "test-node");
  }
  EXPECT_EQ(h.Job("every-minute")->next_fire, kT0 + 4min);
}

// Fire-ahead and claim-ahead: an occurrence within fire_ahead (500 ms) is fired early, its run
// is claimed within claim_ahead (250 ms) and held, and the handler begins at the occurrence's
// time, not before; the records say so.
// An every-minute job whose handler records when it began; the first occurrence is `due`.
class AheadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(h.ok());
    h.RegisterProbe("probe");
    h.MustCreate(CronSpec("every-minute", "* * * * *", "probe"));
    h.StartProcessor();
  }

  // Fires the occurrence and claims it 250 ms ahead of its time: held by the processor.
  void HoldTheOccurrence() {
    h.Advance(1min - 250ms);
    ASSERT_EQ(h.Tick(), 1);
    ASSERT_TRUE(h.node().processor().ClaimOnce().ok());
    ASSERT_EQ(h.Run(id)->state, RunState::kRunning) << "held ahead";
  }
  // At its time, the held run ends cancelled with `error`, its handler never begun, and with no
  // attempt recorded.
  void ExpectCancelledAtItsTimeUnbegun(const std::string& error) {
    h.Advance(250ms);
    ASSERT_TRUE(h.events.Wait(EventType::kRunCancelled, id));
    const auto run = h.Run(id);
    EXPECT_EQ(run->state, RunState::kCancelled);
    EXPECT_EQ(run->error, error);
    EXPECT_EQ(run->attempt, 0);
    EXPECT_TRUE(run->attempts.empty());
    EXPECT_FALSE(run->started_at);
    EXPECT_TRUE(h.seen.Began(id).empty()) << "the handler never began";
  }

  EngineHarness h;
  const TimePoint due = kT0 + 1min;
  const std::string id = RunId("every-minute", due);
};

TEST_F(AheadTest, AnOccurrenceIsFiredAndClaimedAheadAndItsHandlerBeginsAtItsTime) {
  h.Advance(1min - 501ms);
  EXPECT_EQ(h.Tick(), 0) << "501 ms early is beyond fire_ahead";
  h.Advance(1ms);
  EXPECT_EQ(h.Tick(), 1) << "500 ms early is within fire_ahead";
  auto run = h.Run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kQueued);
  EXPECT_EQ(run->scheduled_at, due);
  EXPECT_EQ(run->available_at, due) << "claimable at its time";
  EXPECT_EQ(h.Job("every-minute")->next_fire, due + 1min);
  EXPECT_EQ(h.Tick(), 0);

  h.Advance(250ms);                                    // 250 ms early: within claim_ahead
  ASSERT_TRUE(h.node().processor().ClaimOnce().ok());  // or the dispatcher's pass claimed it
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kRunning);
  ASSERT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].started_at, due);

  h.Advance(250ms);  // its time
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->started_at, due);
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due})
      << "the handler began at the occurrence, not when it was claimed";
  ASSERT_TRUE(h.seen.Get(id));
  EXPECT_EQ(h.seen.Get(id)->node, "test-node") << "RunContext::node_id";
}

// A run held for its time and cancelled meanwhile ends cancelled; its handler never begins.
TEST_F(AheadTest, ARunCancelledWhileHeldForItsTimeNeverBegins) {
  ASSERT_NO_FATAL_FAILURE(HoldTheOccurrence());
  ASSERT_TRUE(h.node().jobs().CancelRun("default", id).ok());
  ExpectCancelledAtItsTimeUnbegun("cancelled before it started");
}

// A job paused before its occurrence does not run it, though the occurrence was fired ahead
// (its run queued) or even claimed ahead (held) when the pause came.
TEST_F(AheadTest, AJobPausedBeforeAnOccurrenceFiredAheadDoesNotRunIt) {
  h.Advance(1min - 400ms);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_EQ(h.Run(id)->state, RunState::kQueued) << "fired ahead";
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  EXPECT_EQ(h.Run(id)->state, RunState::kCancelled);
  h.Advance(400ms);
  EXPECT_EQ(h.Tick(), 0);
  EXPECT_FALSE(h.node().processor().ClaimOnce().value() > 0);
  EXPECT_TRUE(h.seen.Began(id).empty()) << "the handler never began";

  // Resumed: the occurrence missed while paused follows the misfire policy, as it would have
  // had it not been fired ahead (fire_once, within the grace: it runs, late, once); then the
  // next occurrences run as before.
  h.Advance(10s);
  ASSERT_TRUE(h.node().jobs().Resume("default", "every-minute").value());
  EXPECT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due + 10s});
  h.Advance(1min - 10s);
  EXPECT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, RunId("every-minute", due + 1min)));
}

// Paused and resumed between the fire ahead and the occurrence's time: the occurrence runs,
// once, at its time (the pause cancelled its run; the resume fires it again).
TEST_F(AheadTest, AJobPausedAndResumedBeforeAnOccurrenceFiredAheadRunsIt) {
  h.Advance(1min - 400ms);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  ASSERT_EQ(h.Run(id)->state, RunState::kCancelled);
  h.Advance(100ms);
  ASSERT_TRUE(h.node().jobs().Resume("default", "every-minute").value());
  EXPECT_EQ(h.Job("every-minute")->next_fire, due) << "the pause went back to the occurrence";
  EXPECT_EQ(h.Tick(), 1) << "fired ahead again";
  EXPECT_EQ(h.Run(id)->state, RunState::kQueued);
  h.Advance(300ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due});
  EXPECT_EQ(h.Runs("every-minute").size(), 1u);
  EXPECT_EQ(h.Job("every-minute")->next_fire, due + 1min);
}

// Deleted and created again (a program replacing its job) between the fire ahead and the
// occurrence's time: the new job's occurrence runs, though the deleted job's run of it was
// cancelled under the same id.
TEST_F(AheadTest, AJobDeletedAndCreatedAgainBeforeAnOccurrenceFiredAheadRunsIt) {
  h.Advance(1min - 400ms);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.node().jobs().Delete("default", "every-minute", false).ok());
  ASSERT_EQ(h.Run(id)->state, RunState::kCancelled);
  h.MustCreate(CronSpec("every-minute", "* * * * *", "probe"));
  EXPECT_EQ(h.Tick(), 1);
  h.Advance(400ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due});
}

TEST_F(AheadTest, AJobPausedWhileItsOccurrenceIsHeldDoesNotRunIt) {
  ASSERT_NO_FATAL_FAILURE(HoldTheOccurrence());
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  ExpectCancelledAtItsTimeUnbegun("cancelled before it started");
}

// Paused and resumed while the node holds the occurrence for its time: the resume fires it
// again, which withdraws the pause's cancellation, and the node runs it at its time, once.
TEST_F(AheadTest, AJobPausedAndResumedWhileItsOccurrenceIsHeldRunsIt) {
  ASSERT_NO_FATAL_FAILURE(HoldTheOccurrence());
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  ASSERT_TRUE(h.Run(id)->cancel_requested);
  h.Advance(100ms);
  ASSERT_TRUE(h.node().jobs().Resume("default", "every-minute").value());
  EXPECT_EQ(h.Job("every-minute")->next_fire, due) << "the pause went back to the occurrence";
  h.Tick();
  EXPECT_FALSE(h.Run(id)->cancel_requested) << "withdrawn";
  EXPECT_EQ(h.Job("every-minute")->next_fire, due + 1min);
  h.Advance(150ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due});
  const auto run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->attempt, 1);
  EXPECT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(h.Runs("every-minute").size(), 1u);
}

// Paused while held, resumed after the occurrence's time: the held run ended cancelled with no
// attempt, so the occurrence missed while paused follows the misfire policy (fire_once, within
// the grace: it runs, late, once), as one only queued would.
TEST_F(AheadTest, AJobPausedWhileItsOccurrenceIsHeldAndResumedAfterItRunsItLate) {
  ASSERT_NO_FATAL_FAILURE(HoldTheOccurrence());
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  ExpectCancelledAtItsTimeUnbegun("cancelled before it started");
  h.Advance(10s);
  ASSERT_TRUE(h.node().jobs().Resume("default", "every-minute").value());
  EXPECT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due + 10s});
  EXPECT_EQ(h.Run(id)->attempt, 1);
  EXPECT_EQ(h.Runs("every-minute").size(), 1u);
}

// Deleted with its running runs killed while the node holds the occurrence, and created again:
// the new job's fire withdraws the cancellation, and the occurrence runs at its time, once.
TEST_F(AheadTest, AJobDeletedWithKillAndCreatedAgainWhileItsOccurrenceIsHeldRunsIt) {
  ASSERT_NO_FATAL_FAILURE(HoldTheOccurrence());
  ASSERT_TRUE(h.node().jobs().Delete("default", "every-minute", true).ok());
  ASSERT_TRUE(h.Run(id)->cancel_requested);
  h.MustCreate(CronSpec("every-minute", "* * * * *", "probe"));
  h.Tick();
  EXPECT_FALSE(h.Run(id)->cancel_requested) << "withdrawn";
  h.Advance(250ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id), std::vector<TimePoint>{due});
  EXPECT_EQ(h.Run(id)->attempt, 1);
}

// Job "flaky", every minute: its first attempt fails, the next succeeds, retried 10 s later.
void CreateJobThatSucceedsSecondTime(EngineHarness& h, int max_attempts) {
  h.node().builtins().Register("second-time", [](RunContext& ctx) {
    return ctx.attempt() >= 2 ? Status::Ok() : Status(StatusCode::kUnavailable, "first try");
  });
  JobSpec spec = CronSpec("flaky", "* * * * *", "second-time");
  spec.retry = {.max_attempts = max_attempts,
                .backoff = Backoff::kFixed,
                .initial_delay = Duration(10000),
                .jitter = 0};
  h.MustCreate(spec);
}

// An occurrence whose time came before the pause is not the pause's: a run waiting to retry
// (claimed ahead of its retry time, too) retries, and succeeds.
TEST(EngineCronTest, ARunWaitingToRetryWhenItsJobIsPausedStillRetries) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  CreateJobThatSucceedsSecondTime(h, 3);
  h.StartProcessor();
  const std::string id = RunId("flaky", kT0 + 1min);
  h.Advance(1min);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id));
  h.Advance(10s - 200ms);  // within claim_ahead of the retry: held
  ASSERT_TRUE(h.node().processor().ClaimOnce().ok());
  ASSERT_TRUE(h.node().jobs().Pause("default", "flaky").value());
  h.Advance(200ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id, 2));
  EXPECT_EQ(h.Run(id)->state, RunState::kSucceeded);
}

// Paused after its next occurrence was fired ahead, resumed after that occurrence's time, under
// misfire "skip": the occurrence is recorded skipped like the others missed while paused, not
// left cancelled by the pause (the fire ahead leaves no trace).
TEST(EngineCronTest, AnOccurrenceFiredAheadOfAPauseIsSkippedLikeTheOthersUnderMisfireSkip) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("probe");
  JobSpec spec = CronSpec("secs", "* * * * * *", "probe");
  spec.misfire = {.policy = Misfire::kSkip, .grace = Duration(0)};
  h.MustCreate(spec);
  h.Advance(700ms);
  ASSERT_EQ(h.Tick(), 1) << "fired ahead";
  ASSERT_TRUE(h.node().jobs().Pause("default", "secs").value());
  h.Advance(1600ms);
  ASSERT_TRUE(h.node().jobs().Resume("default", "secs").value());
  h.Tick();
  for (const TimePoint t : {kT0 + 1s, kT0 + 2s}) {
    const auto run = h.Run(RunId("secs", t));
    ASSERT_TRUE(run) << Describe(h.Runs("secs"));
    EXPECT_EQ(run->state, RunState::kSkipped) << run->id << ": " << run->error;
  }
  EXPECT_EQ(h.Job("secs")->next_fire, kT0 + 3s);
}

// A run's started event says when the attempt could start, beside its occurrence's time: a
// retry could start at its retry time (what a lateness measure counts from, not the backoff).
TEST(EngineCronTest, AStartedEventSaysWhenItsAttemptCouldStart) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  CreateJobThatSucceedsSecondTime(h, 2);
  h.StartProcessor();
  const TimePoint due = kT0 + 1min;
  const std::string id = RunId("flaky", due);
  h.Advance(1min);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id));
  h.Advance(10s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id, 2));
  std::vector<std::pair<TimePoint, TimePoint>> started;  // (scheduled_at, available_at)
  for (const SchedulerEvent& e : h.events.All()) {
    if (e.type == EventType::kRunStarted && e.run_id == id)
      started.emplace_back(e.scheduled_at, e.available_at);
  }
  EXPECT_EQ(started, (std::vector<std::pair<TimePoint, TimePoint>>{{due, due}, {due, due + 10s}}));
}

// A run that was due when its job was paused (fired at its time, waiting for a worker) is not
// affected: the pause stops what comes next.
TEST(EngineCronTest, ARunAlreadyDueWhenItsJobIsPausedStillRuns) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("probe");
  h.MustCreate(CronSpec("every-minute", "* * * * *", "probe"));
  const std::string id = RunId("every-minute", kT0 + 1min);
  h.Advance(1min);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_EQ(h.Run(id)->state, RunState::kQueued);
  ASSERT_TRUE(h.node().jobs().Pause("default", "every-minute").value());
  EXPECT_EQ(h.Run(id)->state, RunState::kQueued);
  h.StartProcessor();
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  EXPECT_EQ(h.seen.Began(id).size(), 1u);
}

// Under overlap "skip", an occurrence whose job still has an unfinished run is not fired early:
// the run may end before the occurrence's time, and the decision is taken then.
TEST(EngineCronTest, AnOverlapDecisionIsTakenAtTheOccurrenceNotAhead) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  testing::Gate& gate = h.NewGate();
  h.RegisterProbe("blocks", &gate);
  JobSpec spec = CronSpec("every-minute", "* * * * *", "blocks");
  spec.overlap = Overlap::kSkip;  // the default, said out loud
  h.MustCreate(spec);
  h.StartProcessor();
  h.Advance(1min);
  EXPECT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.seen.WaitEntered(1));

  h.Advance(1min - 400ms);
  EXPECT_EQ(h.Tick(), 0) << "the first run is still running: not fired ahead";
  EXPECT_EQ(h.Runs("every-minute").size(), 1u);
  gate.Open();
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, RunId("every-minute", kT0 + 1min)));
  h.Advance(400ms);  // its time: nothing runs any more, so it is not skipped
  EXPECT_EQ(h.Tick(), 1);
  auto run = h.Run(RunId("every-minute", kT0 + 2min));
  ASSERT_TRUE(run);
  EXPECT_NE(run->state, RunState::kSkipped);
}

// One run per occurrence: any number of schedulers firing the same jobs at once create exactly one
// run per occurrence.
TEST(EngineCronTest, TwoSchedulersFiringConcurrentlyCreateOneRunPerOccurrence) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  constexpr int kJobs = 5;
  constexpr int kMinutes = 10;
  for (int j = 0; j < kJobs; ++j) {
    JobSpec spec = CronSpec("job" + std::to_string(j), "* * * * *");
    spec.overlap = Overlap::kAllow;
    h.MustCreate(spec);
  }
  SchedulerActor other(h.store(), h.clock, h.node().events(), SchedulerActorOptions{}, nullptr);
  int created = 0;
  for (int m = 1; m <= kMinutes; ++m) {
    h.Advance(1min);
    Result<int> a = 0, b = 0;
    std::thread t1([&] { a = h.node().scheduler().Tick(); });
    std::thread t2([&] { b = other.Tick(); });
    t1.join();
    t2.join();
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    created += *a + *b;
  }
  EXPECT_EQ(created, kJobs * kMinutes);
  for (int j = 0; j < kJobs; ++j) {
    const std::string id = "job" + std::to_string(j);
    std::vector<std::string> expected;
    for (int m = 1; m <= kMinutes; ++m) expected.push_back(RunId(id, kT0 + m * 1min));
    EXPECT_EQ(Ids(h.Runs(id)), expected);
  }
}

// ---- Misfires ------------------------------------------------------------------------------

// An every-minute job (overlap "allow", so that overlap decisions do not mix in) whose scheduler
// was down for 10.5 minutes: occurrences 00:01..00:09 are later than the 60 s grace (misfires),
// 00:10 is within it.
class MisfireTest : public ::testing::Test {
 protected:
  void CreateAndMiss(Misfire policy) {
    JobSpec spec = CronSpec("m", "* * * * *");
    spec.overlap = Overlap::kAllow;
    spec.misfire = {.policy = policy, .grace = Duration(60000)};
    h_.MustCreate(spec);
    h_.Advance(10min + 30s);
  }
  EngineHarness h_;
};

// The runs of job "m" scheduled before 00:10 (the misfires) and the one at 00:10.
struct MisfireRuns {
  std::vector<RunRecord> missed;
  std::optional<RunRecord> on_time;
};
MisfireRuns SplitMisfireRuns(const std::vector<RunRecord>& runs) {
  MisfireRuns out;
  for (const RunRecord& r : runs) {
    if (r.scheduled_at < kT0 + 10min) {
      out.missed.push_back(r);
    } else if (r.id == RunId("m", kT0 + 10min)) {
      out.on_time = r;
    } else {
      ADD_FAILURE() << "unexpected run " << r.id;
    }
  }
  return out;
}

// After the misfires are planned the on-time occurrence (00:10) follows, with reason schedule.
void ExpectOnTimeRunAfterTheMisfires(EngineHarness& h) {
  h.TickUntilIdle();  // see OnePassAlsoFiresTheOnTimeOccurrence for what a single pass must do
  const MisfireRuns runs = SplitMisfireRuns(h.Runs("m"));
  ASSERT_TRUE(runs.on_time) << "the occurrence within the grace (00:10) must run\n"
                            << Describe(h.Runs("m"));
  EXPECT_EQ(runs.on_time->reason, RunReason::kSchedule);
  EXPECT_EQ(runs.on_time->state, RunState::kQueued);
  EXPECT_EQ(runs.on_time->scheduled_at, kT0 + 10min);
  EXPECT_EQ(h.Job("m")->next_fire, kT0 + 11min);
}

TEST_F(MisfireTest, FireOnceCreatesOneCatchUpRunThenTheOnTimeOccurrence) {
  CreateAndMiss(Misfire::kFireOnce);
  h_.Tick();

  const MisfireRuns runs = SplitMisfireRuns(h_.Runs("m"));
  ASSERT_EQ(runs.missed.size(), 1u) << Describe(h_.Runs("m"));
  EXPECT_EQ(runs.missed[0].reason, RunReason::kMisfireCatchup);
  EXPECT_EQ(runs.missed[0].state, RunState::kQueued);
  EXPECT_EQ(runs.missed[0].available_at, kT0 + 10min + 30s) << "the catch-up run is available now";
  ExpectOnTimeRunAfterTheMisfires(h_);
  EXPECT_EQ(h_.Runs("m").size(), 2u) << Describe(h_.Runs("m"));
}

TEST_F(MisfireTest, SkipRecordsEachMissedOccurrenceSkippedThenRunsTheOnTimeOne) {
  CreateAndMiss(Misfire::kSkip);
  h_.Tick();

  const MisfireRuns runs = SplitMisfireRuns(h_.Runs("m"));
  ASSERT_EQ(runs.missed.size(), 9u) << Describe(h_.Runs("m"));
  for (int i = 0; i < 9; ++i) {
    const RunRecord& r = runs.missed[i];
    SCOPED_TRACE(r.id);
    EXPECT_EQ(r.id, RunId("m", kT0 + (i + 1) * 1min));
    EXPECT_EQ(r.state, RunState::kSkipped);
    EXPECT_EQ(r.attempt, 0) << "a skipped run never ran";
    EXPECT_TRUE(r.attempts.empty());
    EXPECT_FALSE(r.error.empty()) << "a skipped run says why";
  }
  EXPECT_EQ(h_.events.Count(EventType::kRunSkipped, "m"), 9);
  ExpectOnTimeRunAfterTheMisfires(h_);
  EXPECT_EQ(h_.Runs("m").size(), 10u) << Describe(h_.Runs("m"));
}

TEST_F(MisfireTest, FireAllCreatesOneCatchUpRunPerMissedOccurrence) {
  CreateAndMiss(Misfire::kFireAll);
  h_.Tick();

  const MisfireRuns runs = SplitMisfireRuns(h_.Runs("m"));
  ASSERT_EQ(runs.missed.size(), 9u) << Describe(h_.Runs("m"));
  for (int i = 0; i < 9; ++i) {
    const RunRecord& r = runs.missed[i];
    SCOPED_TRACE(r.id);
    EXPECT_EQ(r.id, RunId("m", kT0 + (i + 1) * 1min));
    EXPECT_EQ(r.reason, RunReason::kMisfireCatchup);
    EXPECT_EQ(r.state, RunState::kQueued);
  }
  ExpectOnTimeRunAfterTheMisfires(h_);
  EXPECT_EQ(h_.Runs("m").size(), 10u) << Describe(h_.Runs("m"));
}

// SchedulerActor::Tick: "One pass: fires every job due at the clock's now". After one pass
// nothing may be left due at that instant: the on-time occurrence that follows the misfires
// must be fired by the same pass.
TEST(MisfireOnePassTest, OnePassAlsoFiresTheOnTimeOccurrence) {
  for (Misfire policy : {Misfire::kFireOnce, Misfire::kSkip, Misfire::kFireAll}) {
    SCOPED_TRACE(MisfireName(policy));
    EngineHarness h;
    ASSERT_TRUE(h.ok());
    JobSpec spec = CronSpec("m", "* * * * *");
    spec.overlap = Overlap::kAllow;
    spec.misfire = {.policy = policy, .grace = Duration(60000)};
    h.MustCreate(spec);
    h.Advance(10min + 30s);
    h.Tick();  // ONE pass
    EXPECT_TRUE(SplitMisfireRuns(h.Runs("m")).on_time) << "00:10 was due and not fired\n"
                                                       << Describe(h.Runs("m"));
    auto due = h.store().DueJobs(h.clock.Now(), 10, TenantScope{});
    ASSERT_TRUE(due.ok());
    EXPECT_TRUE(due->empty()) << "a job is still due at the instant of the pass";
  }
}

TEST(MisfireGraceTest, AnOccurrenceWithinTheGraceSimplyRunsLate) {
  for (Misfire policy : {Misfire::kFireOnce, Misfire::kSkip, Misfire::kFireAll}) {
    SCOPED_TRACE(MisfireName(policy));
    EngineHarness h;
    ASSERT_TRUE(h.ok());
    h.StartProcessor();
    JobSpec spec = CronSpec("late", "* * * * *");
    spec.misfire = {.policy = policy, .grace = Duration(60000)};
    h.MustCreate(spec);
    h.Advance(1min + 45s);  // 00:01 is 45 s late
    EXPECT_EQ(h.Tick(), 1);
    const std::string id = RunId("late", kT0 + 1min);
    ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
    const std::vector<RunRecord> runs = h.Runs("late");
    ASSERT_EQ(runs.size(), 1u) << Describe(runs);
    EXPECT_EQ(runs[0].id, id);
    EXPECT_EQ(runs[0].reason, RunReason::kSchedule);
    EXPECT_EQ(runs[0].state, RunState::kSucceeded);
    EXPECT_EQ(runs[0].scheduled_at, kT0 + 1min);
    EXPECT_EQ(h.Job("late")->next_fire, kT0 + 2min);
  }
}

// ---- Overlap -------------------------------------------------------------------------------

// An every-minute job whose handler blocks on a gate: run 1 (00:01) is running when 00:02 fires.
class OverlapTest : public ::testing::Test {
 protected:
  void StartFirstRun(Overlap overlap) {
    ASSERT_TRUE(h_.ok());
    h_.RegisterProbe("block", &gate_);
    JobSpec spec = CronSpec("o", "* * * * *", "block");
    spec.overlap = overlap;
    h_.MustCreate(spec);
    h_.StartProcessor();
    h_.Advance(1min);
    ASSERT_EQ(h_.Tick(), 1);
    ASSERT_TRUE(h_.events.Wait(EventType::kRunStarted, run1_));
    h_.Advance(1min);
  }

  EngineHarness h_;
  testing::Gate& gate_ = h_.NewGate();
  const std::string run1_ = RunId("o", kT0 + 1min);
  const std::string run2_ = RunId("o", kT0 + 2min);
};

TEST_F(OverlapTest, SkipRecordsTheNewOccurrenceSkipped) {
  ASSERT_NO_FATAL_FAILURE(StartFirstRun(Overlap::kSkip));
  EXPECT_EQ(h_.Tick(), 1);
  auto run2 = h_.Run(run2_);
  ASSERT_TRUE(run2);
  EXPECT_EQ(run2->state, RunState::kSkipped);
  EXPECT_EQ(run2->attempt, 0);
  EXPECT_NE(run2->error.find("overlap"), std::string::npos) << run2->error;
  EXPECT_TRUE(h_.events.Seen(EventType::kRunSkipped, run2_));
  for (const SchedulerEvent& e : h_.events.All()) {
    if (e.type != EventType::kRunSkipped) continue;
    EXPECT_EQ(e.scheduled_at, kT0 + 2min) << "the skipped occurrence's time";
    EXPECT_EQ(e.queue, "default");
    EXPECT_EQ(e.error, run2->error);
  }
  EXPECT_EQ(h_.Run(run1_)->state, RunState::kRunning);

  gate_.Open();
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run1_));
  EXPECT_EQ(h_.Run(run2_)->state, RunState::kSkipped);
}

TEST_F(OverlapTest, AllowRunsTheNewOccurrenceConcurrently) {
  ASSERT_NO_FATAL_FAILURE(StartFirstRun(Overlap::kAllow));
  EXPECT_EQ(h_.Tick(), 1);
  ASSERT_TRUE(h_.events.Wait(EventType::kRunStarted, run2_));
  ASSERT_TRUE(h_.seen.WaitEntered(2));  // both handlers are in, blocked on the gate
  const std::vector<RunRecord> runs = h_.Runs("o");
  EXPECT_EQ(CountState(runs, RunState::kRunning), 2) << Describe(runs);

  gate_.Open();
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run1_));
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run2_));
  ASSERT_TRUE(h_.seen.Get(run2_));
  EXPECT_EQ(h_.seen.Get(run2_)->others_running, 1) << "run 2 began while run 1 was running";
}

TEST_F(OverlapTest, QueueStartsTheNewOccurrenceOnlyAfterThePreviousFinished) {
  ASSERT_NO_FATAL_FAILURE(StartFirstRun(Overlap::kQueue));
  EXPECT_EQ(h_.Tick(), 1);
  // A worker slot is free (concurrency 2), yet run 2 must not be claimed while run 1 runs.
  auto claimed = h_.node().processor().ClaimOnce();
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  EXPECT_EQ(*claimed, 0);
  auto run2 = h_.Run(run2_);
  ASSERT_TRUE(run2);
  EXPECT_EQ(run2->state, RunState::kQueued);
  EXPECT_EQ(run2->attempt, 0);

  gate_.Open();
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run1_));
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run2_));
  ASSERT_TRUE(h_.seen.Get(run2_));
  EXPECT_EQ(h_.seen.Get(run2_)->others_running, 0) << "run 2 began while run 1 was still running";
  EXPECT_EQ(h_.Run(run1_)->state, RunState::kSucceeded);
  EXPECT_EQ(h_.Run(run2_)->state, RunState::kSucceeded);
}

TEST_F(OverlapTest, ReplaceCancelsThePreviousRunAndRunsTheNewOne) {
  ASSERT_NO_FATAL_FAILURE(StartFirstRun(Overlap::kReplace));
  EXPECT_EQ(h_.Tick(), 1);
  ASSERT_TRUE(h_.events.Wait(EventType::kRunStarted, run2_));
  // The holder learns of the cancellation when it renews its lease; do one renewal pass now
  // instead of waiting for renew_interval.
  h_.node().processor().RenewOnce();
  ASSERT_TRUE(h_.events.Wait(EventType::kRunCancelled, run1_));

  auto run1 = h_.Run(run1_);
  ASSERT_TRUE(run1);
  EXPECT_EQ(run1->state, RunState::kCancelled);
  ASSERT_EQ(run1->attempts.size(), 1u);
  EXPECT_EQ(run1->attempts[0].outcome, "cancelled");
  ASSERT_TRUE(h_.seen.Get(run1_));
  EXPECT_TRUE(h_.seen.Get(run1_)->cancelled) << "run 1's handler must see RunContext::cancelled()";
  EXPECT_EQ(h_.Run(run2_)->state, RunState::kRunning);

  gate_.Open();
  ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, run2_));
  EXPECT_EQ(h_.Run(run2_)->state, RunState::kSucceeded);
  EXPECT_EQ(h_.Run(run1_)->state, RunState::kCancelled);
}

// ---- Retries and backoff -------------------------------------------------------------------

TEST(EngineRetryTest, FixedBackoffWaitsForTheFakeClockAndRecordsEveryAttempt) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("flaky", nullptr, [](RunContext& ctx) {
    if (ctx.attempt() < 3)
      return Status(StatusCode::kInternal, "boom " + std::to_string(ctx.attempt()));
    return Status::Ok();
  });
  JobSpec spec = BuiltinSpec("flaky", "flaky");
  spec.retry = {.max_attempts = 3,
                .backoff = Backoff::kFixed,
                .initial_delay = Duration(1000),
                .max_delay = Duration(300000),
                .jitter = 0};
  h.MustCreate(spec);
  h.StartProcessor();
  const std::vector<std::string> ids = h.Trigger("flaky");
  ASSERT_EQ(ids.size(), 1u);
  const std::string id = ids[0];

  ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id, 1));
  auto run = h.Run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kRetryWait);
  EXPECT_EQ(run->attempt, 1);
  ASSERT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].outcome, "failed");
  EXPECT_EQ(run->attempts[0].error, "boom 1");
  ASSERT_TRUE(run->attempts[0].finished_at);
  const TimePoint retry_at = *run->attempts[0].finished_at + 1s;
  EXPECT_EQ(run->available_at, retry_at);

  // Not started before retry_at on the fake clock, however much real time passes: not claimed
  // while retry_at is further away than claim-ahead; claimed ahead, it waits for its time.
  auto claimed = h.node().processor().ClaimOnce();
  ASSERT_TRUE(claimed.ok());
  EXPECT_EQ(*claimed, 0);
  h.Advance(999ms);
  claimed = h.node().processor().ClaimOnce();
  ASSERT_TRUE(claimed.ok());
  // Claimed now (by this pass or the dispatcher's): a worker is idle and the run is due within
  // claim-ahead.
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kRunning);
  ASSERT_EQ(run->attempts.size(), 2u);
  EXPECT_EQ(run->attempts[1].started_at, retry_at) << "it is due to start at retry_at";

  h.Advance(1ms);  // now == retry_at
  ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id, 2));
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kRetryWait);
  EXPECT_EQ(run->available_at, h.clock.Now() + 1s);
  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id, 3));

  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->attempt, 3);
  EXPECT_EQ(run->reason, RunReason::kManual);
  ASSERT_EQ(run->attempts.size(), 3u);
  const char* outcomes[] = {"failed", "failed", "succeeded"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run->attempts[i].number, i + 1);
    EXPECT_EQ(run->attempts[i].outcome, outcomes[i]);
    EXPECT_NE(run->attempts[i].fence, 0);
    if (i > 0) {
      EXPECT_GT(run->attempts[i].fence, run->attempts[i - 1].fence)
          << "each attempt gets a new fence";
    }
  }
  EXPECT_EQ(run->attempts[1].error, "boom 2");
  EXPECT_EQ(run->attempts[1].started_at, retry_at);
  const std::vector<TimePoint> began = h.seen.Began(id);
  ASSERT_EQ(began.size(), 3u);
  EXPECT_EQ(began[1], retry_at) << "the second attempt began at retry_at, not before";
}

TEST(EngineRetryTest, ExponentialBackoffDoublesWithinJitterAndTheLastErrorIsKept) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("always-fails", nullptr, [](RunContext& ctx) {
    return Status(StatusCode::kInternal, "boom " + std::to_string(ctx.attempt()));
  });
  JobSpec spec = BuiltinSpec("exp", "always-fails");
  spec.retry = {.max_attempts = 4,
                .backoff = Backoff::kExponential,
                .initial_delay = Duration(1000),
                .max_delay = Duration(300000),
                .jitter = 0.2};
  h.MustCreate(spec);
  h.StartProcessor();
  const std::string id = h.Trigger("exp").at(0);

  for (int n = 1; n <= 3; ++n) {
    SCOPED_TRACE("after failure " + std::to_string(n));
    ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id, n));
    auto run = h.Run(id);
    ASSERT_TRUE(run);
    ASSERT_EQ(run->state, RunState::kRetryWait);
    ASSERT_EQ(run->attempts.size(), static_cast<size_t>(n));
    ASSERT_TRUE(run->attempts.back().finished_at);
    const Duration delay = run->available_at - *run->attempts.back().finished_at;
    const int64_t nominal = 1000 << (n - 1);
    EXPECT_GE(delay.count(), nominal * 8 / 10) << "nominal " << nominal;
    EXPECT_LE(delay.count(), nominal * 12 / 10) << "nominal " << nominal;
    h.Advance(delay);
  }
  ASSERT_TRUE(h.events.Wait(EventType::kRunFailed, id, 4));
  auto run = h.Run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kFailed);
  EXPECT_EQ(run->attempt, 4);
  EXPECT_EQ(run->error, "boom 4");
  ASSERT_EQ(run->attempts.size(), 4u);
  for (const AttemptRecord& a : run->attempts) EXPECT_EQ(a.outcome, "failed");
  EXPECT_TRUE(run->finished_at);
}

TEST(EngineRetryTest, BackoffIsCappedAtMaxDelay) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("always-fails", nullptr,
                  [](RunContext&) { return Status(StatusCode::kInternal, "boom"); });
  JobSpec spec = BuiltinSpec("cap", "always-fails");
  spec.retry = {.max_attempts = 5,
                .backoff = Backoff::kExponential,
                .initial_delay = Duration(1000),
                .max_delay = Duration(1500),
                .jitter = 0.2};
  h.MustCreate(spec);
  h.StartProcessor();
  const std::string id = h.Trigger("cap").at(0);
  for (int n = 1; n <= 4; ++n) {
    SCOPED_TRACE("after failure " + std::to_string(n));
    ASSERT_TRUE(h.events.Wait(EventType::kRunRetrying, id, n));
    auto run = h.Run(id);
    ASSERT_TRUE(run);
    const Duration delay = run->available_at - *run->attempts.back().finished_at;
    EXPECT_LE(delay.count(), 1500);
    if (n >= 2) {
      EXPECT_GE(delay.count(), 1200);  // min(2000, 1500) - 20 %
    }
    h.Advance(delay);
  }
  ASSERT_TRUE(h.events.Wait(EventType::kRunFailed, id, 5));
  EXPECT_EQ(h.Run(id)->state, RunState::kFailed);
}

// ---- Timeouts ------------------------------------------------------------------------------

TEST(EngineTimeoutTest, ABuiltinPastItsTimeoutIsCancelledAndEndsTimedOut) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  // The shipped "sleep" builtin, fired by its one-time schedule (the run gets the job's
  // payload) and triggered by hand, and a probe that reports what it saw.
  JobSpec sleeper = BuiltinSpec("sleeper", "sleep");
  sleeper.schedule.kind = Schedule::Kind::kAt;
  sleeper.schedule.at = kT0 + 1s;
  sleeper.payload = R"({"ms": 60000})";
  sleeper.timeout = Duration(200);
  h.MustCreate(sleeper);
  h.RegisterProbe("wait-long", nullptr, [](RunContext& ctx) {
    ctx.WaitFor(Duration(60000));
    return Status::Ok();
  });
  JobSpec probe = BuiltinSpec("probe", "wait-long");
  probe.timeout = Duration(200);
  h.MustCreate(probe);
  // "Until cancelled": a wait longer than the clock can count is not over at once.
  h.RegisterProbe("wait-forever", nullptr, [](RunContext& ctx) {
    return ctx.WaitFor(Duration::max()) ? Status::Ok() : Status(StatusCode::kUnavailable, "cut");
  });
  JobSpec forever = BuiltinSpec("forever", "wait-forever");
  forever.timeout = Duration(200);
  h.MustCreate(forever);
  h.StartProcessor();

  const auto started = std::chrono::steady_clock::now();
  h.Advance(1s);
  ASSERT_EQ(h.Tick(), 1);
  const std::string scheduled_run = RunId("sleeper", kT0 + 1s);
  // A manual run carries the payload given to Trigger.
  const std::string manual_run = h.Trigger("sleeper", {R"({"ms": 60000})"}).at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunTimedOut, scheduled_run));
  ASSERT_TRUE(h.events.Wait(EventType::kRunTimedOut, manual_run));
  const std::string probe_run = h.Trigger("probe").at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunTimedOut, probe_run));
  const std::string forever_run = h.Trigger("forever").at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunTimedOut, forever_run));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));

  for (const std::string& id : {scheduled_run, manual_run, probe_run, forever_run}) {
    SCOPED_TRACE(id);
    auto run = h.Run(id);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->state, RunState::kTimedOut);
    ASSERT_EQ(run->attempts.size(), 1u);
    EXPECT_EQ(run->attempts[0].outcome, "timed_out");
    EXPECT_NE(run->error.find("timed out"), std::string::npos) << run->error;
    EXPECT_TRUE(run->finished_at);
  }
  // The probe's WaitFor(60 s) lets go at the timeout: its handler returned within the guard.
  ASSERT_TRUE(h.seen.Get(probe_run));
  EXPECT_TRUE(h.seen.Get(probe_run)->cancelled) << "the handler must see RunContext::cancelled()";
}

// ---- Jitter, start_at / end_at, time zones, one-time jobs ----------------------------------

TEST(EngineScheduleTest, JitterDelaysAvailabilityWithinBounds) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  JobSpec spec = CronSpec("jittery", "* * * * *");
  spec.schedule.jitter = Duration(5000);
  spec.overlap = Overlap::kAllow;
  h.MustCreate(spec);
  int delayed = 0;
  for (int i = 1; i <= 20; ++i) {
    h.Advance(1min);
    ASSERT_EQ(h.Tick(), 1);
    const TimePoint scheduled = kT0 + i * 1min;
    auto run = h.Run(RunId("jittery", scheduled));
    ASSERT_TRUE(run) << "jitter must not change the occurrence's run id";
    EXPECT_EQ(run->scheduled_at, scheduled);
    EXPECT_GE(run->available_at, scheduled);
    EXPECT_LE(run->available_at, scheduled + 5s);
    if (run->available_at > scheduled) ++delayed;
  }
  EXPECT_GT(delayed, 0) << "20 occurrences with 5 s of jitter and not one delayed";
}

TEST(EngineScheduleTest, NothingFiresBeforeStartAtAndTheJobCompletesAfterEndAt) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  JobSpec spec = CronSpec("window", "* * * * *");
  spec.overlap = Overlap::kAllow;
  spec.schedule.start_at = kT0 + 5min;
  spec.schedule.end_at = kT0 + 7min + 30s;
  const JobRecord job = h.MustCreate(spec);
  EXPECT_EQ(job.next_fire, kT0 + 5min);

  for (int i = 1; i <= 12; ++i) {
    h.Advance(1min);
    h.Tick();
    if (i < 5) {
      EXPECT_TRUE(h.Runs("window").empty()) << "fired before start_at at minute " << i;
    }
  }
  const std::vector<RunRecord> runs = h.Runs("window");
  EXPECT_EQ(Ids(runs),
            (std::vector<std::string>{RunId("window", kT0 + 5min), RunId("window", kT0 + 6min),
                                      RunId("window", kT0 + 7min)}))
      << Describe(runs);
  auto after = h.Job("window");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->state, JobState::kCompleted);
  EXPECT_FALSE(after->next_fire);
}

TEST(EngineScheduleTest, NewYorkFixedTimeJobInTheSpringForwardGapFiresOnceAtTheEndOfTheGap) {
  HarnessOptions options;
  options.start = Utc(2024, 3, 9, 12);
  EngineHarness h(options);
  ASSERT_TRUE(h.ok());
  JobSpec spec = CronSpec("ny", "30 2 * * *");
  spec.schedule.timezone = "America/New_York";
  const JobRecord job = h.MustCreate(spec);
  // 2024-03-10 02:30 does not exist in New York: 02:00 EST jumps to 03:00 EDT = 07:00Z.
  const TimePoint gap_end = Utc(2024, 3, 10, 7);
  EXPECT_EQ(job.next_fire, gap_end);

  h.SetTime(gap_end - 1s);
  EXPECT_EQ(h.Tick(), 0);
  h.SetTime(gap_end);
  EXPECT_EQ(h.Tick(), 1);
  h.SetTime(Utc(2024, 3, 10, 7, 30));  // 02:30 EST would have been this instant
  EXPECT_EQ(h.Tick(), 0);
  const TimePoint next_day = Utc(2024, 3, 11, 6, 30);  // 02:30 EDT
  EXPECT_EQ(h.Job("ny")->next_fire, next_day);
  h.SetTime(next_day);
  EXPECT_EQ(h.Tick(), 1);

  const std::vector<RunRecord> runs = h.Runs("ny");
  EXPECT_EQ(Ids(runs), (std::vector<std::string>{RunId("ny", gap_end), RunId("ny", next_day)}))
      << Describe(runs);
}

TEST(EngineScheduleTest, OneTimeJobFiresOnceAndCompletes) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.StartProcessor();
  JobSpec spec = BuiltinSpec("once");
  spec.schedule.kind = Schedule::Kind::kAt;
  spec.schedule.at = kT0 + 90s;
  const JobRecord job = h.MustCreate(spec);
  EXPECT_EQ(job.next_fire, kT0 + 90s);
  EXPECT_EQ(job.state, JobState::kActive);

  h.Advance(60s);
  EXPECT_EQ(h.Tick(), 0);
  h.Advance(30s);
  EXPECT_EQ(h.Tick(), 1);
  const std::string id = RunId("once", kT0 + 90s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  auto after = h.Job("once");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->state, JobState::kCompleted);
  EXPECT_FALSE(after->next_fire);

  h.Advance(24h);
  EXPECT_EQ(h.Tick(), 0);
  const std::vector<RunRecord> runs = h.Runs("once");
  ASSERT_EQ(runs.size(), 1u) << Describe(runs);
  EXPECT_EQ(runs[0].state, RunState::kSucceeded);
}

// ---- Pause / resume ------------------------------------------------------------------------

TEST(EnginePauseTest, APausedJobFiresNothingAndOnResumeMissedOccurrencesFollowTheMisfirePolicy) {
  for (Misfire policy : {Misfire::kFireOnce, Misfire::kSkip}) {
    SCOPED_TRACE(MisfireName(policy));
    EngineHarness h;
    ASSERT_TRUE(h.ok());
    JobSpec spec = CronSpec("p", "* * * * *");
    spec.overlap = Overlap::kAllow;
    spec.misfire = {.policy = policy, .grace = Duration(60000)};
    h.MustCreate(spec);

    auto paused = h.node().jobs().Pause("default", "p");
    ASSERT_TRUE(paused.ok()) << paused.status().ToString();
    EXPECT_TRUE(*paused);
    EXPECT_FALSE(*h.node().jobs().Pause("default", "p")) << "already paused";
    EXPECT_EQ(h.Job("p")->state, JobState::kPaused);

    for (int i = 0; i < 5; ++i) {
      h.Advance(1min);
      EXPECT_EQ(h.Tick(), 0);
    }
    h.Advance(30s);  // 00:05:30: 00:01..00:04 are misfires, 00:05 is within the grace
    EXPECT_EQ(h.Tick(), 0);
    EXPECT_TRUE(h.Runs("p").empty());

    auto resumed = h.node().jobs().Resume("default", "p");
    ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
    EXPECT_TRUE(*resumed);
    EXPECT_FALSE(*h.node().jobs().Resume("default", "p")) << "not paused any more";
    h.TickUntilIdle();

    const std::vector<RunRecord> runs = h.Runs("p");
    if (policy == Misfire::kFireOnce) {
      ASSERT_EQ(runs.size(), 2u) << Describe(runs);
      EXPECT_EQ(runs[0].reason, RunReason::kMisfireCatchup);
      EXPECT_EQ(runs[0].state, RunState::kQueued);
    } else {
      ASSERT_EQ(runs.size(), 5u) << Describe(runs);
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(runs[i].id, RunId("p", kT0 + (i + 1) * 1min));
        EXPECT_EQ(runs[i].state, RunState::kSkipped);
      }
    }
    EXPECT_EQ(runs.back().id, RunId("p", kT0 + 5min));
    EXPECT_EQ(runs.back().reason, RunReason::kSchedule);
    EXPECT_EQ(runs.back().state, RunState::kQueued);
    EXPECT_EQ(h.Job("p")->next_fire, kT0 + 6min);
  }
}

// ---- Manual triggers -----------------------------------------------------------------------

TEST(EngineTriggerTest, OneManualRunPerPayloadDeliveredToTheHandlerAndNotSubjectToOverlap) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  testing::Gate& gate = h.NewGate();
  h.RegisterProbe("echo", &gate);
  JobSpec spec = BuiltinSpec("t", "echo");
  spec.overlap = Overlap::kSkip;
  h.MustCreate(spec);
  h.StartProcessor();

  const std::vector<std::string> payloads = {R"({"n":1})", R"({"n":2})", R"({"n":3})"};
  const std::vector<std::string> ids = h.Trigger("t", payloads);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 3u) << "run ids must be distinct";
  for (const std::string& id : ids) EXPECT_EQ(id.rfind("t@m", 0), 0u) << id;

  // Two run at once (concurrency 2), the third waits for a slot; none is skipped.
  ASSERT_TRUE(h.events.WaitForJob(EventType::kRunStarted, "t", 2));
  EXPECT_EQ(h.events.Count(EventType::kRunSkipped, "t"), 0);
  gate.Open();
  for (const std::string& id : ids) ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));

  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(ids[i]);
    auto run = h.Run(ids[i]);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->reason, RunReason::kManual);
    EXPECT_EQ(run->state, RunState::kSucceeded);
    EXPECT_EQ(run->payload, payloads[i]);
    ASSERT_TRUE(h.seen.Get(ids[i]));
    EXPECT_EQ(h.seen.Get(ids[i])->payload, payloads[i]) << "RunContext::payload()";
  }
}

TEST(EngineTriggerTest, TriggerWhileAScheduledRunIsRunningIsNotSkipped) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  testing::Gate& gate = h.NewGate();
  h.RegisterProbe("block", &gate);
  JobSpec spec = CronSpec("s", "* * * * *", "block");
  spec.overlap = Overlap::kSkip;
  h.MustCreate(spec);
  h.StartProcessor();
  h.Advance(1min);
  ASSERT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunStarted, RunId("s", kT0 + 1min)));

  const std::string manual = h.Trigger("s").at(0);
  ASSERT_TRUE(h.events.Wait(EventType::kRunStarted, manual));
  EXPECT_NE(h.Run(manual)->state, RunState::kSkipped);
  gate.Open();
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, manual));
}

TEST(EngineTriggerTest, TriggerErrors) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("t"));
  auto unknown = h.node().jobs().Trigger("default", "nope", {"null"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  auto bad = h.node().jobs().Trigger("default", "t", {"{not json"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(h.Runs("t").empty());
}

// ---- Deleting jobs -------------------------------------------------------------------------

// Three manual runs of a blocking job with concurrency 2: two running, one queued.
class DeleteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(h_.ok());
    h_.RegisterProbe("block", &gate_);
    h_.MustCreate(BuiltinSpec("d", "block"));
    h_.StartProcessor();
    ids_ = h_.Trigger("d", {"1", "2", "3"});
    ASSERT_EQ(ids_.size(), 3u);
    ASSERT_TRUE(h_.seen.WaitEntered(2));  // two handlers are blocked on the gate
    for (const std::string& id : ids_) {
      auto run = h_.Run(id);
      ASSERT_TRUE(run);
      (run->state == RunState::kRunning ? running_ : queued_).push_back(id);
    }
    ASSERT_EQ(running_.size(), 2u);
    ASSERT_EQ(queued_.size(), 1u);
  }

  EngineHarness h_;
  testing::Gate& gate_ = h_.NewGate();
  std::vector<std::string> ids_, running_, queued_;
};

TEST_F(DeleteTest, QueuedRunsAreCancelledRunningOnesFinish) {
  ASSERT_TRUE(h_.node().jobs().Delete("default", "d", /*kill_running=*/false).ok());
  EXPECT_FALSE(h_.Job("d"));
  auto queued = h_.Run(queued_[0]);
  ASSERT_TRUE(queued);
  EXPECT_EQ(queued->state, RunState::kCancelled);
  EXPECT_EQ(queued->attempt, 0);
  for (const std::string& id : running_) EXPECT_EQ(h_.Run(id)->state, RunState::kRunning);

  gate_.Open();
  for (const std::string& id : running_) ASSERT_TRUE(h_.events.Wait(EventType::kRunSucceeded, id));
  for (const std::string& id : running_) EXPECT_EQ(h_.Run(id)->state, RunState::kSucceeded);
  EXPECT_EQ(h_.Run(queued_[0])->state, RunState::kCancelled);
}

TEST_F(DeleteTest, KillRunningCancelsTheRunningRunsToo) {
  ASSERT_TRUE(h_.node().jobs().Delete("default", "d", /*kill_running=*/true).ok());
  EXPECT_EQ(h_.Run(queued_[0])->state, RunState::kCancelled);
  h_.node().processor().RenewOnce();  // the holder learns of the cancellation at its renewal
  for (const std::string& id : running_) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(h_.events.Wait(EventType::kRunCancelled, id));
    auto run = h_.Run(id);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->state, RunState::kCancelled);
    EXPECT_EQ(run->attempts.back().outcome, "cancelled");
    ASSERT_TRUE(h_.seen.Get(id));
    EXPECT_TRUE(h_.seen.Get(id)->cancelled);
  }
}

TEST(EngineDeleteTest, ADeletedCronJobFiresNothingMore) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(CronSpec("gone", "* * * * *"));
  h.Advance(1min);
  EXPECT_EQ(h.Tick(), 1);
  ASSERT_TRUE(h.node().jobs().Delete("default", "gone", false).ok());
  EXPECT_EQ(h.Run(RunId("gone", kT0 + 1min))->state, RunState::kCancelled);
  h.Advance(1min);
  EXPECT_EQ(h.Tick(), 0);
  EXPECT_EQ(h.node().jobs().Delete("default", "gone", false).code(), StatusCode::kNotFound);
}

// A run claimed by a node but not yet started when its job is deleted (without kill_running) is
// treated like a queued one: it ends cancelled, and its handler never runs (docs/engine.md). It
// never started, so no kRunStarted is emitted for it.
TEST(EngineDeleteTest, ARunClaimedButNotStartedWhenItsJobIsDeletedIsCancelled) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("probe");
  h.MustCreate(BuiltinSpec("claimed", "probe"));
  const std::string id = h.Trigger("claimed").at(0);
  // Claimed with no worker yet to start it.
  ASSERT_EQ(h.node().processor().ClaimOnce().value(), 1);
  ASSERT_EQ(h.Run(id)->state, RunState::kRunning);
  ASSERT_TRUE(h.node().jobs().Delete("default", "claimed", /*kill_running=*/false).ok());
  h.StartProcessor();
  ASSERT_TRUE(h.events.Wait(EventType::kRunCancelled, id));
  auto run = h.Run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kCancelled) << "error: " << run->error;
  EXPECT_EQ(run->error, "job deleted before the run started");
  EXPECT_FALSE(h.seen.Get(id)) << "the handler ran for a deleted job";
  EXPECT_FALSE(h.events.Seen(EventType::kRunStarted, id)) << "the run never started";
}

// A run claimed ahead of its time is held with its job's spec; a job deleted meanwhile is read
// again when the run's time comes, and the run is cancelled, not executed.
TEST(EngineDeleteTest, ARunHeldAheadWhoseJobIsDeletedBeforeItsTimeIsCancelled) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("probe");
  h.MustCreate(CronSpec("keep", "* * * * *", "probe"));
  h.MustCreate(CronSpec("gone", "* * * * *", "probe"));
  h.StartProcessor();
  const TimePoint due = kT0 + 1min;
  h.Advance(1min - 500ms);
  ASSERT_EQ(h.Tick(), 2);
  h.Advance(250ms);
  ASSERT_TRUE(h.node().processor().ClaimOnce().ok());
  for (const char* job : {"keep", "gone"}) {
    auto run = h.Run(RunId(job, due));
    ASSERT_TRUE(run);
    EXPECT_EQ(run->state, RunState::kRunning) << job << " is held ahead";
  }
  ASSERT_TRUE(h.node().jobs().Delete("default", "gone", /*kill_running=*/false).ok());
  h.Advance(250ms);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, RunId("keep", due)));
  ASSERT_TRUE(h.events.Wait(EventType::kRunCancelled, RunId("gone", due)));
  EXPECT_EQ(h.Run(RunId("gone", due))->state, RunState::kCancelled);
  EXPECT_TRUE(h.seen.Get(RunId("keep", due)));
  EXPECT_FALSE(h.seen.Get(RunId("gone", due))) << "the deleted job's handler never began";
}

// ---- Prefetch --------------------------------------------------------------------------------

// Workers busy with the runs of job "blocked" (harness concurrency: 2), after `warmup` attempts
// of job "warmup" whose handler is `warm`; returns the runs of "blocked" running in the store
// after one more dispatcher pass (the test's own), with `blocked_runs` of them triggered.
int RunningBeyondBusyWorkers(std::function<Status(RunContext&)> warm, int warmup,
                             int blocked_runs) {
  EngineHarness h;
  if (!h.ok()) return -1;
  testing::Gate& gate = h.NewGate();
  h.RegisterProbe("warm", nullptr, std::move(warm));
  h.RegisterProbe("blocked", &gate);
  h.MustCreate(BuiltinSpec("warmup", "warm"));
  h.MustCreate(BuiltinSpec("blocked", "blocked"));
  h.StartProcessor();
  h.Trigger("warmup", std::vector<std::string>(warmup, "null"));
  if (!h.events.WaitForJob(EventType::kRunSucceeded, "warmup", warmup)) return -1;
  h.Trigger("blocked", std::vector<std::string>(blocked_runs, "null"));
  if (!h.seen.WaitEntered(warmup + 2)) return -1;  // both workers are in a blocked handler
  auto pass = h.node().processor().ClaimOnce();
  EXPECT_TRUE(pass.ok()) << pass.status().ToString();
  auto running = h.store().ListRuns(
      "default", RunFilter{.job_id = "blocked", .state = RunState::kRunning, .limit = 1000});
  EXPECT_TRUE(running.ok()) << running.status().ToString();
  gate.Open();
  EXPECT_TRUE(h.events.WaitForJob(EventType::kRunSucceeded, "blocked", blocked_runs));
  return running.ok() ? static_cast<int>(running->items.size()) : -1;
}

// After short attempts, runs are claimed for the busy workers before they are free (what they
// get through in the prefetch window at their pace, at most 8 x concurrency per pass)...
TEST(EnginePrefetchTest, AfterShortAttemptsRunsAreClaimedBeyondTheBusyWorkers) {
  const int running = RunningBeyondBusyWorkers(nullptr, 20, 40);
  EXPECT_GT(running, 2) << "nothing was claimed beyond the two busy workers";
  // Two passes at most (the dispatcher's and the test's) of 8 x 2 runs each.
  EXPECT_LE(running, 2 + 2 * 16);
}

// ... and after long ones (100 ms: 10 ms of prefetch is a tenth of one), a run waits in the
// store for a free worker, where another node can take it.
TEST(EnginePrefetchTest, AfterLongAttemptsNothingIsClaimedBeyondTheBusyWorkers) {
  const auto slow = [](RunContext&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the work: not a synchronisation
    return Status::Ok();
  };
  EXPECT_EQ(RunningBeyondBusyWorkers(slow, 2, 6), 2);
}

// ... and after many short ones and then one long one: the pace follows a longer attempt at
// once (a mean that came down slowly would go on prefetching runs that wait behind long ones).
TEST(EnginePrefetchTest, AfterOneLongAttemptNothingIsClaimedBeyondTheBusyWorkers) {
  const auto last_is_slow = [calls = std::make_shared<std::atomic<int>>(0)](RunContext&) {
    if (++*calls == 21) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the work
    }
    return Status::Ok();
  };
  EXPECT_EQ(RunningBeyondBusyWorkers(last_is_slow, 21, 6), 2);
}

// Runs that become available between the two claims of one dispatcher pass (the free
// workers' claim, then claim-ahead's) are left for a free worker, here or on another node:
// claim-ahead takes only runs not yet available. (Before, the second claim took them too, up
// to what the workers get through in a second.)
class RaceStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Result<std::vector<RunRecord>> ClaimRuns(const ClaimRequest& r) override {
    if (r.horizon && between) std::exchange(between, nullptr)();
    return StoreWrapper::ClaimRuns(r);
  }
  std::function<void()> between;  // called once, before the first claim-ahead claim
};

TEST(EngineClaimAheadTest, RunsThatBecomeAvailableDuringAPassAreLeftForAFreeWorker) {
  FakeClock clock(kT0);
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok());
  auto store = std::make_shared<RaceStore>(**sqlite);
  auto node = Node::Create({.store = store, .node_id = "n1", .concurrency = 2, .clock = &clock});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  Node& n = **node;
  ASSERT_TRUE(n.jobs().Create(BuiltinSpec("j")).ok());
  store->between = [&] { ASSERT_TRUE(n.jobs().Trigger("default", "j", {"1", "2", "3"}).ok()); };

  auto claimed = n.processor().ClaimOnce();  // the processor's threads are not started
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  EXPECT_EQ(*claimed, 0);
  auto running = n.store().ListRuns("default", RunFilter{.state = RunState::kRunning});
  ASSERT_TRUE(running.ok());
  EXPECT_TRUE(running->items.empty()) << "claim-ahead took runs available now";
  // The next pass claims them for its two free workers.
  claimed = n.processor().ClaimOnce();
  ASSERT_TRUE(claimed.ok());
  EXPECT_EQ(*claimed, 2);
}

// ---- Dependencies --------------------------------------------------------------------------

JobSpec DependentSpec(const std::string& id, std::vector<std::string> deps,
                      const std::string& handler = "noop") {
  JobSpec spec = BuiltinSpec(id, handler);
  spec.depends_on = std::move(deps);
  return spec;
}

TEST(EngineDependencyTest, AChainRunsInOrderAfterTheFirstIsTriggered) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("record");
  h.MustCreate(BuiltinSpec("A", "record"));
  h.MustCreate(DependentSpec("B", {"A"}, "record"));
  h.MustCreate(DependentSpec("C", {"B"}, "record"));
  h.StartProcessor();
  h.StartDependencies();
  h.Advance(1s);  // runs finish after the jobs were created (the barrier's start)

  const std::string a = h.Trigger("A").at(0);
  ASSERT_TRUE(h.events.WaitForJob(EventType::kRunSucceeded, "C"));

  std::vector<std::string> order_jobs;
  for (const std::string& run_id : h.seen.Order())
    order_jobs.push_back(run_id.substr(0, run_id.find('@')));
  EXPECT_EQ(order_jobs, (std::vector<std::string>{"A", "B", "C"}));
  for (const std::string job : {"B", "C"}) {
    SCOPED_TRACE(job);
    const std::vector<RunRecord> runs = h.Runs(job);
    ASSERT_EQ(runs.size(), 1u) << Describe(runs);
    EXPECT_EQ(runs[0].reason, RunReason::kDependency);
    EXPECT_EQ(runs[0].id.rfind(std::string(job) + "@d", 0), 0u) << runs[0].id;
    EXPECT_EQ(runs[0].state, RunState::kSucceeded);
  }
  EXPECT_EQ(h.Run(a)->state, RunState::kSucceeded);
}

TEST(EngineDependencyTest, FanInTriggersOnlyWhenEveryDependencySucceededAndOnlyOnce) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("A"));
  h.MustCreate(BuiltinSpec("B"));
  h.MustCreate(DependentSpec("C", {"A", "B"}));
  h.StartProcessor();
  DependencyActor& deps = h.node().dependencies();

  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, h.Trigger("A").at(0)));
  auto n = deps.Evaluate("default", "C");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0) << "B has not succeeded yet";
  EXPECT_TRUE(h.Runs("C").empty());

  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, h.Trigger("B").at(0)));
  n = deps.Evaluate("default", "C");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  n = deps.Evaluate("default", "C");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0) << "the same successes must not trigger C twice";
  std::vector<RunRecord> runs = h.Runs("C");
  ASSERT_EQ(runs.size(), 1u) << Describe(runs);
  EXPECT_EQ(runs[0].reason, RunReason::kDependency);
  h.node().processor().Wake();
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, runs[0].id));

  // A alone again: not enough for a second trigger.
  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, h.Trigger("A").at(0)));
  n = deps.Evaluate("default", "C");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(h.Runs("C").size(), 1u);
}

TEST(EngineDependencyTest, AFailedDependencyTurnsThePendingTriggerIntoASkippedRun) {
  std::atomic<bool> fail{true};  // declared before the harness: the handler uses it
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("maybe-fail", nullptr, [&fail](RunContext&) {
    return fail ? Status(StatusCode::kInternal, "A broke") : Status::Ok();
  });
  h.MustCreate(BuiltinSpec("A", "maybe-fail"));
  h.MustCreate(DependentSpec("B", {"A"}));
  h.StartProcessor();
  DependencyActor& deps = h.node().dependencies();

  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunFailed, h.Trigger("A").at(0)));
  auto n = deps.Evaluate("default", "B");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  std::vector<RunRecord> runs = h.Runs("B");
  ASSERT_EQ(runs.size(), 1u) << Describe(runs);
  EXPECT_EQ(runs[0].state, RunState::kSkipped);
  EXPECT_EQ(runs[0].error, "dependency_failed: A");
  EXPECT_EQ(runs[0].reason, RunReason::kDependency);
  EXPECT_EQ(runs[0].attempt, 0);
  n = deps.Evaluate("default", "B");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0) << "the same failure must not be recorded twice";

  // A later success of A triggers B normally.
  fail = false;
  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, h.Trigger("A").at(0)));
  n = deps.Evaluate("default", "B");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  runs = h.Runs("B");
  ASSERT_EQ(runs.size(), 2u) << Describe(runs);
  EXPECT_EQ(CountState(runs, RunState::kSkipped), 1) << Describe(runs);
  EXPECT_EQ(CountState(runs, RunState::kSkipped) + CountState(runs, RunState::kQueued) +
                CountState(runs, RunState::kRunning) + CountState(runs, RunState::kSucceeded),
            2)
      << Describe(runs);
}

// A dependent resumed after its dependency succeeded is evaluated at the next pass, not at the
// next full scan (30 s) or the dependency's next run.
TEST(EngineDependencyTest, ADependentResumedAfterItsDependencySucceededRunsAtTheNextPass) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("A", "noop"));
  h.MustCreate(DependentSpec("B", {"A"}));
  ASSERT_TRUE(h.node().jobs().Pause("default", "B").value());
  h.StartProcessor();
  DependencyActor& deps = h.node().dependencies();
  h.Advance(1s);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, h.Trigger("A").at(0)));
  auto n = deps.Tick();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0) << "B is paused";

  ASSERT_TRUE(h.node().jobs().Resume("default", "B").value());
  n = deps.Tick();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1) << "the resume marks B for the next pass";
  const std::vector<RunRecord> runs = h.Runs("B");
  ASSERT_EQ(runs.size(), 1u) << Describe(runs);
  EXPECT_EQ(runs[0].reason, RunReason::kDependency);
}

TEST(EngineDependencyTest, ACycleIsRejectedAtWriteTime) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("A"));
  h.MustCreate(DependentSpec("B", {"A"}));
  auto cycle = h.node().jobs().Put(DependentSpec("A", {"B"}), std::nullopt);
  ASSERT_FALSE(cycle.ok());
  EXPECT_EQ(cycle.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cycle.status().field(), "depends_on");
  EXPECT_TRUE(h.Job("A")->spec.depends_on.empty()) << "the rejected write must change nothing";

  // A longer cycle, created rather than replaced.
  h.MustCreate(DependentSpec("C", {"B"}));
  auto longer = h.node().jobs().Put(DependentSpec("A", {"C"}), std::nullopt);
  ASSERT_FALSE(longer.ok());
  EXPECT_EQ(longer.status().code(), StatusCode::kInvalidArgument);

  auto self = h.Create(DependentSpec("S", {"S"}));
  ASSERT_FALSE(self.ok());
  EXPECT_EQ(self.status().code(), StatusCode::kInvalidArgument);
}

TEST(EngineDependencyTest, DependsOnWithATimeScheduleIsRejected) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("A"));
  JobSpec spec = CronSpec("D", "* * * * *");
  spec.depends_on = {"A"};
  auto created = h.Create(spec);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(created.status().field(), "depends_on");
  EXPECT_FALSE(h.Job("D"));
}

// ---- Reaper --------------------------------------------------------------------------------

TEST(EngineReaperTest, AnExpiredLeaseEndsTheAttemptAsLeaseLostAndTheOldFenceIsRejected) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("r"));
  const std::string id = h.Trigger("r").at(0);

  // A node claims the run and then dies: nobody renews its lease.
  auto claimed = h.store().ClaimRuns(
      {.node = "dead-node", .now = h.clock.Now(), .lease = Duration(15000), .max_runs = 1});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u);
  const int64_t old_fence = (*claimed)[0].fence;

  h.Advance(14s);
  auto reaped = h.node().reaper().Tick();
  ASSERT_TRUE(reaped.ok()) << reaped.status().ToString();
  EXPECT_EQ(*reaped, 0) << "the lease has not expired yet";
  EXPECT_EQ(h.Run(id)->state, RunState::kRunning);

  h.Advance(1001ms);
  reaped = h.node().reaper().Tick();
  ASSERT_TRUE(reaped.ok()) << reaped.status().ToString();
  EXPECT_EQ(*reaped, 1);
  auto run = h.Run(id);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kQueued);
  EXPECT_EQ(run->leases_lost, 1);
  ASSERT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].outcome, "lease_lost");
  EXPECT_EQ(run->attempts[0].node, "dead-node");

  // Another node claims it again: a new attempt with a new fence.
  claimed = h.store().ClaimRuns(
      {.node = "node-2", .now = h.clock.Now(), .lease = Duration(15000), .max_runs = 1});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u);
  const int64_t new_fence = (*claimed)[0].fence;
  EXPECT_GT(new_fence, old_fence);
  EXPECT_EQ((*claimed)[0].attempt, 2);

  // The dead node wakes up and reports: rejected, nothing recorded.
  Status stale = h.store().Complete({.tenant = "default",
                                     .run_id = id,
                                     .fence = old_fence,
                                     .now = h.clock.Now(),
                                     .state = RunState::kSucceeded,
                                     .attempt_outcome = "succeeded"});
  EXPECT_EQ(stale.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(stale.message(), "stale_token");
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kRunning);
  EXPECT_EQ(run->node, "node-2");

  Status fresh = h.store().Complete({.tenant = "default",
                                     .run_id = id,
                                     .fence = new_fence,
                                     .now = h.clock.Now(),
                                     .state = RunState::kSucceeded,
                                     .attempt_outcome = "succeeded"});
  EXPECT_TRUE(fresh.ok()) << fresh.ToString();
  run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  ASSERT_EQ(run->attempts.size(), 2u);
  EXPECT_EQ(run->attempts[1].outcome, "succeeded");
  EXPECT_EQ(run->attempts[1].node, "node-2");
}

TEST(EngineReaperTest, TheProcessorExecutesARunTheReaperQueuedAgain) {
  EngineHarness h;
  ASSERT_TRUE(h.ok());
  h.RegisterProbe("count");
  h.MustCreate(BuiltinSpec("r", "count"));
  const std::string id = h.Trigger("r").at(0);
  auto claimed = h.store().ClaimRuns(
      {.node = "dead-node", .now = h.clock.Now(), .lease = Duration(15000), .max_runs = 1});
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  h.StartProcessor();
  h.Advance(16s);
  auto reaped = h.node().reaper().Tick();  // wakes the processor
  ASSERT_TRUE(reaped.ok());
  ASSERT_EQ(*reaped, 1);
  ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, id));
  auto run = h.Run(id);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->attempt, 2);
  ASSERT_TRUE(h.seen.Get(id));
  EXPECT_EQ(h.seen.Get(id)->attempt, 2) << "the handler sees the attempt number";
}

// ---- Janitor -------------------------------------------------------------------------------

TEST(EngineJanitorTest, OldRunsBeyondTheNewestNPerJobAreDeleted) {
  HarnessOptions options;
  options.keep_runs_per_job = 3;
  options.keep_runs_for = Duration(3600 * 1000);  // 1 h
  EngineHarness h(options);
  ASSERT_TRUE(h.ok());
  h.MustCreate(BuiltinSpec("j"));
  h.StartProcessor();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(h.Trigger("j").at(0));
    ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, ids.back()));
    h.Advance(1min);
  }

  h.Advance(30min);  // beyond the newest 3, but younger than 1 h: kept
  auto deleted = h.node().janitor().Tick();
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 0);
  EXPECT_EQ(h.Runs("j").size(), 5u);

  h.Advance(2h);
  deleted = h.node().janitor().Tick();
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2);
  std::vector<std::string> left = Ids(h.Runs("j"));
  std::sort(left.begin(), left.end());
  std::vector<std::string> newest(ids.begin() + 2, ids.end());
  std::sort(newest.begin(), newest.end());
  EXPECT_EQ(left, newest);
}

// ---- The public JobScheduler API -----------------------------------------------------------

SchedulerOptions ApiOptions(FakeClock* clock) {
  SchedulerOptions o;
  o.store_url = "sqlite::memory:";
  o.node_id = "api-node";
  o.concurrency = 2;
  o.clock = clock;
  return o;
}

Status Noop(RunContext&) { return Status::Ok(); }

TEST(JobSchedulerApiTest, ReturnValuesForExistingAndMissingJobs) {
  FakeClock clock(kT0);
  JobScheduler s(ApiOptions(&clock));
  EXPECT_TRUE(s.scheduleCron("a", "* * * * *", Noop));
  EXPECT_FALSE(s.scheduleCron("a", "*/5 * * * *", Noop)) << "replacing returns false";
  ASSERT_TRUE(s.getJob("a"));
  EXPECT_EQ(s.getJob("a")->spec.schedule.cron, "*/5 * * * *");
  EXPECT_EQ(s.getJob("a")->next_fire, kT0 + 5min);

  EXPECT_TRUE(s.scheduleCron("ny", "30 2 * * *", "America/New_York", Noop));
  EXPECT_EQ(s.getJob("ny")->spec.schedule.timezone, "America/New_York");

  EXPECT_TRUE(s.scheduleOnce("b", kT0 + 1h, Noop));
  EXPECT_FALSE(s.scheduleOnce("b", kT0 + 2h, Noop));
  EXPECT_EQ(s.getJob("b")->next_fire, kT0 + 2h);

  EXPECT_TRUE(s.pauseJob("a"));
  EXPECT_FALSE(s.pauseJob("a")) << "already paused";
  EXPECT_FALSE(s.pauseJob("missing"));
  EXPECT_EQ(s.getJob("a")->state, JobState::kPaused);
  EXPECT_TRUE(s.resumeJob("a"));
  EXPECT_FALSE(s.resumeJob("a")) << "not paused";
  EXPECT_FALSE(s.resumeJob("missing"));
  EXPECT_EQ(s.getJob("a")->state, JobState::kActive);

  EXPECT_TRUE(s.cancelJob("a"));
  EXPECT_FALSE(s.cancelJob("a"));
  EXPECT_FALSE(s.cancelJob("missing"));
  EXPECT_FALSE(s.getJob("a"));
  EXPECT_FALSE(s.getRun("a@1"));
  EXPECT_FALSE(s.cancelRun("a@1"));
}

TEST(JobSchedulerApiTest, InvalidInputThrowsErrorNamingTheField) {
  FakeClock clock(kT0);
  JobScheduler s(ApiOptions(&clock));

  try {
    s.scheduleCron("bad", "0 25 * * *", Noop);
    ADD_FAILURE() << "an invalid cron expression must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.status().field(), "schedule.cron");
    EXPECT_NE(std::string(e.what()).find("hour"), std::string::npos) << e.what();
  }
  try {
    s.scheduleCron("bad", "* * * * *", "Mars/Olympus_Mons", Noop);
    ADD_FAILURE() << "an unknown time zone must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.status().field(), "schedule.timezone");
  }
  EXPECT_FALSE(s.getJob("bad"));

  JobSpec spec = BuiltinSpec("c");
  spec.retry.max_attempts = 0;
  try {
    s.schedule(spec);
    ADD_FAILURE() << "schedule() with retry.max_attempts 0 must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.status().field(), "retry.max_attempts");
    EXPECT_NE(std::string(e.what()).find("retry.max_attempts"), std::string::npos) << e.what();
  }
  JobSpec bad_id = BuiltinSpec("no spaces allowed");
  EXPECT_THROW(s.schedule(bad_id), Error);

  try {
    s.trigger("unknown-job");
    ADD_FAILURE() << "trigger on an unknown job must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
  }
}

TEST(JobSchedulerApiTest, EventCallbacksFireForRunsOfAStartedScheduler) {
  // Declared before the scheduler: its threads use them until it stops.
  FakeClock clock(kT0);
  testing::EventLog log;
  std::mutex mu;
  std::vector<std::string> ran;
  std::vector<std::string> payloads;
  JobScheduler s(ApiOptions(&clock));
  for (EventType t : testing::kAllEventTypes) {
    s.on(t, [&log](const SchedulerEvent& e) { log.Push(e); });
  }
  std::atomic<int> removed_calls{0};
  const int64_t removed =
      s.on(EventType::kRunSucceeded, [&](const SchedulerEvent&) { ++removed_calls; });
  s.off(removed);
  EXPECT_TRUE(s.scheduleCron("tick", "* * * * *", [&](RunContext& ctx) {
    std::lock_guard lock(mu);
    ran.push_back(ctx.run_id());
    payloads.push_back(ctx.payload());
    return Status::Ok();
  }));
  EXPECT_EQ(log.Count(EventType::kJobChanged, "tick"), 1);

  s.start();
  clock.Advance(1min);
  s.node().scheduler().Wake();
  const std::string scheduled = RunId("tick", kT0 + 1min);
  ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, scheduled));
  EXPECT_TRUE(log.Seen(EventType::kRunStarted, scheduled));

  const std::vector<std::string> manual = s.trigger("tick", {R"({"x":1})"});
  ASSERT_EQ(manual.size(), 1u);
  ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, manual[0]));
  s.stop();

  auto run = s.getRun(manual[0]);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->reason, RunReason::kManual);
  EXPECT_EQ(removed_calls.load(), 0) << "a callback removed with off() was called";
  const std::vector<RunRecord> runs = s.listRuns("tick");
  EXPECT_EQ(runs.size(), 2u) << Describe(runs);
  std::lock_guard lock(mu);
  EXPECT_EQ(ran, (std::vector<std::string>{scheduled, manual[0]}));
  EXPECT_EQ(payloads.back(), R"({"x":1})");
}

// The status of the Error `fn` throws (kOk if it throws none).
template <typename Fn>
Status Thrown(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.status();
  }
  return Status::Ok();
}

// A rejected call changes nothing: not the stored job, not the handler its runs call.
TEST(JobSchedulerApiTest, ARejectedScheduleKeepsTheJobAndItsHandler) {
  FakeClock clock(kT0);
  JobScheduler s(ApiOptions(&clock));
  std::atomic<int> first{0}, second{0};
  ASSERT_TRUE(s.scheduleOnce("x", kT0 + 1min, [&](RunContext&) {
    ++first;
    return Status::Ok();
  }));
  // The year 12110: beyond what the store can write and read back.
  const Status far = Thrown([&] {
    s.scheduleOnce("x", FromUnixMillis(320000000000000), [&](RunContext&) {
      ++second;
      return Status::Ok();
    });
  });
  EXPECT_EQ(far.code(), StatusCode::kInvalidArgument) << far.ToString();
  EXPECT_EQ(far.field(), "schedule.at");
  JobSpec long_timeout = BuiltinSpec("y");
  long_timeout.timeout = std::chrono::days(400);
  const Status timeout = Thrown([&] { s.schedule(long_timeout); });
  EXPECT_EQ(timeout.code(), StatusCode::kInvalidArgument) << timeout.ToString();
  EXPECT_EQ(timeout.field(), "timeout_ms");
  EXPECT_FALSE(s.getJob("y"));

  ASSERT_TRUE(s.getJob("x"));
  EXPECT_EQ(s.getJob("x")->next_fire, kT0 + 1min);
  testing::EventLog log;
  s.on(EventType::kRunSucceeded, [&log](const SchedulerEvent& e) { log.Push(e); });
  s.start();
  clock.Advance(1min);
  s.node().scheduler().Wake();
  ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, RunId("x", kT0 + 1min)));
  s.stop();
  EXPECT_EQ(first.load(), 1);
  EXPECT_EQ(second.load(), 0) << "the rejected call's handler replaced the job's";
}

TEST(JobSchedulerApiTest, HandlersMustBeGivenAndMayNotReplaceTheShippedOnes) {
  FakeClock clock(kT0);
  JobScheduler s(ApiOptions(&clock));
  for (const char* id : {"noop", "sleep"}) {
    const Status shipped = Thrown([&] { s.scheduleCron(id, "* * * * *", Noop); });
    EXPECT_EQ(shipped.code(), StatusCode::kInvalidArgument) << id;
    EXPECT_EQ(shipped.field(), "id") << shipped.ToString();
    EXPECT_FALSE(s.getJob(id));
    EXPECT_EQ(Thrown([&] { s.registerHandler(id, Noop); }).field(), "name");
  }
  const Status empty = Thrown([&] { s.scheduleCron("e", "* * * * *", JobHandler()); });
  EXPECT_EQ(empty.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.field(), "handler");
  EXPECT_FALSE(s.getJob("e"));
  EXPECT_EQ(Thrown([&] { s.registerHandler("e", JobHandler()); }).field(), "handler");
  EXPECT_EQ(Thrown([&] { s.listRuns("e", 0); }).field(), "limit");
}

// A program schedules its jobs at every start: a job an operator paused stays paused.
TEST(JobSchedulerApiTest, SchedulingAPausedJobAgainKeepsItPaused) {
  FakeClock clock(kT0);
  JobScheduler s(ApiOptions(&clock));
  ASSERT_TRUE(s.scheduleCron("p", "* * * * *", Noop));
  ASSERT_TRUE(s.pauseJob("p"));
  EXPECT_FALSE(s.scheduleCron("p", "* * * * *", Noop));
  EXPECT_EQ(s.getJob("p")->state, JobState::kPaused);
  EXPECT_FALSE(s.scheduleCron("p", "*/5 * * * *", Noop));
  EXPECT_EQ(s.getJob("p")->state, JobState::kPaused);
  EXPECT_EQ(s.getJob("p")->spec.schedule.cron, "*/5 * * * *");
  EXPECT_TRUE(s.resumeJob("p"));
}

// Two schedulers of one process on one database file (a worker and, say, a client that only
// fires and reads) are two nodes: the second does not take the first's node id, so it does not
// take the first's running attempt for its own, left over from an earlier run, and hand it back
// to be run again beside it. The same id given to both is refused.
TEST(JobSchedulerApiTest, TwoSchedulersOfOneProcessOnOneFileAreTwoNodes) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("two-in-one-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  testing::EventLog log;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> began{0};
  SchedulerOptions worker_options;
  worker_options.store_url = "sqlite:" + (dir / "jobs.db").string();
  {
    JobScheduler worker(worker_options);
    worker.on(EventType::kRunSucceeded, [&log](const SchedulerEvent& e) { log.Push(e); });
    worker.on(EventType::kRunStarted, [&log](const SchedulerEvent& e) { log.Push(e); });
    JobSpec spec;
    spec.id = "slow";
    spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = "slow"};
    worker.registerHandler("slow", [&](RunContext&) {
      ++began;
      released.wait();
      return Status::Ok();
    });
    worker.schedule(spec);
    worker.start();
    const std::string run_id = worker.trigger("slow").at(0);
    ASSERT_TRUE(log.Wait(EventType::kRunStarted, run_id));

    SchedulerOptions same_id = worker_options;
    same_id.node_id = worker.node().options().node_id;
    EXPECT_EQ(Thrown([&] { JobScheduler clash(same_id); }).field(), "node_id");

    SchedulerOptions client_options = worker_options;
    client_options.execute = false;
    JobScheduler client(client_options);
    EXPECT_NE(client.node().options().node_id, worker.node().options().node_id);
    client.start();
    auto run = client.getRun(run_id);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->state, RunState::kRunning) << "not handed back";
    EXPECT_EQ(run->attempt, 1);
    release.set_value();
    ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, run_id));
    run = client.getRun(run_id);
    EXPECT_EQ(run->attempt, 1);
    EXPECT_EQ(run->leases_lost, 0);
    EXPECT_EQ(began.load(), 1);
    client.stop();
    worker.stop();
  }
  std::filesystem::remove_all(dir);
}

TEST(JobSchedulerApiTest, OptionsOutOfRangeAreRefused) {
  for (auto [mutate, field] :
       {std::pair<std::function<void(SchedulerOptions&)>, std::string>{
            [](SchedulerOptions& o) { o.shutdown_grace = Duration(-5); }, "shutdown_grace"},
        {[](SchedulerOptions& o) { o.kill_grace = Duration(-1); }, "kill_grace"},
        {[](SchedulerOptions& o) { o.keep_runs_per_job = 0; }, "keep_runs_per_job"},
        {[](SchedulerOptions& o) { o.keep_runs_for = Duration(-1); }, "keep_runs_for"},
        {[](SchedulerOptions& o) { o.concurrency = 5000; }, "concurrency"},
        {[](SchedulerOptions& o) { o.node_id = "a b/c"; }, "node_id"},
        {[](SchedulerOptions& o) { o.node_id = std::string(129, 'n'); }, "node_id"},
        {[](SchedulerOptions& o) {
           o.queues = {"a", "a b"};
         },
         "queues[1]"},
        {[](SchedulerOptions& o) { o.queues = {""}; }, "queues[0]"}}) {
    FakeClock clock(kT0);
    SchedulerOptions options = ApiOptions(&clock);
    mutate(options);
    const Status s = Thrown([&] { JobScheduler scheduler(std::move(options)); });
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(s.field(), field) << s.ToString();
  }
}

// stop() and start() from a handler would wait for the thread they run on: they are refused,
// and the scheduler goes on (before, the node was left half stopped and its destructor aborted
// the program). Two threads starting or stopping at once do it once.
TEST(JobSchedulerApiTest, StartAndStopAreRefusedOnTheSchedulersThreadsAndSerialised) {
  FakeClock clock(kT0);
  testing::EventLog log;
  std::mutex mu;
  std::vector<Status> from_handler;
  JobScheduler s(ApiOptions(&clock));
  s.on(EventType::kRunSucceeded, [&](const SchedulerEvent& e) {
    {
      std::lock_guard lock(mu);
      from_handler.push_back(Thrown([&] { s.stop(); }));
    }
    log.Push(e);
  });
  ASSERT_TRUE(s.scheduleCron("t", "* * * * *", [&](RunContext&) {
    std::lock_guard lock(mu);
    from_handler.push_back(Thrown([&] { s.stop(); }));
    from_handler.push_back(Thrown([&] { s.start(); }));
    return Status::Ok();
  }));
  {
    std::thread a([&] { s.start(); }), b([&] { s.start(); });
    a.join();
    b.join();
  }
  for (int minute = 1; minute <= 2; ++minute) {
    clock.Advance(1min);
    s.node().scheduler().Wake();
    ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, RunId("t", kT0 + minute * 1min)))
        << "minute " << minute << ": the scheduler goes on";
  }
  {
    std::thread a([&] { s.stop(); }), b([&] { s.stop(); });
    a.join();
    b.join();
  }
  EXPECT_FALSE(s.node().running());
  std::lock_guard lock(mu);
  ASSERT_EQ(from_handler.size(), 6u);
  for (const Status& st : from_handler) {
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
    EXPECT_NE(st.message().find("another thread"), std::string::npos) << st.ToString();
  }
}

// With a cgroup parent, each shell attempt runs in a cgroup of its own under it, removed after
// the attempt.
TEST(JobSchedulerApiTest, ShellRunsGetTheirOwnCgroupUnderTheConfiguredParent) {
  std::optional<std::string> parent = testing::MakeCgroupDir("jobsched-engine-test");
  if (!parent) GTEST_SKIP() << "no writable cgroup v2 hierarchy";
  FakeClock clock(kT0);
  testing::EventLog log;
  SchedulerOptions options = ApiOptions(&clock);
  options.cgroup_parent = *parent;
  {
    JobScheduler s(std::move(options));
    s.on(EventType::kRunSucceeded, [&log](const SchedulerEvent& e) { log.Push(e); });
    JobSpec spec{.id = "where"};
    spec.handler = {.type = HandlerSpec::Type::kShell,
                    .command = {"/bin/cat", "/proc/self/cgroup"}};
    spec.limits.memory_mb = 512;
    s.schedule(spec);
    s.start();
    const std::vector<std::string> runs = s.trigger("where");
    ASSERT_EQ(runs.size(), 1u);
    ASSERT_TRUE(log.Wait(EventType::kRunSucceeded, runs[0]));
    s.stop();
    auto run = s.getRun(runs[0]);
    ASSERT_TRUE(run);
    const std::string own = std::filesystem::path(*parent).filename().string();
    EXPECT_NE(run->output.find("/" + own + "/jobsched-"), std::string::npos) << run->output;
  }
  EXPECT_EQ(rmdir(parent->c_str()), 0) << "a per-run cgroup was left behind under " << *parent;
}

}  // namespace
}  // namespace jobsched
