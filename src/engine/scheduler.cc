#include "engine/scheduler.h"

#include <spdlog/spdlog.h>

#include <cstdint>

#include "core/log_fields.h"
#include "core/policy.h"

namespace jobsched {

RunRecord NewRun(const JobRecord& job, std::string id, TimePoint scheduled_at, RunReason reason,
                 TimePoint now) {
  RunRecord r;
  r.id = std::move(id);
  r.job_id = job.spec.id;
  r.tenant = job.spec.tenant;
  r.queue = job.spec.queue;
  r.priority = job.spec.priority;
  r.scheduled_at = scheduled_at;
  r.available_at = std::max(scheduled_at, now);
  r.created_at = now;
  r.reason = reason;
  r.state = RunState::kQueued;
  r.max_attempts = job.spec.retry.max_attempts;
  r.payload = job.spec.payload;
  return r;
}

SchedulerActor::SchedulerActor(
    Store& store, const Clock& clock, EventBus& events, SchedulerActorOptions options,
    std::function<void()> on_fired,
    std::function<void(const std::string&, const std::string&)> on_cancelled)
    : store_(store),
      clock_(clock),
      events_(events),
      options_(options),
      on_fired_(std::move(on_fired)),
      on_cancelled_(std::move(on_cancelled)) {}

Result<FireRequest> SchedulerActor::PlanJob(const JobRecord& job, TimePoint now,
                                            const std::vector<RunRecord>* active_read) {
  ASSIGN_OR_RETURN(
      Occurrences occurrences,
      Occurrences::For(job.spec.schedule,
                       OccurrenceAnchor(job.spec.schedule, job.created_at, job.next_fire)));
  const FirePlan plan = PlanFiring(occurrences, job.spec.misfire, *job.next_fire, now);

  FireRequest req{.tenant = job.spec.tenant,
                  .job_id = job.spec.id,
                  .expected_version = job.version,
                  .expected_next_fire = job.next_fire,
                  .next_fire = plan.next_fire,
                  .new_state = plan.complete ? std::optional(JobState::kCompleted) : std::nullopt,
                  .now = now};

  std::vector<RunRecord> active;
  const bool needs_active = job.spec.overlap != Overlap::kAllow &&
                            std::any_of(plan.runs.begin(), plan.runs.end(),
                                        [](const PlannedRun& p) { return !p.skipped; });
  if (needs_active && active_read != nullptr) {
    active = *active_read;
  } else if (needs_active) {
    ASSIGN_OR_RETURN(active, store_.ActiveRuns(job.spec.tenant, job.spec.id));
  }
  // A planned occurrence's own run (fired again after a pause, held with its cancellation
  // requested) is not an earlier run: Fire withdraws the cancellation.
  std::erase_if(active, [&](const RunRecord& r) {
    return std::any_of(plan.runs.begin(), plan.runs.end(), [&](const PlannedRun& p) {
      return r.id == ScheduledRunId(job.spec.id, p.scheduled_at);
    });
  });

  const int64_t jitter_ms = job.spec.schedule.jitter.count();
  // The overlap policy is decided against the runs that existed before this firing: the runs of
  // one plan (fire_all catch-ups) do not overlap-skip each other; under "queue" they run one at
  // a time.
  const OverlapDecision d = DecideOverlap(job.spec.overlap, active);
  req.cancel_run_ids = d.cancel_run_ids;
  bool first = true;
  for (const PlannedRun& planned : plan.runs) {
    RunRecord run = NewRun(job, ScheduledRunId(job.spec.id, planned.scheduled_at),
                           planned.scheduled_at, planned.reason, now);
    if (planned.skipped) {
      run.state = RunState::kSkipped;
      run.error = planned.error;
      run.finished_at = now;
    } else if (d.skip) {
      run.state = RunState::kSkipped;
      run.error = "overlap: an earlier run of the job is still queued or running";
      run.finished_at = now;
    } else {
      run.exclusive = d.exclusive || (job.spec.overlap == Overlap::kQueue && !first);
      first = false;
      if (jitter_ms > 0) {
        run.available_at += Duration(std::uniform_int_distribution<int64_t>(0, jitter_ms)(rng_));
      }
    }
    req.runs.push_back(std::move(run));
  }
  return req;
}

void SchedulerActor::Fired(const FireRequest& request) {
  if (on_cancelled_) {
    for (const std::string& id : request.cancel_run_ids) on_cancelled_(request.tenant, id);
  }
  for (const RunRecord& run : request.runs) {
    if (run.state == RunState::kSkipped) {
      spdlog::info("run skipped run_id={} job_id={} tenant={} reason={}", run.id, run.job_id,
                   run.tenant, LogValue(run.error));
      SchedulerEvent skipped = RunEvent(EventType::kRunSkipped, run);
      skipped.error = run.error;
      events_.Emit(skipped);
    }
  }
}

Result<int> SchedulerActor::FireJob(const JobRecord& job, TimePoint now) {
  if (!job.next_fire) return 0;
  ASSIGN_OR_RETURN(FireRequest req, PlanJob(job, now));
  ASSIGN_OR_RETURN(FireResult result, store_.Fire(req));
  Fired(req);
  return result.created;
}

Result<int> SchedulerActor::Tick() {
  int created = 0;
  const TimePoint now = clock_.Now();
  const TenantScope scope = options_.scope ? options_.scope() : TenantScope{};
  deferred_.reset();
  for (int round = 0; round < 64; ++round) {
    ASSIGN_OR_RETURN(std::vector<JobRecord> due,
                     store_.DueJobs(now + options_.fire_ahead, options_.batch, scope));
    // The overlap policies need each job's unfinished runs: read them all in one call.
    std::vector<JobRef> refs;
    std::vector<size_t> ref_of(due.size(), SIZE_MAX);
    for (size_t i = 0; i < due.size(); ++i) {
      if (!due[i].next_fire || due[i].spec.overlap == Overlap::kAllow) continue;
      ref_of[i] = refs.size();
      refs.push_back({due[i].spec.tenant, due[i].spec.id});
    }
    std::vector<Result<std::vector<RunRecord>>> actives = store_.ActiveRunsMany(refs);
    std::vector<FireRequest> requests;
    requests.reserve(due.size());
    for (size_t i = 0; i < due.size(); ++i) {
      const JobRecord& job = due[i];
      if (!job.next_fire) continue;
      const std::vector<RunRecord>* active = nullptr;
      if (ref_of[i] != SIZE_MAX && ref_of[i] < actives.size()) {
        const Result<std::vector<RunRecord>>& a = actives[ref_of[i]];
        if (!a.ok()) return a.status();
        active = &*a;
        // Early, and its overlap decision depends on runs that may end before its time (other
        // than the occurrence's own: see PlanJob).
        if (*job.next_fire > now && !a->empty()) {
          const std::string own = ScheduledRunId(job.spec.id, *job.next_fire);
          if (std::any_of(a->begin(), a->end(), [&](const RunRecord& r) { return r.id != own; })) {
            deferred_ = std::min(deferred_.value_or(*job.next_fire), *job.next_fire);
            continue;
          }
        }
      }
      auto req = PlanJob(job, now, active);
      if (!req.ok()) {
        if (req.status().code() != StatusCode::kInvalidArgument) return req.status();
        // Its schedule no longer parses (a stored job that stopped validating): pause it, so it
        // is visible, fixable and not retried forever. Resuming brings it back.
        spdlog::error("job paused job_id={} tenant={}: its schedule cannot be fired: {}",
                      job.spec.id, job.spec.tenant, req.status().message());
        requests.push_back(FireRequest{.tenant = job.spec.tenant,
                                       .job_id = job.spec.id,
                                       .expected_version = job.version,
                                       .expected_next_fire = job.next_fire,
                                       .next_fire = job.next_fire,
                                       .new_state = JobState::kPaused,
                                       .now = now});
        continue;
      }
      requests.push_back(std::move(req).value());
    }
    const std::vector<Result<FireResult>> results = store_.FireMany(requests);
    int progressed = 0;
    bool queued_now = false;
    for (size_t i = 0; i < results.size() && i < requests.size(); ++i) {
      const Result<FireResult>& r = results[i];
      if (r.ok()) {
        created += r->created;
        queued_now = queued_now || r->created > 0;
        Fired(requests[i]);
        ++progressed;
      } else if (r.status().code() == StatusCode::kFailedPrecondition ||
                 r.status().code() == StatusCode::kNotFound) {
        ++progressed;  // fired or changed by someone else meanwhile: re-read next round
      } else {
        return r.status();
      }
    }
    // Workers start on this round's runs while the next round is fired.
    if (queued_now && on_fired_) on_fired_();
    // A pass may leave a job due (the on-time occurrences after a misfire, or more than a batch):
    // go on until nothing is due at `now`.
    if (due.empty() || progressed == 0) break;
  }
  return created;
}

Duration SchedulerActor::Loop() {
  const TimePoint pass_start = clock_.Now();
  auto fired = Tick();
  if (!fired.ok()) {
    failures_.Failed(fired.status());
    return Duration(500);
  }
  failures_.Succeeded();
  auto next = store_.NextFireTime(options_.scope ? options_.scope() : TenantScope{});
  if (!next.ok() || !next->has_value()) return options_.max_sleep;
  // Due before this pass began and still not fired: a job that cannot be fired (its schedule no
  // longer parses, e.g. a zone gone from the tz database) or a backlog beyond one pass. Do not
  // spin on it. (Jobs that fell due during the pass are fired at once.)
  if (**next <= pass_start) return Duration(20);
  // Jobs left for their time are the earliest within the horizon.
  if (deferred_) return std::max(Duration(1), *deferred_ - clock_.Now());
  return std::max(Duration(0), **next - options_.fire_ahead - clock_.Now());
}

void SchedulerActor::Start() {
  thread_.Start(
      "scheduler", [this] { return Loop(); }, options_.max_sleep);
}

}  // namespace jobsched
