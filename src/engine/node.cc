#include "engine/node.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>

#include "core/job_codec.h"

namespace jobsched {

std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "node";
  return host;
}

namespace {

// Whether process `pid` of this host has ended: it does not exist, or it is a zombie (killed,
// and not yet waited for by its parent).
bool ProcessEnded(int pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'.
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

// The node ids of this process's nodes (from Create to their destruction), each with the store it
// works on (StoreKey): two nodes of one process on one store must not share an id, or each would
// take the other's running attempts for its own, left over from an earlier run.
std::mutex g_live_ids_mu;
std::set<std::pair<std::string, std::string>> g_live_ids;  // (store key, node id)

// What names the store a node works on within this process: the canonical file of an SQLite
// store, the URL of another, the object of a store given in the options; "" for one no other
// node can open (an in-memory SQLite database).
std::string StoreKey(const SchedulerOptions& options) {
  if (options.store)
    return "object:" + std::to_string(reinterpret_cast<uintptr_t>(options.store.get()));
  const std::string& url = options.store_url;
  if (url == "sqlite::memory:") return "";
  if (url.starts_with("sqlite:")) {
    std::error_code ec;
    const auto path = std::filesystem::weakly_canonical(url.substr(7), ec);
    return ec ? url : "sqlite:" + path.string();
  }
  return url;
}

// An id that no node of this process uses on `store_key`: "<host>-<pid>", then "-2", "-3", ...
std::string UniqueNodeId(const std::string& store_key) {
  const std::string base = DefaultNodeId() + "-" + std::to_string(::getpid());
  std::lock_guard lock(g_live_ids_mu);
  std::string id = base;
  for (int k = 2; g_live_ids.count({store_key, id}) > 0; ++k) id = base + "-" + std::to_string(k);
  return id;
}

// The node id this process may use: `wanted`, unless a live node of another process (another
// host, or a running process of this host) heartbeats with it, or another node of this process
// uses it on the same store. Then a defaulted id becomes "<host>-<pid>" (with a number after it
// for a second node of this process) and an id that was given is an error. A record of a process
// of this host that is gone is a restart, and one of this process whose node is gone too: the id
// is ours again.
Result<std::string> ClaimNodeId(Store& store, const Clock* clock, const std::string& wanted,
                                bool defaulted, Duration dead_after, const std::string& store_key) {
  bool live_here = false;
  if (!store_key.empty()) {
    std::lock_guard lock(g_live_ids_mu);
    live_here = g_live_ids.count({store_key, wanted}) > 0;
  }
  if (live_here) {
    if (defaulted) {
      std::string unique = UniqueNodeId(store_key);
      spdlog::info("node id {} is in use by another node of this process; this node is {}", wanted,
                   unique);
      return unique;
    }
    return InvalidArgument("node_id: '" + wanted +
                               "' is in use by another node of this process on the same store; "
                               "give each node its own node id",
                           "node_id");
  }
  auto nodes = store.ListNodes();
  if (!nodes.ok()) {
    spdlog::warn("node {}: cannot check that the node id is free: {}", wanted,
                 nodes.status().ToString());
    return wanted;
  }
  TimePoint now = clock != nullptr ? clock->Now() : Clock::Real()->Now();
  if (clock == nullptr) {
    auto server = store.ServerTime();
    if (server.ok() && server->has_value()) now = std::chrono::floor<Duration>(**server);
  }
  const std::string host = DefaultNodeId();
  for (const NodeInfo& n : *nodes) {
    if (n.id != wanted || now - n.heartbeat_at >= dead_after) continue;
    const bool same_host = n.host == host;
    if (same_host && (n.pid == ::getpid() || ProcessEnded(n.pid))) {
      continue;  // this process, or a previous process of this host that is gone
    }
    if (defaulted) {
      std::string unique = UniqueNodeId(store_key);
      spdlog::info("node id {} is in use by {} pid {}; this node is {}", wanted, n.host, n.pid,
                   unique);
      return unique;
    }
    return InvalidArgument("node_id: '" + wanted + "' is in use by a live node (host " + n.host +
                               ", pid " + std::to_string(n.pid) + ", last heartbeat " +
                               std::to_string((now - n.heartbeat_at).count()) +
                               " ms ago); give each node its own node id",
                           "node_id");
  }
  return wanted;
}

}  // namespace

Result<std::unique_ptr<Node>> Node::Create(SchedulerOptions options) {
  std::shared_ptr<Store> store = options.store;
  if (!store) {
    ASSIGN_OR_RETURN(std::unique_ptr<Store> opened, OpenStore(options.store_url));
    store = std::move(opened);
  }
  const bool defaulted = options.node_id.empty();
  if (defaulted) options.node_id = DefaultNodeId();
  // The bounds of serve's configuration (docs/configuration.md) hold for a node made in code.
  if (!defaulted) RETURN_IF_ERROR(ValidateJobId(options.node_id, "node_id"));
  for (size_t i = 0; i < options.queues.size(); ++i) {
    RETURN_IF_ERROR(ValidateQueueName(options.queues[i], "queues[" + std::to_string(i) + "]"));
  }
  if (options.concurrency < 1 || options.concurrency > 4096)
    return InvalidArgument("concurrency: must be between 1 and 4096", "concurrency");
  if (options.lease <= options.renew_interval) {
    return InvalidArgument("lease: must be longer than renew_interval", "lease");
  }
  if (options.leader_ttl <= options.leader_renew) {
    return InvalidArgument("leader_ttl: must be longer than leader_renew", "leader_ttl");
  }
  if (options.node_dead_after <= options.heartbeat_interval) {
    return InvalidArgument("node_dead_after: must be longer than heartbeat_interval",
                           "node_dead_after");
  }
  for (auto [d, name] : {std::pair{options.renew_interval, "renew_interval"},
                         {options.reaper_interval, "reaper_interval"},
                         {options.heartbeat_interval, "heartbeat_interval"},
                         {options.leader_renew, "leader_renew"}}) {
    if (d.count() <= 0) return InvalidArgument(std::string(name) + ": must be positive", name);
  }
  for (auto [d, name] :
       {std::pair{options.fire_ahead, "fire_ahead"}, {options.claim_ahead, "claim_ahead"}}) {
    if (d.count() < 0) return InvalidArgument(std::string(name) + ": must not be negative", name);
    if (d >= options.lease) {
      return InvalidArgument(std::string(name) + ": must be shorter than lease", name);
    }
  }
  for (auto [d, name] : {std::pair{options.shutdown_grace, "shutdown_grace"},
                         {options.kill_grace, "kill_grace"},
                         {options.keep_runs_for, "keep_runs_for"}}) {
    if (d.count() < 0) return InvalidArgument(std::string(name) + ": must not be negative", name);
  }
  if (options.keep_runs_per_job < 1 || options.keep_runs_per_job > 1'000'000) {
    return InvalidArgument("keep_runs_per_job: must be between 1 and 1000000", "keep_runs_per_job");
  }
  const std::string store_key = StoreKey(options);
  // Claimed and registered under one lock: two nodes created at once cannot both take an id.
  static std::mutex claim_mu;
  std::lock_guard claim(claim_mu);
  ASSIGN_OR_RETURN(options.node_id, ClaimNodeId(*store, options.clock, options.node_id, defaulted,
                                                options.node_dead_after, store_key));
  auto node = std::unique_ptr<Node>(new Node(std::move(options), std::move(store)));
  if (!store_key.empty()) {
    std::lock_guard lock(g_live_ids_mu);
    node->live_id_ = {store_key, node->options_.node_id};
    g_live_ids.insert(node->live_id_);
  }
  return node;
}

Node::Node(SchedulerOptions options, std::shared_ptr<Store> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      store_clock_(options_.clock ? nullptr : std::make_unique<StoreClock>()),
      clock_(options_.clock ? options_.clock : store_clock_.get()) {
  ExecutorOptions execution{.kill_grace = options_.kill_grace};
  if (!options_.cgroup_parent.empty()) execution.cgroup_parent = options_.cgroup_parent;
  executor_ = std::make_unique<Executor>(builtins_, std::move(execution));
  dependencies_ =
      std::make_unique<DependencyActor>(*store_, *clock_, events_, [this] { WakeProcessors(); });
  // A job created, changed or resumed here may be a dependent whose dependencies succeeded.
  events_.On(EventType::kJobChanged,
             [this](const SchedulerEvent& e) { dependencies_->OnJobChanged(e.tenant, e.job_id); });
  processor_ = std::make_unique<Processor>(
      *store_, *clock_, *executor_, events_,
      ProcessorOptions{.node_id = options_.node_id,
                       .concurrency = options_.concurrency,
                       .queues = options_.queues,
                       .lease = options_.lease,
                       .renew_interval = options_.renew_interval,
                       .claim_ahead = options_.claim_ahead},
      [this](const RunRecord& run) { dependencies_->OnRunFinished(run); });
  reaper_ = std::make_unique<Reaper>(*store_, *clock_, events_,
                                     ReaperOptions{.interval = options_.reaper_interval},
                                     [this] { WakeProcessors(); });
  janitor_ =
      std::make_unique<Janitor>(*store_, *clock_,
                                JanitorOptions{.keep_runs_per_job = options_.keep_runs_per_job,
                                               .keep_runs_for = options_.keep_runs_for});
  auto cancel = [this](const std::string& tenant, const std::string& run_id) {
    CancelEverywhere(tenant, run_id);
  };
  cluster_ =
      std::make_unique<ClusterActor>(*store_, *clock_, store_clock_.get(),
                                     ClusterOptions{.node_id = options_.node_id,
                                                    .leader_ttl = options_.leader_ttl,
                                                    .leader_renew = options_.leader_renew,
                                                    .node_dead_after = options_.node_dead_after},
                                     [this] { scheduler_->Wake(); });
  scheduler_ = std::make_unique<SchedulerActor>(
      *store_, *clock_, events_,
      SchedulerActorOptions{.scope = [this] { return cluster_->Scope(); },
                            .fire_ahead = options_.fire_ahead},
      [this] { WakeProcessors(); }, cancel);
  heartbeater_ = std::make_unique<Heartbeater>(*store_, *clock_,
                                               NodeInfo{.id = options_.node_id,
                                                        .host = DefaultNodeId(),
                                                        .pid = static_cast<int>(::getpid()),
                                                        .version = JOBSCHED_VERSION_STRING,
                                                        .queues = options_.queues,
                                                        .concurrency = options_.concurrency},
                                               options_.heartbeat_interval);
  jobs_ = std::make_unique<JobService>(
      *store_, *clock_, events_, [this] { WakeSchedulers(); }, [this] { WakeProcessors(); },
      cancel);
}

void Node::WakeProcessors() {
  processor_->Wake();
  Status s = store_->Publish({.topic = WakeTopic::kRunsReady, .origin = options_.node_id});
  if (!s.ok()) spdlog::debug("wake-up not published: {}", s.ToString());
}

void Node::WakeSchedulers() {
  scheduler_->Wake();
  processor_->ForgetSpecs();
  Status s = store_->Publish({.topic = WakeTopic::kJobsChanged, .origin = options_.node_id});
  if (!s.ok()) spdlog::debug("wake-up not published: {}", s.ToString());
}

void Node::CancelEverywhere(const std::string& tenant, const std::string& run_id) {
  processor_->CancelLocal(tenant, run_id);
  Status s = store_->Publish({.topic = WakeTopic::kCancelRun,
                              .origin = options_.node_id,
                              .tenant = tenant,
                              .run_id = run_id});
  if (!s.ok()) spdlog::debug("cancellation not published: {}", s.ToString());
}

void Node::OnWakeMessage(const WakeMessage& message) {
  if (message.origin == options_.node_id) return;
  switch (message.topic) {
    case WakeTopic::kRunsReady:
      processor_->Wake();
      break;
    case WakeTopic::kJobsChanged:
      scheduler_->Wake();
      processor_->ForgetSpecs();
      break;
    case WakeTopic::kCancelRun:
      processor_->CancelLocal(message.tenant, message.run_id);
      break;
  }
}

Node::~Node() {
  Stop();
  if (subscribed_.exchange(false)) store_->Subscribe({});
  // A processor started on its own (tests) must stop before the actors its workers call.
  processor_->Stop(Duration(0));
  if (!live_id_.first.empty()) {
    std::lock_guard lock(g_live_ids_mu);
    g_live_ids.erase(live_id_);
  }
}

Status Node::Start() {
  if (OnNodeThread()) {
    return FailedPrecondition("node " + options_.node_id +
                              ": start called from one of its own threads (a handler or an "
                              "event callback); call it from another thread");
  }
  std::lock_guard lock(lifecycle_mu_);
  if (running_) return Status::Ok();
  if (store_clock_) {
    Status synced = store_clock_->Sync(*store_);
    if (!synced.ok())
      spdlog::warn("node {}: clock sync failed: {}", options_.node_id, synced.ToString());
  }
  Status registered = heartbeater_->Tick();
  if (!registered.ok())
    spdlog::warn("node {}: first heartbeat failed: {}", options_.node_id, registered.ToString());
  heartbeater_->Start();
  Status joined = cluster_->Tick();
  if (!joined.ok())
    spdlog::warn("node {}: first cluster pass failed: {}", options_.node_id, joined.ToString());
  cluster_->Start();
  // A restart: whatever this node id was running before cannot be running now.
  ASSIGN_OR_RETURN(
      std::vector<RunRecord> recovered,
      store_->RecoverLostRuns(clock_->Now(), options_.node_id, /*max_leases_lost=*/5, 100000));
  if (!recovered.empty()) {
    spdlog::warn("node {}: recovered {} runs left unfinished by a previous process",
                 options_.node_id, recovered.size());
    for (const RunRecord& run : recovered) events_.Emit(RecoveredEvent(run));
  }
  if (options_.execute) processor_->Start();
  // Every node reaps (recovery is a compare-and-set, so nodes reaping at once is harmless): a
  // dead leader's runs must not wait for its leader lease to expire on top of their own.
  reaper_->Start();
  dependencies_->Start();
  scheduler_->Start();
  janitor_->Start([this] { return cluster_->IsLeader(); });
  if (!subscribed_.exchange(true)) {
    store_->Subscribe([this](const WakeMessage& m) { OnWakeMessage(m); });
  }
  running_ = true;
  spdlog::info("node {} started (concurrency {})", options_.node_id, options_.concurrency);
  return Status::Ok();
}

void Node::Stop() {
  if (OnNodeThread()) {
    spdlog::error(
        "node {}: stop called from one of its own threads (a handler or an event "
        "callback), which stopping waits for: ignored",
        options_.node_id);
    return;
  }
  std::lock_guard lock(lifecycle_mu_);
  if (!running_) return;
  scheduler_->Stop();
  dependencies_->Stop();
  janitor_->Stop();
  reaper_->Stop();
  processor_->Stop(options_.shutdown_grace);
  cluster_->Stop();
  heartbeater_->Stop();
  // Leaving, not dying: the leader reassigns this node's tenants at its next pass instead of
  // after node_dead_after, and the node id is free at once.
  Status left = store_->RemoveNode(options_.node_id);
  if (!left.ok()) {
    spdlog::warn("node {}: could not remove its record (it ends after node_dead_after): {}",
                 options_.node_id, left.ToString());
  }
  running_ = false;
  spdlog::info("node {} stopped", options_.node_id);
}

}  // namespace jobsched
