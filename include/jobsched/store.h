// The Store: where jobs, runs, leases, events, nodes and API keys live. One interface, two
// backends: SqliteStore (one machine, the default) and RedisStore (a cluster).
//
// Contract: policy lives in C++ once (src/core, src/engine); a Store only applies decisions, and
// every state change of a job or run is ONE atomic operation guarded by a version or fencing-token
// compare-and-set. A Store never reads the clock: callers pass `now`.
//
// Thread safety: every method may be called from any thread concurrently.
// Errors common to every method: kUnavailable (the backend cannot be reached; nothing was
// changed or the change is unknown — callers retry idempotently) and kInternal.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/job.h>
#include <jobsched/status.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace jobsched {

template <typename T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next_cursor;  // pass back to get the next page; none = last page
};

struct JobFilter {
  std::string queue;  // "" = any
  std::optional<JobState> state;
  std::string label_key;  // "" = any; with label_value: labels[key] == value
  std::string label_value;
  std::string cursor;  // from a previous Page
  int limit = 100;     // 1-1000
};

struct RunFilter {
  std::string job_id;  // "" = every job of the tenant
  std::optional<RunState> state;
  std::string cursor;
  int limit = 100;  // 1-1000
  // > 0: each run's output is cut, in the store, to its last `output_tail` bytes (whole UTF-8
  // characters), and RunRecord::output_bytes says how long the whole output is.
  size_t output_tail = 0;
};

// One occurrence (or several) committed for a job: see Store::Fire.
struct FireRequest {
  std::string tenant;
  std::string job_id;
  int64_t expected_version = 0;                 // CAS: the job's version as read
  std::optional<TimePoint> expected_next_fire;  // CAS: the job's next_fire as read
  std::optional<TimePoint> next_fire;           // the new next fire time; none = nothing more
  std::optional<JobState> new_state;            // e.g. kCompleted after the last occurrence
  std::optional<TimePoint> dependency_since;    // the new dependency barrier, when it moves
  std::vector<RunRecord> runs;              // created if their id is new (state queued or skipped)
  std::vector<std::string> cancel_run_ids;  // overlap "replace": runs of this job to cancel
  TimePoint now{};                          // when (stamps cancellations and events)
};

struct FireResult {
  int created = 0;  // runs inserted
  int existed = 0;  // runs whose id already existed (a second fire of the same occurrence)
};

struct ClaimRequest {
  std::string node;
  std::vector<std::string> queues;  // empty = every queue
  TimePoint now{};
  Duration lease{15000};
  int max_runs = 1;
  // Claim runs available up to this instant (claim-ahead: the caller holds such a run until its
  // available_at). None = now.
  std::optional<TimePoint> horizon;
  // Claim only runs available after this instant (claim-ahead of runs not yet available, not of
  // those a free worker would take). None = no lower bound.
  std::optional<TimePoint> after;

  // The latest available_at claimed: the horizon, never before now.
  TimePoint until() const { return std::max(now, horizon.value_or(now)); }
};

struct LeaseRef {
  std::string tenant;
  std::string run_id;
  int64_t fence = 0;
};

enum class LeaseStatus {
  kRenewed,          // lease_deadline moved to now + lease
  kStale,            // the run is no longer held with this fence: stop and report nothing
  kCancelRequested,  // renewed, but the run was cancelled: stop the work, then Complete it
};

// The end of one attempt: see Store::Complete.
struct Completion {
  std::string tenant;
  std::string run_id;
  int64_t fence = 0;
  TimePoint now{};
  // kSucceeded, kFailed, kTimedOut, kCancelled (final), or kRetryWait with retry_at.
  RunState state = RunState::kSucceeded;
  std::optional<TimePoint> retry_at;
  std::string attempt_outcome;  // succeeded, failed, timed_out, cancelled
  std::optional<int> exit_code;
  std::optional<int> http_status;
  std::string output;
  // Set when `output` is only the end of what the handler wrote: the length of the whole.
  std::optional<int64_t> output_bytes;
  std::string error;
  // When the attempt really began, if not when it was claimed (a run claimed ahead of its time
  // starts when its time comes): replaces the attempt's recorded start, and the run's when this
  // is its first attempt.
  std::optional<TimePoint> started_at;
  // False: the attempt's handler never began (the run was cancelled, or its job deleted, while
  // it was held for its time or for a worker). Only with state kCancelled. The attempt is not
  // recorded: the run keeps the attempts before it (none: attempt 0, no start), so an
  // occurrence cancelled this way is replaced when it is fired again (see Store::Fire).
  bool began = true;
};

