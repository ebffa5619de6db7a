#include "engine/processor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <unordered_map>

#include "core/log_fields.h"
#include "core/policy.h"

namespace jobsched {

using SteadyTime = std::chrono::steady_clock::time_point;

struct Processor::Attempt {
  RunRecord run;
  exec::CancelSource cancel;
  TimePoint started{};  // when a worker began it
  bool held = false;    // claimed ahead of its available_at (claim_ahead)
  bool began = false;   // its handler began (set by the worker before it does)
  // Read when it was claimed (null: read when it starts); guarded by Processor::mu_
  std::shared_ptr<const JobSpec> spec;
  TimePoint lease_until{};             // guarded by Processor::mu_
  std::optional<SteadyTime> deadline;  // builtin timeouts; guarded by Processor::mu_
  std::atomic<bool> reporting{false};  // its result is with the committer
  // Its result could not be written (the store was unreachable) and waits for the committer's
  // next try: its lease is renewed meanwhile, so the run stays this node's.
  std::atomic<bool> unwritten{false};
  std::string key() const { return run.tenant + "/" + run.id; }
};

// A result queued for the committer, beside its Completion (commit_completions_).
struct Processor::PendingCompletion {
  std::shared_ptr<Attempt> attempt;
  EventType event = EventType::kRunSucceeded;
};

Processor::Processor(Store& store, const Clock& clock, const Executor& executor, EventBus& events,
                     ProcessorOptions options, std::function<void(const RunRecord&)> on_finished)
    : store_(store),
      clock_(clock),
      executor_(executor),
      events_(events),
      options_(std::move(options)),
      on_finished_(std::move(on_finished)) {}

Processor::~Processor() { Stop(Duration(0)); }

void Processor::Start() {
  {
    std::lock_guard lock(mu_);
    stopping_workers_ = false;
  }
  {
    std::lock_guard lock(commit_mu_);
    stopping_committer_ = false;
  }
  for (int i = 0; i < options_.concurrency; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  committer_ = std::thread([this] { CommitLoop(); });
  renewer_.Start(
      "renewer", [this] { return RenewOnce(); }, options_.renew_interval);
  watchdog_.Start(
      "watchdog", [this] { return WatchdogPass(); }, Duration(1000));
  dispatcher_.Start(
      "dispatcher", [this] { return DispatchLoop(); }, options_.max_sleep);
}

void Processor::Stop(Duration grace) {
  dispatcher_.Stop();
  // Whether runs are given up here (their attempts fenced) and must be handed back.
  bool hand_back = false;
  {
    std::unique_lock lock(mu_);
    idle_cv_.wait_for(lock, grace, [this] { return active_.empty(); });
    for (auto& [key, attempt] : active_) {
      if (!attempt->reporting) hand_back = true;
      attempt->cancel.Cancel(exec::CancelReason::kFenced);
    }
    stopping_workers_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  {
    std::lock_guard lock(commit_mu_);
    stopping_committer_ = true;
  }
  commit_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  watchdog_.Stop();
  renewer_.Stop();
  // Attempts fenced above (ended by now: the workers are joined), any that were never started
  // and results that could not be written go back to the store at once (attempt outcome
  // lease_lost, a new attempt elsewhere) instead of waiting for their leases to end.
  {
    std::lock_guard lock(mu_);
    if (!active_.empty() || results_dropped_.exchange(false)) hand_back = true;
    active_.clear();
    queue_.clear();
    held_.clear();
  }
  if (hand_back) {
    auto recovered =
        store_.RecoverLostRuns(clock_.Now(), options_.node_id, /*max_leases_lost=*/1 << 20, 10000);
    if (!recovered.ok()) {
      spdlog::warn("node {}: could not hand back its unfinished runs: {}", options_.node_id,
                   recovered.status().ToString());
    } else {
      spdlog::info("node {}: handed back {} unfinished runs", options_.node_id, recovered->size());
    }
  }
}

void Processor::CancelLocal(const std::string& tenant, const std::string& run_id) {
  std::lock_guard lock(mu_);
  const std::string key = tenant + "/" + run_id;
  auto it = active_.find(key);
  if (it != active_.end()) {
    it->second->cancel.Cancel(exec::CancelReason::kCancelled);
    return;
  }
  // Not here, or its claim is in flight: remembered (a few), so that a claim returning it now
  // does not start it.
  if (early_cancels_.size() >= 1024) early_cancels_.clear();
  early_cancels_.insert(key);
}

void Processor::ForgetSpecs() {
  std::lock_guard lock(mu_);
  ++spec_generation_;
  spec_cache_.clear();
  // Held, queued, or starting (an attempt reads its spec as it starts, before run-started).
  for (auto& [key, attempt] : active_) attempt->spec.reset();
}

int Processor::active() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(active_.size());
}

double Processor::Random01() {
  std::lock_guard lock(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

int Processor::AheadBudget() const {
  if (options_.claim_ahead.count() <= 0 || options_.max_ahead <= 0) return 0;
  // Ahead only while a worker is idle: a run held by a node busy with long attempts would wait
  // for a worker while another node could start it.
  if (executing_ + static_cast<int>(queue_.size()) >= options_.concurrency) return 0;
  // What the workers get through in a second at their recent pace.
  double budget = options_.concurrency;
  if (mean_attempt_ms_ > 0)
    budget = std::max(budget, options_.concurrency * 1000.0 / mean_attempt_ms_);
  return static_cast<int>(std::min<double>(budget, options_.max_ahead)) -
         static_cast<int>(held_.size());
}

int Processor::PrefetchBudget() const {
  if (options_.prefetch_window.count() <= 0 || mean_attempt_ms_ <= 0) return 0;
  const double n = options_.concurrency * static_cast<double>(options_.prefetch_window.count()) /
                   std::max(mean_attempt_ms_, 1e-3);
  return static_cast<int>(std::min<double>(n, 8.0 * options_.concurrency));
}

Result<int> Processor::ClaimOnce() {
  int want, ahead;
  uint64_t generation;
  {
    std::lock_guard lock(mu_);
    if (stopping_workers_) return 0;
    generation = spec_generation_;
    const int free_slots = options_.concurrency - executing_ - static_cast<int>(queue_.size());
    const int prefetch = PrefetchBudget();
    // A free worker claims at once; a full one tops its prefetch up when half of it is used.
    want = free_slots + prefetch;
    if (free_slots <= 0 && want < std::max(1, (prefetch + 1) / 2)) want = 0;
    ahead = AheadBudget();
  }
  const TimePoint now = clock_.Now();
  std::vector<RunRecord> runs;
  if (want > 0) {
    ASSIGN_OR_RETURN(runs, store_.ClaimRuns({.node = options_.node_id,
                                             .queues = options_.queues,
                                             .now = now,
                                             .lease = options_.lease,
                                             .max_runs = want}));
  }
  // Nothing more is available now: take what becomes available within claim_ahead.
  if (ahead > 0 && static_cast<int>(runs.size()) < std::max(want, 1)) {
    ASSIGN_OR_RETURN(std::vector<RunRecord> later,
                     store_.ClaimRuns({.node = options_.node_id,
                                       .queues = options_.queues,
                                       .now = now,
                                       .lease = options_.lease,
                                       .max_runs = ahead,
                                       .horizon = now + options_.claim_ahead,
                                       // not a run available now that appeared meanwhile:
                                       // that one is for a free worker, here or elsewhere
                                       .after = now}));
    for (RunRecord& r : later) runs.push_back(std::move(r));
  }
  std::vector<std::shared_ptr<const JobSpec>> specs = PrefetchSpecs(runs, generation);
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < runs.size(); ++i) {
      RunRecord& run = runs[i];
      auto attempt = std::make_shared<Attempt>();
      // A run held ahead starts with the spec of its claim, however long the cache keeps it
      // (unless a job changed since the claim began: then it reads its job when it starts).
      if (generation == spec_generation_) attempt->spec = specs[i];
      attempt->run = std::move(run);
      attempt->lease_until = now + options_.lease;
      if (early_cancels_.erase(attempt->key()) > 0) {
        attempt->cancel.Cancel(exec::CancelReason::kCancelled);
      }
      active_[attempt->key()] = attempt;
      if (attempt->run.available_at > now) {
        attempt->held = true;
        held_.emplace(attempt->run.available_at, attempt);
      } else {
        queue_.push_back(attempt);
      }
    }
  }
  work_cv_.notify_all();
  return static_cast<int>(runs.size());
}

Duration Processor::DispatchLoop() {
  auto claimed = ClaimOnce();
  if (!claimed.ok()) {
    claim_failures_.Failed(claimed.status());
    return Duration(500);
  }
  claim_failures_.Succeeded();
  bool ahead = false;
  {
    std::lock_guard lock(mu_);
    if (executing_ + static_cast<int>(queue_.size()) >= options_.concurrency)
      return options_.max_sleep;  // woken when a worker is free
    ahead = AheadBudget() > 0;
  }
  if (*claimed > 0) return Duration(0);
  auto next = store_.NextAvailableTime();
  if (!next.ok() || !next->has_value()) return options_.max_sleep;
  const Duration until = **next - (ahead ? options_.claim_ahead : Duration(0)) - clock_.Now();
  // A run that is available but was not claimed (an exclusive run whose job runs elsewhere, a
  // full quota): look again soon, not at once (a finished attempt here wakes the dispatcher).
  return until.count() > 0 ? until : Duration(100);
}

std::shared_ptr<Processor::Attempt> Processor::NextAttempt() {
  std::unique_lock lock(mu_);
  while (true) {
    if (!held_.empty()) {
      const TimePoint now = clock_.Now();
      while (!held_.empty() && held_.begin()->first <= now) {
        queue_.push_back(std::move(held_.begin()->second));
        held_.erase(held_.begin());
      }
    }
    if (!queue_.empty()) {
      std::shared_ptr<Attempt> attempt = std::move(queue_.front());
      queue_.pop_front();
      ++executing_;
      return attempt;
    }
    if (stopping_workers_) return nullptr;
    if (held_.empty()) {
      work_cv_.wait(lock);
    } else {
      // Real time, re-checked against the clock (a test's fake clock moves by hand).
      const Duration until = held_.begin()->first - clock_.Now();
      work_cv_.wait_for(lock, std::clamp(until, Duration(1), Duration(20)));
    }
  }
}

void Processor::WorkerLoop() {
  MarkNodeThread();
  while (std::shared_ptr<Attempt> attempt = NextAttempt()) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      Execute(attempt);
    } catch (const std::exception& e) {
      spdlog::error("worker: attempt of {} failed unexpectedly: {}", attempt->key(), e.what());
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    {
      std::lock_guard lock(mu_);
      --executing_;
      // Up at once, down gradually: when attempts get longer, prefetching (which the mean
      // sizes) stops at the first long one, not after dozens of them, and a run claimed ahead
      // does not show `running` while it waits for seconds.
      mean_attempt_ms_ = ms > mean_attempt_ms_ ? ms : 0.95 * mean_attempt_ms_ + 0.05 * ms;
    }
    // Its result is the committer's now; without one (fenced), it ends here.
    if (!attempt->reporting) Release(attempt);
    dispatcher_.Wake();
  }
}

void Processor::Release(const std::shared_ptr<Attempt>& attempt) {
  {
    std::lock_guard lock(mu_);
    active_.erase(attempt->key());
  }
  idle_cv_.notify_all();
}

std::vector<std::shared_ptr<const JobSpec>> Processor::PrefetchSpecs(
    const std::vector<RunRecord>& runs, uint64_t generation) {
  std::vector<std::shared_ptr<const JobSpec>> specs(runs.size());
  std::vector<JobRef> missing;
  std::vector<std::string> keys;                     // of `missing`
  std::unordered_map<std::string, size_t> position;  // key -> index in `missing`
  std::vector<std::pair<size_t, size_t>> waiting;    // (run, its index in `missing`)
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < runs.size(); ++i) {
      std::string key = SpecKey(runs[i]);
      // Taken now, with the same `now` as the check: an entry about to expire is still used.
      if ((specs[i] = CachedSpec(key, now))) continue;
      auto [at, added] = position.emplace(key, keys.size());
      waiting.emplace_back(i, at->second);
      if (added) {
        keys.push_back(std::move(key));
        missing.push_back({runs[i].tenant, runs[i].job_id});
      }
    }
  }
  if (missing.empty()) return specs;
  std::vector<Result<JobRecord>> jobs = store_.GetJobs(missing);
  std::vector<std::shared_ptr<const JobSpec>> read(jobs.size());
  std::lock_guard lock(mu_);
  // A job changed since the claim began: what was read may be old. The runs without a spec read
  // theirs when they start.
  if (generation != spec_generation_) return specs;
  if (spec_cache_.size() + jobs.size() > 10000) spec_cache_.clear();
  for (size_t k = 0; k < jobs.size() && k < keys.size(); ++k) {
    if (!jobs[k].ok()) continue;  // SpecFor reads it again and reports
    read[k] = std::make_shared<const JobSpec>(std::move(jobs[k]->spec));
    spec_cache_[keys[k]] = {read[k], now};
  }
  for (const auto& [i, k] : waiting) {
    if (k < read.size()) specs[i] = read[k];
  }
  return specs;
}

