// Tests of the scheduling policy (docs/engine.md): occurrences of a schedule, misfire handling,
// overlap decisions, retry backoff and run ids.
#include "core/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
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
using ::testing::MatchesRegex;

TimePoint T(std::string_view text) {
  Result<TimePoint> t = ParseRfc3339(text);
  EXPECT_TRUE(t.ok()) << text << ": " << t.status().ToString();
  return t.ok() ? *t : TimePoint{};
}

// Instants as text so that failures read as times.
std::string Fmt(const std::optional<TimePoint>& t) { return t ? FormatRfc3339(*t) : "none"; }

Schedule Cron(std::string expr, std::string tz = "UTC") {
  Schedule s;
  s.kind = Schedule::Kind::kCron;
  s.cron = std::move(expr);
  s.timezone = std::move(tz);
  return s;
}

Schedule At(TimePoint at) {
  Schedule s;
  s.kind = Schedule::Kind::kAt;
  s.at = at;
  return s;
}

Schedule Every(Duration every) {
  Schedule s;
  s.kind = Schedule::Kind::kEvery;
  s.every = every;
  return s;
}

Occurrences Make(const Schedule& s, TimePoint anchor) {
  Result<Occurrences> o = Occurrences::For(s, anchor);
  EXPECT_TRUE(o.ok()) << o.status().ToString();
  if (!o.ok()) std::abort();
  return std::move(o).value();
}

// --- Occurrences: cron --------------------------------------------------------------------------

TEST(OccurrencesTest, CronUtc) {
  Occurrences o = Make(Cron("0 2 * * *"), T("2024-05-15T10:30:00Z"));
  EXPECT_EQ(Fmt(o.First()), "2024-05-16T02:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-16T02:00:00Z"))), "2024-05-17T02:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-16T01:59:59.999Z"))), "2024-05-16T02:00:00.000Z");
  EXPECT_EQ(Fmt(o.AtOrAfter(T("2024-05-16T02:00:00Z"))), "2024-05-16T02:00:00.000Z");
}

TEST(OccurrencesTest, CronFirstIsStrictlyAfterTheAnchor) {
  Occurrences o = Make(Cron("0 * * * *"), T("2024-05-15T10:00:00Z"));
  EXPECT_EQ(Fmt(o.First()), "2024-05-15T11:00:00.000Z");
}

// Europe/Berlin moves from CET (+01) to CEST (+02) on 2024-03-31: noon local moves an hour
// earlier in UTC.
TEST(OccurrencesTest, CronInADstZone) {
  Occurrences o = Make(Cron("0 12 * * *", "Europe/Berlin"), T("2024-03-30T00:00:00Z"));
  std::optional<TimePoint> t = o.First();
  EXPECT_EQ(Fmt(t), "2024-03-30T11:00:00.000Z");
  t = o.After(*t);
  EXPECT_EQ(Fmt(t), "2024-03-31T10:00:00.000Z");
  t = o.After(*t);
  EXPECT_EQ(Fmt(t), "2024-04-01T10:00:00.000Z");
}

