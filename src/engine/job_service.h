// Job changes asked for by users (the library API and the REST API): validation, dependency
// cycles, the first fire time, pause/resume, delete, manual triggers. Each change is one store
// operation; the scheduler is woken so that a new or changed schedule is seen at once.
// Thread-safe.
#pragma once

#include <jobsched/store.h>

#include <functional>
#include <mutex>
#include <random>

#include "engine/event_bus.h"

namespace jobsched {

class JobService {
 public:
  // `on_schedule_changed` wakes the scheduler and the dependency actor; `on_runs_queued` wakes
  // the processor.
  JobService(Store& store, const Clock& clock, EventBus& events,
             std::function<void()> on_schedule_changed, std::function<void()> on_runs_queued,
             std::function<void(const std::string& tenant, const std::string& run_id)>
                 on_run_cancelled = {});

  // kInvalidArgument (names the field), kAlreadyExists.
  Result<JobRecord> Create(JobSpec spec);
  // Creates or replaces. `if_match`: the version the caller read (kFailedPrecondition when it
  // differs, kNotFound when the job is absent). *created tells which happened. `keep_paused`:
  // a job replaced keeps its paused state, whatever spec.paused says.
  Result<JobRecord> Put(JobSpec spec, std::optional<int64_t> if_match, bool* created = nullptr,
                        bool keep_paused = false);
  // Whether the state changed. kNotFound.
  Result<bool> Pause(const std::string& tenant, const std::string& id);
  Result<bool> Resume(const std::string& tenant, const std::string& id);
  // kNotFound.
  Status Delete(const std::string& tenant, const std::string& id, bool kill_running);
  // One manual run per payload (JSON texts; none = one run with the job's payload). kNotFound;
  // kInvalidArgument for bad JSON.
  Result<std::vector<std::string>> Trigger(const std::string& tenant, const std::string& id,
                                           const std::vector<std::string>& payloads);
  Status CancelRun(const std::string& tenant, const std::string& run_id);

 private:
  // kInvalidArgument when spec.depends_on closes a cycle through existing jobs.
  Status CheckCycles(const JobSpec& spec);
  void Changed(const JobRecord& job);
  // Pause (true) or resume (false), with a CAS retry; whether the state changed.
  Result<bool> SetPaused(const std::string& tenant, const std::string& id, bool paused);
  // The earliest occurrence of the job fired ahead of job.updated_at (the pause), if any.
  std::optional<TimePoint> FirstFiredAhead(const JobRecord& job);
  // Cancels the job's runs fired ahead (fire_ahead) whose occurrence is after the pause: not
  // yet due, they would not have been fired. Best effort (logged): a failure leaves them queued.
  void CancelFiredAhead(const JobRecord& job);

  Store& store_;
  const Clock& clock_;
  EventBus& events_;
  const std::function<void()> on_schedule_changed_;
  const std::function<void()> on_runs_queued_;
  const std::function<void(const std::string&, const std::string&)> on_run_cancelled_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_{std::random_device{}()};  // guarded by rng_mu_
};

// The first fire time of a job created or rescheduled at `now`.
Result<std::optional<TimePoint>> FirstFireTime(const Schedule& schedule, TimePoint now);

}  // namespace jobsched
