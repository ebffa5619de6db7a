#include "engine/cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "core/policy.h"
#include "engine/failure_log.h"

namespace jobsched {

TimePoint StoreClock::Now() const {
  return std::chrono::floor<Duration>(std::chrono::system_clock::now() + precise_offset());
}

Duration StoreClock::offset() const { return std::chrono::floor<Duration>(precise_offset()); }

Status StoreClock::Sync(Store& store) {
  using std::chrono::microseconds;
  struct Sample {
    microseconds low;  // the offset is in [low, low + rtt]
    microseconds rtt;
  };
  std::optional<Sample> best;
  for (int i = 0; i < 3; ++i) {
    const auto request = std::chrono::system_clock::now();
    ASSIGN_OR_RETURN(std::optional<Store::ServerTimePoint> server, store.ServerTime());
    const auto reply = std::chrono::system_clock::now();
    if (!server) return Status::Ok();
    const Sample s{.low = *server - std::chrono::time_point_cast<microseconds>(reply),
                   .rtt = std::max(microseconds(0),
                                   std::chrono::duration_cast<microseconds>(reply - request))};
    if (!best || s.rtt < best->rtt) best = s;
  }
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  const microseconds old(offset_us_.load(std::memory_order_relaxed));
  if (synced_) {
    // The sample in use, widened by the drift since it was taken.
    const auto drift = std::chrono::duration_cast<microseconds>(now - taken_) / 10000;
    const microseconds lo = old - drift, hi = old + rtt_ + drift;
    const bool disagree = best->low > hi || best->low + best->rtt < lo;
    if (!disagree && best->rtt > rtt_ + 2 * drift) return Status::Ok();
  }
  offset_us_.store(best->low.count(), std::memory_order_relaxed);
  rtt_ = best->rtt;
  taken_ = now;
  if (!std::exchange(synced_, true) ||
      std::chrono::abs(old - best->low) > std::chrono::seconds(1)) {
    const double ms = static_cast<double>(best->low.count()) / 1000;
    spdlog::info("clock: the store's clock is {:.3f} ms {} this node's (round trip {:.3f} ms)",
                 std::abs(ms), ms < 0 ? "behind" : "ahead of",
                 static_cast<double>(best->rtt.count()) / 1000);
  }
  return Status::Ok();
}

bool NodeAlive(const NodeInfo& node, TimePoint now, Duration dead_after) {
  return now - node.heartbeat_at < dead_after;
}

ClusterActor::ClusterActor(Store& store, const Clock& clock, StoreClock* sync_clock,
                           ClusterOptions options, std::function<void()> on_scope_change)
    : store_(store),
      clock_(clock),
      sync_clock_(sync_clock),
      options_(std::move(options)),
      on_scope_change_(std::move(on_scope_change)) {}

Status ClusterActor::Tick() {
  const auto steady = std::chrono::steady_clock::now();
  if (sync_clock_ != nullptr && steady >= next_sync_) {
    sync_failures_.Record(sync_clock_->Sync(store_));
    next_sync_ = steady + options_.clock_sync;
  }
  const TimePoint now = clock_.Now();
  auto nodes = store_.ListNodes();
  if (!nodes.ok()) {
    if (leader_.exchange(false)) {
      spdlog::error("leader: stepping down (epoch {}): {}", lease_.epoch,
                    nodes.status().ToString());
    }
    next_renew_ = {};
    return nodes.status();
  }
  ASSIGN_OR_RETURN(Assignment assignment, store_.GetAssignment());
  if (now >= next_renew_ || !leader_.load()) {
    Status s = Lead(now, *nodes, assignment);
    next_renew_ = now + options_.leader_renew;
    if (!s.ok()) {
      next_renew_ = {};
      return s;
    }
  }

  // The view: tenants assigned to another live node are theirs.
  TenantScope scope;
  for (const auto& [tenant, owner] : assignment.owners) {
    if (owner == options_.node_id) continue;
    auto it = std::find_if(nodes->begin(), nodes->end(),
                           [&, &owner = owner](const NodeInfo& n) { return n.id == owner; });
    if (it != nodes->end() && NodeAlive(*it, now, options_.node_dead_after)) {
      scope.excluded.push_back(tenant);
    }
  }
  std::sort(scope.excluded.begin(), scope.excluded.end());
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    changed = scope.excluded != scope_.excluded;
    scope_ = std::move(scope);
  }
  if (changed && on_scope_change_) on_scope_change_();
  return Status::Ok();
}