// 02:30 does not exist in New York on 2024-03-10: a fixed-time job fires at 03:00 EDT.
TEST(OccurrencesTest, CronInASpringForwardGap) {
  Occurrences o = Make(Cron("30 2 * * *", "America/New_York"), T("2024-03-09T12:00:00Z"));
  std::optional<TimePoint> t = o.First();
  EXPECT_EQ(Fmt(t), "2024-03-10T07:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(*t)), "2024-03-11T06:30:00.000Z");
}

TEST(OccurrencesTest, BadCronOrZoneIsInvalidArgument) {
  const TimePoint anchor = T("2024-01-01T00:00:00Z");
  Result<Occurrences> bad_cron = Occurrences::For(Cron("61 * * * *"), anchor);
  EXPECT_EQ(StatusCodeName(bad_cron.status().code()), "invalid_argument");
  Result<Occurrences> bad_zone = Occurrences::For(Cron("0 * * * *", "Mars/Base"), anchor);
  EXPECT_EQ(StatusCodeName(bad_zone.status().code()), "invalid_argument");
}

// --- Occurrences: at ----------------------------------------------------------------------------

TEST(OccurrencesTest, AtFiresOnce) {
  const TimePoint at = T("2026-06-01T10:00:00Z");
  Occurrences o = Make(At(at), T("2026-05-01T00:00:00Z"));
  EXPECT_EQ(Fmt(o.First()), Fmt(at));
  EXPECT_EQ(Fmt(o.After(at - milliseconds(1))), Fmt(at));
  EXPECT_EQ(Fmt(o.AtOrAfter(at)), Fmt(at));
  EXPECT_EQ(Fmt(o.After(at)), "none");
  EXPECT_EQ(Fmt(o.After(at + hours(1))), "none");
}

// A one-time job created after its instant is still due once (as a late or missed run).
TEST(OccurrencesTest, AtInThePastIsStillTheFirstOccurrence) {
  const TimePoint at = T("2026-06-01T10:00:00Z");
  Occurrences o = Make(At(at), at + hours(2));
  EXPECT_EQ(Fmt(o.First()), Fmt(at));
}

TEST(OccurrencesTest, AtAfterEndAtNeverFires) {
  Schedule s = At(T("2026-06-01T10:00:00Z"));
  s.end_at = T("2026-06-01T09:00:00Z");
  Occurrences o = Make(s, T("2026-05-01T00:00:00Z"));
  EXPECT_EQ(Fmt(o.First()), "none");
  EXPECT_EQ(Fmt(o.After(T("2026-05-01T00:00:00Z"))), "none");
}

// start_at means "no fire before": a one-time instant before it never fires.
TEST(OccurrencesTest, AtBeforeStartAtNeverFires) {
  Schedule s = At(T("2026-06-01T10:00:00Z"));
  s.start_at = T("2026-06-01T11:00:00Z");
  Occurrences o = Make(s, T("2026-05-01T00:00:00Z"));
  EXPECT_EQ(Fmt(o.After(T("2026-05-01T00:00:00Z"))), "none");
  EXPECT_EQ(Fmt(o.First()), "none");
}

// --- Occurrences: every_ms ----------------------------------------------------------------------

TEST(OccurrencesTest, EveryCountsFromTheAnchor) {
  const TimePoint anchor = T("2026-01-01T00:00:00Z");
  Occurrences o = Make(Every(seconds(90)), anchor);
  EXPECT_EQ(Fmt(o.First()), "2026-01-01T00:01:30.000Z");
  EXPECT_EQ(Fmt(o.After(anchor)), "2026-01-01T00:01:30.000Z");
  EXPECT_EQ(Fmt(o.After(anchor - hours(1))), "2026-01-01T00:01:30.000Z");
  EXPECT_EQ(Fmt(o.After(T("2026-01-01T00:01:30Z"))), "2026-01-01T00:03:00.000Z");
  EXPECT_EQ(Fmt(o.After(anchor + seconds(100))), "2026-01-01T00:03:00.000Z");
  EXPECT_EQ(Fmt(o.AtOrAfter(T("2026-01-01T00:03:00Z"))), "2026-01-01T00:03:00.000Z");
  EXPECT_EQ(Fmt(o.After(anchor + hours(24) + seconds(1))), "2026-01-02T00:01:30.000Z");
}

TEST(OccurrencesTest, EveryCountsFromStartAtWhichIsTheFirst) {
  const TimePoint anchor = T("2026-01-01T00:00:00Z");
  Schedule s = Every(seconds(90));
  s.start_at = T("2026-01-01T12:00:00Z");
  Occurrences o = Make(s, anchor);
  EXPECT_EQ(Fmt(o.First()), "2026-01-01T12:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(anchor)), "2026-01-01T12:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(*s.start_at - milliseconds(1))), "2026-01-01T12:00:00.000Z");
  EXPECT_EQ(Fmt(o.AtOrAfter(*s.start_at)), "2026-01-01T12:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(*s.start_at)), "2026-01-01T12:01:30.000Z");
}

// A job created after its start_at keeps start_at's grid.
TEST(OccurrencesTest, EveryWithStartAtInThePastKeepsItsGrid) {
  const TimePoint anchor = T("2026-01-01T00:00:00Z");
  Schedule s = Every(seconds(100));
  s.start_at = anchor - seconds(250);
  Occurrences o = Make(s, anchor);
  EXPECT_EQ(Fmt(o.First()), "2026-01-01T00:00:50.000Z");
}

TEST(OccurrencesTest, EveryStopsAtEndAt) {
  const TimePoint anchor = T("2026-01-01T00:00:00Z");
  Schedule s = Every(seconds(90));
  s.end_at = anchor + seconds(180);
  Occurrences o = Make(s, anchor);
  EXPECT_EQ(Fmt(o.After(anchor + seconds(90))), "2026-01-01T00:03:00.000Z");  // end_at itself
  EXPECT_EQ(Fmt(o.After(anchor + seconds(180))), "none");
  EXPECT_EQ(Fmt(o.After(anchor + hours(5))), "none");
}

// A non-positive interval (a spec that skipped validation, a corrupt record) must not reach
// After(), which would divide by zero or walk backwards.
TEST(OccurrencesTest, NonPositiveIntervalIsInvalidArgument) {
  for (Duration every : {Duration(0), Duration(-1000)}) {
    Result<Occurrences> o = Occurrences::For(Every(every), T("2026-01-01T00:00:00Z"));
    EXPECT_EQ(StatusCodeName(o.status().code()), "invalid_argument") << every.count();
  }
}

// --- Occurrences: start_at and end_at on cron ---------------------------------------------------

TEST(OccurrencesTest, CronStartAtIsTheLowerBound) {
  Schedule s = Cron("0 * * * *");
  s.start_at = T("2024-05-15T10:30:00Z");
  Occurrences o = Make(s, T("2024-05-15T08:00:00Z"));
  EXPECT_EQ(Fmt(o.First()), "2024-05-15T11:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-15T09:00:00Z"))), "2024-05-15T11:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-15T11:00:00Z"))), "2024-05-15T12:00:00.000Z");
}

