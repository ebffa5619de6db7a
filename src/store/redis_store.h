// RedisStore: the Store on a Redis server (docs/redis-store.md) — the backend for a cluster of
// nodes.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<RedisStore> store,
//                    RedisStore::Open({.host = "10.0.0.5", .port = 6379}));
//
// Each state change of a job or run is one Lua script (src/store/redis_scripts.h) that makes all
// of its checks (job version and next fire, fencing token, quotas) before its first write, so a
// rejected or refused (out of memory) change writes nothing. Scripts are loaded once and called
// with EVALSHA (loaded again on NOSCRIPT, e.g. after a failover). Reads are plain commands or
// read-only scripts; batches (FireMany, CompleteMany, the per-tenant steps below) are pipelined.
//
// Keys (layout in redis_scripts.h): "<prefix>:{t:<tenant>}:..." for everything of a tenant, so
// the tenant part of every script touches one hash slot; "<prefix>:{sys}:..." for nodes, API
// keys, the set of tenants and two store-wide counters.
//
// Slots: the scripts also INCR the two store-wide counters, "<prefix>:{sys}:event_seq" (every
// event's seq, so ReadEvents("") can merge the tenants' streams in commit order) and
// "<prefix>:{sys}:fence" (fencing tokens, increasing across the store). That is the only
// cross-slot access; it is fine on a single Redis (and Sentinel), and is what a Redis Cluster
// port has to replace (per-tenant counters, or tokens reserved in blocks).
//
// Operations across tenants (DueJobs, NextFireTime, ClaimRuns, NextAvailableTime,
// RecoverLostRuns, PruneRuns, CountRuns(""), CountJobs, the events of every tenant) read the set
// of tenants and run one pipelined command or script per tenant: O(tenants) work per call, one
// or two round trips. Hot paths (claims, due jobs, next times, recovery) use a copy of the
// tenant set at most `tenant_list_ttl` old, plus every tenant this process wrote to: a tenant
// created by another process is seen by this one within that time.
//
// Thread safety: every method may be called from any thread; calls share a pool of
// `pool_size` connections (a caller waits for a free one up to `command_timeout`).
//
// Errors: Redis unreachable, a dropped connection, a timeout, OOM/BUSY/LOADING/READONLY replies:
// kUnavailable ("redis 127.0.0.1:6379 unreachable: Connection refused"); after a timeout or a
// dropped connection the outcome of the call is unknown (callers retry idempotently). After a
// failed connection attempt or a timeout, calls fail at once for a backoff period (100 ms
// doubling to 2 s; after a timeout, until a call succeeds, with one call at a time trying).
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>
#include <jobsched/store.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace jobsched {

class RedisBackend;  // defined in redis_store.cc (hiredis stays there)

struct RedisOptions {
  std::string host = "127.0.0.1";  // Default: "127.0.0.1"
  int port = 6379;                 // Default: 6379
  int db = 0;                      // SELECTed after connecting. Default: 0
  // ACL user (Redis 6+) for AUTH; "" = AUTH with the password alone. Default: ""
  std::string user;
  std::string password;  // "" = no AUTH. Default: ""
  // Every key starts with "<key_prefix>:"; several stores can share one database with distinct
  // prefixes. Must not contain '{' or '}'. Default: "js"
  std::string key_prefix = "js";
  Duration connect_timeout{2000};  // Default: 2 s
  // One round trip (a pipeline); a connection that times out is dropped. Default: 5 s
  Duration command_timeout{5000};
  int pool_size = 8;  // connections at most. Default: 8
  // Each tenant's event stream is trimmed (approximately) to this many events. Default: 100000
  int64_t max_events_per_tenant = 100000;
  // How old the copy of the tenant set used by hot paths may be; 0 = read it every time.
  // Default: 1 s
  Duration tenant_list_ttl{1000};
};

class RedisStore final : public Store {
 public:
  // Connects, checks the server (Redis 6.2 or newer) and loads the scripts.
  // kInvalidArgument for bad options; kUnavailable if Redis cannot be reached or refuses the
  // credentials; kFailedPrecondition for a server that is too old. Thread-safe.
  static Result<std::unique_ptr<RedisStore>> Open(const RedisOptions& options);

  // Options from a store URL "redis://[user:password@]host[:port][/db]" (user and password
  // percent-decoded; "redis://:password@host" and "redis://password@host" give a password
  // alone; IPv6 hosts in brackets; port 6379 and db 0 when absent). Other fields keep their
  // defaults. kInvalidArgument naming the URL if it is malformed.
  static Result<RedisOptions> ParseUrl(const std::string& url);

  // What Open found in the server's configuration that could lose data without an error (a
  // maxmemory-policy that evicts keys, appendonly off), each logged as a warning by Open.
  const std::vector<std::string>& config_warnings() const;

  ~RedisStore() override;

