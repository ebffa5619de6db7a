// The Store contract suite on SqliteStore (in memory and on a WAL file), plus what only a file
// can show: data survives a reopen, two connections share one file, the schema is versioned.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <jobsched/store.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "contract/store_contract_test.h"
#include "store/sqlite_store.h"

namespace jobsched::contract {
namespace {

namespace fs = std::filesystem;

// A directory of its own under the test temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "jobsched-store-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::unique_ptr<SqliteStore> MustOpen(const SqliteOptions& options) {
  auto store = SqliteStore::Open(options);
  if (!store.ok()) {
    ADD_FAILURE() << "SqliteStore::Open(" << options.path << "): " << store.status().ToString();
    return nullptr;
  }
  return std::move(store).value();
}

// Every file-backed store of the suite lives in one directory, removed when the tests end.
class SuiteFiles : public ::testing::Environment {
 public:
  static std::string NextPath() {
    static std::atomic<int> n{0};
    return (dir().path() / ("store-" + std::to_string(n.fetch_add(1)) + ".db")).string();
  }
  void TearDown() override { dir_.reset(); }

 private:
  static TempDir& dir() {
    if (!dir_) dir_ = std::make_unique<TempDir>();
    return *dir_;
  }
  static inline std::unique_ptr<TempDir> dir_;
};
[[maybe_unused]] ::testing::Environment* const kSuiteFiles =
    ::testing::AddGlobalTestEnvironment(new SuiteFiles);

const StoreFactory kBackends[] = {
    [] { return std::unique_ptr<Store>(MustOpen({.path = ":memory:"})); },
    [] { return std::unique_ptr<Store>(MustOpen({.path = SuiteFiles::NextPath()})); },
};
const char* const kBackendNames[] = {"Memory", "File"};

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContractTest, ::testing::ValuesIn(kBackends),
                         [](const ::testing::TestParamInfo<StoreFactory>& param) {
                           return std::string(kBackendNames[param.index]);
                         });

const TimePoint kT0 = FromUnixMillis(1'700'000'000'000);

JobRecord Job(const std::string& id) {
  JobRecord job;
  job.spec.id = id;
  job.spec.handler.name = "noop";
  job.next_fire = kT0;
  job.created_at = kT0;
  job.updated_at = kT0;
  return job;
}

RunRecord NewRun(const std::string& job_id, const std::string& id) {
  RunRecord run;
  run.id = id;
  run.job_id = job_id;
  run.scheduled_at = run.available_at = run.created_at = kT0;
  return run;
}

// Runs one query on a file outside SqliteStore; returns the first column of the first row.
std::string QueryFile(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    ADD_FAILURE() << "open " << path;
  } else {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    } else {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
        out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
      }
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return out;
}

TEST(SqliteStoreFile, DataSurvivesCloseAndReopen) {
  TempDir dir;
  const std::string path = (dir.path() / "jobsched.db").string();
  int64_t fence = 0;
  {
    auto store = MustOpen({.path = path});
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CreateJob(Job("nightly")).ok());
    std::vector<RunRecord> runs = {NewRun("nightly", "nightly@1"), NewRun("nightly", "nightly@2")};
    ASSERT_TRUE(store->EnqueueRuns("default", "nightly", runs).ok());
    auto claimed = store->ClaimRuns({.node = "n1", .now = kT0});
    ASSERT_TRUE(claimed.ok());
    ASSERT_EQ(claimed->size(), 1u);
    fence = (*claimed)[0].fence;
    ASSERT_TRUE(store->PutApiKey({.id = "k", .secret_hash = "h", .role = "admin"}).ok());
  }
  auto store = MustOpen({.path = path});
  ASSERT_NE(store, nullptr);
  auto job = store->GetJob("default", "nightly");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->next_fire, kT0);
  auto run = store->GetRun("default", "nightly@1");
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, RunState::kRunning);
  EXPECT_EQ(run->fence, fence);
  EXPECT_TRUE(store->GetApiKeyByHash("h").ok());
  auto events = store->ReadEvents("", 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 4u);  // job.created, 2 × run.queued, run.running
  // The fencing counter is persistent: a reopened store never hands out an old token.
  auto next = store->ClaimRuns({.node = "n2", .now = kT0});
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->size(), 1u);
  EXPECT_GT((*next)[0].fence, fence);
}

