// Restart safety with a real process: a node is SIGKILLed mid-run and started again on the same
// SQLite file. From the records: the interrupted run gets a lease_lost attempt and then
// succeeds, each occurrence of an every-second job has exactly one run (none lost while the
// node was down: the misfire policy fire_all catches them up), and no attempt ran twice.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "store/sqlite_store.h"

namespace jobsched {
namespace {

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) / ("restart-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    db_ = (dir_ / "jobs.db").string();
    log_ = (dir_ / "handler.log").string();
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }

  pid_t StartNode(bool setup) {
    pid_t pid = ::fork();
    if (pid == 0) {
      const std::string out = (dir_ / "node.out").string();
      FILE* f = std::freopen(out.c_str(), "a", stderr);
      (void)f;
      if (setup) {
        ::execl(JOBSCHED_TEST_NODE, JOBSCHED_TEST_NODE, "--db", db_.c_str(), "--node-id", "n1",
                "--log", log_.c_str(), "--setup", static_cast<char*>(nullptr));
      } else {
        ::execl(JOBSCHED_TEST_NODE, JOBSCHED_TEST_NODE, "--db", db_.c_str(), "--node-id", "n1",
                "--log", log_.c_str(), static_cast<char*>(nullptr));
      }
      ::_exit(127);
    }
    pid_ = pid;
    return pid;
  }

  void Kill9() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::vector<std::string> LogLines() {
    std::ifstream in(log_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  // Polls `done` until it holds; fails the test after `limit`.
  bool WaitUntil(const std::function<bool()>& done,
                 std::chrono::seconds limit = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  }

  bool LogHas(const std::string& needle) {
    for (const std::string& line : LogLines()) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  std::unique_ptr<SqliteStore> OpenStore() {
    auto store = SqliteStore::Open({.path = db_});
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return std::move(store).value();
  }

  std::filesystem::path dir_;
  std::string db_;
  std::string log_;
  pid_t pid_ = -1;
};

TEST_F(RestartTest, KilledNodeLosesNothingAndDoublesNothing) {
  StartNode(/*setup=*/true);
  // The long run is running, and the every-second job has fired a few times.
  ASSERT_TRUE(WaitUntil([&] { return LogHas("work@m") && LogHas("tick@"); }));
  ASSERT_TRUE(WaitUntil([&] {
    int ticks = 0;
    for (const auto& l : LogLines())
      ticks += l.find("tick@") != std::string::npos && l.ends_with(" end");
    return ticks >= 2;
  }));
  Kill9();

  std::string work_run;
  {
    auto store = OpenStore();
    auto runs = store->ListRuns("default", {.job_id = "work"});
    ASSERT_TRUE(runs.ok());
    ASSERT_EQ(runs->items.size(), 1u);
    work_run = runs->items[0].id;
    EXPECT_EQ(runs->items[0].state, RunState::kRunning);  // the record still says running
  }
  // Down for a while: every-second occurrences fall due meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // not a synchronisation: downtime
  const auto restart_time = std::chrono::system_clock::now();
  StartNode(/*setup=*/false);
  ASSERT_TRUE(WaitUntil([&] { return LogHas(work_run + " 2 end"); }));
  // Let the cron job run for a couple more seconds after the restart.
  ASSERT_TRUE(WaitUntil([&] {
    auto store = OpenStore();
    auto runs = store->ListRuns("default", {.job_id = "tick", .limit = 1000});
    if (!runs.ok()) return false;
    for (const RunRecord& r : runs->items) {
      if (r.scheduled_at > restart_time + std::chrono::seconds(2) &&
          r.state == RunState::kSucceeded)
        return true;
    }
    return false;
  }));
  Kill9();

  auto store = OpenStore();
  auto work = store->GetRun("default", work_run);
  ASSERT_TRUE(work.ok());
  EXPECT_EQ(work->state, RunState::kSucceeded);
  ASSERT_EQ(work->attempts.size(), 2u);
  EXPECT_EQ(work->attempts[0].outcome, "lease_lost");
  EXPECT_EQ(work->attempts[1].outcome, "succeeded");
  EXPECT_GT(work->attempts[1].fence, work->attempts[0].fence);

  // Every occurrence of "tick" between the first and the last has exactly one run record.
  auto ticks = store->ListRuns("default", {.job_id = "tick", .limit = 1000});
  ASSERT_TRUE(ticks.ok());
  std::set<int64_t> scheduled;
  for (const RunRecord& r : ticks->items) {
    EXPECT_TRUE(scheduled.insert(ToUnixMillis(r.scheduled_at)).second)
        << "two runs for one occurrence: " << r.id;
    EXPECT_EQ(r.id, "tick@" + std::to_string(ToUnixMillis(r.scheduled_at)));
  }
  ASSERT_GE(scheduled.size(), 5u);
  int64_t prev = *scheduled.begin();
  int catchup = 0;
  for (int64_t s : scheduled) {
    if (s != prev) {
      EXPECT_EQ(s - prev, 1000) << "an occurrence is missing after " << prev;
    }
    prev = s;
  }
  for (const RunRecord& r : ticks->items) catchup += r.reason == RunReason::kMisfireCatchup;
  EXPECT_GE(catchup, 1) << "occurrences missed while down should be caught up (fire_all)";

  // No attempt ran twice: each (run, attempt) started at most once in the handler log.
  std::map<std::string, int> starts;
  for (const std::string& line : LogLines()) {
    if (line.ends_with(" start")) ++starts[line.substr(0, line.size() - 6)];
  }
  for (const auto& [attempt, count] : starts) EXPECT_EQ(count, 1) << attempt;
}

}  // namespace
}  // namespace jobsched