  // ---- Store (see store.h for the contract of each method) -------------------------------
  Result<JobRecord> CreateJob(const JobRecord& job) override;
  Result<JobRecord> PutJob(const JobRecord& job, std::optional<int64_t> expected_version) override;
  Result<JobRecord> GetJob(const std::string& tenant, const std::string& id) override;
  // One pipeline.
  std::vector<Result<JobRecord>> GetJobs(std::span<const JobRef> jobs) override;
  Result<Page<JobRecord>> ListJobs(const std::string& tenant, const JobFilter& filter) override;
  Status DeleteJob(const std::string& tenant, const std::string& id, TimePoint now,
                   bool kill_running) override;
  Result<std::vector<JobRecord>> DueJobs(TimePoint now, int limit,
                                         const TenantScope& scope) override;
  Result<std::optional<TimePoint>> NextFireTime(const TenantScope& scope) override;
  Result<FireResult> Fire(const FireRequest& request) override;
  // One pipeline: one script per request.
  std::vector<Result<FireResult>> FireMany(std::span<const FireRequest> requests) override;

  Status EnqueueRuns(const std::string& tenant, const std::string& job_id,
                     std::span<const RunRecord> runs) override;
  Result<RunRecord> GetRun(const std::string& tenant, const std::string& run_id) override;
  Result<Page<RunRecord>> ListRuns(const std::string& tenant, const RunFilter& filter) override;
  Result<std::vector<RunRecord>> ActiveRuns(const std::string& tenant,
                                            const std::string& job_id) override;
  // One pipeline: one script per job.
  std::vector<Result<std::vector<RunRecord>>> ActiveRunsMany(std::span<const JobRef> jobs) override;
  Result<std::vector<RunRecord>> FinishedRunsSince(const std::string& tenant,
                                                   const std::string& job_id,
                                                   TimePoint since) override;
  Result<std::vector<JobRecord>> Dependents(const std::string& tenant,
                                            const std::string& job_id) override;
  // One tenant: one script. Several: every tenant's best candidates are read first (one
  // pipeline), merged, and each tenant claims its share (a second pipeline).
  Result<std::vector<RunRecord>> ClaimRuns(const ClaimRequest& request) override;
  Result<std::optional<TimePoint>> NextAvailableTime() override;
  // One pipeline: one script per tenant named.
  Result<std::vector<LeaseStatus>> RenewLeases(std::span<const LeaseRef> leases, TimePoint now,
                                               Duration lease) override;
  Status Complete(const Completion& completion) override;
  // One pipeline: one script per completion.
  std::vector<Status> CompleteMany(std::span<const Completion> completions) override;
  Status CancelRun(const std::string& tenant, const std::string& run_id, TimePoint now) override;
  Result<std::vector<RunRecord>> RecoverLostRuns(TimePoint now, const std::string& node,
                                                 int max_leases_lost, int limit) override;
  // One script per job with history (pipelined): O(runs older than the newest kept).
  Result<int64_t> PruneRuns(TimePoint older_than, int keep_per_job) override;

  // Counters kept by the scripts: O(groups), not O(runs).
  Result<std::vector<RunCount>> CountRuns(const std::string& tenant,
                                          const std::string& job_id) override;
  Result<std::vector<JobCount>> CountJobs() override;

  Status AppendEvent(const Event& event) override;
  Result<std::vector<Event>> ReadEvents(const std::string& tenant, int64_t after_seq,
                                        int limit) override;
  Status PruneEvents(int64_t keep) override;
  Result<int64_t> LastEventSeq() override;

  Status PutTenant(const TenantRecord& tenant) override;
  Result<TenantRecord> GetTenant(const std::string& id) override;
  Result<std::vector<TenantRecord>> ListTenants() override;

  Status Heartbeat(const NodeInfo& node) override;
  Result<std::vector<NodeInfo>> ListNodes() override;
  Status RemoveNode(const std::string& id) override;

  // The leader lease is "<prefix>:{sys}:leader" (never deleted: its epoch only grows), the
  // assignment "<prefix>:{sys}:assign"; one script each (redis_scripts.h).
  Result<LeaderLease> AcquireLeadership(const std::string& node, TimePoint now,
                                        Duration ttl) override;
  Result<std::optional<LeaderLease>> GetLeader(TimePoint now) override;
  Status ReleaseLeadership(const std::string& node, int64_t epoch) override;
  Status PutAssignment(const std::string& node, int64_t epoch, TimePoint now,
                       const TenantOwners& owners) override;
  Result<Assignment> GetAssignment() override;

  // The Redis server's clock (TIME): the cluster's time base (docs/cluster.md).
  Result<std::optional<ServerTimePoint>> ServerTime() override;

  // PUBLISH on "<prefix>:{sys}:wake"; Subscribe runs one thread with its own connection
  // (SUBSCRIBE), reconnecting with backoff when the connection drops.
  Status Publish(const WakeMessage& message) override;
  void Subscribe(std::function<void(const WakeMessage&)> handler) override;

  Status PutApiKey(const ApiKeyRecord& key) override;
  Result<ApiKeyRecord> GetApiKeyByHash(const std::string& secret_hash) override;
  Result<std::vector<ApiKeyRecord>> ListApiKeys() override;
  Status DeleteApiKey(const std::string& id) override;

 private:
  explicit RedisStore(std::unique_ptr<RedisBackend> backend);

  // CreateJob (`create`) and PutJob: one put_job script.
  Result<JobRecord> WriteJob(const JobRecord& job, std::optional<int64_t> expected_version,
                             bool create);

  // Connections, scripts and the tenant cache. Immutable pointer; the backend is thread-safe.
  const std::unique_ptr<RedisBackend> backend_;
};

}  // namespace jobsched