TEST(SqliteStoreFile, TwoConnectionsToOneFileClaimEachRunOnce) {
  // Two SqliteStores on one file behave as two processes: separate connections, SQLite file
  // locks, busy_timeout.
  TempDir dir;
  const std::string path = (dir.path() / "shared.db").string();
  auto a = MustOpen({.path = path});
  auto b = MustOpen({.path = path});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateJob(Job("bulk")).ok());
  std::vector<RunRecord> runs;
  for (int i = 0; i < 200; ++i) runs.push_back(NewRun("bulk", "bulk@" + std::to_string(i)));
  ASSERT_TRUE(b->EnqueueRuns("default", "bulk", runs).ok());

  std::vector<std::string> claimed[2];
  std::atomic<int> errors{0};
  auto worker = [&](Store* store, int index) {
    for (;;) {
      auto got = store->ClaimRuns({.node = "n" + std::to_string(index), .now = kT0, .max_runs = 3});
      if (!got.ok()) {
        ADD_FAILURE() << got.status().ToString();
        errors.fetch_add(1);
        return;
      }
      if (got->empty()) return;
      for (const RunRecord& r : *got) claimed[index].push_back(r.id);
    }
  };
  std::thread ta(worker, a.get(), 0);
  std::thread tb(worker, b.get(), 1);
  ta.join();
  tb.join();
  EXPECT_EQ(errors.load(), 0);
  std::set<std::string> all(claimed[0].begin(), claimed[0].end());
  all.insert(claimed[1].begin(), claimed[1].end());
  EXPECT_EQ(claimed[0].size() + claimed[1].size(), 200u);
  EXPECT_EQ(all.size(), 200u);
}

// The database holds job specs (environment, headers), payloads and outputs: a new file, and
// its WAL, are readable by their owner only.
TEST(SqliteStoreFile, ANewDatabaseIsReadableByItsOwnerOnly) {
  TempDir dir;
  const std::string path = (dir.path() / "private.db").string();
  auto store = MustOpen({.path = path});
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(Job("x")).ok());
  for (const std::string& file : {path, path + "-wal"}) {
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
}

TEST(SqliteStoreFile, FileIsWalAndRecordsItsSchemaVersion) {
  TempDir dir;
  const std::string path = (dir.path() / "v.db").string();
  ASSERT_NE(MustOpen({.path = path}), nullptr);
  EXPECT_EQ(QueryFile(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryFile(path, "SELECT value FROM meta WHERE key = 'schema_version'"),
            std::to_string(SqliteStore::LatestSchemaVersion()));
  // Reopening an up-to-date file migrates nothing and keeps working.
  auto again = MustOpen({.path = path});
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->CreateJob(Job("x")).ok());
}

