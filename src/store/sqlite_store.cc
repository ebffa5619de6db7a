#include "store/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "core/job_codec.h"
#include "store/store_common.h"

namespace jobsched {

// ---- Schema -------------------------------------------------------------------------------
//
// Times are unix milliseconds (INTEGER; NULL where optional). Enums are stored by their JSON
// names (RunStateName, JobStateName, RunReasonName); the partial indexes below spell some of
// those names out, and the queries that use them repeat the index's WHERE term word for word
// (SQLite only uses a partial index when it can prove the query's WHERE implies the index's)
// and name it with INDEXED BY: without statistics the planner cannot know that a partial index
// of the unfinished runs is far smaller than a full one, and a claim must never scan history.
//
// To change the schema, append a migration: it runs once, in the Open transaction, on every
// database whose schema_version is older. Never edit a migration that has shipped.

namespace {

struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE counters (
  name  TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
-- The fencing-token counter: one for the whole store, incremented per claim.
INSERT INTO counters (name, value) VALUES ('fence', 0);

CREATE TABLE jobs (
  tenant           TEXT NOT NULL,
  id               TEXT NOT NULL,
  spec             TEXT NOT NULL,     -- JobSpecToJson
  queue            TEXT NOT NULL,     -- copied from spec, for filters
  labels           TEXT NOT NULL,     -- JSON object copied from spec, for filters
  paused           INTEGER NOT NULL,  -- spec.paused
  version          INTEGER NOT NULL,
  state            TEXT NOT NULL,
  next_fire        INTEGER,
  dependency_since INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  PRIMARY KEY (tenant, id)
);
-- DueJobs, NextFireTime.
CREATE INDEX jobs_due ON jobs (next_fire, tenant, id)
  WHERE state = 'active' AND paused = 0 AND next_fire IS NOT NULL;

-- job_id's spec lists depends_on (Dependents).
CREATE TABLE job_deps (
  tenant     TEXT NOT NULL,
  depends_on TEXT NOT NULL,
  job_id     TEXT NOT NULL,
  PRIMARY KEY (tenant, depends_on, job_id)
) WITHOUT ROWID;

CREATE TABLE runs (
  tenant           TEXT NOT NULL,
  id               TEXT NOT NULL,
  job_id           TEXT NOT NULL,
  queue            TEXT NOT NULL,
  priority         INTEGER NOT NULL,
  scheduled_at     INTEGER NOT NULL,
  available_at     INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  reason           TEXT NOT NULL,
  state            TEXT NOT NULL,
  attempt          INTEGER NOT NULL,
  max_attempts     INTEGER NOT NULL,
  exclusive        INTEGER NOT NULL,
  node             TEXT NOT NULL,
  fence            INTEGER NOT NULL,
  lease_deadline   INTEGER,
  started_at       INTEGER,
  finished_at      INTEGER,
  exit_code        INTEGER,
  http_status      INTEGER,
  output           TEXT NOT NULL,
  error            TEXT NOT NULL,
  payload          TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL,
  leases_lost      INTEGER NOT NULL,
  attempts         TEXT NOT NULL,     -- AttemptsToJson
  PRIMARY KEY (tenant, id)
);
-- ClaimRuns: per priority, a range scan on available_at <= now.
CREATE INDEX runs_ready ON runs (priority, available_at, id, tenant)
  WHERE state IN ('queued', 'retry_wait');
-- NextAvailableTime.
CREATE INDEX runs_available ON runs (available_at)
  WHERE state IN ('queued', 'retry_wait');
-- RecoverLostRuns.
CREATE INDEX runs_leases ON runs (lease_deadline) WHERE state = 'running';
-- ActiveRuns, the exclusive check of ClaimRuns, DeleteJob: only the unfinished runs of a job,
-- however long its history.
CREATE INDEX runs_active ON runs (tenant, job_id, created_at, id)
  WHERE state IN ('queued', 'retry_wait', 'running');
-- ListRuns of one job (newest first), PruneRuns.
CREATE INDEX runs_by_job ON runs (tenant, job_id, created_at, id);
-- ListRuns of a tenant (newest first).
CREATE INDEX runs_by_tenant ON runs (tenant, created_at, id);
-- FinishedRunsSince.
CREATE INDEX runs_finished ON runs (tenant, job_id, finished_at)
  WHERE state IN ('succeeded', 'failed', 'timed_out');

CREATE TABLE events (
  seq    INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  time   INTEGER NOT NULL,
  type   TEXT NOT NULL,
  job_id TEXT NOT NULL,
  run_id TEXT NOT NULL,
  data   TEXT NOT NULL
);
CREATE INDEX events_by_tenant ON events (tenant, seq);

CREATE TABLE nodes (
  id           TEXT PRIMARY KEY,
  host         TEXT NOT NULL,
  pid          INTEGER NOT NULL,
  version      TEXT NOT NULL,
  queues       TEXT NOT NULL,  -- JSON array
  concurrency  INTEGER NOT NULL,
  cpu_seconds  REAL NOT NULL,
  rss_bytes    INTEGER NOT NULL,
  started_at   INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
  id          TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL UNIQUE,
  tenant      TEXT NOT NULL,
  role        TEXT NOT NULL,
  allow_shell INTEGER NOT NULL,
  name        TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);
)sql"},
    {2, R"sql(
CREATE TABLE tenants (
  id                  TEXT PRIMARY KEY,
  max_jobs            INTEGER NOT NULL,
  max_concurrent_runs INTEGER NOT NULL,
  created_at          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO tenants VALUES ('default', 0, 0, 0, 0);
)sql"},
    {3, R"sql(
ALTER TABLE tenants ADD COLUMN queue_limits TEXT NOT NULL DEFAULT '{}';
)sql"},
    {4, R"sql(
-- The leader lease (one row) and the tenant assignment its holder wrote (one row).
CREATE TABLE leader (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  node       TEXT NOT NULL,
  epoch      INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE TABLE assignment (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  epoch      INTEGER NOT NULL,
  owners     TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
)sql"},
    {5, R"sql(
-- The same partial indexes with their sets of states written as comparisons: SQLite evaluates
-- a partial index's WHERE for the old and the new row of every write, and an IN list of three or
-- more values with a temporary b-tree that is allocated and freed each time (which made every
-- claim and completion slower the larger the database).
DROP INDEX runs_active;
CREATE INDEX runs_active ON runs (tenant, job_id, created_at, id)
  WHERE state = 'running' OR state IN ('queued', 'retry_wait');
DROP INDEX runs_finished;
CREATE INDEX runs_finished ON runs (tenant, job_id, finished_at)
  WHERE state = 'timed_out' OR state IN ('succeeded', 'failed');
)sql"},
    {6, R"sql(
-- The length of a run's whole output when the stored output is only its end (the handler wrote
-- more than limits.max_output_bytes); NULL when the output is whole.
ALTER TABLE runs ADD COLUMN output_bytes INTEGER;
)sql"},
    // {7, "ALTER TABLE ..."},  -- the next schema change goes here.
};

// The WHERE terms of the partial indexes runs_active and runs_finished (migration 5), repeated
// as they are in the queries that name the index: SQLite uses a partial index only for a query
// whose WHERE contains its terms.
#define JOBSCHED_ACTIVE_STATES "(state = 'running' OR state IN ('queued', 'retry_wait'))"
#define JOBSCHED_FINISHED_STATES "(state = 'timed_out' OR state IN ('succeeded', 'failed'))"

}  // namespace

// ---- Connection, statements, transactions -------------------------------------------------

class SqliteConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  sqlite3* db() const { return db_; }
  std::mutex& mu() { return mu_; }
  // Requires mu() held.
  std::unordered_map<std::string, sqlite3_stmt*>& stmts() { return stmts_; }

 private:
  sqlite3* const db_;  // immutable after construction
  std::mutex mu_;
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;  // guarded by mu_
};

namespace {

using Json = nlohmann::json;

constexpr int kMaxPageSize = 1000;
constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinInt64 = std::numeric_limits<int64_t>::min();
constexpr char kStaleToken[] = "stale_token";

// Busy/locked means another writer held the database longer than busy_timeout; I/O and open
// failures mean the file is not usable right now. Both are "the store cannot be reached".
Status SqlError(sqlite3* db, int rc, std::string_view what) {
  std::string message = "sqlite: " + std::string(what) + ": " + sqlite3_errstr(rc);
  if (db != nullptr && sqlite3_errcode(db) == rc) {
    message += " (";
    message += sqlite3_errmsg(db);
    message += ")";
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
    case SQLITE_NOMEM:
      return Unavailable(std::move(message));
    default:
      return Internal(std::move(message));
  }
}

// JSON text; invalid UTF-8 is replaced rather than thrown about.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

int Clamp(int limit, int lo, int hi) { return std::max(lo, std::min(limit, hi)); }

// A prepared statement in use: bound, stepped, and reset (for reuse from the cache) when it
// goes out of scope.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, bool owned) : db_(db), stmt_(stmt), owned_(owned) {}
  Stmt(Stmt&& other) noexcept
      : db_(other.db_),
        stmt_(std::exchange(other.stmt_, nullptr)),
        owned_(other.owned_),
        bind_rc_(other.bind_rc_) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  // Parameters are 1-based, as in SQL's ?N. A bind error surfaces at the next Step().
  Stmt& Int(int i, int64_t v) { return Check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& Real(int i, double v) { return Check(sqlite3_bind_double(stmt_, i, v)); }
  Stmt& Text(int i, std::string_view v) {
    return Check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Stmt& Null(int i) { return Check(sqlite3_bind_null(stmt_, i)); }
  Stmt& Time(int i, TimePoint t) { return Int(i, ToUnixMillis(t)); }
  Stmt& Time(int i, const std::optional<TimePoint>& t) {
    return t ? Int(i, ToUnixMillis(*t)) : Null(i);
  }
  Stmt& OptInt(int i, const std::optional<int>& v) { return v ? Int(i, *v) : Null(i); }

  // True: a row is ready; false: done.
  Result<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqlError(db_, bind_rc_, "bind");
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, rc, sqlite3_sql(stmt_));
  }
  // Steps to the end, ignoring rows (for statements that return none, or RETURNING ones whose
  // result is not needed).
  Status Run() {
    for (;;) {
      ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return Status::Ok();
    }
  }
  // The number of rows the last INSERT/UPDATE/DELETE on this connection changed.
  int64_t Changes() const { return sqlite3_changes64(db_); }

