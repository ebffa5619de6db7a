#include "engine/job_service.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/job_codec.h"
#include "core/policy.h"
#include "core/time_util.h"
#include "engine/scheduler.h"

namespace jobsched {

Result<std::optional<TimePoint>> FirstFireTime(const Schedule& schedule, TimePoint now) {
  auto occurrences = Occurrences::For(schedule, now);
  if (!occurrences.ok()) return InvalidArgument(occurrences.status().message(), "schedule.cron");
  return occurrences->First();
}

namespace {

bool SameSchedule(const Schedule& a, const Schedule& b) {
  return a.kind == b.kind && a.cron == b.cron && a.timezone == b.timezone && a.at == b.at &&
         a.every == b.every && a.jitter == b.jitter && a.start_at == b.start_at &&
         a.end_at == b.end_at;
}

}  // namespace

JobService::JobService(Store& store, const Clock& clock, EventBus& events,
                       std::function<void()> on_schedule_changed,
                       std::function<void()> on_runs_queued,
                       std::function<void(const std::string&, const std::string&)> on_run_cancelled)
    : store_(store),
      clock_(clock),
      events_(events),
      on_schedule_changed_(std::move(on_schedule_changed)),
      on_runs_queued_(std::move(on_runs_queued)),
      on_run_cancelled_(std::move(on_run_cancelled)) {}

void JobService::Changed(const JobRecord& job) {
  events_.Emit({.type = EventType::kJobChanged, .tenant = job.spec.tenant, .job_id = job.spec.id});
  if (on_schedule_changed_) on_schedule_changed_();
}

Status JobService::CheckCycles(const JobSpec& spec) {
  // Depth-first through existing jobs' depends_on; a path back to spec.id is a cycle.
  std::vector<std::pair<std::string, std::string>> stack;  // (job, path so far)
  for (const std::string& dep : spec.depends_on) stack.push_back({dep, spec.id + " -> " + dep});
  std::set<std::string> seen;
  while (!stack.empty()) {
    auto [id, path] = stack.back();
    stack.pop_back();
    if (id == spec.id) return InvalidArgument("depends_on: cycle " + path, "depends_on");
    if (!seen.insert(id).second) continue;
    auto job = store_.GetJob(spec.tenant, id);
    if (!job.ok()) {
      if (job.status().code() == StatusCode::kNotFound) continue;  // may be created later
      return job.status();
    }
    for (const std::string& dep : job->spec.depends_on) stack.push_back({dep, path + " -> " + dep});
  }
  return Status::Ok();
}

Result<JobRecord> JobService::Create(JobSpec spec) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  RETURN_IF_ERROR(CheckCycles(spec));
  const TimePoint now = clock_.Now();
  JobRecord job;
  ASSIGN_OR_RETURN(job.next_fire, FirstFireTime(spec.schedule, now));
  job.state = spec.paused ? JobState::kPaused : JobState::kActive;
  if (!job.next_fire && spec.schedule.kind != Schedule::Kind::kNone)
    job.state = JobState::kCompleted;
  job.created_at = job.updated_at = job.dependency_since = now;
  job.spec = std::move(spec);
  ASSIGN_OR_RETURN(JobRecord stored, store_.CreateJob(job));
  spdlog::info("job created job_id={} tenant={} next_fire={}", stored.spec.id, stored.spec.tenant,
               stored.next_fire ? FormatRfc3339(*stored.next_fire) : "none");
  Changed(stored);
  return stored;
}

