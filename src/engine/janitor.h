// The janitor actor: retention. Deletes finished runs beyond the newest `keep_runs_per_job` of
// each job that are older than `keep_runs_for`, and events beyond the newest `keep_events`.
#pragma once

#include <jobsched/store.h>

#include <functional>

#include "engine/actor.h"

namespace jobsched {

struct JanitorOptions {
  int keep_runs_per_job = 100;                            // Default: 100
  Duration keep_runs_for{int64_t{7} * 24 * 3600 * 1000};  // Default: 7 days
  int64_t keep_events = 100000;                           // Default: 100,000
  Duration interval{60000};                               // Default: 1 min
};

class Janitor {
 public:
  Janitor(Store& store, const Clock& clock, JanitorOptions options)
      : store_(store), clock_(clock), options_(options) {}

  // One pass. Returns the runs deleted.
  Result<int64_t> Tick();
  // Passes run only while `active()` says so (the leader's job in a cluster); none = always.
  void Start(std::function<bool()> active = {});
  void Stop() { thread_.Stop(); }

 private:
  Store& store_;
  const Clock& clock_;
  const JanitorOptions options_;
  ActorThread thread_;
};

}  // namespace jobsched