  bool IsNull(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  int64_t GetInt(int c) const { return sqlite3_column_int64(stmt_, c); }
  double GetReal(int c) const { return sqlite3_column_double(stmt_, c); }
  std::string GetText(int c) const {
    const unsigned char* p = sqlite3_column_text(stmt_, c);
    if (p == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, c));
  }
  TimePoint GetTime(int c) const { return FromUnixMillis(GetInt(c)); }
  std::optional<TimePoint> GetOptTime(int c) const {
    if (IsNull(c)) return std::nullopt;
    return GetTime(c);
  }
  std::optional<int> GetOptInt(int c) const {
    if (IsNull(c)) return std::nullopt;
    return static_cast<int>(GetInt(c));
  }

 private:
  Stmt& Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool owned_;  // not from the cache: finalized at the end
  int bind_rc_ = SQLITE_OK;
};

// One transaction: holds the connection's mutex from BEGIN to COMMIT/ROLLBACK. Writers use
// BEGIN IMMEDIATE, which takes the database's write lock up front (waiting up to busy_timeout
// for another process), so a compare-and-set read inside it cannot be invalidated before the
// write. The destructor rolls back whatever was not committed.
class Txn {
 public:
  enum Mode { kRead, kWrite };

  Txn(SqliteConnection& conn, Mode mode) : conn_(conn), lock_(conn.mu()) {
    int rc = sqlite3_exec(conn_.db(), mode == kWrite ? "BEGIN IMMEDIATE" : "BEGIN", nullptr,
                          nullptr, nullptr);
    if (rc == SQLITE_OK) {
      open_ = true;
    } else {
      begin_status_ = SqlError(conn_.db(), rc, "begin transaction");
    }
  }
  ~Txn() {
    // A failed statement may already have rolled the transaction back (I/O errors, SQLITE_FULL).
    if (open_ && !sqlite3_get_autocommit(conn_.db())) {
      sqlite3_exec(conn_.db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  const Status& begin_status() const { return begin_status_; }

  Status Commit() {
    open_ = false;
    int rc = sqlite3_exec(conn_.db(), "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
      Status s = SqlError(conn_.db(), rc, "commit");
      if (!sqlite3_get_autocommit(conn_.db())) {
        sqlite3_exec(conn_.db(), "ROLLBACK", nullptr, nullptr, nullptr);
      }
      return s;
    }
    return Status::Ok();
  }

  // A cached prepared statement; a private one when the cached one is being stepped already
  // (a statement used while iterating itself).
  Result<Stmt> Prepare(const std::string& sql) {
    auto& cache = conn_.stmts();
    auto it = cache.find(sql);
    if (it != cache.end() && !sqlite3_stmt_busy(it->second)) {
      return Stmt(conn_.db(), it->second, /*owned=*/false);
    }
    sqlite3_stmt* stmt = nullptr;
    const bool cache_it = it == cache.end();
    int rc = sqlite3_prepare_v3(conn_.db(), sql.data(), static_cast<int>(sql.size()),
                                cache_it ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
    if (rc != SQLITE_OK) return SqlError(conn_.db(), rc, "prepare: " + sql);
    if (cache_it) cache.emplace(sql, stmt);
    return Stmt(conn_.db(), stmt, /*owned=*/!cache_it);
  }

  // False once SQLite rolled the transaction back on its own (I/O errors, SQLITE_FULL), or a
  // savepoint could not be undone: nothing more may be written or committed.
  bool usable() const { return broken_.ok() && !sqlite3_get_autocommit(conn_.db()); }
  // Why the transaction is not usable.
  Status broken_status() const {
    return broken_.ok() ? Unavailable("sqlite: the transaction was rolled back") : broken_;
  }

  // Runs `body` (returning Status or Result<T>) under a savepoint: its writes stay if it
  // succeeds and are undone if it fails, leaving the rest of the transaction as it was.
  template <typename F>
  auto Savepoint(F&& body) -> decltype(body()) {
    if (Status s = Exec("SAVEPOINT item"); !s.ok()) {
      broken_ = s;
      return s;
    }
    auto result = body();
    const Status undo = !usable()     ? Status::Ok()
                        : result.ok() ? Exec("RELEASE item")
                                      : Exec("ROLLBACK TO item; RELEASE item");
    if (!undo.ok()) {
      broken_ = undo;
      return undo;
    }
    return result;
  }

  // Runs one or more statements without results (schema changes).
  Status Exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(conn_.db(), sql, nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return Status::Ok();
    std::string message = err != nullptr ? err : "";
    sqlite3_free(err);
    return SqlError(nullptr, rc, "exec: " + message);
  }

 private:
  SqliteConnection& conn_;
  std::unique_lock<std::mutex> lock_;
  bool open_ = false;
  Status begin_status_;
  Status broken_;  // a savepoint that could not be taken, released or undone
};

// Status of one item of a batch: Status for operations without a value, else Result<T>.
template <typename T>
using Outcome = std::conditional_t<std::is_void_v<T>, Status, Result<T>>;

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

// Applies `apply(txn, item)` to each item under its own savepoint, in one transaction committed
// once (one durable write for the batch). An item that fails leaves no trace and does not
// affect the others. When the transaction itself fails (begin, SQLite rolling it back, commit),
// every item reports that failure: none of them was committed.
template <typename T, typename Item, typename F>
std::vector<Outcome<T>> ApplyBatch(SqliteConnection& conn, std::span<const Item> items, F apply) {
  std::vector<Outcome<T>> out;
  if (items.empty()) return out;
  out.reserve(items.size());
  Txn txn(conn, Txn::kWrite);
  Status failed = txn.begin_status();
  for (const Item& item : items) {
    if (!failed.ok()) break;
    out.push_back(txn.Savepoint([&] { return apply(txn, item); }));
    if (!txn.usable()) {
      failed = StatusOf(out.back()).ok() ? txn.broken_status() : StatusOf(out.back());
    }
  }
  if (failed.ok()) failed = txn.Commit();
  if (!failed.ok()) out.assign(items.size(), Outcome<T>(failed));
  return out;
}

// ---- Rows <-> records ---------------------------------------------------------------------

#define JOBSCHED_JOB_COLUMNS \
  "tenant, id, spec, version, state, next_fire, dependency_since, created_at, updated_at"

Result<JobRecord> ReadJob(const Stmt& st) {
  JobRecord job;
  const std::string tenant = st.GetText(0);
  const std::string id = st.GetText(1);
  auto spec = ParseStoredJobSpec(st.GetText(2), tenant);
  if (!spec.ok()) {
    return Internal("stored spec of job '" + id + "' in tenant '" + tenant +
                    "' is unreadable: " + spec.status().ToString());
  }
  job.spec = std::move(spec).value();
  job.version = st.GetInt(3);
  auto state = ParseJobState(st.GetText(4));
  if (!state.ok()) return Internal("job '" + id + "': " + state.status().message());
  job.state = *state;
  job.next_fire = st.GetOptTime(5);
  job.dependency_since = st.GetTime(6);
  job.created_at = st.GetTime(7);
  job.updated_at = st.GetTime(8);
  return job;
}

// Binds ?1..?12 in the column order of kInsertJob / kUpdateJob.
void BindJob(Stmt& st, const JobRecord& job) {
  const JobSpec& spec = job.spec;
  st.Text(1, spec.tenant)
      .Text(2, spec.id)
      .Text(3, JobSpecToJson(spec))
      .Text(4, spec.queue)
      .Text(5, Dump(Json(spec.labels)))
      .Int(6, spec.paused ? 1 : 0)
      .Int(7, job.version)
      .Text(8, JobStateName(job.state))
      .Time(9, job.next_fire)
      .Time(10, job.dependency_since)
      .Time(11, job.created_at)
      .Time(12, job.updated_at);
}

constexpr char kInsertJob[] =
    "INSERT INTO jobs (tenant, id, spec, queue, labels, paused, version, state, next_fire, "
    "dependency_since, created_at, updated_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
constexpr char kUpdateJob[] =
    "UPDATE jobs SET spec = ?3, queue = ?4, labels = ?5, paused = ?6, version = ?7, state = ?8, "
    "next_fire = ?9, dependency_since = ?10, created_at = ?11, updated_at = ?12 "
    "WHERE tenant = ?1 AND id = ?2";

#define JOBSCHED_RUN_COLUMNS                                                              \
  "tenant, id, job_id, queue, priority, scheduled_at, available_at, created_at, reason, " \
  "state, attempt, max_attempts, exclusive, node, fence, lease_deadline, started_at, "    \
  "finished_at, exit_code, http_status, output, error, payload, cancel_requested, "       \
  "leases_lost, attempts, output_bytes"

Result<RunRecord> ReadRun(const Stmt& st) {
  RunRecord run;
  run.tenant = st.GetText(0);
  run.id = st.GetText(1);
  run.job_id = st.GetText(2);
  run.queue = st.GetText(3);
  run.priority = static_cast<int>(st.GetInt(4));
  run.scheduled_at = st.GetTime(5);
  run.available_at = st.GetTime(6);
  run.created_at = st.GetTime(7);
  auto reason = ParseRunReason(st.GetText(8));
  if (!reason.ok()) return Internal("run '" + run.id + "': " + reason.status().message());
  run.reason = *reason;
  auto state = ParseRunState(st.GetText(9));
  if (!state.ok()) return Internal("run '" + run.id + "': " + state.status().message());
  run.state = *state;
  run.attempt = static_cast<int>(st.GetInt(10));
  run.max_attempts = static_cast<int>(st.GetInt(11));
  run.exclusive = st.GetInt(12) != 0;
  run.node = st.GetText(13);
  run.fence = st.GetInt(14);
  run.lease_deadline = st.GetOptTime(15);
  run.started_at = st.GetOptTime(16);
  run.finished_at = st.GetOptTime(17);
  run.exit_code = st.GetOptInt(18);
  run.http_status = st.GetOptInt(19);
  run.output = st.GetText(20);
  run.error = st.GetText(21);
  run.payload = st.GetText(22);
  run.cancel_requested = st.GetInt(23) != 0;
  run.leases_lost = static_cast<int>(st.GetInt(24));
  auto attempts = AttemptsFromJson(st.GetText(25));
  if (!attempts.ok()) return Internal("run '" + run.id + "': " + attempts.status().message());
  run.attempts = std::move(attempts).value();
  if (!st.IsNull(26)) run.output_bytes = st.GetInt(26);
  return run;
}

// Binds ?1..?27 in the order of JOBSCHED_RUN_COLUMNS.
void BindRun(Stmt& st, const RunRecord& run) {
  st.Text(1, run.tenant)
      .Text(2, run.id)
      .Text(3, run.job_id)
      .Text(4, run.queue)
      .Int(5, run.priority)
      .Time(6, run.scheduled_at)
      .Time(7, run.available_at)
      .Time(8, run.created_at)
      .Text(9, RunReasonName(run.reason))
      .Text(10, RunStateName(run.state))
      .Int(11, run.attempt)
      .Int(12, run.max_attempts)
      .Int(13, run.exclusive ? 1 : 0)
      .Text(14, run.node)
      .Int(15, run.fence)
      .Time(16, run.lease_deadline)
      .Time(17, run.started_at)
      .Time(18, run.finished_at)
      .OptInt(19, run.exit_code)
      .OptInt(20, run.http_status)
      .Text(21, run.output)
      .Text(22, run.error)
      .Text(23, run.payload)
      .Int(24, run.cancel_requested ? 1 : 0)
      .Int(25, run.leases_lost)
      .Text(26, AttemptsToJson(run.attempts));
  if (run.output_bytes) {
    st.Int(27, *run.output_bytes);
  } else {
    st.Null(27);
  }
}

constexpr char kInsertRun[] =
    "INSERT INTO runs (" JOBSCHED_RUN_COLUMNS
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
    "?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27) ON CONFLICT (tenant, id) DO NOTHING";
constexpr char kUpdateRun[] =
    "UPDATE runs SET job_id = ?3, queue = ?4, priority = ?5, scheduled_at = ?6, "
    "available_at = ?7, created_at = ?8, reason = ?9, state = ?10, attempt = ?11, "
    "max_attempts = ?12, exclusive = ?13, node = ?14, fence = ?15, lease_deadline = ?16, "
    "started_at = ?17, finished_at = ?18, exit_code = ?19, http_status = ?20, output = ?21, "
    "error = ?22, payload = ?23, cancel_requested = ?24, leases_lost = ?25, attempts = ?26, "
    "output_bytes = ?27 WHERE tenant = ?1 AND id = ?2";

// ---- Operations inside a transaction ------------------------------------------------------

Result<std::optional<JobRecord>> LoadJob(Txn& txn, const std::string& tenant,
                                         const std::string& id) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_JOB_COLUMNS
                                        " FROM jobs WHERE tenant = ?1 AND id = ?2"));
  st.Text(1, tenant).Text(2, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<JobRecord>();
  ASSIGN_OR_RETURN(JobRecord job, ReadJob(st));
  return std::optional<JobRecord>(std::move(job));
}

Result<std::vector<JobRecord>> ReadJobs(Stmt& st) {
  std::vector<JobRecord> jobs;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return jobs;
    ASSIGN_OR_RETURN(JobRecord job, ReadJob(st));
    jobs.push_back(std::move(job));
  }
}

Status WriteJobDeps(Txn& txn, const JobSpec& spec) {
  {
    ASSIGN_OR_RETURN(Stmt del,
                     txn.Prepare("DELETE FROM job_deps WHERE tenant = ?1 AND job_id = ?2"));
    del.Text(1, spec.tenant).Text(2, spec.id);
    RETURN_IF_ERROR(del.Run());
  }
  for (const std::string& dep : spec.depends_on) {
    ASSIGN_OR_RETURN(Stmt ins, txn.Prepare("INSERT OR IGNORE INTO job_deps (tenant, depends_on, "
                                           "job_id) VALUES (?1, ?2, ?3)"));
    ins.Text(1, spec.tenant).Text(2, dep).Text(3, spec.id);
    RETURN_IF_ERROR(ins.Run());
  }
  return Status::Ok();
}

Result<std::optional<RunRecord>> LoadRun(Txn& txn, const std::string& tenant,
                                         const std::string& id) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_RUN_COLUMNS
                                        " FROM runs WHERE tenant = ?1 AND id = ?2"));
  st.Text(1, tenant).Text(2, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<RunRecord>();
  ASSIGN_OR_RETURN(RunRecord run, ReadRun(st));
  return std::optional<RunRecord>(std::move(run));
}