std::string Processor::SpecKey(const RunRecord& run) { return run.tenant + "/" + run.job_id; }

std::shared_ptr<const JobSpec> Processor::CachedSpec(const std::string& key,
                                                     std::chrono::steady_clock::time_point now) {
  auto it = spec_cache_.find(key);
  if (it == spec_cache_.end() || now - it->second.second >= options_.spec_cache_ttl) return {};
  return it->second.first;
}

Result<std::shared_ptr<const JobSpec>> Processor::SpecFor(const RunRecord& run) {
  const std::string key = SpecKey(run);
  const auto now = std::chrono::steady_clock::now();
  uint64_t generation;
  {
    std::lock_guard lock(mu_);
    if (auto cached = CachedSpec(key, now)) return cached;
    generation = spec_generation_;
  }
  ASSIGN_OR_RETURN(JobRecord job, store_.GetJob(run.tenant, run.job_id));
  auto spec = std::make_shared<const JobSpec>(std::move(job.spec));
  std::lock_guard lock(mu_);
  if (generation != spec_generation_) return spec;  // used once, not cached
  if (spec_cache_.size() > 10000) spec_cache_.clear();
  spec_cache_[key] = {spec, now};
  return spec;
}

void Processor::Execute(const std::shared_ptr<Attempt>& attempt) {
  const RunRecord& run = attempt->run;
  attempt->started = clock_.Now();
  // Cancelled, or its lease lost, while it waited (held for its time, or for a worker): the
  // handler never begins.
  if (attempt->cancel.cancelled() || run.cancel_requested) {
    const bool fenced = attempt->cancel.reason() == exec::CancelReason::kFenced;
    Finish(attempt, nullptr,
           {.kind = fenced ? AttemptOutcome::Kind::kFenced : AttemptOutcome::Kind::kCancelled,
            .error = "cancelled before it started"});
    return;
  }
  std::shared_ptr<const JobSpec> claimed_spec;
  {
    std::lock_guard lock(mu_);
    claimed_spec = attempt->spec;
  }
  auto spec = claimed_spec ? claimed_spec : SpecFor(run);
  if (!spec.ok()) {
    // A job deleted between the claim and the start: the run never started, so it is cancelled.
    const bool deleted = spec.status().code() == StatusCode::kNotFound;
    Finish(attempt, nullptr,
           {.kind = deleted ? AttemptOutcome::Kind::kCancelled : AttemptOutcome::Kind::kFailed,
            .error = deleted ? "job deleted before the run started"
                             : "cannot read job: " + spec.status().message()});
    return;
  }
  // The handler begins (an attempt ended above never started: no kRunStarted).
  spdlog::info("run running run_id={} job_id={} tenant={} node={} attempt={} fence={}", run.id,
               run.job_id, run.tenant, options_.node_id, run.attempt, run.fence);
  events_.Emit(RunEvent(EventType::kRunStarted, run));
  if ((*spec)->handler.type == HandlerSpec::Type::kBuiltin && (*spec)->timeout.count() > 0) {
    {
      std::lock_guard lock(mu_);
      attempt->deadline = std::chrono::steady_clock::now() + (*spec)->timeout;
    }
    watchdog_.Wake();
  }
  if (run.cancel_requested) attempt->cancel.Cancel(exec::CancelReason::kCancelled);
  attempt->began = true;
  const AttemptOutcome outcome = executor_.Run(**spec, run, attempt->cancel);
  Finish(attempt, spec->get(), outcome);
}

