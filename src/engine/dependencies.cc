#include "engine/dependencies.h"

#include <spdlog/spdlog.h>

#include "core/log_fields.h"
#include "core/policy.h"
#include "engine/failure_log.h"
#include "engine/scheduler.h"

namespace jobsched {

void DependencyActor::OnRunFinished(const RunRecord& run) {
  {
    std::lock_guard lock(mu_);
    finished_jobs_.insert({run.tenant, run.job_id});
  }
  thread_.Wake();
}

void DependencyActor::OnJobChanged(const std::string& tenant, const std::string& job_id) {
  {
    std::lock_guard lock(mu_);
    changed_jobs_.insert({tenant, job_id});
  }
  thread_.Wake();
}

Result<int> DependencyActor::Tick() {
  std::set<std::pair<std::string, std::string>> jobs, changed;
  {
    std::lock_guard lock(mu_);
    jobs.swap(finished_jobs_);
    changed.swap(changed_jobs_);
  }
  int created = 0;
  for (auto it = changed.begin(); it != changed.end(); ++it) {
    auto n = Evaluate(it->first, it->second);
    if (!n.ok()) {
      std::lock_guard lock(mu_);
      changed_jobs_.insert(it, changed.end());  // try again next pass
      finished_jobs_.insert(jobs.begin(), jobs.end());
      return n.status();
    }
    created += *n;
  }
  for (const auto& [tenant, job_id] : jobs) {
    auto dependents = store_.Dependents(tenant, job_id);
    if (!dependents.ok()) {
      std::lock_guard lock(mu_);
      finished_jobs_.insert({tenant, job_id});  // try again next pass
      return dependents.status();
    }
    for (const JobRecord& dependent : *dependents) {
      ASSIGN_OR_RETURN(int n, Evaluate(tenant, dependent.spec.id));
      created += n;
    }
  }
  if (created > 0 && on_fired_) on_fired_();
  return created;
}

Result<int> DependencyActor::Evaluate(const std::string& tenant, const std::string& job_id) {
  int created = 0;
  for (int round = 0; round < 100; ++round) {
    auto job_or = store_.GetJob(tenant, job_id);
    if (!job_or.ok() && job_or.status().code() == StatusCode::kNotFound) return created;
    ASSIGN_OR_RETURN(JobRecord job, std::move(job_or));
    if (job.state != JobState::kActive || job.spec.depends_on.empty()) return created;

    // The first success and the first failure of each dependency after the barrier.
    std::vector<RunRecord> successes;
    std::optional<RunRecord> failure;
    bool all_succeeded = true;
    for (const std::string& dep : job.spec.depends_on) {
      ASSIGN_OR_RETURN(std::vector<RunRecord> runs,
                       store_.FinishedRunsSince(tenant, dep, job.dependency_since));
      std::optional<RunRecord> success;
      for (RunRecord& r : runs) {
        if (r.state == RunState::kSucceeded) {
          if (!success) success = r;
        } else if (r.state == RunState::kFailed || r.state == RunState::kTimedOut) {
          if (!failure || r.finished_at < failure->finished_at) failure = r;
        }
      }
      if (success) {
        successes.push_back(*success);
      } else {
        all_succeeded = false;
      }
    }
    TimePoint trigger_time{};
    for (const RunRecord& r : successes)
      trigger_time = std::max(trigger_time, r.finished_at.value_or(TimePoint{}));

    const TimePoint now = clock_.Now();
    FireRequest req{.tenant = tenant,
                    .job_id = job_id,
                    .expected_version = job.version,
                    .expected_next_fire = job.next_fire,
                    .next_fire = job.next_fire,
                    .now = now};
    if (failure && (!all_succeeded || *failure->finished_at <= trigger_time)) {
      RunRecord run =
          NewRun(job, DependencyRunId(job_id, {failure->id}), now, RunReason::kDependency, now);
      run.state = RunState::kSkipped;
      run.error = "dependency_failed: " + failure->job_id;
      run.finished_at = now;
      req.dependency_since = *failure->finished_at;
      req.runs.push_back(std::move(run));
    } else if (all_succeeded) {
      std::vector<std::string> parents;
      for (const RunRecord& r : successes) parents.push_back(r.id);
      RunRecord run =
          NewRun(job, DependencyRunId(job_id, parents), now, RunReason::kDependency, now);
      ASSIGN_OR_RETURN(std::vector<RunRecord> active, store_.ActiveRuns(tenant, job_id));
      const OverlapDecision d = DecideOverlap(job.spec.overlap, active);
      if (d.skip) {
        run.state = RunState::kSkipped;
        run.error = "overlap: an earlier run of the job is still queued or running";
        run.finished_at = now;
      }
      run.exclusive = d.exclusive;
      req.cancel_run_ids = d.cancel_run_ids;
      req.dependency_since = trigger_time;
      req.runs.push_back(std::move(run));
    } else {
      return created;
    }

    auto fired = store_.Fire(req);
    if (!fired.ok()) {
      if (fired.status().code() == StatusCode::kFailedPrecondition) continue;  // changed: re-read
      return fired.status();
    }
    created += fired->created;
    const RunRecord& run = req.runs.front();
    spdlog::info("run {} run_id={} job_id={} tenant={} reason=dependency{}",
                 RunStateName(run.state), run.id, job_id, tenant,
                 run.error.empty() ? "" : " error=" + LogValue(run.error));
    if (run.state == RunState::kSkipped) {
      SchedulerEvent skipped = RunEvent(EventType::kRunSkipped, run);
      skipped.error = run.error;
      events_.Emit(skipped);
    }
  }
  return created;
}

Result<int> DependencyActor::ScanAll() {
  int created = 0;
  ASSIGN_OR_RETURN(std::vector<TenantRecord> tenants, store_.ListTenants());
  for (const TenantRecord& tenant : tenants) {
    JobFilter filter{.limit = 1000};
    while (true) {
      ASSIGN_OR_RETURN(Page<JobRecord> page, store_.ListJobs(tenant.id, filter));
      for (const JobRecord& job : page.items) {
        if (job.spec.depends_on.empty() || job.state != JobState::kActive) continue;
        ASSIGN_OR_RETURN(int n, Evaluate(tenant.id, job.spec.id));
        created += n;
      }
      if (!page.next_cursor) break;
      filter.cursor = *page.next_cursor;
    }
  }
  if (created > 0 && on_fired_) on_fired_();
  return created;
}

void DependencyActor::Start() {
  constexpr auto kScanInterval = std::chrono::seconds(30);
  next_scan_ = std::chrono::steady_clock::now();
  thread_.Start(
      "dependencies",
      [this, kScanInterval, failures = FailureLog("dependencies")]() mutable {
        failures.Record(Tick().status());
        if (std::chrono::steady_clock::now() >= next_scan_) {
          next_scan_ = std::chrono::steady_clock::now() + kScanInterval;
          auto scanned = ScanAll();
          if (!scanned.ok())
            spdlog::warn("dependencies: full scan: {}", scanned.status().ToString());
        }
        return Duration(1000);
      },
      Duration(1000));
}

}  // namespace jobsched