TEST(OccurrencesTest, CronStartAtOnAnOccurrenceIncludesIt) {
  Schedule s = Cron("0 * * * *");
  s.start_at = T("2024-05-15T11:00:00Z");
  Occurrences o = Make(s, T("2024-05-15T08:00:00Z"));
  EXPECT_EQ(Fmt(o.First()), "2024-05-15T11:00:00.000Z");
}

TEST(OccurrencesTest, CronEndAtIsTheUpperBound) {
  Schedule s = Cron("0 * * * *");
  s.end_at = T("2024-05-15T12:00:00Z");
  Occurrences o = Make(s, T("2024-05-15T10:30:00Z"));
  EXPECT_EQ(Fmt(o.First()), "2024-05-15T11:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-15T11:00:00Z"))), "2024-05-15T12:00:00.000Z");
  EXPECT_EQ(Fmt(o.After(T("2024-05-15T12:00:00Z"))), "none");
  EXPECT_EQ(Fmt(o.After(T("2024-06-01T00:00:00Z"))), "none");

  s.end_at = T("2024-05-15T11:30:00Z");
  Occurrences o2 = Make(s, T("2024-05-15T10:30:00Z"));
  EXPECT_EQ(Fmt(o2.After(T("2024-05-15T11:00:00Z"))), "none");
}

TEST(OccurrencesTest, NoScheduleHasNoOccurrences) {
  Occurrences o = Make(Schedule{}, T("2024-05-15T10:30:00Z"));
  EXPECT_EQ(Fmt(o.First()), "none");
  EXPECT_EQ(Fmt(o.After(T("2024-05-15T10:30:00Z"))), "none");
}

// --- PlanFiring ---------------------------------------------------------------------------------

MisfirePolicy Policy(Misfire policy, Duration grace = seconds(60)) {
  return {.policy = policy, .grace = grace};
}

std::vector<std::string> Times(const FirePlan& plan) {
  std::vector<std::string> out;
  for (const PlannedRun& r : plan.runs) out.push_back(Fmt(r.scheduled_at));
  return out;
}

class PlanFiringHourlyTest : public ::testing::Test {
 protected:
  Occurrences hourly_ = Make(Cron("0 * * * *"), T("2024-05-15T00:00:00Z"));
  const TimePoint due_ = T("2024-05-15T10:00:00Z");
};

TEST_F(PlanFiringHourlyTest, OnTime) {
  for (Misfire m : {Misfire::kFireOnce, Misfire::kSkip, Misfire::kFireAll}) {
    SCOPED_TRACE(MisfireName(m));
    FirePlan plan = PlanFiring(hourly_, Policy(m), due_, due_);
    ASSERT_EQ(plan.runs.size(), 1u);
    EXPECT_EQ(Fmt(plan.runs[0].scheduled_at), "2024-05-15T10:00:00.000Z");
    EXPECT_EQ(plan.runs[0].reason, RunReason::kSchedule);
    EXPECT_FALSE(plan.runs[0].skipped);
    EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T11:00:00.000Z");
    EXPECT_FALSE(plan.complete);
  }
}

TEST_F(PlanFiringHourlyTest, LateWithinTheGraceRunsLateNotAsAMisfire) {
  for (Misfire m : {Misfire::kFireOnce, Misfire::kSkip, Misfire::kFireAll}) {
    for (Duration late : {Duration(1), Duration(30000), Duration(59999), Duration(60000)}) {
      SCOPED_TRACE(std::string(MisfireName(m)) + " late by " + std::to_string(late.count()));
      FirePlan plan = PlanFiring(hourly_, Policy(m), due_, due_ + late);
      ASSERT_EQ(plan.runs.size(), 1u);
      EXPECT_EQ(Fmt(plan.runs[0].scheduled_at), "2024-05-15T10:00:00.000Z");
      EXPECT_EQ(plan.runs[0].reason, RunReason::kSchedule);
      EXPECT_FALSE(plan.runs[0].skipped);
      EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T11:00:00.000Z");
      EXPECT_FALSE(plan.complete);
    }
  }
}

TEST_F(PlanFiringHourlyTest, OneMillisecondPastTheGraceIsAMisfire) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kFireOnce), due_, due_ + milliseconds(60001));
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(plan.runs[0].reason, RunReason::kMisfireCatchup);
}