void Processor::Finish(const std::shared_ptr<Attempt>& attempt, const JobSpec* spec,
                       const AttemptOutcome& outcome) {
  const RunRecord& run = attempt->run;
  using Kind = AttemptOutcome::Kind;
  if (outcome.kind == Kind::kFenced) {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_workers_;
    }
    if (stopping) {
      spdlog::info(
          "run stopped run_id={} job_id={} tenant={} node={}: the node is stopping, the "
          "run is handed back",
          run.id, run.job_id, run.tenant, options_.node_id);
      return;
    }
    spdlog::warn(
        "run fenced run_id={} job_id={} tenant={} node={}: lease lost, result not reported", run.id,
        run.job_id, run.tenant, options_.node_id);
    events_.Emit(RunEvent(EventType::kRunLeaseLost, run));
    return;
  }
  const TimePoint now = clock_.Now();
  PendingCompletion p{.attempt = attempt};
  Completion c{.tenant = run.tenant,
               .run_id = run.id,
               .fence = run.fence,
               .now = now,
               .exit_code = outcome.exit_code,
               .http_status = outcome.http_status,
               .output = outcome.output,
               .output_bytes = outcome.output_bytes,
               .error = outcome.error,
               .started_at = attempt->started,
               // A run cancelled before its handler began: the attempt is not recorded.
               .began = attempt->began || outcome.kind != Kind::kCancelled};
  switch (outcome.kind) {
    case Kind::kSucceeded:
      c.state = RunState::kSucceeded;
      c.attempt_outcome = "succeeded";
      break;
    case Kind::kFailed:
    case Kind::kTimedOut: {
      const bool timed_out = outcome.kind == Kind::kTimedOut;
      c.attempt_outcome = timed_out ? "timed_out" : "failed";
      const int real_attempts = run.attempt - run.leases_lost;
      if (spec != nullptr && real_attempts < run.max_attempts) {
        c.state = RunState::kRetryWait;
        c.retry_at = now + RetryDelay(spec->retry, real_attempts, Random01());
        p.event = EventType::kRunRetrying;
      } else {
        c.state = timed_out ? RunState::kTimedOut : RunState::kFailed;
        p.event = timed_out ? EventType::kRunTimedOut : EventType::kRunFailed;
      }
      break;
    }
    case Kind::kCancelled:
      c.state = RunState::kCancelled;
      c.attempt_outcome = "cancelled";
      p.event = EventType::kRunCancelled;
      break;
    case Kind::kFenced:
      return;
  }
  attempt->reporting = true;
  // The committer writes results in batches; a worker waits only when it is far behind.
  // (A burst of runs claimed ahead must not wait here: room for all of them.)
  const size_t max_queued =
      static_cast<size_t>(std::max(1024, options_.max_ahead + 4 * options_.concurrency));
  {
    std::unique_lock lock(commit_mu_);
    commit_cv_.wait(lock, [&] { return commit_queue_.size() < max_queued || stopping_committer_; });
    commit_queue_.push_back(std::move(p));
    commit_completions_.push_back(std::move(c));
  }
  commit_cv_.notify_all();
}

