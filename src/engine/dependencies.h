// The dependency actor: triggers jobs with depends_on (docs/engine.md). A dependent job fires when
// every dependency has a run that succeeded after its barrier (`dependency_since`); a
// dependency's failed or timed-out run after the barrier turns the pending trigger into a
// skipped run ("dependency_failed: <id>"). Either way the barrier moves to the finish time of
// the runs used, in the same atomic Store::Fire, and the run id is derived from the parent run
// ids, so a second evaluation of the same runs collides and creates nothing.
#pragma once

#include <jobsched/store.h>

#include <functional>
#include <mutex>
#include <set>
#include <utility>

#include "engine/actor.h"
#include "engine/event_bus.h"

namespace jobsched {

class DependencyActor {
 public:
  DependencyActor(Store& store, const Clock& clock, EventBus& events,
                  std::function<void()> on_fired)
      : store_(store), clock_(clock), events_(events), on_fired_(std::move(on_fired)) {}

  // A run reached a final state: its job's dependents are evaluated at the next pass.
  void OnRunFinished(const RunRecord& run);
  // A job was created, changed or resumed: it is evaluated at the next pass (its dependencies
  // may have succeeded meanwhile, or it may depend on others now).
  void OnJobChanged(const std::string& tenant, const std::string& job_id);
  // One pass over the jobs marked by OnRunFinished. Returns the runs created.
  Result<int> Tick();
  // Evaluates every job with dependencies in every tenant: the safety net for a trigger whose
  // evaluation was lost (the process died between a run's end and its evaluation). The actor
  // runs it at start and every `scan_interval`. Returns the runs created.
  Result<int> ScanAll();
  // Evaluates one dependent job until no trigger is left. Returns the runs created.
  Result<int> Evaluate(const std::string& tenant, const std::string& job_id);

  void Start();
  void Stop() { thread_.Stop(); }

 private:
  Store& store_;
  const Clock& clock_;
  EventBus& events_;
  const std::function<void()> on_fired_;
  std::mutex mu_;
  std::set<std::pair<std::string, std::string>> finished_jobs_;  // guarded by mu_
  std::set<std::pair<std::string, std::string>> changed_jobs_;   // guarded by mu_
  std::chrono::steady_clock::time_point next_scan_{};            // only the actor thread
  ActorThread thread_;
};

}  // namespace jobsched
