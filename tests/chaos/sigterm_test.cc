// A node stopped cleanly (SIGTERM) while it runs an attempt longer than its shutdown grace
// (docs/cluster.md): it stops the attempt, hands the run back at once (the attempt ends as
// lease_lost, said to be handed back) and removes its record. Another node runs the run again
// long before the attempt's lease could have ended, and the cluster's view no longer lists the
// stopped node.
#include <gmock/gmock.h>

#include <chrono>
#include <set>
#include <string>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;

TEST(Chaos, SigtermHandsTheRunningAttemptBackAndLeavesTheCluster) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  // Leases of 60 s: longer than the test waits for the run, so only a hand-back can give it to
  // another node in time (the reapers cannot).
  ServeNode* node1 = cluster.StartNode({.id = "node1", .lease_ms = 60000, .renew_ms = 1000});
  ASSERT_NE(node1, nullptr);

  // node1 is alone when the long attempt starts, so it is node1's.
  const auto running = cluster.StartSlowRun(*node1);
  ASSERT_TRUE(running);
  const std::string run_id = running->id;

  ServeNode* node2 = cluster.StartNode({.id = "node2", .lease_ms = 60000, .renew_ms = 1000});
  ASSERT_NE(node2, nullptr);
  // The attempt (30 s) outlasts node1's shutdown grace (1 s): it is stopped and handed back.
  EXPECT_EQ(node1->Terminate(), 0) << "a clean stop exits 0";

  const auto final_run = cluster.WaitForRun(
      "default", run_id, [](const RunRecord& r) { return IsTerminal(r.state); }, seconds(30));
  ASSERT_TRUE(final_run) << "the run was not handed back: " << cluster.Describe();
  const RunRecord& run = *final_run;
  EXPECT_EQ(run.state, RunState::kSucceeded) << DescribeRun(run);
  ASSERT_EQ(run.attempts.size(), 2u) << DescribeRun(run);
  EXPECT_EQ(run.attempts[0].node, "node1");
  EXPECT_EQ(run.attempts[0].outcome, "lease_lost");
  EXPECT_THAT(run.attempts[0].error, HasSubstr("handed back by node node1"));
  EXPECT_EQ(run.attempts[1].node, "node2");
  EXPECT_EQ(run.attempts[1].outcome, "succeeded");
  EXPECT_FALSE(node1->LogLines({"handed back 1 unfinished runs"}).empty()) << node1->Log();

  // node1 left: the cluster lists node2 alone.
  const HttpReply view = node2->Get("/v1/cluster");
  ASSERT_EQ(view.status, 200) << view;
  std::set<std::string> ids;
  for (const Json& n : view.json["nodes"]) ids.insert(n.value("id", ""));
  EXPECT_EQ(ids, std::set<std::string>{"node2"}) << view.json.dump();
}

}  // namespace
}  // namespace jobsched::chaos
