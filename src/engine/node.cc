#include "engine/node.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

namespace jobsched {

std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "node";
  return host;
}

Result<std::unique_ptr<Node>> Node::Create(SchedulerOptions options) {
  std::shared_ptr<Store> store = options.store;
  if (!store) {
    ASSIGN_OR_RETURN(std::unique_ptr<Store> opened, OpenStore(options.store_url));
    store = std::move(opened);
  }
  if (options.node_id.empty()) options.node_id = DefaultNodeId();
  if (options.concurrency < 1)
    return InvalidArgument("concurrency: must be at least 1", "concurrency");
  if (options.lease <= options.renew_interval) {
    return InvalidArgument("lease: must be longer than renew_interval", "lease");
  }
  return std::unique_ptr<Node>(new Node(std::move(options), std::move(store)));
}

Node::Node(SchedulerOptions options, std::shared_ptr<Store> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      clock_(options_.clock ? options_.clock : Clock::Real()) {
  executor_ =
      std::make_unique<Executor>(builtins_, ExecutorOptions{.kill_grace = options_.kill_grace});
  dependencies_ =
      std::make_unique<DependencyActor>(*store_, *clock_, events_, [this] { processor_->Wake(); });
  processor_ = std::make_unique<Processor>(
      *store_, *clock_, *executor_, events_,
      ProcessorOptions{.node_id = options_.node_id,
                       .concurrency = options_.concurrency,
                       .queues = options_.queues,
                       .lease = options_.lease,
                       .renew_interval = options_.renew_interval},
      [this](const RunRecord& run) { dependencies_->OnRunFinished(run); });
  reaper_ = std::make_unique<Reaper>(*store_, *clock_,
                                     ReaperOptions{.interval = options_.reaper_interval},
                                     [this] { processor_->Wake(); });
  janitor_ =
      std::make_unique<Janitor>(*store_, *clock_,
                                JanitorOptions{.keep_runs_per_job = options_.keep_runs_per_job,
                                               .keep_runs_for = options_.keep_runs_for});
  auto cancel_local = [this](const std::string& tenant, const std::string& run_id) {
    processor_->CancelLocal(tenant, run_id);
  };
  scheduler_ = std::make_unique<SchedulerActor>(
      *store_, *clock_, events_, SchedulerActorOptions{}, [this] { processor_->Wake(); },
      cancel_local);
  heartbeater_ = std::make_unique<Heartbeater>(*store_, *clock_,
                                               NodeInfo{.id = options_.node_id,
                                                        .host = DefaultNodeId(),
                                                        .pid = static_cast<int>(::getpid()),
                                                        .version = JOBSCHED_VERSION_STRING,
                                                        .queues = options_.queues,
                                                        .concurrency = options_.concurrency},
                                               Duration(2000));
  jobs_ = std::make_unique<JobService>(
      *store_, *clock_, events_, [this] { scheduler_->Wake(); }, [this] { processor_->Wake(); },
      cancel_local);
}

Node::~Node() {
  Stop();
  // A processor started on its own (tests) must stop before the actors its workers call.
  processor_->Stop(Duration(0));
}

Status Node::Start() {
  if (running_) return Status::Ok();
  Status registered = heartbeater_->Tick();
  if (!registered.ok())
    spdlog::warn("node {}: first heartbeat failed: {}", options_.node_id, registered.ToString());
  heartbeater_->Start();
  // A restart: whatever this node id was running before cannot be running now.
  ASSIGN_OR_RETURN(
      std::vector<RunRecord> recovered,
      store_->RecoverLostRuns(clock_->Now(), options_.node_id, /*max_leases_lost=*/5, 100000));
  if (!recovered.empty()) {
    spdlog::warn("node {}: recovered {} runs left unfinished by a previous process",
                 options_.node_id, recovered.size());
  }
  if (options_.execute) processor_->Start();
  reaper_->Start();
  dependencies_->Start();
  scheduler_->Start();
  janitor_->Start();
  running_ = true;
  spdlog::info("node {} started (concurrency {})", options_.node_id, options_.concurrency);
  return Status::Ok();
}

void Node::Stop() {
  if (!running_) return;
  scheduler_->Stop();
  dependencies_->Stop();
  janitor_->Stop();
  reaper_->Stop();
  processor_->Stop(options_.shutdown_grace);
  heartbeater_->Stop();
  running_ = false;
  spdlog::info("node {} stopped", options_.node_id);
}

}  // namespace jobsched
