// What a node knows of its cluster (docs/cluster.md), kept by one actor:
//
// - The time base. StoreClock is the local clock plus an offset to the store's clock (Redis
//   TIME), re-synced every few seconds, so every node of a cluster stamps and compares times on
//   one clock: node clock skew cannot fire an occurrence twice or expire a lease early. With a
//   store that has no clock (SQLite) the offset stays 0.
// - Leadership. Every `leader_renew` the actor takes or renews the leader lease (TTL
//   `leader_ttl`); the holder assigns tenants' firing to live nodes (AssignTenants: balanced,
//   sticky) and runs the janitor (every node runs the reaper). A leader whose renewal fails
//   stops acting at once. Correctness never depends on it: firing is a CAS and run ids collide.
// - The view. Every pass (at most 1 s apart) it reads the nodes and the assignment; Scope() is
//   what this node's scheduler fires: every tenant except those assigned to another live node,
//   so a tenant whose owner died or that is not assigned yet is fired by every node until the
//   leader reassigns it.
#pragma once

#include <jobsched/store.h>

#include <atomic>
#include <functional>
#include <mutex>

#include "engine/actor.h"
#include "engine/failure_log.h"

namespace jobsched {

class StoreClock final : public Clock {
 public:
  // Never ahead of the store's clock: late by at most the round trip of the sample in use.
  TimePoint Now() const override;
  // Reads the store's clock and sets the offset. A no-op for a store without a clock.
  //
  // The store read its clock somewhere between the request and the reply, so a sample bounds
  // the offset to [server - reply, server - request]. The lower bound is used: an occurrence
  // never starts before its time on the store's clock, however the round trip was split (a
  // request that waited behind a long script would otherwise put this clock ahead). Of a few
  // samples, the shortest round trip is kept; it replaces the sample in use only if it is no
  // wider than that one's widened by the drift since it was taken (100 µs a second), or if the
  // two disagree (a clock was stepped).
  Status Sync(Store& store);
  Duration offset() const;
  std::chrono::microseconds precise_offset() const {
    return std::chrono::microseconds(offset_us_.load(std::memory_order_relaxed));
  }

 private:
  std::atomic<int64_t> offset_us_{0};
  std::mutex mu_;  // one Sync at a time
  bool synced_ = false;
  std::chrono::microseconds rtt_{0};               // of the sample in use
  std::chrono::steady_clock::time_point taken_{};  // when it was taken
};

struct ClusterOptions {
  std::string node_id;
  Duration leader_ttl{10000};       // Default: 10 s
  Duration leader_renew{3000};      // Default: 3 s
  Duration node_dead_after{10000};  // no heartbeat for this long: dead. Default: 10 s
  Duration clock_sync{5000};        // Default: 5 s
  // Dead nodes are removed from the store after this long. Default: 1 h
  Duration forget_dead_after{3600 * 1000};
};

// A node as the cluster sees it.
struct MemberInfo {
  NodeInfo node;
  bool alive = false;
  std::vector<std::string> tenants;  // whose firing it owns
};

struct ClusterStatus {
  std::optional<LeaderLease> leader;
  Assignment assignment;
  std::vector<MemberInfo> members;
};

class ClusterActor {
 public:
  // `clock` may be null (a fake clock in tests: no syncing). `on_scope_change` is called after
  // a pass that changed Scope() (to wake the scheduler).
  ClusterActor(Store& store, const Clock& clock, StoreClock* sync_clock, ClusterOptions options,
               std::function<void()> on_scope_change);

  // One pass: sync the clock (when due), take or renew the lease (when due), assign tenants if
  // leader, refresh the view. Errors: the store's (the node then is not the leader).
  Status Tick();
  void Start();
  // Stops the thread and gives the lease up if held.
  void Stop();

  // Whether this node holds the leader lease: false as soon as a renewal fails, and once the
  // lease's expiry has passed (a node that was frozen does not act on a lease it may have
  // lost).
  bool IsLeader() const;
  TenantScope Scope() const;
  // Reads the store (not the cached view).
  Result<ClusterStatus> Describe() const;

 private:
  // Takes or renews the lease; as leader, reassigns tenants over the live `nodes` and updates
  // `assignment` (as read this pass) to what it wrote.
  Status Lead(TimePoint now, const std::vector<NodeInfo>& nodes, Assignment& assignment);

  Store& store_;
  const Clock& clock_;
  StoreClock* const sync_clock_;
  const ClusterOptions options_;
  const std::function<void()> on_scope_change_;

  // Only the actor thread (or the Tick caller):
  std::chrono::steady_clock::time_point next_sync_{};
  FailureLog sync_failures_{"clock sync"};  // the actor thread's
  TimePoint next_renew_{};
  LeaderLease lease_;

  std::atomic<bool> leader_{false};
  std::atomic<int64_t> leader_until_ms_{0};  // the lease's expiry (clock_, Unix ms)
  mutable std::mutex mu_;
  TenantScope scope_;  // guarded by mu_
  ActorThread thread_;
};

// Whether `node` counts as alive at `now`.
bool NodeAlive(const NodeInfo& node, TimePoint now, Duration dead_after);

}  // namespace jobsched
