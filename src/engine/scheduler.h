// The scheduler actor: fires due jobs. One pass (Tick) reads the jobs whose next fire time has
// come, plans each occurrence in C++ (misfire, jitter, overlap: src/core/policy.h) and commits it
// with one atomic Store::Fire, guarded by the job's version and next fire time, so that any
// number of schedulers may fire the same job and each occurrence yields one run.
// Between passes it sleeps until the earliest next fire time, woken early by Wake() when a job
// is added or changed.
//
// Fire-ahead: a pass fires the occurrences due within `fire_ahead` of now; their runs become
// claimable at their time (available_at), so a burst of occurrences is written before it is
// due. An occurrence whose job has an overlap policy other than allow and still has unfinished
// runs is not fired early: its overlap decision is taken at its time, as without fire-ahead.
#pragma once

#include <jobsched/store.h>

#include <functional>
#include <random>

#include "engine/actor.h"
#include "engine/event_bus.h"
#include "engine/failure_log.h"

namespace jobsched {

struct SchedulerActorOptions {
  // Jobs read per store call. Default: 256
  int batch = 256;
  // The longest sleep between passes (a safety net for changes made by other processes).
  // Default: 1 s
  Duration max_sleep{1000};
  // The tenants this scheduler fires (a cluster assigns tenants to nodes). Default: all
  std::function<TenantScope()> scope;
  // Fire occurrences this long before their time (see above); 0 = at their time. Default: 0
  Duration fire_ahead{0};
};

class SchedulerActor {
 public:
  // `on_fired` is called after a pass that created queued runs (to wake the processor);
  // `on_cancelled` for each run cancelled by the overlap policy "replace".
  SchedulerActor(Store& store, const Clock& clock, EventBus& events, SchedulerActorOptions options,
                 std::function<void()> on_fired,
                 std::function<void(const std::string&, const std::string&)> on_cancelled = {});

  // One pass: fires every job due at the clock's now (or within fire_ahead of it). Returns the
  // runs created (skipped ones included). Errors: the store's (a job that someone else fired
  // meanwhile is not an error).
  Result<int> Tick();
  // Fires one job as read; kFailedPrecondition when it changed meanwhile.
  Result<int> FireJob(const JobRecord& job, TimePoint now);
  // The Store::Fire request that fires `job` (as read) at `now`: PlanFiring, jitter, overlap.
  // `active`: the job's unfinished runs if already read (else they are read when the overlap
  // policy needs them).
  Result<FireRequest> PlanJob(const JobRecord& job, TimePoint now,
                              const std::vector<RunRecord>* active = nullptr);

  void Start();
  void Wake() { thread_.Wake(); }
  void Stop() { thread_.Stop(); }

 private:
  Duration Loop();
  void Fired(const FireRequest& request);

  Store& store_;
  const Clock& clock_;
  EventBus& events_;
  const SchedulerActorOptions options_;
  const std::function<void()> on_fired_;
  const std::function<void(const std::string&, const std::string&)> on_cancelled_;
  FailureLog failures_{"scheduler"};  // only the scheduler thread
  // The earliest occurrence the last pass left to be fired at its time (only the scheduler
  // thread, or Tick caller).
  std::optional<TimePoint> deferred_;
  std::mt19937_64 rng_{std::random_device{}()};  // only the scheduler thread (or Tick caller)
  ActorThread thread_;
};

// Builds a run of `job` for an occurrence (shared by the scheduler, dependencies and triggers).
RunRecord NewRun(const JobRecord& job, std::string id, TimePoint scheduled_at, RunReason reason,
                 TimePoint now);

}  // namespace jobsched
