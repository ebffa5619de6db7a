// The processor actor: claims runs and executes them on a pool of worker threads.
//
// Threads (all owned here): the dispatcher claims runs up to the free worker slots (priority,
// then due time: the store's claim order) and sleeps until the next run becomes available, a
// Wake() or 1 s; `concurrency` workers execute attempts; the committer writes their results
// with their fencing tokens, a batch at a time (a worker does not wait for the write, so a
// burst of short runs is not paced by store round trips), and keeps a result the store cannot
// take because it is unreachable, writing it again with backoff until the store takes it or
// refuses it as stale (a finished run is not run again after an outage shorter than its lease:
// its lease is renewed meanwhile); the renewer renews every attempt's
// lease in one batch every renew_interval and self-fences (kills the attempt, reports nothing)
// when it cannot renew before the lease ends; the watchdog enforces timeouts of builtin
// handlers.
//
// Claim-ahead: while a worker is idle, the dispatcher also claims runs that become available
// within `claim_ahead`, and a worker starts each of them when its time comes (the attempt's
// recorded start is that time, corrected by the completion). How many it holds ahead is what
// its workers can start within the window at the pace they have been running attempts (an
// average over recent attempts), at least `concurrency`, at most `max_ahead`: a node whose
// jobs are long holds few, and leaves the rest to idle nodes.
//
// Prefetch: with attempts this short, the dispatcher also claims, beyond the free workers, what
// they get through in `prefetch_window` at their recent pace (at most 8 x concurrency) and queues
// it for the next free worker, topping the queue up when half of it is used: a worker does not
// wait a store round trip for its next run, and each claim carries more runs. Attempts of 10 ms
// prefetch one run per worker, of 100 ms one per ten workers (a run left in the store is there
// for an idle node); the recorded start of a prefetched run is when its worker began it
// (corrected by the completion).
//
// Start order: workers, committer, renewer, watchdog, dispatcher. Stop order (Stop): dispatcher
// first (no new claims), then wait up to `grace` for the attempts (and their results), fence
// the rest and hand their runs back to the store (a new attempt elsewhere, reason lease_lost),
// then workers, committer, watchdog, renewer.
#pragma once

#include <jobsched/store.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "engine/actor.h"
#include "engine/event_bus.h"
#include "engine/executor.h"
#include "engine/failure_log.h"

namespace jobsched {

struct ProcessorOptions {
  std::string node_id;
  // Worker threads. Default: 4
  int concurrency = 4;
  // Queues served; empty = all. Default: all
  std::vector<std::string> queues;
  // Lease of a running attempt. Default: 15 s
  Duration lease{15000};
  // Lease renewal period. Default: 5 s
  Duration renew_interval{5000};
  // Longest sleep of the dispatcher (fallback poll). Default: 1 s
  Duration max_sleep{1000};
  // How long a job spec read for execution is reused. Default: 1 s
  Duration spec_cache_ttl{1000};
  // Claim runs this long before they become available (see above); 0 = off. Default: 250 ms
  Duration claim_ahead{250};
  // The most runs held ahead of their time. Default: 10,000
  int max_ahead = 10000;
  // Prefetch (see above): claim beyond the free workers what they get through in this long at
  // their recent pace; 0 = off. Default: 10 ms
  Duration prefetch_window{10};
};

class Processor {
 public:
  // `on_finished` is called after a run reaches a final state here (for dependencies).
  Processor(Store& store, const Clock& clock, const Executor& executor, EventBus& events,
            ProcessorOptions options, std::function<void(const RunRecord&)> on_finished);
  ~Processor();

  void Start();
  // See the stop order above. Returns after every worker has ended.
  void Stop(Duration grace);
  // New runs may be claimable.
  void Wake() { dispatcher_.Wake(); }

  // One dispatcher pass: claims up to the free worker slots (and, with a worker idle, the runs
  // due within claim_ahead) and hands the runs to the workers (which must be started). Returns
  // the number claimed.
  Result<int> ClaimOnce();
  // One renewer pass. Returns how long to wait before the next.
  Duration RenewOnce();
  // Jobs changed: the specs read for execution are read again (a run held ahead whose job was
  // deleted is then cancelled when its time comes, not executed).
  void ForgetSpecs();
  // Attempts claimed and whose result is not yet written.
  int active() const;
  // Stops the attempt of a run this node executes or holds, at once (a cancellation recorded in
  // the store reaches other nodes through their lease renewal). A run whose claim is in flight
  // is not started when the claim returns.
  void CancelLocal(const std::string& tenant, const std::string& run_id);