TEST_F(PlanFiringHourlyTest, ZeroGraceMakesAnyLatenessAMisfire) {
  FirePlan on_time = PlanFiring(hourly_, Policy(Misfire::kFireOnce, Duration(0)), due_, due_);
  ASSERT_EQ(on_time.runs.size(), 1u);
  EXPECT_EQ(on_time.runs[0].reason, RunReason::kSchedule);
  FirePlan late =
      PlanFiring(hourly_, Policy(Misfire::kFireOnce, Duration(0)), due_, due_ + milliseconds(1));
  ASSERT_EQ(late.runs.size(), 1u);
  EXPECT_EQ(late.runs[0].reason, RunReason::kMisfireCatchup);
}

TEST_F(PlanFiringHourlyTest, FireOnceMakesOneCatchUpRun) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kFireOnce), due_, T("2024-05-15T13:30:00Z"));
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(Fmt(plan.runs[0].scheduled_at), "2024-05-15T10:00:00.000Z");
  EXPECT_EQ(plan.runs[0].reason, RunReason::kMisfireCatchup);
  EXPECT_FALSE(plan.runs[0].skipped);
  EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T14:00:00.000Z");
  EXPECT_FALSE(plan.complete);
}

// The 13:00 occurrence is only 30 s late: it is not part of the misfire and is due next.
TEST_F(PlanFiringHourlyTest, FireOnceLeavesOccurrencesWithinTheGraceForNextTime) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kFireOnce), due_, T("2024-05-15T13:00:30Z"));
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(plan.runs[0].reason, RunReason::kMisfireCatchup);
  EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T13:00:00.000Z");
}

TEST_F(PlanFiringHourlyTest, SkipRecordsEachMissedOccurrenceSkipped) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kSkip), due_, T("2024-05-15T13:30:00Z"));
  EXPECT_EQ(Times(plan),
            (std::vector<std::string>{"2024-05-15T10:00:00.000Z", "2024-05-15T11:00:00.000Z",
                                      "2024-05-15T12:00:00.000Z", "2024-05-15T13:00:00.000Z"}));
  for (const PlannedRun& r : plan.runs) {
    EXPECT_TRUE(r.skipped);
    EXPECT_NE(r.reason, RunReason::kManual);
    EXPECT_NE(r.reason, RunReason::kDependency);
    EXPECT_FALSE(r.error.empty());
  }
  EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T14:00:00.000Z");
  EXPECT_FALSE(plan.complete);
}

TEST_F(PlanFiringHourlyTest, SkipLeavesOccurrencesWithinTheGraceForNextTime) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kSkip), due_, T("2024-05-15T13:00:30Z"));
  EXPECT_EQ(Times(plan),
            (std::vector<std::string>{"2024-05-15T10:00:00.000Z", "2024-05-15T11:00:00.000Z",
                                      "2024-05-15T12:00:00.000Z"}));
  EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T13:00:00.000Z");
}

TEST_F(PlanFiringHourlyTest, FireAllMakesOneCatchUpRunEach) {
  FirePlan plan = PlanFiring(hourly_, Policy(Misfire::kFireAll), due_, T("2024-05-15T13:30:00Z"));
  EXPECT_EQ(Times(plan),
            (std::vector<std::string>{"2024-05-15T10:00:00.000Z", "2024-05-15T11:00:00.000Z",
                                      "2024-05-15T12:00:00.000Z", "2024-05-15T13:00:00.000Z"}));
  for (const PlannedRun& r : plan.runs) {
    EXPECT_EQ(r.reason, RunReason::kMisfireCatchup);
    EXPECT_FALSE(r.skipped);
  }
  EXPECT_EQ(Fmt(plan.next_fire), "2024-05-15T14:00:00.000Z");
  EXPECT_FALSE(plan.complete);
}

// Calling PlanFiring until nothing is due accounts for every occurrence exactly once.
TEST_F(PlanFiringHourlyTest, RepeatedPlansCoverEachOccurrenceOnce) {
  const TimePoint now = T("2024-05-15T13:00:30Z");
  for (Misfire m : {Misfire::kSkip, Misfire::kFireAll}) {
    SCOPED_TRACE(MisfireName(m));
    std::vector<std::string> seen;
    std::optional<TimePoint> next = due_;
    for (int i = 0; next && *next <= now && i < 10; ++i) {
      FirePlan plan = PlanFiring(hourly_, Policy(m), *next, now);
      for (const std::string& t : Times(plan)) seen.push_back(t);
      next = plan.next_fire;
    }
    EXPECT_EQ(seen,
              (std::vector<std::string>{"2024-05-15T10:00:00.000Z", "2024-05-15T11:00:00.000Z",
                                        "2024-05-15T12:00:00.000Z", "2024-05-15T13:00:00.000Z"}));
    EXPECT_EQ(Fmt(next), "2024-05-15T14:00:00.000Z");
  }
}