void Processor::CommitLoop() {
  MarkNodeThread();
  std::vector<PendingCompletion> batch;
  std::vector<Completion> completions;
  // Results the store could not take (unreachable), tried again with the next batch and at
  // least every `backoff` (100 ms doubling to 2 s): a finished run is not run again because of
  // an outage shorter than its lease. Given up only when the processor stops.
  std::vector<PendingCompletion> unwritten;
  std::vector<Completion> unwritten_completions;
  Duration backoff(100);
  FailureLog failures("processor: results");
  while (true) {
    bool stopping;
    {
      std::unique_lock lock(commit_mu_);
      auto ready = [this] { return !commit_queue_.empty() || stopping_committer_; };
      if (unwritten.empty()) {
        commit_cv_.wait(lock, ready);
      } else {
        commit_cv_.wait_for(lock, backoff, ready);
      }
      stopping = stopping_committer_;
      if (commit_queue_.empty() && unwritten.empty()) return;  // stopping, every result written
      batch.swap(commit_queue_);
      completions.swap(commit_completions_);
    }
    commit_cv_.notify_all();  // room for the workers
    const bool retrying = !unwritten.empty();
    for (size_t i = 0; i < unwritten.size(); ++i) {
      batch.push_back(std::move(unwritten[i]));
      completions.push_back(std::move(unwritten_completions[i]));
    }
    unwritten.clear();
    unwritten_completions.clear();
    std::vector<Status> results = store_.CompleteMany(completions);
    Status outage;
    for (size_t i = 0; i < batch.size(); ++i) {
      Status status = i < results.size() ? results[i] : Internal("short reply from CompleteMany");
      if (status.code() == StatusCode::kUnavailable && !stopping) {
        if (!batch[i].attempt->unwritten.exchange(true)) {
          renewer_.Wake();  // its lease is renewed from now on
        }
        if (outage.ok()) outage = status;
        unwritten.push_back(std::move(batch[i]));
        unwritten_completions.push_back(std::move(completions[i]));
        continue;
      }
      if (status.code() == StatusCode::kUnavailable) {
        spdlog::error(
            "run result not written run_id={} job_id={} tenant={} node={}: {}; stopping, the run "
            "is run again after its lease",
            batch[i].attempt->run.id, batch[i].attempt->run.job_id, batch[i].attempt->run.tenant,
            options_.node_id, status.ToString());
        results_dropped_ = true;
        Release(batch[i].attempt);
        continue;
      }
      // A write that timed out may have landed (the reply was lost, not the command): then
      // writing it again finds the attempt ended by this very result.
      if (status.code() == StatusCode::kFailedPrecondition && batch[i].attempt->unwritten &&
          WrittenBefore(completions[i])) {
        status = Status::Ok();
      }
      Reported(batch[i], completions[i], status);
    }
    if (!outage.ok()) {
      failures.Failed(Status(
          outage.code(),
          std::to_string(unwritten.size()) + " results kept to write again: " + outage.message()));
      backoff = retrying ? std::min(backoff * 2, Duration(2000)) : Duration(100);
    } else if (!results.empty()) {
      failures.Succeeded();
    }
    batch.clear();
    completions.clear();
  }
}

