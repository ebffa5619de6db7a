// The reaper actor: runs whose lease expired (their node died, froze or lost the store) get a
// new attempt — the current one ends as lease_lost and the run is queued again, with a new
// fencing token at its next claim, so the old holder's result is rejected.
#pragma once

#include <jobsched/store.h>

#include <functional>

#include "engine/actor.h"
#include "engine/event_bus.h"

namespace jobsched {

struct ReaperOptions {
  // Time between passes. Default: 1 s
  Duration interval{1000};
  // A run that lost more leases than this fails instead of being queued again. Default: 5
  int max_leases_lost = 5;
  // Runs recovered per store call. Default: 500
  int batch = 500;
};

class Reaper {
 public:
  // `on_recovered` is called after a pass that queued runs again (to wake the processor); each
  // recovered run is a kRunRecovered event on `events`.
  Reaper(Store& store, const Clock& clock, EventBus& events, ReaperOptions options,
         std::function<void()> on_recovered)
      : store_(store),
        clock_(clock),
        events_(events),
        options_(options),
        on_recovered_(std::move(on_recovered)) {}

  // One pass. Returns the runs recovered.
  Result<int> Tick();
  void Start();
  void Stop() { thread_.Stop(); }

 private:
  Store& store_;
  const Clock& clock_;
  EventBus& events_;
  const ReaperOptions options_;
  const std::function<void()> on_recovered_;
  ActorThread thread_;
};

}  // namespace jobsched