Result<JobRecord> JobService::Put(JobSpec spec, std::optional<int64_t> if_match, bool* created,
                                  bool keep_paused) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  RETURN_IF_ERROR(CheckCycles(spec));
  for (int round = 0; round < 10; ++round) {
    auto existing = store_.GetJob(spec.tenant, spec.id);
    if (!existing.ok() && existing.status().code() != StatusCode::kNotFound)
      return existing.status();
    if (!existing.ok()) {
      // A condition on a version of something that does not exist fails (HTTP 412).
      if (if_match) {
        return FailedPrecondition("job '" + spec.id +
                                  "' does not exist; If-Match asked for version " +
                                  std::to_string(*if_match));
      }
      auto made = Create(spec);
      if (!made.ok() && made.status().code() == StatusCode::kAlreadyExists)
        continue;  // raced: replace it
      if (created) *created = made.ok();
      return made;
    }
    if (keep_paused) spec.paused = existing->spec.paused;
    if (if_match && *if_match != existing->version) {
      return FailedPrecondition("version mismatch: the job is at version " +
                                std::to_string(existing->version) + ", If-Match asked for " +
                                std::to_string(*if_match));
    }
    // The same spec again (a retried request, an apply of an unchanged file): nothing changes,
    // not even the version, so a reader's If-Match stays valid.
    if (JobSpecToCompactJson(spec) == JobSpecToCompactJson(existing->spec)) {
      if (created) *created = false;
      return *existing;
    }
    const TimePoint now = clock_.Now();
    JobRecord job = *existing;
    const bool schedule_changed = !SameSchedule(spec.schedule, existing->spec.schedule);
    if (schedule_changed) {
      ASSIGN_OR_RETURN(job.next_fire, FirstFireTime(spec.schedule, now));
      job.state = job.next_fire || spec.schedule.kind == Schedule::Kind::kNone
                      ? JobState::kActive
                      : JobState::kCompleted;
    }
    if (job.state != JobState::kCompleted)
      job.state = spec.paused ? JobState::kPaused : JobState::kActive;
    job.spec = std::move(spec);
    job.updated_at = now;
    auto stored = store_.PutJob(job, existing->version);
    if (!stored.ok() && stored.status().code() == StatusCode::kFailedPrecondition && !if_match) {
      spec = std::move(job.spec);
      continue;  // changed under us (a pause, another writer): apply to the newer version
    }
    if (!stored.ok()) return stored.status();
    if (created) *created = false;
    Changed(*stored);
    return stored;
  }
  return Unavailable("job '" + spec.id + "' keeps changing; try again");
}

Result<bool> JobService::SetPaused(const std::string& tenant, const std::string& id, bool paused) {
  const JobState from = paused ? JobState::kActive : JobState::kPaused;
  for (int round = 0; round < 10; ++round) {
    ASSIGN_OR_RETURN(JobRecord job, store_.GetJob(tenant, id));
    if (job.state != from) return false;
    const int64_t version = job.version;
    job.state = paused ? JobState::kPaused : JobState::kActive;
    job.spec.paused = paused;
    job.updated_at = clock_.Now();
    // next_fire stays where it was: occurrences missed while paused follow the misfire policy.
    // A pause goes back to the first occurrence fired ahead of its time (CancelFiredAhead
    // cancels its run): on resume it is fired again, and its run with it, or it is missed.
    if (paused) {
      if (auto first = FirstFiredAhead(job); first && (!job.next_fire || *first < *job.next_fire)) {
        job.next_fire = first;
      }
    }
    auto stored = store_.PutJob(job, version);
    if (!stored.ok() && stored.status().code() == StatusCode::kFailedPrecondition) continue;
    if (!stored.ok()) return stored.status();
    Changed(*stored);
    if (paused) CancelFiredAhead(*stored);
    return true;
  }
  return Unavailable("job '" + id + "' keeps changing; try again");
}

// Occurrences after the pause: queued, or claimed ahead and held by a node for their time. One
// whose time came before the pause (waiting for a worker, delayed by jitter, waiting to retry)
// still runs.
static bool FiredAheadOfPause(const RunRecord& run, TimePoint pause) {
  return (run.state == RunState::kQueued || run.state == RunState::kRunning) &&
         run.reason == RunReason::kSchedule && run.scheduled_at > pause;
}