// Store::Complete's refusal of a never-began cancellation (Completion::began false) of a run whose
// cancellation was withdrawn since (its occurrence fired again) or whose job exists when nothing
// asked to cancel it: the run stays with its holder, who runs it after all.
inline constexpr char kCancelWithdrawn[] = "cancel_withdrawn";

// Something that changed, in commit order per tenant (the SSE feed and the audit log).
struct Event {
  int64_t seq = 0;  // increasing per store
  std::string tenant;
  TimePoint time{};
  std::string type;  // "run.queued", "run.running", "run.succeeded", ..., "job.created", "audit"
  std::string job_id;
  std::string run_id;
  std::string data = "{}";  // JSON text
};

struct NodeInfo {
  std::string id;
  std::string host;
  int pid = 0;
  std::string version;
  std::vector<std::string> queues;
  int concurrency = 0;
  double cpu_seconds = 0;
  int64_t rss_bytes = 0;
  TimePoint started_at{};
  TimePoint heartbeat_at{};
};

// The leader lease of a cluster (docs/cluster.md): one holder at a time, until `expires_at`;
// `epoch` grows by one each time the lease changes hands.
struct LeaderLease {
  std::string node;
  int64_t epoch = 0;
  TimePoint expires_at{};
};

// A job, by tenant and id.
struct JobRef {
  std::string tenant;
  std::string job_id;
};

// Tenant -> the node id that fires its jobs.
using TenantOwners = std::map<std::string, std::string>;

// Which tenant's firing each live node owns, as written by the leader of `epoch`.
struct Assignment {
  int64_t epoch = 0;
  TenantOwners owners;
  TimePoint updated_at{};
};

// The tenants a cross-tenant read covers: every tenant except `excluded` (those fired by other
// live nodes). Empty = every tenant.
struct TenantScope {
  std::vector<std::string> excluded;  // sorted
  bool Covers(const std::string& tenant) const {
    return !std::binary_search(excluded.begin(), excluded.end(), tenant);
  }
};

// Cross-process wake-ups: what changed, published by one node to all the others.
enum class WakeTopic {
  kRunsReady,    // runs were queued: processors claim
  kJobsChanged,  // jobs were created, changed or resumed: schedulers re-read due times
  kCancelRun,    // a running run is to be cancelled (tenant, run id)
};

struct WakeMessage {
  WakeTopic topic = WakeTopic::kRunsReady;
  std::string origin;  // node id of the publisher (a node ignores its own messages)
  std::string tenant;  // kCancelRun
  std::string run_id;  // kCancelRun
};

struct ApiKeyRecord {
  std::string id;           // the public part of js_<id>_<secret>
  std::string secret_hash;  // hex SHA-256 of the whole key
  std::string tenant;       // "" for admin keys (all tenants)
  std::string role;         // admin | operator | viewer
  bool allow_shell = false;
  std::string name;
  TimePoint created_at{};
};

// A tenant and its quotas. "default" always exists.
struct TenantRecord {
  std::string id;
  int64_t max_jobs = 0;             // jobs the tenant may have; 0 = unlimited. Default: 0
  int64_t max_concurrent_runs = 0;  // runs running at once; 0 = unlimited. Default: 0
  // Per-queue limits of runs running at once (queue name -> limit > 0). Default: none
  std::map<std::string, int64_t> queue_limits;
  TimePoint created_at{};
  TimePoint updated_at{};
};

// Runs counted by tenant, queue and state (stats and metrics).
struct RunCount {
  std::string tenant;
  std::string queue;
  RunState state = RunState::kQueued;
  int64_t count = 0;
  int64_t total_duration_ms = 0;  // sum of finished_at - started_at over runs that have both
};

struct JobCount {
  std::string tenant;
  JobState state = JobState::kActive;
  int64_t count = 0;
};

class Store {
 public:
  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  virtual ~Store() = default;

  // ---- Jobs ------------------------------------------------------------------------------

  // Inserts a new job with version 1 and returns it as stored.
  // kAlreadyExists if (tenant, id) exists; kResourceExhausted if the tenant already has
  // max_jobs jobs (nothing is written).
  virtual Result<JobRecord> CreateJob(const JobRecord& job) = 0;