TEST(PlanFiringTest, EndAtCompletesTheJob) {
  Schedule s = Cron("0 * * * *");
  s.end_at = T("2024-05-15T11:00:00Z");
  Occurrences o = Make(s, T("2024-05-15T00:00:00Z"));

  FirePlan last = PlanFiring(o, Policy(Misfire::kFireOnce), T("2024-05-15T11:00:00Z"),
                             T("2024-05-15T11:00:00Z"));
  ASSERT_EQ(last.runs.size(), 1u);
  EXPECT_EQ(last.runs[0].reason, RunReason::kSchedule);
  EXPECT_EQ(Fmt(last.next_fire), "none");
  EXPECT_TRUE(last.complete);

  FirePlan missed =
      PlanFiring(o, Policy(Misfire::kSkip), T("2024-05-15T10:00:00Z"), T("2024-05-15T13:00:00Z"));
  EXPECT_EQ(Times(missed),
            (std::vector<std::string>{"2024-05-15T10:00:00.000Z", "2024-05-15T11:00:00.000Z"}));
  EXPECT_EQ(Fmt(missed.next_fire), "none");
  EXPECT_TRUE(missed.complete);
}

// A one-time job.
TEST(PlanFiringTest, AtOnTimeCompletes) {
  const TimePoint at = T("2026-06-01T10:00:00Z");
  Occurrences o = Make(At(at), at - hours(24));
  FirePlan plan = PlanFiring(o, Policy(Misfire::kFireOnce), at, at + seconds(5));
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(Fmt(plan.runs[0].scheduled_at), Fmt(at));
  EXPECT_EQ(plan.runs[0].reason, RunReason::kSchedule);
  EXPECT_EQ(Fmt(plan.next_fire), "none");
  EXPECT_TRUE(plan.complete);
}

TEST(PlanFiringTest, AtMissedByMoreThanTheGrace) {
  const TimePoint at = T("2026-06-01T10:00:00Z");
  const TimePoint now = at + hours(2);
  Occurrences o = Make(At(at), at - hours(24));

  FirePlan once = PlanFiring(o, Policy(Misfire::kFireOnce), at, now);
  ASSERT_EQ(once.runs.size(), 1u);
  EXPECT_EQ(Fmt(once.runs[0].scheduled_at), Fmt(at));
  EXPECT_EQ(once.runs[0].reason, RunReason::kMisfireCatchup);
  EXPECT_FALSE(once.runs[0].skipped);
  EXPECT_EQ(Fmt(once.next_fire), "none");
  EXPECT_TRUE(once.complete);

  FirePlan skip = PlanFiring(o, Policy(Misfire::kSkip), at, now);
  ASSERT_EQ(skip.runs.size(), 1u);
  EXPECT_EQ(Fmt(skip.runs[0].scheduled_at), Fmt(at));
  EXPECT_TRUE(skip.runs[0].skipped);
  EXPECT_EQ(Fmt(skip.next_fire), "none");
  EXPECT_TRUE(skip.complete);

  FirePlan all = PlanFiring(o, Policy(Misfire::kFireAll), at, now);
  ASSERT_EQ(all.runs.size(), 1u);
  EXPECT_EQ(Fmt(all.runs[0].scheduled_at), Fmt(at));
  EXPECT_EQ(all.runs[0].reason, RunReason::kMisfireCatchup);
  EXPECT_FALSE(all.runs[0].skipped);
  EXPECT_EQ(Fmt(all.next_fire), "none");
  EXPECT_TRUE(all.complete);
}

// An every-second job missed for a day: 86400 occurrences, at most 100 runs recorded.
class PlanFiringEverySecondTest : public ::testing::Test {
 protected:
  Occurrences every_second_ = Make(Cron("* * * * * *"), T("2024-05-14T23:00:00Z"));
  const TimePoint due_ = T("2024-05-15T00:00:00Z");
  const TimePoint now_ = due_ + hours(24);
};

TEST_F(PlanFiringEverySecondTest, SkipIsCappedAt100) {
  FirePlan plan = PlanFiring(every_second_, Policy(Misfire::kSkip), due_, now_);
  ASSERT_EQ(plan.runs.size(), static_cast<size_t>(kMaxMisfireRuns));
  EXPECT_EQ(kMaxMisfireRuns, 100);
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    EXPECT_EQ(Fmt(plan.runs[i].scheduled_at), Fmt(due_ + seconds(i))) << i;
    EXPECT_TRUE(plan.runs[i].skipped) << i;
  }
  EXPECT_EQ(Fmt(plan.next_fire), Fmt(now_ - seconds(60)));
  EXPECT_FALSE(plan.complete);
}

TEST_F(PlanFiringEverySecondTest, FireAllIsCappedAt100) {
  FirePlan plan = PlanFiring(every_second_, Policy(Misfire::kFireAll), due_, now_);
  ASSERT_EQ(plan.runs.size(), 100u);
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    EXPECT_EQ(Fmt(plan.runs[i].scheduled_at), Fmt(due_ + seconds(i))) << i;
    EXPECT_EQ(plan.runs[i].reason, RunReason::kMisfireCatchup) << i;
    EXPECT_FALSE(plan.runs[i].skipped) << i;
  }
  EXPECT_EQ(Fmt(plan.next_fire), Fmt(now_ - seconds(60)));
  EXPECT_FALSE(plan.complete);
}

