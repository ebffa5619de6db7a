// The processor actor: claims runs and executes them on a pool of worker threads.
//
// Threads (all owned here): the dispatcher claims runs up to the free worker slots (priority,
// then due time: the store's claim order) and sleeps until the next run becomes available, a
// Wake() or 1 s; `concurrency` workers execute attempts and complete them with their fencing
// token; the renewer renews every running attempt's lease in one batch every renew_interval
// and self-fences (kills the attempt, reports nothing) when it cannot renew before the lease
// ends; the watchdog enforces timeouts of builtin handlers.
//
// Start order: workers, renewer, watchdog, dispatcher. Stop order (Stop): dispatcher first (no
// new claims), then wait up to `grace` for running attempts, fence the rest and hand their runs
// back to the store (a new attempt elsewhere, reason lease_lost), then workers, watchdog,
// renewer.
#pragma once

#include <jobsched/store.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
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

  // One dispatcher pass: claims up to the free worker slots and hands the runs to the workers
  // (which must be started). Returns the number claimed.
  Result<int> ClaimOnce();
  // One renewer pass. Returns how long to wait before the next.
  Duration RenewOnce();
  // Attempts claimed and not yet completed.
  int active() const;
  // Stops the attempt of a run this node executes, at once (a cancellation recorded in the
  // store reaches other nodes through their lease renewal). No-op for other runs.
  void CancelLocal(const std::string& tenant, const std::string& run_id);

 private:
  struct Attempt;

  void WorkerLoop();
  void Execute(const std::shared_ptr<Attempt>& attempt);
  void Finish(const std::shared_ptr<Attempt>& attempt, const JobSpec* spec,
              const AttemptOutcome& outcome);
  Duration DispatchLoop();
  Duration WatchdogPass();
  Result<std::shared_ptr<const JobSpec>> SpecFor(const RunRecord& run);
  // The spec cache: its key for a run, and a spec read less than spec_cache_ttl before `now`
  // (null if none). CachedSpec requires mu_.
  static std::string SpecKey(const RunRecord& run);
  std::shared_ptr<const JobSpec> CachedSpec(const std::string& key,
                                            std::chrono::steady_clock::time_point now);
  // Reads the specs of claimed runs that are not cached, in one store call.
  void PrefetchSpecs(const std::vector<RunRecord>& runs);
  // Group commit: completions that arrive while one batch is being written go into the next
  // batch, written by one of the waiting workers (one durable write per batch).
  Status CompleteGrouped(const Completion& completion);
  double Random01();

  Store& store_;
  const Clock& clock_;
  const Executor& executor_;
  EventBus& events_;
  const ProcessorOptions options_;
  const std::function<void(const RunRecord&)> on_finished_;
  FailureLog claim_failures_{"processor: claims"};  // only the dispatcher thread

  mutable std::mutex mu_;
  std::condition_variable work_cv_;                         // a queued attempt or stopping
  std::condition_variable idle_cv_;                         // an attempt finished
  std::map<std::string, std::shared_ptr<Attempt>> active_;  // guarded by mu_; key tenant/run id
  std::deque<std::shared_ptr<Attempt>> queue_;              // guarded by mu_
  bool stopping_workers_ = false;                           // guarded by mu_
  std::map<std::string,
           std::pair<std::shared_ptr<const JobSpec>, std::chrono::steady_clock::time_point>>
      spec_cache_;                               // guarded by mu_
  std::mt19937_64 rng_{std::random_device{}()};  // guarded by mu_

  struct PendingCompletion;
  std::mutex commit_mu_;
  std::condition_variable commit_cv_;
  std::vector<PendingCompletion*> commit_queue_;  // guarded by commit_mu_
  bool committing_ = false;                       // guarded by commit_mu_

  std::vector<std::thread> workers_;
  ActorThread dispatcher_;
  ActorThread renewer_;
  ActorThread watchdog_;
};

}  // namespace jobsched