  // Replaces the job's spec and state (next_fire, state, dependency_since as given) and bumps
  // its version; creates it (version 1) when absent and `expected_version` is none.
  // kFailedPrecondition if `expected_version` is set and differs from the stored version;
  // kNotFound if `expected_version` is set and the job does not exist; kResourceExhausted when
  // creating beyond the tenant's max_jobs.
  virtual Result<JobRecord> PutJob(const JobRecord& job,
                                   std::optional<int64_t> expected_version) = 0;

  // kNotFound if absent.
  virtual Result<JobRecord> GetJob(const std::string& tenant, const std::string& id) = 0;
  // GetJob of many jobs in one call (one round trip where the backend can batch); one result
  // per job, in order.
  virtual std::vector<Result<JobRecord>> GetJobs(std::span<const JobRef> jobs) {
    std::vector<Result<JobRecord>> out;
    out.reserve(jobs.size());
    for (const JobRef& j : jobs) out.push_back(GetJob(j.tenant, j.job_id));
    return out;
  }

  // Jobs of a tenant ordered by id, filtered, one page at a time.
  virtual Result<Page<JobRecord>> ListJobs(const std::string& tenant, const JobFilter& filter) = 0;

  // Removes the job; its queued and retry-waiting runs become kCancelled; with kill_running its
  // running runs get cancel_requested. Run history stays until the janitor prunes it.
  // kNotFound if absent.
  virtual Status DeleteJob(const std::string& tenant, const std::string& id, TimePoint now,
                           bool kill_running) = 0;

  // Active (not paused, not completed) jobs of the tenants in `scope` with next_fire <= now,
  // earliest first, at most `limit`.
  virtual Result<std::vector<JobRecord>> DueJobs(TimePoint now, int limit,
                                                 const TenantScope& scope) = 0;

  // The earliest next_fire of any active job of the tenants in `scope`, or none.
  virtual Result<std::optional<TimePoint>> NextFireTime(const TenantScope& scope) = 0;

  // Commits occurrences of a job atomically: checks that the job still has `expected_version`
  // and `expected_next_fire` (kFailedPrecondition otherwise — someone else fired or changed
  // it; nothing is written), sets next_fire / state / dependency_since, inserts each run whose
  // id is new (an existing id is counted in `existed` and left alone, unless that run was
  // cancelled before any attempt began: then the new one replaces it, counted in `created` —
  // the occurrence fired again after a pause or a delete of its job before its time; or the new
  // one is queued and that run is running with its cancellation requested, as a run held by a
  // node for its time is by such a pause: then the request is withdrawn, counted in `existed` —
  // see kCancelWithdrawn), and cancels the listed
  // runs (queued or retry-waiting: kCancelled; running: cancel_requested). Does not bump the
  // job's version. kNotFound if the job is gone.
  virtual Result<FireResult> Fire(const FireRequest& request) = 0;

  // Fire for many jobs at once: each request is applied atomically on its own, exactly as by
  // Fire (one failing its check does not affect the others), and the whole batch is committed
  // together (one durable write instead of one per request). One result per request, in order.
  // The default implementation calls Fire for each.
  virtual std::vector<Result<FireResult>> FireMany(std::span<const FireRequest> requests) {
    std::vector<Result<FireResult>> out;
    out.reserve(requests.size());
    for (const FireRequest& r : requests) out.push_back(Fire(r));
    return out;
  }

  // ---- Runs ------------------------------------------------------------------------------

  // Inserts runs asked for explicitly (manual triggers), each with a fresh id, if the job
  // exists (kNotFound otherwise). kAlreadyExists if an id exists (nothing is inserted).
  virtual Status EnqueueRuns(const std::string& tenant, const std::string& job_id,
                             std::span<const RunRecord> runs) = 0;

  // kNotFound if absent.
  virtual Result<RunRecord> GetRun(const std::string& tenant, const std::string& run_id) = 0;

  // Runs of a tenant (or one job), newest first, one page at a time.
  virtual Result<Page<RunRecord>> ListRuns(const std::string& tenant, const RunFilter& filter) = 0;

  // Runs of a job that are queued, retry-waiting or running (for overlap decisions).
  virtual Result<std::vector<RunRecord>> ActiveRuns(const std::string& tenant,
                                                    const std::string& job_id) = 0;
  // ActiveRuns of many jobs in one call (one round trip where the backend can batch); one
  // result per job, in order.
  virtual std::vector<Result<std::vector<RunRecord>>> ActiveRunsMany(std::span<const JobRef> jobs) {
    std::vector<Result<std::vector<RunRecord>>> out;
    out.reserve(jobs.size());
    for (const JobRef& j : jobs) out.push_back(ActiveRuns(j.tenant, j.job_id));
    return out;
  }