// `output_tail`: RunFilter's, applied row by row (one whole output in memory at a time).
Result<std::vector<RunRecord>> ReadRuns(Stmt& st, size_t output_tail = 0) {
  std::vector<RunRecord> runs;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return runs;
    ASSIGN_OR_RETURN(RunRecord run, ReadRun(st));
    if (output_tail > 0 && run.output.size() > output_tail) {
      CutOutput(run, output_tail);
      run.output.shrink_to_fit();
    }
    runs.push_back(std::move(run));
  }
}

// Inserts `run` unless its id exists; true when inserted.
Result<bool> InsertRun(Txn& txn, const RunRecord& run) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare(kInsertRun));
  BindRun(st, run);
  RETURN_IF_ERROR(st.Run());
  return st.Changes() > 0;
}

Status SaveRun(Txn& txn, const RunRecord& run) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare(kUpdateRun));
  BindRun(st, run);
  return st.Run();
}

Status InsertEvent(Txn& txn, const std::string& tenant, TimePoint time, std::string_view type,
                   const std::string& job_id, const std::string& run_id, std::string_view data) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("INSERT INTO events (tenant, time, type, job_id, run_id, "
                                        "data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  st.Text(1, tenant).Time(2, time).Text(3, type).Text(4, job_id).Text(5, run_id).Text(6, data);
  return st.Run();
}

// "run.<state>" (or `type`) with {"state", "attempt", "node"} plus `extra`.
Status RunEvent(Txn& txn, const RunRecord& run, TimePoint time, Json extra = Json::object(),
                std::string type = {}) {
  if (type.empty()) type = std::string("run.") + RunStateName(run.state);
  Json data = {{"state", RunStateName(run.state)}, {"attempt", run.attempt}, {"node", run.node}};
  data.update(extra);
  return InsertEvent(txn, run.tenant, time, type, run.job_id, run.id, Dump(data));
}

Status JobEvent(Txn& txn, const JobRecord& job, TimePoint time, std::string_view type) {
  Json data = {{"state", JobStateName(job.state)}, {"version", job.version}};
  return InsertEvent(txn, job.spec.tenant, time, type, job.spec.id, "", Dump(data));
}

// queued / retry-waiting → cancelled; running → cancel_requested. Other states: no change.
Status CancelInTxn(Txn& txn, RunRecord& run, TimePoint now, const std::string& why) {
  if (run.state == RunState::kQueued || run.state == RunState::kRetryWait) {
    run.state = RunState::kCancelled;
    run.finished_at = now;
    run.lease_deadline.reset();
    run.error = why;
    RETURN_IF_ERROR(SaveRun(txn, run));
    return RunEvent(txn, run, now, {{"reason", why}});
  }
  if (run.state == RunState::kRunning && !run.cancel_requested) {
    run.cancel_requested = true;
    RETURN_IF_ERROR(SaveRun(txn, run));
    return RunEvent(txn, run, now, {{"reason", why}}, "run.cancel_requested");
  }
  return Status::Ok();
}

// Inserts a new run with its event; false if its id exists (nothing written).
Result<bool> InsertNewRun(Txn& txn, RunRecord run) {
  // Skipped is terminal: it needs a finished_at for retention.
  if (run.state == RunState::kSkipped && !run.finished_at) run.finished_at = run.created_at;
  ASSIGN_OR_RETURN(bool inserted, InsertRun(txn, run));
  if (!inserted) return false;
  Json extra = {{"reason", RunReasonName(run.reason)}};
  if (run.state == RunState::kSkipped && !run.error.empty()) extra["error"] = run.error;
  RETURN_IF_ERROR(RunEvent(txn, run, run.created_at, std::move(extra)));
  return true;
}

// An occurrence fired again after a pause, or a delete, of its job before the occurrence's time.
// Its run cancelled before any attempt began: the new run (queued, or skipped by the misfire or
// overlap policy) takes its id and its place (true). Its run running, asked to cancel (held by a
// node for its time), and the new one queued: the request is withdrawn, and the node runs it if
// its handler has not begun (see kCancelWithdrawn); the run existed (false).
Result<bool> FireAgain(Txn& txn, const RunRecord& run, TimePoint now) {
  ASSIGN_OR_RETURN(std::optional<RunRecord> old, LoadRun(txn, run.tenant, run.id));
  if (old && old->state == RunState::kRunning && old->cancel_requested && !IsTerminal(run.state)) {
    old->cancel_requested = false;
    RETURN_IF_ERROR(SaveRun(txn, *old));
    RETURN_IF_ERROR(RunEvent(txn, *old, now, {{"reason", "fired again"}}, "run.cancel_withdrawn"));
    return false;
  }
  if (!old || !NeverStarted(*old)) return false;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("DELETE FROM runs WHERE tenant = ?1 AND id = ?2"));
    st.Text(1, run.tenant).Text(2, run.id);
    RETURN_IF_ERROR(st.Run());
  }
  return InsertNewRun(txn, run);
}

std::string TimeText(const std::optional<TimePoint>& t) {
  return t ? std::to_string(ToUnixMillis(*t)) : "none";
}

// ListRuns cursors: "<created_at ms>:<id>" of the last item returned.
std::string RunCursor(const RunRecord& run) {
  return std::to_string(ToUnixMillis(run.created_at)) + ":" + run.id;
}

Status ParseRunCursor(const std::string& cursor, int64_t& created_ms, std::string& id) {
  const size_t colon = cursor.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == cursor.size()) {
    return InvalidArgument("invalid cursor '" + cursor + "'", "cursor");
  }
  auto [end, ec] = std::from_chars(cursor.data(), cursor.data() + colon, created_ms);
  if (ec != std::errc() || end != cursor.data() + colon) {
    return InvalidArgument("invalid cursor '" + cursor + "'", "cursor");
  }
  id = cursor.substr(colon + 1);
  return Status::Ok();
}

