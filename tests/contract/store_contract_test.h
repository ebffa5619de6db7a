// The Store contract suite: one set of tests that every Store backend must pass unchanged. A
// backend joins by instantiating it with a factory for fresh, empty stores:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContractTest,
//                            ::testing::Values(StoreFactory([] { return MakeMyStore(); })));
//
// The tests check the contract written in include/jobsched/store.h, never the implementation.
#pragma once

#include <gtest/gtest.h>
#include <jobsched/store.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace jobsched::contract {

// Returns a new, empty store, or nullptr after reporting a test failure. Called once per test.
using StoreFactory = std::function<std::unique_ptr<Store>()>;

class StoreContractTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override;

  // A valid job (builtin "noop" handler, every minute) due at `next_fire`.
  static JobRecord MakeJob(const std::string& tenant, const std::string& id,
                           std::optional<TimePoint> next_fire = std::nullopt);
  // A new queued run of `job_id`, available and created at `at`.
  static RunRecord MakeRun(const std::string& tenant, const std::string& job_id,
                           const std::string& id, TimePoint at, int priority = 5);

  // Creates the job or fails the test.
  JobRecord Create(const JobRecord& job);
  // Enqueues runs or fails the test.
  void Enqueue(const std::vector<RunRecord>& runs);
  // Claims up to `max_runs` runs of every queue for `node` at `now`.
  std::vector<RunRecord> Claim(const std::string& node, TimePoint now, int max_runs = 1,
                               Duration lease = Duration(15000));
  RunRecord MustGetRun(const std::string& tenant, const std::string& run_id);
  // Every event of `tenant` ("" = all), oldest first.
  std::vector<Event> AllEvents(const std::string& tenant = "");
  // CountRuns of a job, summed by state over its queues.
  std::map<RunState, int64_t> RunCountsByState(const std::string& tenant, const std::string& job_id);

  std::unique_ptr<Store> store_;
};

}  // namespace jobsched::contract