 private:
  struct Attempt;

  struct PendingCompletion;

  void WorkerLoop();
  // The next attempt whose time has come (held ones wait in held_), or null when stopping.
  std::shared_ptr<Attempt> NextAttempt();
  void Execute(const std::shared_ptr<Attempt>& attempt);
  // Hands the result to the committer and marks the attempt `reporting`; nothing when fenced.
  void Finish(const std::shared_ptr<Attempt>& attempt, const JobSpec* spec,
              const AttemptOutcome& outcome);
  // After the store took (or refused) a result: logs, events, dependencies; frees the attempt.
  void Reported(const PendingCompletion& p, const Completion& c, const Status& status);
  void RunAgain(const std::shared_ptr<Attempt>& cancelled);
  void CommitLoop();
  // Whether the store holds `c` already: its attempt (by fence) ended with its outcome.
  bool WrittenBefore(const Completion& c);
  void Release(const std::shared_ptr<Attempt>& attempt);
  // How many runs may be held ahead now (requires mu_).
  int AheadBudget() const;
  // Runs to claim beyond the free workers now (see Prefetch above). Caller holds mu_.
  int PrefetchBudget() const;
  Duration DispatchLoop();
  Duration WatchdogPass();
  Result<std::shared_ptr<const JobSpec>> SpecFor(const RunRecord& run);
  // The spec cache: its key for a run, and a spec read less than spec_cache_ttl before `now`
  // (null if none). CachedSpec requires mu_.
  static std::string SpecKey(const RunRecord& run);
  std::shared_ptr<const JobSpec> CachedSpec(const std::string& key,
                                            std::chrono::steady_clock::time_point now);
  // The specs of claimed runs, one per run (null: read it when it starts): from the cache, and
  // those not cached read in one store call (and cached, unless a job changed since
  // `generation`, the spec generation as the claim began).
  std::vector<std::shared_ptr<const JobSpec>> PrefetchSpecs(const std::vector<RunRecord>& runs,
                                                            uint64_t generation);
  double Random01();

  Store& store_;
  const Clock& clock_;
  const Executor& executor_;
  EventBus& events_;
  const ProcessorOptions options_;
  const std::function<void(const RunRecord&)> on_finished_;
  FailureLog claim_failures_{"processor: claims"};  // only the dispatcher thread
  std::mutex renew_log_mu_;                         // RenewOnce may run beside the renewer (tests)
  FailureLog renew_failures_{"processor: lease renewals"};  // guarded by renew_log_mu_

  mutable std::mutex mu_;
  std::condition_variable work_cv_;                          // a queued attempt or stopping
  std::condition_variable idle_cv_;                          // an attempt finished
  std::map<std::string, std::shared_ptr<Attempt>> active_;   // guarded by mu_; key tenant/run id
  std::deque<std::shared_ptr<Attempt>> queue_;               // guarded by mu_; due, in claim order
  std::multimap<TimePoint, std::shared_ptr<Attempt>> held_;  // guarded by mu_; claimed ahead
  int executing_ = 0;                                        // guarded by mu_; in a worker
  double mean_attempt_ms_ = 0;     // guarded by mu_; recent worker time per attempt (0: none yet)
  bool stopping_workers_ = false;  // guarded by mu_
  std::map<std::string,
           std::pair<std::shared_ptr<const JobSpec>, std::chrono::steady_clock::time_point>>
      spec_cache_;                       // guarded by mu_
  uint64_t spec_generation_ = 0;         // guarded by mu_; ForgetSpecs counts up
  std::set<std::string> early_cancels_;  // guarded by mu_; CancelLocal of runs not (yet) here
  std::mt19937_64 rng_{std::random_device{}()};  // guarded by mu_

  std::mutex commit_mu_;
  std::condition_variable commit_cv_;            // results queued, room in the queue, or stopping
  std::vector<PendingCompletion> commit_queue_;  // guarded by commit_mu_
  std::vector<Completion> commit_completions_;   // guarded by commit_mu_; one per entry above
  bool stopping_committer_ = false;              // guarded by commit_mu_
  std::atomic<bool> results_dropped_{false};     // results given up as the committer stopped
  std::thread committer_;

  std::vector<std::thread> workers_;
  ActorThread dispatcher_;
  ActorThread renewer_;
  ActorThread watchdog_;
};

}  // namespace jobsched