// Fire inside `txn`; on error the caller rolls back what it wrote.
Result<FireResult> FireInTxn(Txn& txn, const FireRequest& request) {
  RETURN_IF_ERROR(CheckNewRuns(request.tenant, request.job_id, request.runs));
  const TimePoint fire_time = FireTime(request);

  ASSIGN_OR_RETURN(std::optional<JobRecord> job, LoadJob(txn, request.tenant, request.job_id));
  if (!job) {
    return NotFound("job '" + request.job_id + "' not found in tenant '" + request.tenant + "'");
  }
  if (job->version != request.expected_version || job->next_fire != request.expected_next_fire) {
    return FailedPrecondition("job '" + request.job_id + "' changed: version " +
                              std::to_string(job->version) + ", next_fire " +
                              TimeText(job->next_fire) + "; expected version " +
                              std::to_string(request.expected_version) + ", next_fire " +
                              TimeText(request.expected_next_fire));
  }
  const JobState new_state = request.new_state.value_or(job->state);
  const TimePoint dependency_since = request.dependency_since.value_or(job->dependency_since);
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("UPDATE jobs SET next_fire = ?3, state = ?4, "
                                          "dependency_since = ?5 WHERE tenant = ?1 AND id = ?2"));
    st.Text(1, request.tenant)
        .Text(2, request.job_id)
        .Time(3, request.next_fire)
        .Text(4, JobStateName(new_state))
        .Time(5, dependency_since);
    RETURN_IF_ERROR(st.Run());
  }
  if (new_state != job->state) {
    job->state = new_state;
    RETURN_IF_ERROR(JobEvent(txn, *job, fire_time, "job.updated"));
  }
  FireResult result;
  for (const RunRecord& run : request.runs) {
    ASSIGN_OR_RETURN(bool inserted, InsertNewRun(txn, run));
    if (!inserted) {
      ASSIGN_OR_RETURN(inserted, FireAgain(txn, run, fire_time));
    }
    ++(inserted ? result.created : result.existed);
  }
  for (const std::string& run_id : request.cancel_run_ids) {
    ASSIGN_OR_RETURN(std::optional<RunRecord> run, LoadRun(txn, request.tenant, run_id));
    if (!run || run->job_id != request.job_id) continue;
    RETURN_IF_ERROR(CancelInTxn(txn, *run, fire_time, "replaced"));
  }
  return result;
}

// A completion whose attempt never began, of a running `run` with the completion's fence: the
// run is cancelled without that attempt (see Completion::began), or the cancellation is refused
// (kCancelWithdrawn).
Status CompleteNeverBegan(Txn& txn, RunRecord& run, const Completion& completion) {
  if (!run.cancel_requested) {
    ASSIGN_OR_RETURN(std::optional<JobRecord> job, LoadJob(txn, run.tenant, run.job_id));
    if (job) return FailedPrecondition(kCancelWithdrawn);
  }
  if (!run.attempts.empty()) run.attempts.pop_back();
  run.attempt = std::max(0, run.attempt - 1);
  if (run.attempts.empty()) run.started_at.reset();
  run.error = completion.error;
  run.lease_deadline.reset();
  run.state = RunState::kCancelled;
  run.finished_at = completion.now;
  RETURN_IF_ERROR(SaveRun(txn, run));
  return RunEvent(txn, run, completion.now, {{"outcome", "cancelled"}});
}

// Complete inside `txn`; on error the caller rolls back what it wrote.
Status CompleteInTxn(Txn& txn, const Completion& completion) {
  RETURN_IF_ERROR(CheckCompletion(completion));
  ASSIGN_OR_RETURN(std::optional<RunRecord> run,
                   LoadRun(txn, completion.tenant, completion.run_id));
  if (!run || run->state != RunState::kRunning || run->fence != completion.fence) {
    return FailedPrecondition(kStaleToken);
  }
  if (!completion.began) return CompleteNeverBegan(txn, *run, completion);
  std::string outcome = completion.attempt_outcome;
  if (outcome.empty()) {
    outcome = completion.state == RunState::kRetryWait ? "failed" : RunStateName(completion.state);
  }
  if (run->attempts.empty()) {
    // Not written by ClaimRuns (a hand-edited row): record the attempt we know of.
    run->attempts.push_back(AttemptRecord{.number = run->attempt,
                                          .node = run->node,
                                          .fence = run->fence,
                                          .started_at = run->started_at.value_or(completion.now)});
  }
  AttemptRecord& attempt = run->attempts.back();
  if (completion.started_at) {
    if (run->attempts.size() == 1) run->started_at = completion.started_at;
    attempt.started_at = *completion.started_at;
  }
  attempt.finished_at = completion.now;
  attempt.outcome = outcome;
  attempt.error = completion.error;

  run->exit_code = completion.exit_code;
  run->http_status = completion.http_status;
  run->output = completion.output;
  run->output_bytes = completion.output_bytes;
  run->error = completion.error;
  run->lease_deadline.reset();
  run->state = completion.state;
  Json extra = {{"outcome", outcome}};
  if (completion.state == RunState::kRetryWait) {
    run->available_at = *completion.retry_at;
    extra["retry_at"] = ToUnixMillis(*completion.retry_at);
  } else {
    run->finished_at = completion.now;
  }
  if (completion.exit_code) extra["exit_code"] = *completion.exit_code;
  if (completion.http_status) extra["http_status"] = *completion.http_status;
  RETURN_IF_ERROR(SaveRun(txn, *run));
  return RunEvent(txn, *run, completion.now, std::move(extra));
}

}  // namespace

// ---- Open -----------------------------------------------------------------------------------

SqliteStore::SqliteStore(std::unique_ptr<SqliteConnection> conn) : conn_(std::move(conn)) {}

SqliteStore::~SqliteStore() = default;

int SqliteStore::LatestSchemaVersion() { return std::end(kMigrations)[-1].version; }

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const SqliteOptions& options) {
  if (options.path.empty()) return InvalidArgument("sqlite: empty database path", "path");
  if (options.path != ":memory:") {
    // A new database file is readable by its owner only: it holds job specs (environment, HTTP
    // headers), payloads and outputs. SQLite gives its WAL and shared-memory files the same mode.
    const int fd = ::open(options.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  sqlite3* db = nullptr;
  // Our own mutex serialises every use of the connection, so SQLite's is not needed.
  int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = SqlError(db, rc, "open '" + options.path + "'");
    sqlite3_close_v2(db);
    return Unavailable(s.message());
  }
  auto conn = std::make_unique<SqliteConnection>(db);
  sqlite3_busy_timeout(db, static_cast<int>(std::clamp<int64_t>(options.busy_timeout.count(), 0,
                                                                std::numeric_limits<int>::max())));
  // WAL: readers never block the writer and a commit is one append + fsync. FULL: a commit
  // (a claim, a completion) is durable when it returns. An in-memory database has no journal.
  const bool in_memory = options.path == ":memory:";
  const char* pragmas = in_memory ? "PRAGMA synchronous = FULL;"
                                  : "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;";
  char* err = nullptr;
  rc = sqlite3_exec(db, pragmas, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string message = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Unavailable("sqlite: '" + options.path + "': " + message);
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(conn)));
  RETURN_IF_ERROR(store->Migrate());
  return store;
}

Status SqliteStore::Migrate() {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  RETURN_IF_ERROR(
      txn.Exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
               "WITHOUT ROWID"));
  int64_t version = 0;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT value FROM meta WHERE key = 'schema_version'"));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) version = st.GetInt(0);
  }
  if (version > LatestSchemaVersion()) {
    return FailedPrecondition("sqlite: the database schema is version " + std::to_string(version) +
                              ", newer than this binary supports (" +
                              std::to_string(LatestSchemaVersion()) + "): upgrade jobsched");
  }
  if (version == LatestSchemaVersion()) return txn.Commit();
  for (const Migration& m : kMigrations) {
    if (m.version <= version) continue;
    Status s = txn.Exec(m.sql);
    if (!s.ok()) {
      return Status(s.code(), "schema migration to version " + std::to_string(m.version) +
                                  " failed: " + s.message());
    }
  }
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("INSERT INTO meta (key, value) VALUES "
                                          "('schema_version', ?1) ON CONFLICT (key) DO UPDATE "
                                          "SET value = excluded.value"));
    st.Int(1, LatestSchemaVersion());
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

// ---- Jobs -----------------------------------------------------------------------------------

namespace {

// kResourceExhausted when `tenant` has max_jobs jobs already.
Status CheckJobQuota(Txn& txn, const std::string& tenant) {
  int64_t max_jobs = 0;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT max_jobs FROM tenants WHERE id = ?1"));
    st.Text(1, tenant);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) max_jobs = st.GetInt(0);
  }
  if (max_jobs <= 0) return Status::Ok();
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT count(*) FROM jobs WHERE tenant = ?1"));
  st.Text(1, tenant);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (row && st.GetInt(0) >= max_jobs) {
    return ResourceExhausted("tenant '" + tenant + "' has reached its quota of " +
                             std::to_string(max_jobs) + " jobs");
  }
  return Status::Ok();
}

}  // namespace

Result<JobRecord> SqliteStore::CreateJob(const JobRecord& job) {
  RETURN_IF_ERROR(ValidateJobSpec(job.spec));
  const std::string& tenant = job.spec.tenant;
  const std::string& id = job.spec.id;
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    ASSIGN_OR_RETURN(std::optional<JobRecord> existing, LoadJob(txn, tenant, id));
    if (existing) {
      return AlreadyExists("job '" + id + "' already exists in tenant '" + tenant + "'");
    }
  }
  RETURN_IF_ERROR(CheckJobQuota(txn, tenant));
  JobRecord rec = job;
  rec.version = 1;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare(kInsertJob));
    BindJob(st, rec);
    RETURN_IF_ERROR(st.Run());
  }
  RETURN_IF_ERROR(WriteJobDeps(txn, rec.spec));
  RETURN_IF_ERROR(JobEvent(txn, rec, rec.created_at, "job.created"));
  ASSIGN_OR_RETURN(std::optional<JobRecord> stored, LoadJob(txn, tenant, id));
  RETURN_IF_ERROR(txn.Commit());
  return std::move(*stored);
}

