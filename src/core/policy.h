// Scheduling policy, computed once in C++ for every store: occurrences of a schedule, misfire
// handling, overlap decisions, retry backoff and run ids. Pure functions of their inputs;
// randomness is passed in.
#pragma once

#include <jobsched/job.h>
#include <jobsched/status.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/cron.h"

namespace jobsched {

// The occurrences of a job's schedule: nominal fire times, bounded by start_at and end_at.
class Occurrences {
 public:
  // kInvalidArgument for a bad cron expression or zone. `anchor` is the job's creation time
  // (every_ms schedules count from start_at, else from it).
  static Result<Occurrences> For(const Schedule& schedule, TimePoint anchor);

  // The first occurrence strictly after `t`, or none (past end_at, a one-time job already
  // past, or a schedule of kind kNone).
  std::optional<TimePoint> After(TimePoint t) const;
  // The first occurrence at or after `t`.
  std::optional<TimePoint> AtOrAfter(TimePoint t) const { return After(t - Duration(1)); }
  // The first occurrence of a new job (the first after `anchor` for cron; `at` for one-time).
  std::optional<TimePoint> First() const;

 private:
  Occurrences() = default;
  std::optional<TimePoint> Bounded(std::optional<TimePoint> t) const;

  Schedule schedule_;
  TimePoint anchor_{};
  std::optional<CronSchedule> cron_;
};

// The anchor of a stored job's occurrences (Occurrences::For): its creation; for an interval
// without start_at, the occurrence before its next fire, so that the count goes on from where
// the job is, and a schedule replaced by another (first fire one interval after the replace)
// goes on from the replace, not from the job's creation.
TimePoint OccurrenceAnchor(const Schedule& schedule, TimePoint created_at,
                           std::optional<TimePoint> next_fire);

// What to commit when a job is due. See PlanFiring.
struct PlannedRun {
  TimePoint scheduled_at{};
  RunReason reason = RunReason::kSchedule;
  bool skipped = false;  // recorded as skipped (misfire policy "skip")
  std::string error;     // the skip reason
};

struct FirePlan {
  std::vector<PlannedRun> runs;
  std::optional<TimePoint> next_fire;  // none = the schedule is over
  bool complete = false;               // the job ends (one-time done, past end_at)
};

inline constexpr int kMaxMisfireRuns = 100;

// Plans the firing of a job whose next_fire (`due`) is <= now. Occurrences later than the grace
// are misfires and follow the policy: fire_once (one catch-up run for all of them), skip (each
// recorded as skipped, at most 100), fire_all (one run each, at most 100). An occurrence within
// the grace simply runs late. Occurrences within the grace after the misfired ones are left
// for the next call (next_fire points at the first of them).
FirePlan PlanFiring(const Occurrences& occurrences, const MisfirePolicy& misfire, TimePoint due,
                    TimePoint now);

// Overlap (docs/engine.md): a new scheduled or dependency occurrence while earlier runs of the same
// job are queued, retry-waiting or running.
struct OverlapDecision {
  bool skip = false;       // record the occurrence as skipped
  bool exclusive = false;  // queue: the new run waits until the earlier ones finish
  std::vector<std::string> cancel_run_ids;  // replace: the earlier runs to cancel
};
OverlapDecision DecideOverlap(Overlap policy, const std::vector<RunRecord>& active_runs);

// The delay before retry number `failed_attempts` + 1, `random01` uniform in [0, 1):
// fixed = initial_delay; exponential = initial_delay * 2^(failed_attempts - 1); both capped at
// max_delay, then spread by ±jitter (a fraction) and capped again.
Duration RetryDelay(const RetryPolicy& retry, int failed_attempts, double random01);

// The leader's tenant assignment (docs/cluster.md): every tenant goes to one of `nodes`, balanced
// (no node owns more than ceil(tenants / nodes)) and sticky (a tenant stays with its previous owner
// while that owner is live and not over the cap). Tenants that move go to the least loaded node
// (ties by node id). Deterministic; empty when `nodes` is empty.
std::map<std::string, std::string> AssignTenants(const std::map<std::string, std::string>& previous,
                                                 const std::vector<std::string>& tenants,
                                                 const std::vector<std::string>& nodes);

// Run ids.
std::string ScheduledRunId(const std::string& job_id, TimePoint scheduled_at);  // job@<ms>
std::string ManualRunId(const std::string& job_id, TimePoint now,
                        uint64_t random);  // job@m<ms>-<hex>
std::string DependencyRunId(const std::string& job_id,
                            const std::vector<std::string>& parent_run_ids);

}  // namespace jobsched