bool Processor::WrittenBefore(const Completion& c) {
  auto run = store_.GetRun(c.tenant, c.run_id);
  if (!run.ok()) return false;
  // Not recorded as an attempt: the run ended cancelled with this fence.
  if (!c.began) return run->state == RunState::kCancelled && run->fence == c.fence;
  return std::any_of(run->attempts.begin(), run->attempts.end(), [&](const AttemptRecord& a) {
    return a.fence == c.fence && a.finished_at && a.outcome == c.attempt_outcome;
  });
}

void Processor::Reported(const PendingCompletion& p, const Completion& c, const Status& status) {
  const RunRecord& run = p.attempt->run;
  if (status.code() == StatusCode::kFailedPrecondition && status.message() == kCancelWithdrawn) {
    RunAgain(p.attempt);
    return;
  }
  if (!status.ok()) {
    spdlog::warn("run result rejected run_id={} job_id={} tenant={} node={} fence={}: {}", run.id,
                 run.job_id, run.tenant, options_.node_id, run.fence, status.ToString());
    Release(p.attempt);
    return;
  }
  spdlog::info("run {} run_id={} job_id={} tenant={} node={} attempt={}{}{}", RunStateName(c.state),
               run.id, run.job_id, run.tenant, options_.node_id, run.attempt,
               c.error.empty() ? "" : " error=", c.error.empty() ? "" : LogValue(c.error));
  SchedulerEvent finished_event = RunEvent(p.event, run);
  finished_event.error = c.error;
  finished_event.duration = c.now - p.attempt->started;
  events_.Emit(finished_event);
  if (c.state == RunState::kRetryWait) {
    dispatcher_.Wake();
  } else if (on_finished_) {
    RunRecord finished = run;
    finished.state = c.state;
    finished.finished_at = c.now;
    on_finished_(finished);
  }
  Release(p.attempt);
}