Result<JobRecord> SqliteStore::PutJob(const JobRecord& job,
                                      std::optional<int64_t> expected_version) {
  RETURN_IF_ERROR(ValidateJobSpec(job.spec));
  const std::string& tenant = job.spec.tenant;
  const std::string& id = job.spec.id;
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, LoadJob(txn, tenant, id));
  if (expected_version) {
    if (!existing) return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
    if (existing->version != *expected_version) {
      return FailedPrecondition("version mismatch: job '" + id + "' is at version " +
                                std::to_string(existing->version) + ", expected " +
                                std::to_string(*expected_version));
    }
  }
  JobRecord rec = job;
  if (existing) {
    rec.version = existing->version + 1;
    rec.created_at = existing->created_at;
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare(kUpdateJob));
    BindJob(st, rec);
    RETURN_IF_ERROR(st.Run());
  } else {
    RETURN_IF_ERROR(CheckJobQuota(txn, tenant));
    rec.version = 1;
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare(kInsertJob));
    BindJob(st, rec);
    RETURN_IF_ERROR(st.Run());
  }
  RETURN_IF_ERROR(WriteJobDeps(txn, rec.spec));
  RETURN_IF_ERROR(JobEvent(txn, rec, rec.updated_at, existing ? "job.updated" : "job.created"));
  ASSIGN_OR_RETURN(std::optional<JobRecord> stored, LoadJob(txn, tenant, id));
  RETURN_IF_ERROR(txn.Commit());
  return std::move(*stored);
}

Result<JobRecord> SqliteStore::GetJob(const std::string& tenant, const std::string& id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<JobRecord> job, LoadJob(txn, tenant, id));
  if (!job) return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
  RETURN_IF_ERROR(txn.Commit());
  return std::move(*job);
}

Result<Page<JobRecord>> SqliteStore::ListJobs(const std::string& tenant, const JobFilter& filter) {
  const int limit = Clamp(filter.limit, 1, kMaxPageSize);
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  // The cursor is the last id returned; ids are never empty, so "" starts at the beginning.
  ASSIGN_OR_RETURN(
      Stmt st, txn.Prepare("SELECT " JOBSCHED_JOB_COLUMNS
                           " FROM jobs WHERE tenant = ?1 AND id > ?2 AND (?3 = '' OR queue = ?3) "
                           "AND (?4 IS NULL OR state = ?4) "
                           "AND (?5 = '' OR EXISTS (SELECT 1 FROM json_each(jobs.labels) AS l "
                           "WHERE l.key = ?5 AND l.value = ?6)) "
                           "ORDER BY id LIMIT ?7"));
  st.Text(1, tenant).Text(2, filter.cursor).Text(3, filter.queue);
  if (filter.state) {
    st.Text(4, JobStateName(*filter.state));
  } else {
    st.Null(4);
  }
  st.Text(5, filter.label_key).Text(6, filter.label_value).Int(7, limit + 1);
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, ReadJobs(st));
  RETURN_IF_ERROR(txn.Commit());
  Page<JobRecord> page;
  if (static_cast<int>(jobs.size()) > limit) {
    jobs.resize(limit);
    page.next_cursor = jobs.back().spec.id;
  }
  page.items = std::move(jobs);
  return page;
}

Status SqliteStore::DeleteJob(const std::string& tenant, const std::string& id, TimePoint now,
                              bool kill_running) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<JobRecord> job, LoadJob(txn, tenant, id));
  if (!job) return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("DELETE FROM jobs WHERE tenant = ?1 AND id = ?2"));
    st.Text(1, tenant).Text(2, id);
    RETURN_IF_ERROR(st.Run());
  }
  {
    ASSIGN_OR_RETURN(Stmt st,
                     txn.Prepare("DELETE FROM job_deps WHERE tenant = ?1 AND job_id = ?2"));
    st.Text(1, tenant).Text(2, id);
    RETURN_IF_ERROR(st.Run());
  }
  std::vector<RunRecord> active;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_RUN_COLUMNS
                                          " FROM runs INDEXED BY runs_active WHERE tenant = ?1 "
                                          "AND job_id = ?2 AND " JOBSCHED_ACTIVE_STATES " "
                                          "ORDER BY created_at, id"));
    st.Text(1, tenant).Text(2, id);
    ASSIGN_OR_RETURN(active, ReadRuns(st));
  }
  for (RunRecord& run : active) {
    if (run.state == RunState::kRunning && !kill_running) continue;
    RETURN_IF_ERROR(CancelInTxn(txn, run, now, "job deleted"));
  }
  RETURN_IF_ERROR(JobEvent(txn, *job, now, "job.deleted"));
  return txn.Commit();
}

Result<std::vector<JobRecord>> SqliteStore::DueJobs(TimePoint now, int limit,
                                                    const TenantScope& scope) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_JOB_COLUMNS
                                        " FROM jobs INDEXED BY jobs_due WHERE state = "
                                        "'active' AND paused = 0 "
                                        "AND next_fire IS NOT NULL AND next_fire <= ?1 "
                                        "AND tenant NOT IN (SELECT value FROM json_each(?3)) "
                                        "ORDER BY next_fire, tenant, id LIMIT ?2"));
  st.Time(1, now).Int(2, Clamp(limit, 1, kMaxPageSize)).Text(3, Dump(Json(scope.excluded)));
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, ReadJobs(st));
  RETURN_IF_ERROR(txn.Commit());
  return jobs;
}

Result<std::optional<TimePoint>> SqliteStore::NextFireTime(const TenantScope& scope) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT next_fire FROM jobs INDEXED BY jobs_due "
                                        "WHERE state = 'active' AND "
                                        "paused = 0 AND next_fire IS NOT NULL "
                                        "AND tenant NOT IN (SELECT value FROM json_each(?1)) "
                                        "ORDER BY next_fire LIMIT 1"));
  st.Text(1, Dump(Json(scope.excluded)));
  ASSIGN_OR_RETURN(bool row, st.Step());
  std::optional<TimePoint> next;
  if (row) next = st.GetTime(0);
  RETURN_IF_ERROR(txn.Commit());
  return next;
}

Result<FireResult> SqliteStore::Fire(const FireRequest& request) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(FireResult result, FireInTxn(txn, request));
  RETURN_IF_ERROR(txn.Commit());
  return result;
}

std::vector<Result<FireResult>> SqliteStore::FireMany(std::span<const FireRequest> requests) {
  return ApplyBatch<FireResult>(*conn_, requests,
                                [](Txn& txn, const FireRequest& r) { return FireInTxn(txn, r); });
}

// ---- Runs -----------------------------------------------------------------------------------

Status SqliteStore::EnqueueRuns(const std::string& tenant, const std::string& job_id,
                                std::span<const RunRecord> runs) {
  RETURN_IF_ERROR(CheckNewRuns(tenant, job_id, runs));
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<JobRecord> job, LoadJob(txn, tenant, job_id));
  if (!job) return NotFound("job '" + job_id + "' not found in tenant '" + tenant + "'");
  for (const RunRecord& run : runs) {
    ASSIGN_OR_RETURN(bool inserted, InsertNewRun(txn, run));
    // Returning rolls back the runs inserted before this one.
    if (!inserted) return AlreadyExists("run '" + run.id + "' already exists");
  }
  return txn.Commit();
}

Result<RunRecord> SqliteStore::GetRun(const std::string& tenant, const std::string& run_id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<RunRecord> run, LoadRun(txn, tenant, run_id));
  if (!run) return NotFound("run '" + run_id + "' not found in tenant '" + tenant + "'");
  RETURN_IF_ERROR(txn.Commit());
  return std::move(*run);
}

Result<Page<RunRecord>> SqliteStore::ListRuns(const std::string& tenant, const RunFilter& filter) {
  const int limit = Clamp(filter.limit, 1, kMaxPageSize);
  // No cursor: start above every possible (created_at, id).
  int64_t cursor_ms = kMaxInt64;
  std::string cursor_id;
  if (!filter.cursor.empty()) RETURN_IF_ERROR(ParseRunCursor(filter.cursor, cursor_ms, cursor_id));

  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  // Two statements so that each can range-scan its own index.
  ASSIGN_OR_RETURN(
      Stmt st, txn.Prepare(filter.job_id.empty()
                               ? "SELECT " JOBSCHED_RUN_COLUMNS " FROM runs WHERE tenant = ?1 "
                                 "AND (created_at, id) < (?3, ?4) AND (?5 IS NULL OR state = ?5) "
                                 "ORDER BY created_at DESC, id DESC LIMIT ?6"
                               : "SELECT " JOBSCHED_RUN_COLUMNS
                                 " FROM runs WHERE tenant = ?1 AND job_id = ?2 "
                                 "AND (created_at, id) < (?3, ?4) AND (?5 IS NULL OR state = ?5) "
                                 "ORDER BY created_at DESC, id DESC LIMIT ?6"));
  st.Text(1, tenant).Text(2, filter.job_id).Int(3, cursor_ms).Text(4, cursor_id);
  if (filter.state) {
    st.Text(5, RunStateName(*filter.state));
  } else {
    st.Null(5);
  }
  st.Int(6, limit + 1);
  ASSIGN_OR_RETURN(std::vector<RunRecord> runs, ReadRuns(st, filter.output_tail));
  RETURN_IF_ERROR(txn.Commit());
  Page<RunRecord> page;
  if (static_cast<int>(runs.size()) > limit) {
    runs.resize(limit);
    page.next_cursor = RunCursor(runs.back());
  }
  page.items = std::move(runs);
  return page;
}

Result<std::vector<RunRecord>> SqliteStore::ActiveRuns(const std::string& tenant,
                                                       const std::string& job_id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_RUN_COLUMNS
                                        " FROM runs INDEXED BY runs_active WHERE tenant = ?1 "
                                        "AND job_id = ?2 AND " JOBSCHED_ACTIVE_STATES " "
                                        "ORDER BY created_at, id"));
  st.Text(1, tenant).Text(2, job_id);
  ASSIGN_OR_RETURN(std::vector<RunRecord> runs, ReadRuns(st));
  RETURN_IF_ERROR(txn.Commit());
  return runs;
}

Result<std::vector<RunRecord>> SqliteStore::FinishedRunsSince(const std::string& tenant,
                                                              const std::string& job_id,
                                                              TimePoint since) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_RUN_COLUMNS
                                        " FROM runs INDEXED BY runs_finished WHERE tenant = ?1 "
                                        "AND job_id = ?2 AND " JOBSCHED_FINISHED_STATES " AND "
                                        "finished_at > ?3 ORDER BY finished_at, id"));
  st.Text(1, tenant).Text(2, job_id).Time(3, since);
  ASSIGN_OR_RETURN(std::vector<RunRecord> runs, ReadRuns(st));
  RETURN_IF_ERROR(txn.Commit());
  return runs;
}

