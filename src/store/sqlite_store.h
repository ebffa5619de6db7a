// SqliteStore: the Store on an embedded SQLite database — one file for one machine (the
// default), or ":memory:" for tests and throwaway nodes.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store,
//                    SqliteStore::Open({.path = "./data/jobsched.db"}));
//
// Every Store method is one SQLite transaction (BEGIN IMMEDIATE for changes) on one connection
// guarded by a mutex, so it is thread-safe, and each compare-and-set (job version, next_fire,
// fencing token) is checked before anything is written. Several processes may open the same
// file: SQLite's file locks serialise their write transactions and `busy_timeout` bounds the
// wait; a lock not obtained in time is kUnavailable. Files use WAL journaling with
// synchronous=FULL, so a claim or a completion that returned OK survives a power cut.
//
// The schema is versioned (table `meta`, row `schema_version`) and migrated forward on Open, in
// one transaction, so two processes opening a new file at once migrate it once.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>
#include <jobsched/store.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace jobsched {

class SqliteConnection;  // defined in sqlite_store.cc

struct SqliteOptions {
  // The database file, created when missing (its directory must exist), or ":memory:" for a
  // private in-memory database that lives as long as the SqliteStore. Default: ":memory:"
  std::string path = ":memory:";
  // How long a transaction waits for another process's lock before failing with kUnavailable.
  // Default: 5 s
  Duration busy_timeout{5000};
};

class SqliteStore final : public Store {
 public:
  // Opens (creating when missing) and migrates the database. kInvalidArgument for an empty
  // path; kUnavailable if the file cannot be opened or locked (a missing directory included);
  // kFailedPrecondition if its schema is newer than this binary knows.
  // Thread-safe.
  static Result<std::unique_ptr<SqliteStore>> Open(const SqliteOptions& options);

  // The schema version this binary writes (the last migration).
  static int LatestSchemaVersion();

  ~SqliteStore() override;

  // ---- Store (see store.h for the contract of each method) -------------------------------
  Result<JobRecord> CreateJob(const JobRecord& job) override;
  Result<JobRecord> PutJob(const JobRecord& job, std::optional<int64_t> expected_version) override;
  Result<JobRecord> GetJob(const std::string& tenant, const std::string& id) override;
  Result<Page<JobRecord>> ListJobs(const std::string& tenant, const JobFilter& filter) override;
  Status DeleteJob(const std::string& tenant, const std::string& id, TimePoint now,
                   bool kill_running) override;
  Result<std::vector<JobRecord>> DueJobs(TimePoint now, int limit,
                                         const TenantScope& scope) override;
  Result<std::optional<TimePoint>> NextFireTime(const TenantScope& scope) override;
  Result<FireResult> Fire(const FireRequest& request) override;
  // One transaction for the batch, one savepoint per request.
  std::vector<Result<FireResult>> FireMany(std::span<const FireRequest> requests) override;

  Status EnqueueRuns(const std::string& tenant, const std::string& job_id,
                     std::span<const RunRecord> runs) override;
  Result<RunRecord> GetRun(const std::string& tenant, const std::string& run_id) override;
  Result<Page<RunRecord>> ListRuns(const std::string& tenant, const RunFilter& filter) override;
  Result<std::vector<RunRecord>> ActiveRuns(const std::string& tenant,
                                            const std::string& job_id) override;
  Result<std::vector<RunRecord>> FinishedRunsSince(const std::string& tenant,
                                                   const std::string& job_id,
                                                   TimePoint since) override;
  Result<std::vector<JobRecord>> Dependents(const std::string& tenant,
                                            const std::string& job_id) override;
  Result<std::vector<RunRecord>> ClaimRuns(const ClaimRequest& request) override;
  Result<std::optional<TimePoint>> NextAvailableTime() override;
  Result<std::vector<LeaseStatus>> RenewLeases(std::span<const LeaseRef> leases, TimePoint now,
                                               Duration lease) override;
  Status Complete(const Completion& completion) override;
  // One transaction for the batch, one savepoint per completion.
  std::vector<Status> CompleteMany(std::span<const Completion> completions) override;
  Status CancelRun(const std::string& tenant, const std::string& run_id, TimePoint now) override;
  Result<std::vector<RunRecord>> RecoverLostRuns(TimePoint now, const std::string& node,
                                                 int max_leases_lost, int limit) override;
  Result<int64_t> PruneRuns(TimePoint older_than, int keep_per_job) override;

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

  Result<LeaderLease> AcquireLeadership(const std::string& node, TimePoint now,
                                        Duration ttl) override;
  Result<std::optional<LeaderLease>> GetLeader(TimePoint now) override;
  Status ReleaseLeadership(const std::string& node, int64_t epoch) override;
  Status PutAssignment(const std::string& node, int64_t epoch, TimePoint now,
                       const TenantOwners& owners) override;
  Result<Assignment> GetAssignment() override;

  Status PutApiKey(const ApiKeyRecord& key) override;
  Result<ApiKeyRecord> GetApiKeyByHash(const std::string& secret_hash) override;
  Result<std::vector<ApiKeyRecord>> ListApiKeys() override;
  Status DeleteApiKey(const std::string& id) override;

 private:
  explicit SqliteStore(std::unique_ptr<SqliteConnection> conn);

  // Runs the migrations newer than the stored schema version, all in one transaction.
  Status Migrate();

  // The one connection (":memory:" must be a single shared one), the mutex that serialises its
  // transactions and its prepared-statement cache. Immutable pointer; the connection's state is
  // guarded by its own mutex.
  const std::unique_ptr<SqliteConnection> conn_;
};

}  // namespace jobsched