TEST_F(PlanFiringEverySecondTest, FireOnceIsOneRun) {
  FirePlan plan = PlanFiring(every_second_, Policy(Misfire::kFireOnce), due_, now_);
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(Fmt(plan.runs[0].scheduled_at), Fmt(due_));
  EXPECT_EQ(plan.runs[0].reason, RunReason::kMisfireCatchup);
  EXPECT_EQ(Fmt(plan.next_fire), Fmt(now_ - seconds(60)));
  EXPECT_FALSE(plan.complete);
}

TEST(PlanFiringTest, EveryMsFireAllIsCappedAt100) {
  const TimePoint anchor = T("2026-01-01T00:00:00Z");
  Occurrences o = Make(Every(milliseconds(250)), anchor);
  const TimePoint due = anchor + milliseconds(250);
  FirePlan plan = PlanFiring(o, Policy(Misfire::kFireAll), due, due + hours(1));
  ASSERT_EQ(plan.runs.size(), 100u);
  EXPECT_EQ(Fmt(plan.runs.back().scheduled_at), Fmt(due + milliseconds(99 * 250)));
  EXPECT_EQ(Fmt(plan.next_fire), Fmt(due + hours(1) - seconds(60)));
}

// --- DecideOverlap ------------------------------------------------------------------------------

std::vector<RunRecord> ActiveRuns() {
  RunRecord a;
  a.id = "j@1000";
  a.job_id = "j";
  a.state = RunState::kRunning;
  RunRecord b;
  b.id = "j@2000";
  b.job_id = "j";
  b.state = RunState::kQueued;
  return {a, b};
}

TEST(DecideOverlapTest, NoActiveRunsMeansNoConstraint) {
  for (Overlap o : {Overlap::kSkip, Overlap::kAllow, Overlap::kQueue, Overlap::kReplace}) {
    SCOPED_TRACE(OverlapName(o));
    OverlapDecision d = DecideOverlap(o, {});
    EXPECT_FALSE(d.skip);
    EXPECT_FALSE(d.exclusive);
    EXPECT_TRUE(d.cancel_run_ids.empty());
  }
}

TEST(DecideOverlapTest, SkipSkips) {
  OverlapDecision d = DecideOverlap(Overlap::kSkip, ActiveRuns());
  EXPECT_TRUE(d.skip);
  EXPECT_TRUE(d.cancel_run_ids.empty());
}

TEST(DecideOverlapTest, AllowRunsAlongside) {
  OverlapDecision d = DecideOverlap(Overlap::kAllow, ActiveRuns());
  EXPECT_FALSE(d.skip);
  EXPECT_FALSE(d.exclusive);
  EXPECT_TRUE(d.cancel_run_ids.empty());
}

TEST(DecideOverlapTest, QueueWaits) {
  OverlapDecision d = DecideOverlap(Overlap::kQueue, ActiveRuns());
  EXPECT_FALSE(d.skip);
  EXPECT_TRUE(d.exclusive);
  EXPECT_TRUE(d.cancel_run_ids.empty());
}

TEST(DecideOverlapTest, ReplaceCancelsEveryEarlierRun) {
  OverlapDecision d = DecideOverlap(Overlap::kReplace, ActiveRuns());
  EXPECT_FALSE(d.skip);
  EXPECT_THAT(d.cancel_run_ids, ::testing::UnorderedElementsAre("j@1000", "j@2000"));
}

// --- RetryDelay ---------------------------------------------------------------------------------

RetryPolicy Retry(Backoff backoff, int64_t initial_ms, int64_t max_ms, double jitter) {
  return {.max_attempts = 10,
          .backoff = backoff,
          .initial_delay = Duration(initial_ms),
          .max_delay = Duration(max_ms),
          .jitter = jitter};
}

TEST(RetryDelayTest, FixedIsTheInitialDelay) {
  const RetryPolicy r = Retry(Backoff::kFixed, 1500, 300000, 0);
  for (int failed : {1, 2, 3, 10, 99})
    EXPECT_EQ(RetryDelay(r, failed, 0.5).count(), 1500) << failed;
}

TEST(RetryDelayTest, ExponentialDoubles) {
  const RetryPolicy r = Retry(Backoff::kExponential, 1000, 300000, 0);
  EXPECT_EQ(RetryDelay(r, 1, 0.5).count(), 1000);
  EXPECT_EQ(RetryDelay(r, 2, 0.5).count(), 2000);
  EXPECT_EQ(RetryDelay(r, 3, 0.5).count(), 4000);
  EXPECT_EQ(RetryDelay(r, 4, 0.5).count(), 8000);
  EXPECT_EQ(RetryDelay(r, 9, 0.5).count(), 256000);
}