Result<std::vector<JobRecord>> SqliteStore::Dependents(const std::string& tenant,
                                                       const std::string& job_id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT " JOBSCHED_JOB_COLUMNS
                                        " FROM jobs WHERE tenant = ?1 AND id IN (SELECT job_id "
                                        "FROM job_deps WHERE tenant = ?1 AND depends_on = ?2) "
                                        "ORDER BY id"));
  st.Text(1, tenant).Text(2, job_id);
  ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, ReadJobs(st));
  RETURN_IF_ERROR(txn.Commit());
  return jobs;
}

Result<std::vector<RunRecord>> SqliteStore::ClaimRuns(const ClaimRequest& request) {
  std::vector<RunRecord> claimed;
  if (request.max_runs <= 0) return claimed;
  const int max_runs = std::min(request.max_runs, kMaxPageSize);
  // NULL = every queue; else a JSON array read by json_each.
  std::optional<std::string> queues;
  if (!request.queues.empty()) queues = Dump(Json(request.queues));

  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  // Free run slots per tenant (max_concurrent_runs) and per queue of a tenant (queue_limits).
  struct TenantSlots {
    int64_t limit = 0;  // 0 = unlimited
    std::optional<int64_t> free;
    std::map<std::string, int64_t> queue_limits;
    std::map<std::string, std::optional<int64_t>> queue_free;
  };
  std::map<std::string, TenantSlots> tenant_slots;
  // Walk the priorities present, highest first (one index seek each); inside a priority,
  // range-scan available_at <= horizon in (available_at, id, tenant) order. Runs not yet available
  // are never visited, so a claim costs O(priorities · log n + visited), where visited is k
  // plus the runs passed over for another queue or an exclusive conflict.
  int64_t priority_below = kMaxInt64;
  while (static_cast<int>(claimed.size()) < max_runs) {
    int64_t priority = 0;
    {
      ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT priority FROM runs INDEXED BY "
                                            "runs_ready WHERE state IN "
                                            "('queued', 'retry_wait') AND priority < ?1 "
                                            "ORDER BY priority DESC LIMIT 1"));
      st.Int(1, priority_below);
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      priority = st.GetInt(0);
    }
    priority_below = priority;

    struct Candidate {
      std::string tenant, id, job_id;
      bool exclusive;
      std::string queue;
    };
    int64_t after_available = kMinInt64;
    std::string after_id, after_tenant;
    int batch_limit = 0;
    while (static_cast<int>(claimed.size()) < max_runs) {
      // Collected before any write: a statement must not be stepped across changes to the
      // rows it scans.
      std::vector<Candidate> batch;
      {
        ASSIGN_OR_RETURN(
            Stmt st,
            txn.Prepare(
                "SELECT tenant, id, job_id, exclusive, available_at, queue FROM runs "
                "INDEXED BY runs_ready WHERE state IN ('queued', 'retry_wait') AND priority = ?1 "
                "AND available_at <= ?2 AND (available_at, id, tenant) > (?3, ?4, ?5) "
                "AND (?6 IS NULL OR queue IN (SELECT value FROM json_each(?6))) "
                "AND available_at > ?8 "
                "ORDER BY available_at, id, tenant LIMIT ?7"));
        st.Int(1, priority)
            .Time(2, request.until())
            .Int(3, after_available)
            .Text(4, after_id)
            .Text(5, after_tenant);
        if (queues) {
          st.Text(6, *queues);
        } else {
          st.Null(6);
        }
        batch_limit = max_runs - static_cast<int>(claimed.size()) + 8;
        st.Int(7, batch_limit);
        st.Int(8, request.after ? ToUnixMillis(*request.after) : kMinInt64);
        for (;;) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          batch.push_back(
              {st.GetText(0), st.GetText(1), st.GetText(2), st.GetInt(3) != 0, st.GetText(5)});
          after_tenant = st.GetText(0);
          after_id = st.GetText(1);
          after_available = st.GetInt(4);
        }
      }
      if (batch.empty()) break;
      const bool last_batch = static_cast<int>(batch.size()) < batch_limit;
      for (const Candidate& c : batch) {
        if (static_cast<int>(claimed.size()) >= max_runs) break;
        if (c.exclusive) {
          ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT 1 FROM runs INDEXED BY runs_active "
                                                "WHERE tenant = ?1 AND "
                                                "job_id = ?2 AND " JOBSCHED_ACTIVE_STATES
                                                " AND state = 'running' "
                                                "LIMIT 1"));
          st.Text(1, c.tenant).Text(2, c.job_id);
          ASSIGN_OR_RETURN(bool running, st.Step());
          if (running) continue;
        }
        {
          // Free slots under the tenant's limits, read at its first candidate: the tenant's
          // max_concurrent_runs, and the limit of the candidate's queue.
          auto quota = tenant_slots.find(c.tenant);
          if (quota == tenant_slots.end()) {
            TenantSlots slots;
            ASSIGN_OR_RETURN(
                Stmt st,
                txn.Prepare("SELECT max_concurrent_runs, queue_limits FROM tenants WHERE id = ?1"));
            st.Text(1, c.tenant);
            ASSIGN_OR_RETURN(bool row, st.Step());
            if (row) {
              slots.limit = st.GetInt(0);
              const Json limits = Json::parse(st.GetText(1), nullptr, /*allow_exceptions=*/false);
              if (limits.is_object()) {
                for (const auto& [queue, limit] : limits.items()) {
                  if (limit.is_number_integer() && limit.get<int64_t>() > 0)
                    slots.queue_limits[queue] = limit.get<int64_t>();
                }
              }
            }
            quota = tenant_slots.emplace(c.tenant, std::move(slots)).first;
          }
          TenantSlots& slots = quota->second;
          if (slots.limit > 0 && !slots.free) {
            ASSIGN_OR_RETURN(Stmt st,
                             txn.Prepare("SELECT count(*) FROM runs INDEXED BY runs_leases "
                                         "WHERE state = 'running' AND tenant = ?1"));
            st.Text(1, c.tenant);
            ASSIGN_OR_RETURN(bool row, st.Step());
            slots.free = slots.limit - (row ? st.GetInt(0) : 0);
          }
          auto queue_limit = slots.queue_limits.find(c.queue);
          std::optional<int64_t>* queue_free = nullptr;
          if (queue_limit != slots.queue_limits.end()) {
            queue_free = &slots.queue_free[c.queue];
            if (!*queue_free) {
              ASSIGN_OR_RETURN(
                  Stmt st, txn.Prepare("SELECT count(*) FROM runs INDEXED BY runs_leases "
                                       "WHERE state = 'running' AND tenant = ?1 AND queue = ?2"));
              st.Text(1, c.tenant).Text(2, c.queue);
              ASSIGN_OR_RETURN(bool row, st.Step());
              *queue_free = queue_limit->second - (row ? st.GetInt(0) : 0);
            }
          }
          if ((slots.free && *slots.free <= 0) || (queue_free && **queue_free <= 0)) continue;
          if (slots.free) --*slots.free;
          if (queue_free) --**queue_free;
        }
        ASSIGN_OR_RETURN(std::optional<RunRecord> run, LoadRun(txn, c.tenant, c.id));
        if (!run) return Internal("run '" + c.id + "' vanished during a claim");
        int64_t fence = 0;
        {
          ASSIGN_OR_RETURN(Stmt st, txn.Prepare("UPDATE counters SET value = value + 1 WHERE "
                                                "name = 'fence' RETURNING value"));
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) return Internal("the fence counter is missing");
          fence = st.GetInt(0);
          RETURN_IF_ERROR(st.Run());
        }
        run->state = RunState::kRunning;
        run->attempt += 1;
        run->fence = fence;
        run->node = request.node;
        run->lease_deadline = request.now + request.lease;
        // A run claimed ahead of its time starts when its time comes.
        const TimePoint start = std::max(request.now, run->available_at);
        if (!run->started_at) run->started_at = start;
        run->attempts.push_back(AttemptRecord{
            .number = run->attempt, .node = request.node, .fence = fence, .started_at = start});
        RETURN_IF_ERROR(SaveRun(txn, *run));
        RETURN_IF_ERROR(RunEvent(txn, *run, request.now, {{"fence", fence}}));
        claimed.push_back(std::move(*run));
      }
      if (last_batch) break;
    }
  }
  RETURN_IF_ERROR(txn.Commit());
  return claimed;
}

Result<std::optional<TimePoint>> SqliteStore::NextAvailableTime() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT available_at FROM runs INDEXED BY "
                                        "runs_available WHERE state IN "
                                        "('queued', 'retry_wait') ORDER BY available_at LIMIT 1"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  std::optional<TimePoint> next;
  if (row) next = st.GetTime(0);
  RETURN_IF_ERROR(txn.Commit());
  return next;
}

Result<std::vector<LeaseStatus>> SqliteStore::RenewLeases(std::span<const LeaseRef> leases,
                                                          TimePoint now, Duration lease) {
  std::vector<LeaseStatus> statuses;
  statuses.reserve(leases.size());
  if (leases.empty()) return statuses;
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  for (const LeaseRef& ref : leases) {
    // The fence and state check is in the UPDATE itself: no row changed = stale.
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("UPDATE runs SET lease_deadline = ?4 WHERE tenant = ?1 "
                                          "AND id = ?2 AND fence = ?3 AND state = 'running' "
                                          "RETURNING cancel_requested"));
    st.Text(1, ref.tenant).Text(2, ref.run_id).Int(3, ref.fence).Time(4, now + lease);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) {
      statuses.push_back(LeaseStatus::kStale);
      continue;
    }
    statuses.push_back(st.GetInt(0) != 0 ? LeaseStatus::kCancelRequested : LeaseStatus::kRenewed);
    RETURN_IF_ERROR(st.Run());
  }
  RETURN_IF_ERROR(txn.Commit());
  return statuses;
}

Status SqliteStore::Complete(const Completion& completion) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  RETURN_IF_ERROR(CompleteInTxn(txn, completion));
  return txn.Commit();
}

std::vector<Status> SqliteStore::CompleteMany(std::span<const Completion> completions) {
  return ApplyBatch<void>(*conn_, completions,
                          [](Txn& txn, const Completion& c) { return CompleteInTxn(txn, c); });
}

