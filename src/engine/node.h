// A node: the store, the executor and every actor of one process, started and stopped in a
// written-down order.
//
// Start: sync the clock with the store's and register the node (heartbeater), take part in the
// cluster (leader lease, tenant assignment: one synchronous pass, then the cluster actor),
// recover this node's own unfinished attempts (a restart after a crash), then the processor (it
// must be ready before anything is queued), the reaper, the dependency actor, the scheduler
// (fires the tenants assigned to this node), the janitor (acting while this node leads), and
// the wake-up subscription. Stop: the scheduler first (nothing new fires), the dependency
// actor, the janitor, the reaper, then the processor (running attempts finish within
// shutdown_grace or are handed back), the cluster actor (the lease is given up), the
// heartbeater, and the node's record is removed (it left: its tenants go to other nodes at the
// leader's next pass).
//
// Wake-ups cross processes: what wakes this node's processor or scheduler is also published
// through the store (Store::Publish), and what other nodes publish wakes this node's.
#pragma once

#include <jobsched/scheduler.h>
#include <jobsched/store.h>

#include <memory>

#include "engine/builtins.h"
#include "engine/cluster.h"
#include "engine/dependencies.h"
#include "engine/event_bus.h"
#include "engine/executor.h"
#include "engine/heartbeater.h"
#include "engine/janitor.h"
#include "engine/job_service.h"
#include "engine/processor.h"
#include "engine/reaper.h"
#include "engine/scheduler.h"

namespace jobsched {

class Node {
 public:
  // Opens the store (options.store, else options.store_url). Errors: the store's.
  static Result<std::unique_ptr<Node>> Create(SchedulerOptions options);
  ~Node();

  // Not from a node's own threads (a handler, an event callback): Start refuses with
  // kFailedPrecondition, Stop logs an error and does nothing. One at a time.
  Status Start();
  void Stop();
  bool running() const { return running_.load(); }

  Store& store() { return *store_; }
  const Clock& clock() const { return *clock_; }
  BuiltinRegistry& builtins() { return builtins_; }
  EventBus& events() { return events_; }
  JobService& jobs() { return *jobs_; }
  SchedulerActor& scheduler() { return *scheduler_; }
  Processor& processor() { return *processor_; }
  Reaper& reaper() { return *reaper_; }
  Janitor& janitor() { return *janitor_; }
  DependencyActor& dependencies() { return *dependencies_; }
  Heartbeater& heartbeater() { return *heartbeater_; }
  ClusterActor& cluster() { return *cluster_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  explicit Node(SchedulerOptions options, std::shared_ptr<Store> store);

  // Local wake-up, and the same for the other nodes.
  void WakeProcessors();
  void WakeSchedulers();
  void CancelEverywhere(const std::string& tenant, const std::string& run_id);
  void OnWakeMessage(const WakeMessage& message);

  const SchedulerOptions options_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<StoreClock> store_clock_;  // when options_.clock is null
  const Clock* clock_;
  BuiltinRegistry builtins_;
  EventBus events_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Processor> processor_;
  std::unique_ptr<Reaper> reaper_;
  std::unique_ptr<Janitor> janitor_;
  std::unique_ptr<DependencyActor> dependencies_;
  std::unique_ptr<SchedulerActor> scheduler_;
  std::unique_ptr<JobService> jobs_;
  std::unique_ptr<Heartbeater> heartbeater_;
  std::unique_ptr<ClusterActor> cluster_;
  std::atomic<bool> subscribed_{false};
  std::mutex lifecycle_mu_;  // Start and Stop
  std::atomic<bool> running_{false};
  std::pair<std::string, std::string> live_id_;  // (store key, node id) while it lives; see Create
};

// The host name, the default node id.
std::string DefaultNodeId();

}  // namespace jobsched