TEST(RetryDelayTest, CappedAtMaxDelay) {
  const RetryPolicy r = Retry(Backoff::kExponential, 1000, 5000, 0);
  EXPECT_EQ(RetryDelay(r, 3, 0.5).count(), 4000);
  EXPECT_EQ(RetryDelay(r, 4, 0.5).count(), 5000);
  EXPECT_EQ(RetryDelay(r, 50, 0.5).count(), 5000);
  EXPECT_EQ(RetryDelay(r, 100, 0.5).count(), 5000);  // no overflow
  EXPECT_EQ(RetryDelay(r, 1 << 30, 0.5).count(), 5000);
  // The defaults: 1 s doubling up to 5 min.
  const RetryPolicy d;
  EXPECT_EQ(RetryDelay({.jitter = 0}, 20, 0.5).count(), 300000);
  EXPECT_EQ(d.max_delay.count(), 300000);
}

TEST(RetryDelayTest, JitterZeroIsExactWhateverTheRandom) {
  const RetryPolicy r = Retry(Backoff::kExponential, 1000, 300000, 0);
  for (double u : {0.0, 0.25, 0.5, 0.999}) EXPECT_EQ(RetryDelay(r, 2, u).count(), 2000) << u;
}

TEST(RetryDelayTest, JitterBounds) {
  const RetryPolicy r = Retry(Backoff::kFixed, 1000, 300000, 0.2);
  EXPECT_NEAR(RetryDelay(r, 1, 0.0).count(), 800, 1);     // delay * (1 - j)
  EXPECT_NEAR(RetryDelay(r, 1, 0.5).count(), 1000, 1);    // the middle
  EXPECT_NEAR(RetryDelay(r, 1, 0.999).count(), 1200, 1);  // ~ delay * (1 + j)
  const RetryPolicy e = Retry(Backoff::kExponential, 1000, 300000, 0.2);
  EXPECT_NEAR(RetryDelay(e, 2, 0.0).count(), 1600, 1);
  EXPECT_NEAR(RetryDelay(e, 2, 0.999).count(), 2400, 1);
}

TEST(RetryDelayTest, JitterStaysWithinBoundsAndNeverAboveMaxDelay) {
  const RetryPolicy r = Retry(Backoff::kExponential, 1000, 5000, 0.5);
  for (int failed = 1; failed <= 8; ++failed) {
    const double base = std::min(1000.0 * (1 << (failed - 1)), 5000.0);
    for (int i = 0; i < 1000; ++i) {
      const double u = i / 1000.0;
      const int64_t d = RetryDelay(r, failed, u).count();
      EXPECT_GE(d, static_cast<int64_t>(base * 0.5) - 1) << failed << " " << u;
      EXPECT_LE(d, static_cast<int64_t>(base * 1.5) + 1) << failed << " " << u;
      EXPECT_LE(d, 5000) << failed << " " << u;
    }
  }
  // At the cap the upper half of the jitter is cut off.
  EXPECT_EQ(RetryDelay(r, 8, 0.999).count(), 5000);
  EXPECT_NEAR(RetryDelay(r, 8, 0.0).count(), 2500, 1);
}

TEST(RetryDelayTest, FullJitterCanReachZero) {
  const RetryPolicy r = Retry(Backoff::kFixed, 1000, 1000, 1.0);
  EXPECT_EQ(RetryDelay(r, 1, 0.0).count(), 0);
  EXPECT_LE(RetryDelay(r, 1, 0.999).count(), 1000);
}

// --- Run ids ------------------------------------------------------------------------------------

TEST(RunIdTest, ScheduledRunIdIsJobAtMillis) {
  EXPECT_EQ(ScheduledRunId("nightly-report", FromUnixMillis(1767225600000)),
            "nightly-report@1767225600000");
  EXPECT_EQ(ScheduledRunId("j", FromUnixMillis(1767225600123)), "j@1767225600123");
  EXPECT_EQ(ScheduledRunId("a:b.c", FromUnixMillis(0)), "a:b.c@0");
  // Deterministic: the same occurrence gives the same id, another one another id.
  EXPECT_EQ(ScheduledRunId("j", T("2026-01-01T00:00:00Z")),
            ScheduledRunId("j", T("2026-01-01T00:00:00Z")));
  EXPECT_NE(ScheduledRunId("j", T("2026-01-01T00:00:00Z")),
            ScheduledRunId("j", T("2026-01-01T00:00:00.001Z")));
}

TEST(RunIdTest, ManualRunIdIsJobAtMMillisDashSixteenHex) {
  EXPECT_EQ(ManualRunId("j", FromUnixMillis(1700000000123), 0xdeadbeef),
            "j@m1700000000123-00000000deadbeef");
  EXPECT_EQ(ManualRunId("j", FromUnixMillis(5), 0), "j@m5-0000000000000000");
  EXPECT_EQ(ManualRunId("j", FromUnixMillis(5), ~uint64_t{0}), "j@m5-ffffffffffffffff");
  EXPECT_THAT(ManualRunId("job-1", FromUnixMillis(1767225600000), 0x0123456789abcdefull),
              MatchesRegex("job-1@m1767225600000-[0-9a-f]{16}"));
  EXPECT_NE(ManualRunId("j", FromUnixMillis(5), 1), ManualRunId("j", FromUnixMillis(5), 2));
}