Status SqliteStore::CancelRun(const std::string& tenant, const std::string& run_id, TimePoint now) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<RunRecord> run, LoadRun(txn, tenant, run_id));
  if (!run) return NotFound("run '" + run_id + "' not found in tenant '" + tenant + "'");
  if (IsTerminal(run->state)) {
    return FailedPrecondition("run '" + run_id + "' already ended: " + RunStateName(run->state));
  }
  RETURN_IF_ERROR(CancelInTxn(txn, *run, now, "cancelled"));
  return txn.Commit();
}

Result<std::vector<RunRecord>> SqliteStore::RecoverLostRuns(TimePoint now, const std::string& node,
                                                            int max_leases_lost, int limit) {
  std::vector<RunRecord> recovered;
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  std::vector<std::pair<std::string, std::string>> keys;  // (tenant, id)
  {
    ASSIGN_OR_RETURN(
        Stmt st,
        txn.Prepare(node.empty() ? "SELECT tenant, id FROM runs INDEXED BY runs_leases WHERE "
                                   "state = 'running' AND "
                                   "lease_deadline < ?1 ORDER BY lease_deadline LIMIT ?3"
                                 : "SELECT tenant, id FROM runs INDEXED BY runs_leases WHERE "
                                   "state = 'running' AND "
                                   "node = ?2 ORDER BY lease_deadline LIMIT ?3"));
    st.Time(1, now).Text(2, node).Int(3, Clamp(limit, 1, kMaxPageSize));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      keys.emplace_back(st.GetText(0), st.GetText(1));
    }
  }
  for (const auto& [tenant, id] : keys) {
    ASSIGN_OR_RETURN(std::optional<RunRecord> run, LoadRun(txn, tenant, id));
    if (!run) continue;
    if (!run->attempts.empty()) {
      AttemptRecord& attempt = run->attempts.back();
      attempt.finished_at = now;
      attempt.outcome = "lease_lost";
      attempt.error = node.empty() ? "lease expired"
                                   : "handed back by node " + node + " (stopped or restarted)";
    }
    run->leases_lost += 1;
    run->lease_deadline.reset();
    const RunState next = run->leases_lost > max_leases_lost ? RunState::kFailed
                          : run->cancel_requested            ? RunState::kCancelled
                                                             : RunState::kQueued;
    run->state = next;
    if (next == RunState::kQueued) {
      run->available_at = now;
    } else {
      run->finished_at = now;
      if (next == RunState::kFailed) {
        run->error = "lease lost " + std::to_string(run->leases_lost) + " times";
      }
    }
    RETURN_IF_ERROR(SaveRun(txn, *run));
    RETURN_IF_ERROR(
        RunEvent(txn, *run, now, {{"leases_lost", run->leases_lost}}, "run.lease_lost"));
    if (next != RunState::kQueued) {
      RETURN_IF_ERROR(RunEvent(txn, *run, now, {{"error", run->error}}));
    }
    recovered.push_back(std::move(*run));
  }
  RETURN_IF_ERROR(txn.Commit());
  return recovered;
}

// One pass over all runs (a window per job over runs_by_job): O(runs), for the janitor's
// occasional sweep, not for a hot path.
Result<int64_t> SqliteStore::PruneRuns(TimePoint older_than, int keep_per_job) {
  // Job by job (runs_by_job: tenant, job_id, created_at, id), from the oldest run: a run
  // finishes after it is created, so the runs to delete are created before older_than and
  // before the oldest of the newest keep_per_job. The young part of a history is not read.
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  const int64_t older = ToUnixMillis(older_than);
  const int keep = std::max(keep_per_job, 0);
  int64_t deleted = 0;
  std::string tenant, job;  // the last job pruned ("", "" before the first)
  for (;;) {
    {
      ASSIGN_OR_RETURN(Stmt next, txn.Prepare("SELECT tenant, job_id FROM runs "
                                              "WHERE (tenant, job_id) > (?1, ?2) "
                                              "ORDER BY tenant, job_id LIMIT 1"));
      next.Text(1, tenant).Text(2, job);
      ASSIGN_OR_RETURN(bool found, next.Step());
      if (!found) break;
      tenant = next.GetText(0);
      job = next.GetText(1);
    }
    // Delete below (older, "") and, when the job keeps runs, below the oldest one it keeps.
    int64_t bound_created = older;
    std::string bound_id;
    if (keep > 0) {
      ASSIGN_OR_RETURN(Stmt kept, txn.Prepare("SELECT created_at, id FROM runs "
                                              "WHERE tenant = ?1 AND job_id = ?2 "
                                              "ORDER BY created_at DESC, id DESC "
                                              "LIMIT 1 OFFSET ?3"));
      kept.Text(1, tenant).Text(2, job).Int(3, keep - 1);
      ASSIGN_OR_RETURN(bool full, kept.Step());
      if (!full) continue;  // no more runs than it keeps
      if (kept.GetInt(0) < bound_created) {
        bound_created = kept.GetInt(0);
        bound_id = kept.GetText(1);
      }
    }
    ASSIGN_OR_RETURN(
        Stmt del,
        txn.Prepare("DELETE FROM runs WHERE tenant = ?1 AND job_id = ?2 "
                    "AND (created_at, id) < (?3, ?4) AND finished_at < ?5 "
                    "AND state IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'skipped')"));
    del.Text(1, tenant).Text(2, job).Int(3, bound_created).Text(4, bound_id).Int(5, older);
    RETURN_IF_ERROR(del.Run());
    deleted += del.Changes();
  }
  RETURN_IF_ERROR(txn.Commit());
  return deleted;
}

// ---- Events ---------------------------------------------------------------------------------

Status SqliteStore::AppendEvent(const Event& event) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  RETURN_IF_ERROR(InsertEvent(txn, event.tenant, event.time, event.type, event.job_id, event.run_id,
                              event.data));
  return txn.Commit();
}

Result<std::vector<Event>> SqliteStore::ReadEvents(const std::string& tenant, int64_t after_seq,
                                                   int limit) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st,
                   txn.Prepare(tenant.empty() ? "SELECT seq, tenant, time, type, job_id, run_id, "
                                                "data FROM events WHERE seq > ?1 "
                                                "ORDER BY seq LIMIT ?3"
                                              : "SELECT seq, tenant, time, type, job_id, run_id, "
                                                "data FROM events WHERE tenant = ?2 AND seq > ?1 "
                                                "ORDER BY seq LIMIT ?3"));
  st.Int(1, after_seq).Text(2, tenant).Int(3, Clamp(limit, 1, kMaxPageSize));
  std::vector<Event> events;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    events.push_back(Event{.seq = st.GetInt(0),
                           .tenant = st.GetText(1),
                           .time = st.GetTime(2),
                           .type = st.GetText(3),
                           .job_id = st.GetText(4),
                           .run_id = st.GetText(5),
                           .data = st.GetText(6)});
  }
  RETURN_IF_ERROR(txn.Commit());
  return events;
}

Status SqliteStore::PruneEvents(int64_t keep) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    // seq is AUTOINCREMENT: never reused, so a pruned reader's after_seq stays meaningful.
    // The newest `keep` events have seq >= the keep-th newest seq.
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("DELETE FROM events WHERE seq < (SELECT seq FROM events "
                                          "ORDER BY seq DESC LIMIT 1 OFFSET ?1 - 1) OR ?1 <= 0"));
    st.Int(1, keep);
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

// ---- Nodes and keys -------------------------------------------------------------------------

Result<int64_t> SqliteStore::LastEventSeq() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT coalesce(max(seq), 0) FROM events"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.GetInt(0) : 0;
}

Result<std::vector<RunCount>> SqliteStore::CountRuns(const std::string& tenant,
                                                     const std::string& job_id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st,
                   txn.Prepare("SELECT tenant, queue, state, count(*), "
                               "coalesce(sum(finished_at - started_at), 0) FROM runs "
                               "WHERE (?1 = '' OR tenant = ?1) AND (?2 = '' OR job_id = ?2) "
                               "GROUP BY tenant, queue, state ORDER BY tenant, queue, state"));
  st.Text(1, tenant).Text(2, job_id);
  std::vector<RunCount> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(RunState state, ParseRunState(st.GetText(2)));
    out.push_back({.tenant = st.GetText(0),
                   .queue = st.GetText(1),
                   .state = state,
                   .count = st.GetInt(3),
                   .total_duration_ms = st.GetInt(4)});
  }
  return out;
}

Result<std::vector<JobCount>> SqliteStore::CountJobs() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st,
                   txn.Prepare("SELECT tenant, state, count(*) FROM jobs GROUP BY tenant, state "
                               "ORDER BY tenant, state"));
  std::vector<JobCount> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(JobState state, ParseJobState(st.GetText(1)));
    out.push_back({.tenant = st.GetText(0), .state = state, .count = st.GetInt(2)});
  }
  return out;
}

Status SqliteStore::PutTenant(const TenantRecord& tenant) {
  RETURN_IF_ERROR(ValidateTenantId(tenant.id, "id"));
  if (tenant.max_jobs < 0) return InvalidArgument("max_jobs: must not be negative", "max_jobs");
  if (tenant.max_concurrent_runs < 0) {
    return InvalidArgument("max_concurrent_runs: must not be negative", "max_concurrent_runs");
  }
  for (const auto& [queue, limit] : tenant.queue_limits) {
    RETURN_IF_ERROR(ValidateQueueName(queue, "queue_limits." + queue));
    if (limit < 1)
      return InvalidArgument("queue_limits." + queue + ": must be at least 1",
                             "queue_limits." + queue);
  }
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    ASSIGN_OR_RETURN(
        Stmt st,
        txn.Prepare(
            "INSERT INTO tenants (id, max_jobs, max_concurrent_runs, created_at, updated_at, "
            "queue_limits) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET "
            "max_jobs = excluded.max_jobs, max_concurrent_runs = "
            "excluded.max_concurrent_runs, updated_at = excluded.updated_at, "
            "queue_limits = excluded.queue_limits"));
    st.Text(1, tenant.id)
        .Int(2, tenant.max_jobs)
        .Int(3, tenant.max_concurrent_runs)
        .Time(4, tenant.created_at)
        .Time(5, tenant.updated_at)
        .Text(6, Dump(Json(tenant.queue_limits)));
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

namespace {
TenantRecord ReadTenant(const Stmt& st) {
  TenantRecord t{.id = st.GetText(0),
                 .max_jobs = st.GetInt(1),
                 .max_concurrent_runs = st.GetInt(2),
                 .created_at = st.GetTime(3),
                 .updated_at = st.GetTime(4)};
  const Json limits = Json::parse(st.GetText(5), nullptr, /*allow_exceptions=*/false);
  if (limits.is_object()) {
    for (const auto& [queue, limit] : limits.items()) {
      if (limit.is_number_integer()) t.queue_limits[queue] = limit.get<int64_t>();
    }
  }
  return t;
}
}  // namespace

Result<TenantRecord> SqliteStore::GetTenant(const std::string& id) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(
      Stmt st,
      txn.Prepare("SELECT id, max_jobs, max_concurrent_runs, created_at, updated_at, queue_limits "
                  "FROM tenants WHERE id = ?1"));
  st.Text(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFound("tenant '" + id + "' not found");
  return ReadTenant(st);
}

Result<std::vector<TenantRecord>> SqliteStore::ListTenants() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(
      Stmt st,
      txn.Prepare("SELECT id, max_jobs, max_concurrent_runs, created_at, updated_at, queue_limits "
                  "FROM tenants ORDER BY id"));
  std::vector<TenantRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadTenant(st));
  }
  return out;
}