  // Runs of a job that ended succeeded, failed or timed_out with finished_at > since, oldest
  // first (for dependency barriers).
  virtual Result<std::vector<RunRecord>> FinishedRunsSince(const std::string& tenant,
                                                           const std::string& job_id,
                                                           TimePoint since) = 0;

  // Jobs of the tenant whose depends_on names `job_id`.
  virtual Result<std::vector<JobRecord>> Dependents(const std::string& tenant,
                                                    const std::string& job_id) = 0;

  // Claims up to max_runs runs for `node`: queued, or retry-waiting, with available_at <= now
  // (or <= horizon, when given), in the given queues; highest priority first, then earliest
  // available_at, then id. An exclusive run is skipped while another run of its job is running,
  // and a tenant never has more than its max_concurrent_runs running, nor a queue of a tenant
  // more than its queue_limits entry. Each claimed run becomes running with attempt + 1, a new
  // fencing token (increasing across the store), node, lease_deadline = now + lease, and a new
  // attempt record that starts at max(now, available_at) (so does the run: started_at, first
  // attempt).
  virtual Result<std::vector<RunRecord>> ClaimRuns(const ClaimRequest& request) = 0;

  // The earliest available_at of a claimable run (queued or retry-waiting), or none. A store may
  // leave out the runs of a tenant whose running runs fill its max_concurrent_runs: none of them
  // can be claimed before one of those ends (the node that ends it claims again).
  virtual Result<std::optional<TimePoint>> NextAvailableTime() = 0;

  // Renews the leases of running attempts, one status per ref in order: kRenewed, kStale (not
  // running, or another fence), kCancelRequested (renewed; the run should stop).
  virtual Result<std::vector<LeaseStatus>> RenewLeases(std::span<const LeaseRef> leases,
                                                       TimePoint now, Duration lease) = 0;

  // Ends the current attempt if the run is running with `fence`: records the attempt's outcome,
  // exit code, http status, output and error; the run becomes `state` (kRetryWait: queued again
  // at retry_at). kFailedPrecondition with message "stale_token" otherwise — nothing recorded.
  // A completion whose attempt never began (Completion::began false) is not recorded as an
  // attempt; it is refused, nothing recorded, with kFailedPrecondition "cancel_withdrawn" when
  // the run's cancellation is not requested and its job exists (kCancelWithdrawn).
  virtual Status Complete(const Completion& completion) = 0;

  // Complete for many attempts at once, each checked and applied as by Complete, committed
  // together. One status per completion, in order. The default implementation calls Complete
  // for each.
  virtual std::vector<Status> CompleteMany(std::span<const Completion> completions) {
    std::vector<Status> out;
    out.reserve(completions.size());
    for (const Completion& c : completions) out.push_back(Complete(c));
    return out;
  }

  // Cancels a run: queued or retry-waiting → kCancelled; running → cancel_requested (the holder
  // stops it and completes it as cancelled). kFailedPrecondition if already terminal;
  // kNotFound if absent.
  virtual Status CancelRun(const std::string& tenant, const std::string& run_id, TimePoint now) = 0;

  // Running runs whose lease_deadline < now (or, with `node` set, every running run of that
  // node — for a node that restarts and knows it runs nothing): the attempt ends as lease_lost
  // and the run is queued again (available now), or fails once it lost more than
  // `max_leases_lost` leases. Returns the runs as they are afterwards.
  virtual Result<std::vector<RunRecord>> RecoverLostRuns(TimePoint now, const std::string& node,
                                                         int max_leases_lost, int limit) = 0;

  // Deletes terminal runs finished before `older_than` that are not among the newest
  // `keep_per_job` runs of their job. Returns how many were deleted.
  virtual Result<int64_t> PruneRuns(TimePoint older_than, int keep_per_job) = 0;

  // Runs grouped by tenant, queue and state; `tenant` "" = every tenant, `job_id` "" = every
  // job. Only groups with runs are returned.
  virtual Result<std::vector<RunCount>> CountRuns(const std::string& tenant,
                                                  const std::string& job_id) = 0;
  // Jobs grouped by tenant and state, every tenant.
  virtual Result<std::vector<JobCount>> CountJobs() = 0;

  // ---- Events ----------------------------------------------------------------------------