// A cancellation of an attempt whose handler never began, refused by the store: it was
// withdrawn (the run's occurrence was fired again after a pause, or its job created again), or
// nothing asked for it and the job exists (deleted and created again before the result was
// written). The run is still this node's, with the same fence: a new attempt of it runs it, at
// its time, reading its job again.
void Processor::RunAgain(const std::shared_ptr<Attempt>& cancelled) {
  const RunRecord& run = cancelled->run;
  spdlog::info("run run_id={} job_id={} tenant={} node={}: its cancellation was withdrawn, it runs",
               run.id, run.job_id, run.tenant, options_.node_id);
  auto again = std::make_shared<Attempt>();
  again->run = run;
  {
    std::lock_guard lock(mu_);
    again->lease_until = cancelled->lease_until;
    if (stopping_workers_) {
      // Handed back with the others when the node stops, or reaped after its lease.
      active_.erase(again->key());
      idle_cv_.notify_all();
      return;
    }
    active_[again->key()] = again;
    if (again->run.available_at > clock_.Now()) {
      again->held = true;
      held_.emplace(again->run.available_at, again);
    } else {
      queue_.push_back(again);
    }
  }
  work_cv_.notify_all();
}

Duration Processor::RenewOnce() {
  std::vector<std::shared_ptr<Attempt>> attempts;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, attempt] : active_) {
      // A fenced attempt's run was given up: its lease must end (for the reaper) even if the
      // store is back before the attempt's handler has returned. A result being written needs
      // no renewal, unless the store could not take it.
      if ((!attempt->reporting || attempt->unwritten) &&
          attempt->cancel.reason() != exec::CancelReason::kFenced) {
        attempts.push_back(attempt);
      }
    }
  }
  if (attempts.empty()) return options_.renew_interval;
  std::vector<LeaseRef> refs;
  refs.reserve(attempts.size());
  for (const auto& a : attempts) refs.push_back({a->run.tenant, a->run.id, a->run.fence});
  const TimePoint now = clock_.Now();
  auto statuses = store_.RenewLeases(refs, now, options_.lease);
  if (statuses.ok() && statuses->size() == attempts.size()) {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < attempts.size(); ++i) {
      switch ((*statuses)[i]) {
        case LeaseStatus::kRenewed:
          attempts[i]->lease_until = now + options_.lease;
          break;
        case LeaseStatus::kCancelRequested:
          attempts[i]->lease_until = now + options_.lease;
          attempts[i]->cancel.Cancel(exec::CancelReason::kCancelled);
          break;
        case LeaseStatus::kStale:
          // An attempt whose result was written since the list was taken is stale too (and a
          // result kept for the store is refused by it as stale when it is written).
          if (!attempts[i]->reporting && !attempts[i]->cancel.cancelled()) {
            spdlog::warn("lease lost run_id={} node={}: stopping the attempt", attempts[i]->run.id,
                         options_.node_id);
            attempts[i]->cancel.Cancel(exec::CancelReason::kFenced);
          }
          break;
      }
    }
    std::lock_guard log_lock(renew_log_mu_);
    renew_failures_.Succeeded();
    return options_.renew_interval;
  }
  // The store cannot be reached: self-fence every attempt whose lease is about to end, and try
  // again soon.
  {
    std::lock_guard log_lock(renew_log_mu_);
    renew_failures_.Failed(statuses.ok() ? Internal("short reply from RenewLeases")
                                         : statuses.status());
  }
  const Duration margin = std::min(options_.renew_interval, options_.lease / 5);
  std::lock_guard lock(mu_);
  for (const auto& a : attempts) {
    // (A finished attempt whose result waits for the store has nothing left to stop.)
    if (now + margin >= a->lease_until && !a->reporting && !a->cancel.cancelled()) {
      spdlog::error("self-fencing run_id={} node={}: lease ends before it can be renewed",
                    a->run.id, options_.node_id);
      a->cancel.Cancel(exec::CancelReason::kFenced);
    }
  }
  return std::min(Duration(250), options_.renew_interval);
}

