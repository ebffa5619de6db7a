// A node frozen (SIGSTOP) past its lease while it runs a shell attempt: the paused process is the
// classic way a "dead" holder comes back (GC pause, VM migration). One holder at a time: the run is
// executed elsewhere and succeeds; when the frozen node resumes, it stops its child before that one
// finishes, and its late outcome is not recorded (fenced, or rejected as stale): the run's attempts
// stay exactly [lease_lost on A, succeeded on B].
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using std::chrono::seconds;

TEST(Chaos, NodeStoppedPastItsLeaseIsReplacedAndItsLateResultIsNotRecorded) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  for (int i = 1; i <= 3; ++i) {
    ASSERT_NE(cluster.StartNode({.id = "node" + std::to_string(i), .concurrency = 2}), nullptr);
  }
  ServeNode* api = cluster.running_nodes()[0];
  // A: the node whose attempt 1 runs, once its shell has started.
  const auto running = cluster.StartSlowRun(*api);
  ASSERT_TRUE(running);
  const std::string run_id = running->id;
  const std::string a_id = running->node;
  const pid_t child = *cluster.HandlerPid(run_id, 1);
  ServeNode* a = cluster.node(a_id);
  ASSERT_NE(a, nullptr) << a_id;
  a->Signal(SIGSTOP);

  // Its lease expires; another node runs attempt 2 to success.
  const auto succeeded = cluster.WaitForRun(
      "default", run_id, [](const RunRecord& r) { return r.state == RunState::kSucceeded; },
      seconds(30));
  ASSERT_TRUE(succeeded) << "the run was not executed elsewhere while " << a_id << " was stopped";
  const RunRecord& done = *succeeded;
  ASSERT_EQ(done.attempts.size(), 2u) << DescribeRun(done);
  EXPECT_EQ(done.attempts[0].node, a_id) << DescribeRun(done);
  EXPECT_EQ(done.attempts[0].outcome, "lease_lost") << DescribeRun(done);
  EXPECT_NE(done.attempts[1].node, a_id) << DescribeRun(done);
  EXPECT_EQ(done.attempts[1].outcome, "succeeded") << DescribeRun(done);
  EXPECT_TRUE(ProcessAlive(child)) << "A's child runs on while A is stopped";

  // A resumes: it learns that its lease is gone and stops its child, which never ends its work.
  a->Signal(SIGCONT);
  EXPECT_TRUE(WaitUntil([&] { return !ProcessAlive(child); }, seconds(15)))
      << "A did not stop its child " << child << " after resuming";
  EXPECT_TRUE(WaitUntil(
      [&] {
        return !a->LogLines({"run fenced", "run_id=" + run_id}).empty() ||
               !a->LogLines({"run result rejected", "run_id=" + run_id}).empty();
      },
      seconds(15)))
      << "A logged neither 'run fenced' nor 'run result rejected' for " << run_id;
  // A is healthy again, and what A did after resuming changed nothing in the record.
  EXPECT_TRUE(WaitUntil([&] { return a->Get("/readyz", false).status == 200; }, seconds(15)));
  auto after = cluster.Run("default", run_id);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(DescribeRun(*after), DescribeRun(done));
  EXPECT_EQ(after->state, RunState::kSucceeded);
  EXPECT_EQ(after->fence, done.fence);
  EXPECT_EQ(after->node, done.node);
  EXPECT_EQ(after->finished_at, done.finished_at);
  ASSERT_EQ(after->attempts.size(), 2u);
  EXPECT_EQ(after->attempts[0].finished_at, done.attempts[0].finished_at);

  // The handler log: attempt 1 started on A and never ended; attempt 2 started and ended on B.
  std::vector<std::string> seen;
  for (const HandlerLine& line : cluster.HandlerLines()) {
    ASSERT_EQ(line.run_id, run_id);
    const ServeNode* on = cluster.NodeByPid(line.node_pid);
    seen.push_back(std::to_string(line.attempt) + " " + (on ? on->id() : "?") + " " + line.event);
  }
  const std::string b_id = done.attempts[1].node;
  EXPECT_EQ(seen, (std::vector<std::string>{"1 " + a_id + " start", "2 " + b_id + " start",
                                            "2 " + b_id + " end"}));
}

}  // namespace
}  // namespace jobsched::chaos