  // Every state change above appends its events in the same atomic operation. AppendEvent adds
  // one from outside (audit lines). Events older than the newest `keep` are pruned by
  // PruneEvents.
  virtual Status AppendEvent(const Event& event) = 0;
  // Events of a tenant ("" = all) with seq > after_seq, oldest first.
  virtual Result<std::vector<Event>> ReadEvents(const std::string& tenant, int64_t after_seq,
                                                int limit) = 0;
  virtual Status PruneEvents(int64_t keep) = 0;
  // The seq of the newest event, or 0 when there is none.
  virtual Result<int64_t> LastEventSeq() = 0;

  // ---- Tenants ---------------------------------------------------------------------------

  // Creates or replaces a tenant's quotas (created_at is kept on replace).
  virtual Status PutTenant(const TenantRecord& tenant) = 0;
  // kNotFound if absent ("default" is never absent).
  virtual Result<TenantRecord> GetTenant(const std::string& id) = 0;
  // Ordered by id.
  virtual Result<std::vector<TenantRecord>> ListTenants() = 0;

  // ---- Nodes and keys --------------------------------------------------------------------

  virtual Status Heartbeat(const NodeInfo& node) = 0;
  virtual Result<std::vector<NodeInfo>> ListNodes() = 0;
  virtual Status RemoveNode(const std::string& id) = 0;

  // ---- Cluster ---------------------------------------------------------------------------

  // Takes the leader lease for `node` until now + ttl if nobody holds it, the holder's lease
  // expired (epoch + 1), or `node` holds it already (renewed, same epoch). Returns the lease as
  // it stands after the call: held by `node` or by someone else.
  virtual Result<LeaderLease> AcquireLeadership(const std::string& node, TimePoint now,
                                                Duration ttl) = 0;
  // The current lease, or none when nobody holds an unexpired one.
  virtual Result<std::optional<LeaderLease>> GetLeader(TimePoint now) = 0;
  // Gives the lease up if `node` holds it with `epoch` (a clean stop); otherwise a no-op.
  virtual Status ReleaseLeadership(const std::string& node, int64_t epoch) = 0;
  // Writes the assignment if `node` holds the unexpired leader lease with `epoch` at `now`;
  // kFailedPrecondition (nothing written) otherwise.
  virtual Status PutAssignment(const std::string& node, int64_t epoch, TimePoint now,
                               const TenantOwners& owners) = 0;
  // The last assignment written (epoch 0, no owners, if none).
  virtual Result<Assignment> GetAssignment() = 0;

  // The store's own clock, when it has one that every node shares (Redis TIME): the time base
  // of a cluster, to the microsecond. None when the local clock is the time base (SQLite).
  using ServerTimePoint = std::chrono::sys_time<std::chrono::microseconds>;
  virtual Result<std::optional<ServerTimePoint>> ServerTime() {
    return std::optional<ServerTimePoint>();
  }

  // Publishes a wake-up to the other processes sharing the store. A no-op for stores that only
  // one process uses.
  virtual Status Publish(const WakeMessage& message) {
    (void)message;
    return Status::Ok();
  }
  // Calls `handler` (on a store thread; it must not block) for every wake-up published by any
  // process. At most one handler: a new one replaces it, and an empty one removes it (returning
  // once a call in progress has ended). A no-op for stores that only one process uses.
  // Delivery is best effort: a lost message costs a fallback poll. When a subscription that
  // failed is back, the handler gets a kJobsChanged and a kRunsReady with an empty origin: the
  // messages published meanwhile are lost, so whatever they would have refreshed is stale.
  virtual void Subscribe(std::function<void(const WakeMessage&)> handler) { (void)handler; }

  // kAlreadyExists if the id exists.
  virtual Status PutApiKey(const ApiKeyRecord& key) = 0;
  // kNotFound if no key has that hash.
  virtual Result<ApiKeyRecord> GetApiKeyByHash(const std::string& secret_hash) = 0;
  virtual Result<std::vector<ApiKeyRecord>> ListApiKeys() = 0;
  // kNotFound if absent; kFailedPrecondition (field "id") if it is the last admin key: without
  // one, no key could be created or revoked again. The check and the delete are one step.
  virtual Status DeleteApiKey(const std::string& id) = 0;
};

// Opens the store named by a URL: "sqlite:PATH" (a file, created with its directory),
// "sqlite::memory:", "redis://[user:pass@]host:port[/db]". kInvalidArgument for an unknown scheme
// or a malformed URL; kUnavailable when the store cannot be reached.
Result<std::unique_ptr<Store>> OpenStore(const std::string& url);

// The store URL with its password, if any, masked ("redis://user:***@host:6379"): for messages
// and logs.
std::string RedactStoreUrl(const std::string& url);

}  // namespace jobsched