Status ClusterActor::Lead(TimePoint now, const std::vector<NodeInfo>& nodes,
                          Assignment& assignment) {
  auto lease = store_.AcquireLeadership(options_.node_id, now, options_.leader_ttl);
  if (!lease.ok() || lease->node != options_.node_id) {
    if (leader_.exchange(false)) {
      spdlog::error("leader: stepping down (epoch {}): {}", lease_.epoch,
                    lease.ok() ? "the lease is held by " + lease->node : lease.status().ToString());
    }
    return lease.status();
  }
  leader_until_ms_.store(ToUnixMillis(lease->expires_at));
  if (!leader_.exchange(true) || lease->epoch != lease_.epoch) {
    spdlog::info("leader: this node leads the cluster (epoch {})", lease->epoch);
  }
  lease_ = *lease;

  std::vector<std::string> alive;
  for (const NodeInfo& n : nodes) {
    if (NodeAlive(n, now, options_.node_dead_after)) {
      alive.push_back(n.id);
    } else if (now - n.heartbeat_at > options_.forget_dead_after) {
      Status s = store_.RemoveNode(n.id);
      if (s.ok())
        spdlog::info("leader: forgot node {} (dead since {} ms)", n.id,
                     (now - n.heartbeat_at).count());
    }
  }
  // This node is alive even if its own heartbeat has not landed yet.
  if (std::find(alive.begin(), alive.end(), options_.node_id) == alive.end()) {
    alive.push_back(options_.node_id);
  }
  std::sort(alive.begin(), alive.end());
  ASSIGN_OR_RETURN(std::vector<TenantRecord> tenants, store_.ListTenants());
  std::vector<std::string> ids;
  for (const TenantRecord& t : tenants) ids.push_back(t.id);
  TenantOwners owners = AssignTenants(assignment.owners, ids, alive);
  if (owners != assignment.owners || assignment.epoch != lease_.epoch) {
    RETURN_IF_ERROR(store_.PutAssignment(options_.node_id, lease_.epoch, now, owners));
    spdlog::info("leader: tenant assignment (epoch {}): {} tenants over {} live nodes",
                 lease_.epoch, owners.size(), alive.size());
    assignment = Assignment{.epoch = lease_.epoch, .owners = std::move(owners), .updated_at = now};
  }
  return Status::Ok();
}

bool ClusterActor::IsLeader() const {
  return leader_.load() && ToUnixMillis(clock_.Now()) < leader_until_ms_.load();
}

TenantScope ClusterActor::Scope() const {
  std::lock_guard lock(mu_);
  return scope_;
}

Result<ClusterStatus> ClusterActor::Describe() const {
  const TimePoint now = clock_.Now();
  ClusterStatus status;
  ASSIGN_OR_RETURN(status.leader, store_.GetLeader(now));
  ASSIGN_OR_RETURN(status.assignment, store_.GetAssignment());
  ASSIGN_OR_RETURN(std::vector<NodeInfo> nodes, store_.ListNodes());
  for (NodeInfo& n : nodes) {
    MemberInfo m{.node = std::move(n)};
    m.alive = NodeAlive(m.node, now, options_.node_dead_after);
    for (const auto& [tenant, owner] : status.assignment.owners) {
      if (owner == m.node.id) m.tenants.push_back(tenant);
    }
    status.members.push_back(std::move(m));
  }
  return status;
}

void ClusterActor::Start() {
  const Duration period = std::min(options_.leader_renew, Duration(1000));
  thread_.Start(
      "cluster",
      [this, period, failures = FailureLog("cluster")]() mutable {
        failures.Record(Tick());
        return period;
      },
      period);
}

void ClusterActor::Stop() {
  thread_.Stop();
  if (leader_.exchange(false)) {
    Status s = store_.ReleaseLeadership(options_.node_id, lease_.epoch);
    if (s.ok()) spdlog::info("leader: gave the lease up (epoch {})", lease_.epoch);
  }
}

}  // namespace jobsched