TEST(RunIdTest, DependencyRunIdIsDeterministicAndOrderIndependent) {
  const std::string id = DependencyRunId("report", {"extract@1000", "load@2000"});
  EXPECT_THAT(id, MatchesRegex("report@d[0-9a-f]+"));
  EXPECT_EQ(id, DependencyRunId("report", {"extract@1000", "load@2000"}));
  EXPECT_EQ(id, DependencyRunId("report", {"load@2000", "extract@1000"}));
  const std::string three = DependencyRunId("r", {"a@1", "b@2", "c@3"});
  EXPECT_EQ(three, DependencyRunId("r", {"c@3", "a@1", "b@2"}));
  EXPECT_EQ(three, DependencyRunId("r", {"b@2", "c@3", "a@1"}));
}

TEST(RunIdTest, DependencyRunIdDiffersForDifferentParents) {
  std::set<std::string> ids;
  const std::vector<std::vector<std::string>> parents = {
      {"extract@1000"},
      {"extract@1001"},
      {"extract@1000", "load@2000"},
      {"extract@1000", "load@2001"},
      {"ab"},
      {"a", "b"},
      {"extract@1000", "load@2000", "x@1"},
  };
  for (const auto& p : parents) ids.insert(DependencyRunId("report", p));
  EXPECT_EQ(ids.size(), parents.size());
  EXPECT_NE(DependencyRunId("report", {"x@1"}), DependencyRunId("other", {"x@1"}));
  EXPECT_TRUE(DependencyRunId("other", {"x@1"}).starts_with("other@d"));
}

// ---- Tenant assignment ----------------------------------------------------------------------

std::map<std::string, int> Load(const std::map<std::string, std::string>& owners) {
  std::map<std::string, int> load;
  for (const auto& [tenant, node] : owners) ++load[node];
  return load;
}

TEST(AssignTenants, EveryTenantGetsALiveNodeAndNoNodeExceedsItsShare) {
  const std::vector<std::string> tenants = {"a", "b", "c", "d", "e", "f", "g"};
  const std::vector<std::string> nodes = {"n1", "n2", "n3"};
  auto owners = AssignTenants({}, tenants, nodes);
  ASSERT_EQ(owners.size(), tenants.size());
  for (const auto& [tenant, node] : owners) {
    EXPECT_NE(std::find(nodes.begin(), nodes.end(), node), nodes.end()) << tenant;
  }
  for (const auto& [node, n] : Load(owners)) EXPECT_LE(n, 3) << node;  // ceil(7 / 3)
  EXPECT_EQ(Load(owners).size(), 3u) << "all three nodes get work";
  EXPECT_EQ(AssignTenants({}, tenants, nodes), owners) << "deterministic";
}

TEST(AssignTenants, IsStickyWhileOwnersLiveAndMovesOnlyTheDeadNodesTenants) {
  const std::vector<std::string> tenants = {"a", "b", "c", "d", "e", "f"};
  auto before = AssignTenants({}, tenants, {"n1", "n2", "n3"});
  // n2 dies: only its tenants move, to the survivors, evenly.
  auto after = AssignTenants(before, tenants, {"n1", "n3"});
  for (const auto& [tenant, node] : before) {
    if (node != "n2") {
      EXPECT_EQ(after[tenant], node) << tenant << " moved needlessly";
    }
    EXPECT_NE(after[tenant], "n2") << tenant;
  }
  EXPECT_EQ(Load(after), (std::map<std::string, int>{{"n1", 3}, {"n3", 3}}));
  // n2 comes back: it takes a share from the others (balanced), the rest stays.
  auto rejoined = AssignTenants(after, tenants, {"n1", "n2", "n3"});
  EXPECT_EQ(Load(rejoined), (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));
  int moved = 0;
  for (const auto& [tenant, node] : after) moved += rejoined[tenant] != node;
  EXPECT_EQ(moved, 2);
}

TEST(AssignTenants, NoNodesNoAssignmentAndFewerTenantsThanNodes) {
  EXPECT_TRUE(AssignTenants({}, {"a"}, {}).empty());
  auto one = AssignTenants({{"default", "n2"}}, {"default"}, {"n1", "n2", "n3"});
  EXPECT_EQ(one, (std::map<std::string, std::string>{{"default", "n2"}}));
  // A previous owner that is gone, and a tenant that is gone: neither appears.
  auto two = AssignTenants({{"default", "n9"}, {"old", "n1"}}, {"default"}, {"n1", "n2"});
  EXPECT_EQ(two, (std::map<std::string, std::string>{{"default", "n1"}}));
}

}  // namespace
}  // namespace jobsched