Status SqliteStore::Heartbeat(const NodeInfo& node) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    ASSIGN_OR_RETURN(
        Stmt st,
        txn.Prepare("INSERT INTO nodes (id, host, pid, version, queues, concurrency, cpu_seconds, "
                    "rss_bytes, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                    "?9, ?10) ON CONFLICT (id) DO UPDATE SET host = excluded.host, "
                    "pid = excluded.pid, version = excluded.version, queues = excluded.queues, "
                    "concurrency = excluded.concurrency, cpu_seconds = excluded.cpu_seconds, "
                    "rss_bytes = excluded.rss_bytes, started_at = excluded.started_at, "
                    "heartbeat_at = excluded.heartbeat_at"));
    st.Text(1, node.id)
        .Text(2, node.host)
        .Int(3, node.pid)
        .Text(4, node.version)
        .Text(5, Dump(Json(node.queues)))
        .Int(6, node.concurrency)
        .Real(7, node.cpu_seconds)
        .Int(8, node.rss_bytes)
        .Time(9, node.started_at)
        .Time(10, node.heartbeat_at);
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

Result<std::vector<NodeInfo>> SqliteStore::ListNodes() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT id, host, pid, version, queues, concurrency, "
                                        "cpu_seconds, rss_bytes, started_at, heartbeat_at "
                                        "FROM nodes ORDER BY id"));
  std::vector<NodeInfo> nodes;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    NodeInfo n;
    n.id = st.GetText(0);
    n.host = st.GetText(1);
    n.pid = static_cast<int>(st.GetInt(2));
    n.version = st.GetText(3);
    try {
      n.queues = Json::parse(st.GetText(4)).get<std::vector<std::string>>();
    } catch (const Json::exception& e) {
      return Internal("node '" + n.id + "': corrupt queues: " + e.what());
    }
    n.concurrency = static_cast<int>(st.GetInt(5));
    n.cpu_seconds = st.GetReal(6);
    n.rss_bytes = st.GetInt(7);
    n.started_at = st.GetTime(8);
    n.heartbeat_at = st.GetTime(9);
    nodes.push_back(std::move(n));
  }
  RETURN_IF_ERROR(txn.Commit());
  return nodes;
}

// ---- Cluster --------------------------------------------------------------------------------

namespace {

// The leader row, if any (expired or not).
Result<std::optional<LeaderLease>> ReadLeader(Txn& txn) {
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT node, epoch, expires_at FROM leader WHERE id = 1"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<LeaderLease>();
  return std::optional<LeaderLease>(
      LeaderLease{.node = st.GetText(0), .epoch = st.GetInt(1), .expires_at = st.GetTime(2)});
}

}  // namespace

Result<LeaderLease> SqliteStore::AcquireLeadership(const std::string& node, TimePoint now,
                                                   Duration ttl) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<LeaderLease> current, ReadLeader(txn));
  if (current && current->node != node && current->expires_at > now) {
    RETURN_IF_ERROR(txn.Commit());
    return *current;
  }
  LeaderLease lease{.node = node, .epoch = 1, .expires_at = now + ttl};
  if (current)
    lease.epoch =
        current->node == node && current->expires_at > now ? current->epoch : current->epoch + 1;
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("INSERT INTO leader (id, node, epoch, expires_at) "
                                          "VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
                                          "node = excluded.node, epoch = excluded.epoch, "
                                          "expires_at = excluded.expires_at"));
    st.Text(1, lease.node).Int(2, lease.epoch).Time(3, lease.expires_at);
    RETURN_IF_ERROR(st.Run());
  }
  RETURN_IF_ERROR(txn.Commit());
  return lease;
}

Result<std::optional<LeaderLease>> SqliteStore::GetLeader(TimePoint now) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<LeaderLease> current, ReadLeader(txn));
  RETURN_IF_ERROR(txn.Commit());
  if (current && current->expires_at <= now) current.reset();
  return current;
}

Status SqliteStore::ReleaseLeadership(const std::string& node, int64_t epoch) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    // Expired, not deleted: the next holder's epoch still grows.
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("UPDATE leader SET expires_at = 0 "
                                          "WHERE id = 1 AND node = ?1 AND epoch = ?2"));
    st.Text(1, node).Int(2, epoch);
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

Status SqliteStore::PutAssignment(const std::string& node, int64_t epoch, TimePoint now,
                                  const TenantOwners& owners) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(std::optional<LeaderLease> current, ReadLeader(txn));
  if (!current || current->node != node || current->epoch != epoch || current->expires_at <= now) {
    return FailedPrecondition("node '" + node + "' does not hold the leader lease of epoch " +
                              std::to_string(epoch));
  }
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("INSERT INTO assignment (id, epoch, owners, updated_at) "
                                          "VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
                                          "epoch = excluded.epoch, owners = excluded.owners, "
                                          "updated_at = excluded.updated_at"));
    st.Int(1, epoch).Text(2, Dump(Json(owners))).Time(3, now);
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

Result<Assignment> SqliteStore::GetAssignment() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st,
                   txn.Prepare("SELECT epoch, owners, updated_at FROM assignment WHERE id = 1"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  Assignment a;
  if (row) {
    a.epoch = st.GetInt(0);
    a.updated_at = st.GetTime(2);
    const Json owners = Json::parse(st.GetText(1), nullptr, /*allow_exceptions=*/false);
    if (!owners.is_object()) return Internal("corrupt tenant assignment");
    for (const auto& [tenant, owner] : owners.items()) {
      if (!owner.is_string()) return Internal("corrupt tenant assignment of '" + tenant + "'");
      a.owners[tenant] = owner.get<std::string>();
    }
  }
  RETURN_IF_ERROR(txn.Commit());
  return a;
}

Status SqliteStore::RemoveNode(const std::string& id) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("DELETE FROM nodes WHERE id = ?1"));
    st.Text(1, id);
    RETURN_IF_ERROR(st.Run());
  }
  return txn.Commit();
}

namespace {

constexpr char kApiKeyColumns[] = "id, secret_hash, tenant, role, allow_shell, name, created_at";

ApiKeyRecord ReadApiKey(const Stmt& st) {
  return ApiKeyRecord{.id = st.GetText(0),
                      .secret_hash = st.GetText(1),
                      .tenant = st.GetText(2),
                      .role = st.GetText(3),
                      .allow_shell = st.GetInt(4) != 0,
                      .name = st.GetText(5),
                      .created_at = st.GetTime(6)};
}

}  // namespace

Status SqliteStore::PutApiKey(const ApiKeyRecord& key) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    // Either unique column (id, secret_hash) taken: nothing inserted.
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("INSERT INTO api_keys (id, secret_hash, tenant, role, "
                                          "allow_shell, name, created_at) VALUES (?1, ?2, ?3, "
                                          "?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING"));
    st.Text(1, key.id)
        .Text(2, key.secret_hash)
        .Text(3, key.tenant)
        .Text(4, key.role)
        .Int(5, key.allow_shell ? 1 : 0)
        .Text(6, key.name)
        .Time(7, key.created_at);
    RETURN_IF_ERROR(st.Run());
    if (st.Changes() == 0) return AlreadyExists("api key '" + key.id + "' already exists");
  }
  return txn.Commit();
}

Result<ApiKeyRecord> SqliteStore::GetApiKeyByHash(const std::string& secret_hash) {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(Stmt st, txn.Prepare(std::string("SELECT ") + kApiKeyColumns +
                                        " FROM api_keys WHERE secret_hash = ?1"));
  st.Text(1, secret_hash);
  ASSIGN_OR_RETURN(bool row, st.Step());
  // The message does not echo the hash: it is a credential's fingerprint.
  if (!row) return NotFound("no api key has that hash");
  ApiKeyRecord key = ReadApiKey(st);
  RETURN_IF_ERROR(txn.Commit());
  return key;
}

Result<std::vector<ApiKeyRecord>> SqliteStore::ListApiKeys() {
  Txn txn(*conn_, Txn::kRead);
  RETURN_IF_ERROR(txn.begin_status());
  ASSIGN_OR_RETURN(
      Stmt st, txn.Prepare(std::string("SELECT ") + kApiKeyColumns + " FROM api_keys ORDER BY id"));
  std::vector<ApiKeyRecord> keys;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    keys.push_back(ReadApiKey(st));
  }
  RETURN_IF_ERROR(txn.Commit());
  return keys;
}

Status SqliteStore::DeleteApiKey(const std::string& id) {
  Txn txn(*conn_, Txn::kWrite);
  RETURN_IF_ERROR(txn.begin_status());
  {
    // The last admin key stays (checked in the same transaction as the delete).
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("SELECT (SELECT role FROM api_keys WHERE id = ?1) = "
                                          "'admin' AND (SELECT COUNT(*) FROM api_keys WHERE role "
                                          "= 'admin') = 1"));
    st.Text(1, id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && st.GetInt(0) == 1) return LastAdminKey(id);
  }
  {
    ASSIGN_OR_RETURN(Stmt st, txn.Prepare("DELETE FROM api_keys WHERE id = ?1"));
    st.Text(1, id);
    RETURN_IF_ERROR(st.Run());
    if (st.Changes() == 0) return NotFound("api key '" + id + "' not found");
  }
  return txn.Commit();
}

}  // namespace jobsched