std::optional<TimePoint> JobService::FirstFiredAhead(const JobRecord& job) {
  auto active = store_.ActiveRuns(job.spec.tenant, job.spec.id);
  if (!active.ok()) return std::nullopt;  // CancelFiredAhead reads them again, and says so
  std::optional<TimePoint> first;
  for (const RunRecord& run : *active) {
    if (FiredAheadOfPause(run, job.updated_at) && (!first || run.scheduled_at < *first)) {
      first = run.scheduled_at;
    }
  }
  return first;
}

void JobService::CancelFiredAhead(const JobRecord& job) {
  auto active = store_.ActiveRuns(job.spec.tenant, job.spec.id);
  if (!active.ok()) {
    spdlog::warn("job paused, but its runs fired ahead were not read job_id={} tenant={}: {}",
                 job.spec.id, job.spec.tenant, active.status().message());
    return;
  }
  for (const RunRecord& run : *active) {
    if (!FiredAheadOfPause(run, job.updated_at)) continue;
    Status s = store_.CancelRun(run.tenant, run.id, job.updated_at);
    if (!s.ok() && s.code() != StatusCode::kFailedPrecondition) {
      spdlog::warn("job paused, but its run {} fired ahead was not cancelled: {}", run.id,
                   s.message());
    }
    if (s.ok() && run.state == RunState::kRunning && on_run_cancelled_) {
      on_run_cancelled_(run.tenant, run.id);
    }
  }
}

Result<bool> JobService::Pause(const std::string& tenant, const std::string& id) {
  return SetPaused(tenant, id, true);
}

Result<bool> JobService::Resume(const std::string& tenant, const std::string& id) {
  return SetPaused(tenant, id, false);
}

Status JobService::Delete(const std::string& tenant, const std::string& id, bool kill_running) {
  std::vector<RunRecord> running;
  if (kill_running) {
    auto active = store_.ActiveRuns(tenant, id);
    if (active.ok()) running = std::move(*active);
  }
  RETURN_IF_ERROR(store_.DeleteJob(tenant, id, clock_.Now(), kill_running));
  for (const RunRecord& r : running) {
    if (on_run_cancelled_ && r.state == RunState::kRunning) on_run_cancelled_(tenant, r.id);
  }
  spdlog::info("job deleted job_id={} tenant={} kill_running={}", id, tenant, kill_running);
  // Nodes holding runs of it ahead read its spec again when they start them.
  if (on_schedule_changed_) on_schedule_changed_();
  events_.Emit({.type = EventType::kJobChanged, .tenant = tenant, .job_id = id});
  return Status::Ok();
}

Result<std::vector<std::string>> JobService::Trigger(const std::string& tenant,
                                                     const std::string& id,
                                                     const std::vector<std::string>& payloads) {
  ASSIGN_OR_RETURN(JobRecord job, store_.GetJob(tenant, id));
  const TimePoint now = clock_.Now();
  std::vector<RunRecord> runs;
  std::vector<std::string> ids;
  const std::vector<std::string> job_payload = {job.spec.payload};
  const std::vector<std::string>& given = payloads.empty() ? job_payload : payloads;
  runs.reserve(given.size());
  {
    std::lock_guard lock(rng_mu_);
    for (size_t i = 0; i < given.size(); ++i) {
      if (!nlohmann::json::accept(given[i])) {
        return InvalidArgument("payloads[" + std::to_string(i) + "]: not valid JSON", "payloads");
      }
      RunRecord run = NewRun(job, ManualRunId(id, now, rng_()), now, RunReason::kManual, now);
      run.payload = given[i];
      ids.push_back(run.id);
      runs.push_back(std::move(run));
    }
  }
  RETURN_IF_ERROR(store_.EnqueueRuns(tenant, id, runs));
  if (on_runs_queued_) on_runs_queued_();
  return ids;
}

Status JobService::CancelRun(const std::string& tenant, const std::string& run_id) {
  RETURN_IF_ERROR(store_.CancelRun(tenant, run_id, clock_.Now()));
  if (on_run_cancelled_) on_run_cancelled_(tenant, run_id);
  return Status::Ok();
}

}  // namespace jobsched
