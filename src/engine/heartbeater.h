// The heartbeater actor: registers this node in the store and refreshes its record (CPU, RSS)
// every `interval`; nodes without a heartbeat for `node_dead_after` count as dead (NodeAlive).
#pragma once

#include <jobsched/store.h>

#include <mutex>
#include <string>

#include "engine/actor.h"

namespace jobsched {

class Heartbeater {
 public:
  Heartbeater(Store& store, const Clock& clock, NodeInfo info, Duration interval)
      : store_(store), clock_(clock), info_(std::move(info)), interval_(interval) {}

  // One heartbeat. Errors: the store's.
  Status Tick();
  void Start();
  void Stop() { thread_.Stop(); }
  // Whether the last heartbeat reached the store.
  bool registered() const { return registered_.load(); }
  // Why the last heartbeat did not ("" when it did, or none was tried).
  std::string last_error() const;

 private:
  Store& store_;
  const Clock& clock_;
  NodeInfo info_;  // only the heartbeater thread (or the Tick caller)
  const Duration interval_;
  std::atomic<bool> registered_{false};
  mutable std::mutex mu_;
  std::string last_error_;  // guarded by mu_
  ActorThread thread_;
};

// CPU seconds used by this process, and its resident set size in bytes.
double ProcessCpuSeconds();
int64_t ProcessRssBytes();

}  // namespace jobsched