Duration Processor::WatchdogPass() {
  const SteadyTime now = std::chrono::steady_clock::now();
  const TimePoint wall = clock_.Now();
  const Duration margin = std::min(options_.renew_interval, options_.lease / 5);
  Duration sleep(1000);
  std::lock_guard lock(mu_);
  for (auto& [key, attempt] : active_) {
    // A renewal stuck in a store call that does not return (a silent network) must not let the
    // lease run out under a running attempt: the watchdog fences it at the same margin.
    if (!attempt->reporting && !attempt->cancel.cancelled()) {
      if (wall + margin >= attempt->lease_until) {
        spdlog::error("self-fencing run_id={} node={}: lease ends before it can be renewed",
                      attempt->run.id, options_.node_id);
        attempt->cancel.Cancel(exec::CancelReason::kFenced);
      } else {
        sleep = std::min(sleep, attempt->lease_until - margin - wall);
      }
    }
    if (!attempt->deadline) continue;
    if (*attempt->deadline <= now) {
      attempt->cancel.Cancel(exec::CancelReason::kTimeout);
      attempt->deadline.reset();
    } else {
      sleep = std::min(sleep, std::chrono::ceil<Duration>(*attempt->deadline - now));
    }
  }
  return sleep;
}

}  // namespace jobsched