// The opcodes of `sql` compiled on the file (EXPLAIN's second column), in order.
std::vector<std::string> Opcodes(const std::string& path, const std::string& sql) {
  std::vector<std::string> out;
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK ||
      sqlite3_prepare_v2(db, ("EXPLAIN " + sql).c_str(), -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
  } else {
    while (sqlite3_step(st) == SQLITE_ROW)
      out.push_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

bool UsesTemporaryTable(const std::vector<std::string>& opcodes) {
  return std::find(opcodes.begin(), opcodes.end(), "OpenEphemeral") != opcodes.end();
}

// Every claim, completion, cancellation and prune writes a run, and SQLite evaluates each
// partial index's WHERE for the old and the new row: none may need a temporary b-tree (SQLite
// builds one per evaluation of an IN list of three or more values), whose allocation and release
// for every run written made claims and completions slower the larger the database (12k runs/s
// alone, 5.6k beside 1,000 idle jobs; 16k and 14k without: docs/performance.md).
TEST(SqliteStoreFile, WritingARunNeedsNoTemporaryTable) {
  TempDir dir;
  const std::string path = (dir.path() / "w.db").string();
  ASSERT_NE(MustOpen({.path = path}), nullptr);
  for (const char* sql :
       {"UPDATE runs SET state = 'succeeded', finished_at = 1 WHERE tenant = 't' AND id = 'r'",
        "DELETE FROM runs WHERE tenant = 't' AND id = 'r'"}) {
    EXPECT_FALSE(UsesTemporaryTable(Opcodes(path, sql))) << sql;
  }
}

// A file of schema 4 gets runs_active and runs_finished written anew (migration 5) and the
// column output_bytes (migration 6); the queries that name the indexes read its runs as before.
TEST(SqliteStoreFile, Schema4IndexesOfRunsAreRewritten) {
  TempDir dir;
  const std::string path = (dir.path() / "v4.db").string();
  {
    auto store = MustOpen({.path = path});
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CreateJob(Job("j")).ok());
    std::vector<RunRecord> runs = {NewRun("j", "j@1"), NewRun("j", "j@2")};
    for (RunRecord& r : runs) r.exclusive = true;  // claims check runs_active
    ASSERT_TRUE(store->EnqueueRuns("default", "j", runs).ok());
    auto claimed = store->ClaimRuns({.node = "n", .now = kT0});
    ASSERT_TRUE(claimed.ok());
    ASSERT_EQ(claimed->size(), 1u);
    ASSERT_TRUE(store
                    ->Complete({.tenant = "default",
                                .run_id = (*claimed)[0].id,
                                .fence = (*claimed)[0].fence,
                                .now = kT0 + Duration(5)})
                    .ok());
  }
  // The indexes as schema 4 had them.
  QueryFile(path, "DROP INDEX runs_active");
  QueryFile(path,
            "CREATE INDEX runs_active ON runs (tenant, job_id, created_at, id) "
            "WHERE state IN ('queued', 'retry_wait', 'running')");
  QueryFile(path, "DROP INDEX runs_finished");
  QueryFile(path,
            "CREATE INDEX runs_finished ON runs (tenant, job_id, finished_at) "
            "WHERE state IN ('succeeded', 'failed', 'timed_out')");
  QueryFile(path, "ALTER TABLE runs DROP COLUMN output_bytes");  // schema 6's
  QueryFile(path, "UPDATE meta SET value = 4 WHERE key = 'schema_version'");
  const std::string update = "UPDATE runs SET state = 'running' WHERE tenant = 't' AND id = 'r'";
  ASSERT_TRUE(UsesTemporaryTable(Opcodes(path, update)));

  auto store = MustOpen({.path = path});
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(QueryFile(path, "SELECT value FROM meta WHERE key = 'schema_version'"),
            std::to_string(SqliteStore::LatestSchemaVersion()));
  EXPECT_FALSE(UsesTemporaryTable(Opcodes(path, update)));
  auto active = store->ActiveRuns("default", "j");
  ASSERT_TRUE(active.ok()) << active.status().ToString();
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].state, RunState::kQueued);
  auto finished = store->FinishedRunsSince("default", "j", kT0);
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  ASSERT_EQ(finished->size(), 1u);
  EXPECT_EQ((*finished)[0].state, RunState::kSucceeded);
  // The exclusive check of the claim reads runs_active.
  auto next = store->ClaimRuns({.node = "n", .now = kT0 + Duration(10)});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->size(), 1u);
}

TEST(SqliteStoreFile, NewerSchemaIsRefused) {
  TempDir dir;
  const std::string path = (dir.path() / "future.db").string();
  ASSERT_NE(MustOpen({.path = path}), nullptr);
  QueryFile(path, "UPDATE meta SET value = 999 WHERE key = 'schema_version'");
  auto store = SqliteStore::Open({.path = path});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), ::testing::HasSubstr("999"));
}

TEST(SqliteStoreFile, MissingDirectoryIsUnavailable) {
  TempDir dir;
  auto store = SqliteStore::Open({.path = (dir.path() / "no" / "such" / "x.db").string()});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
}

// ---- OpenStore ------------------------------------------------------------------------------

TEST(OpenStoreTest, SqliteMemory) {
  auto store = OpenStore("sqlite::memory:");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE((*store)->CreateJob(Job("j")).ok());
}

TEST(OpenStoreTest, SqliteFileCreatesItsDirectory) {
  TempDir dir;
  const fs::path file = dir.path() / "data" / "deeper" / "jobsched.db";
  auto store = OpenStore("sqlite:" + file.string());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE((*store)->CreateJob(Job("j")).ok());
  EXPECT_TRUE(fs::exists(file));
}

TEST(OpenStoreTest, UnknownSchemesAreInvalidArguments) {
  for (const std::string url : {"postgres://db/jobs", "", "sqlite:", "./data/jobsched.db"}) {
    SCOPED_TRACE(url);
    auto store = OpenStore(url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(store.status().message(), ::testing::HasSubstr("'" + url + "'"));
    EXPECT_THAT(store.status().message(), ::testing::HasSubstr("sqlite:PATH"));
  }
}

}  // namespace
}  // namespace jobsched::contract
