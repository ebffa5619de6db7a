// One node loses its connection to Redis while the others keep theirs (a network partition, made
// with a TCP proxy between node1 and Redis). Self-fencing, and an unreachable store surfacing as
// HTTP 503 and a clear log line (docs/cluster.md): node1 kills its attempt's process group before
// its lease ends and reports nothing; the run is executed on another node; while cut, node1 answers
// 503 on /readyz and on the API, with a JSON error naming the store; once the connection is back,
// node1 is ready again and runs new work.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "chaos/cluster_harness.h"
#include "support/tcp_proxy.h"

namespace jobsched::chaos {
namespace {

using ::jobsched::testing::TcpProxy;
using std::chrono::seconds;

TEST(Chaos, NodeCutFromRedisFencesItselfAnswers503AndComesBack) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  TcpProxy proxy(cluster.redis().port());
  ASSERT_TRUE(proxy.ok()) << proxy.error();
  ServeNode* node1 = cluster.StartNode(
      {.id = "node1", .store_url = "redis://127.0.0.1:" + std::to_string(proxy.port())});
  ASSERT_NE(node1, nullptr);

  // node1 is alone when the long attempt starts, so it is node1's.
  const auto running = cluster.StartSlowRun(*node1);
  ASSERT_TRUE(running);
  const std::string run_id = running->id;
  const pid_t child = *cluster.HandlerPid(run_id, 1);
  ServeNode* node2 = cluster.StartNode({.id = "node2"});
  ServeNode* node3 = cluster.StartNode({.id = "node3"});
  ASSERT_NE(node2, nullptr);
  ASSERT_NE(node3, nullptr);

  proxy.Cut();
  EXPECT_TRUE(WaitUntil(
      [&] {
        return !node1->LogLines({"self-fencing", run_id}).empty();
      },
      seconds(10)))
      << "node1 did not log that it fences itself";
  EXPECT_TRUE(WaitUntil([&] { return !ProcessAlive(child); }, seconds(15)))
      << "node1 did not stop its child " << child;

  const auto succeeded = cluster.WaitForRun(
      "default", run_id, [](const RunRecord& r) { return r.state == RunState::kSucceeded; },
      seconds(30));
  ASSERT_TRUE(succeeded) << "the run was not executed on another node";
  const RunRecord& done = *succeeded;
  ASSERT_EQ(done.attempts.size(), 2u) << DescribeRun(done);
  EXPECT_EQ(done.attempts[0].node, "node1") << DescribeRun(done);
  EXPECT_EQ(done.attempts[0].outcome, "lease_lost") << DescribeRun(done);
  EXPECT_NE(done.attempts[1].node, "node1") << DescribeRun(done);
  EXPECT_EQ(done.attempts[1].outcome, "succeeded") << DescribeRun(done);
  for (const HandlerLine& line : cluster.HandlerLines()) {
    EXPECT_FALSE(line.attempt == 1 && line.event == "end") << "node1's fenced child finished";
  }

  // Still cut: node1 says it is not ready, and its API answers 503 naming the store.
  ASSERT_TRUE(proxy.cut());
  const HttpReply ready = node1->Get("/readyz", false);
  EXPECT_EQ(ready.status, 503) << ready;
  const HttpReply jobs = node1->Get("/v1/tenants/default/jobs");
  EXPECT_EQ(jobs.status, 503) << jobs;
  ASSERT_TRUE(jobs.json.is_object()) << jobs;
  ASSERT_TRUE(jobs.json.contains("error")) << jobs;
  const std::string message = jobs.json["error"].value("message", "");
  EXPECT_NE(message.find("store"), std::string::npos) << jobs;

  // Back: node1 reconnects, is ready, and runs new work (the only node left to run it).
  proxy.Restore();
  EXPECT_TRUE(WaitUntil([&] { return node1->Get("/readyz", false).status == 200; }, seconds(20)))
      << "node1 did not become ready after the connection came back";
  node2->Kill();
  node3->Kill();
  ASSERT_EQ(
      node1->Put("/v1/tenants/default/jobs/quick", {{"handler", cluster.ShellHandler("true")}})
          .status,
      201);
  const HttpReply again = node1->Post("/v1/tenants/default/jobs/quick/trigger");
  ASSERT_EQ(again.status, 201) << again;
  const std::string quick_run = again.json["run_ids"][0];
  const auto quick_done = cluster.WaitForRun(
      "default", quick_run, [](const RunRecord& r) { return IsTerminal(r.state); }, seconds(20));
  ASSERT_TRUE(quick_done) << "node1 ran no new work after the connection came back";
  EXPECT_EQ(quick_done->state, RunState::kSucceeded) << DescribeRun(*quick_done);
  EXPECT_EQ(quick_done->node, "node1") << DescribeRun(*quick_done);

  // node1's late view of the first run changed nothing.
  auto after = cluster.Run("default", run_id);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(DescribeRun(*after), DescribeRun(done));
}

// An attempt that ends while its node is cut from Redis for less than its lease (docs/cluster.md,
// "When Redis is unreachable"): the node keeps the result, renews the attempt's lease meanwhile
// and writes the result once the connection is back. The run succeeds with its one attempt, and
// the command ran once: it is not run again after the outage, and nothing on node1 says the
// result was rejected or dropped.
TEST(Chaos, ResultOfAnAttemptEndedWhileCutIsWrittenWhenTheConnectionIsBack) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  TcpProxy proxy(cluster.redis().port());
  ASSERT_TRUE(proxy.ok()) << proxy.error();
  // A 10 s lease: far longer than the outage below, so the run stays node1's throughout.
  ServeNode* node1 =
      cluster.StartNode({.id = "node1",
                         .store_url = "redis://127.0.0.1:" + std::to_string(proxy.port()),
                         .lease_ms = 10000,
                         .renew_ms = 1000});
  ASSERT_NE(node1, nullptr);

  // One attempt only: a second execution could only come from the run being run again.
  const Json job = {{"handler", cluster.ShellHandler("sleep 2")}, {"retry", {{"max_attempts", 1}}}};
  ASSERT_EQ(node1->Put("/v1/tenants/default/jobs/short", job).status, 201);
  const HttpReply trigger = node1->Post("/v1/tenants/default/jobs/short/trigger");
  ASSERT_EQ(trigger.status, 201) << trigger;
  const std::string run_id = trigger.json["run_ids"][0];
  auto handler_lines = [&](const std::string& event) {
    int n = 0;
    for (const HandlerLine& line : cluster.HandlerLines()) {
      n += line.run_id == run_id && line.event == event;
    }
    return n;
  };
  ASSERT_TRUE(cluster.WaitForRun(
      "default", run_id,
      [&](const RunRecord& r) {
        return r.state == RunState::kRunning && handler_lines("start") > 0;
      },
      seconds(20)))
      << "the attempt never started";

  // Cut while the command runs; it ends during the outage, so its result is written while Redis
  // is unreachable. The outage lasts about 3 s in all, and at least 1 s after the command ended.
  proxy.Cut();
  const auto cut_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return handler_lines("end") > 0; }, seconds(20)))
      << "the command did not end";
  std::this_thread::sleep_until(
      std::max(cut_at + seconds(3), std::chrono::steady_clock::now() + seconds(1)));
  proxy.Restore();

  const auto final_run = cluster.WaitForRun(
      "default", run_id, [](const RunRecord& r) { return IsTerminal(r.state); }, seconds(60));
  ASSERT_TRUE(final_run) << "the run did not end";
  const RunRecord& run = *final_run;
  EXPECT_EQ(run.state, RunState::kSucceeded) << DescribeRun(run);
  EXPECT_EQ(handler_lines("start"), 1) << "times the command started; " << DescribeRun(run);
  EXPECT_EQ(handler_lines("end"), 1) << "times the command ended; " << DescribeRun(run);

  // node1 had to keep the result (the outage covered its write), and neither fenced the attempt
  // nor rejected or dropped its result.
  EXPECT_FALSE(node1->LogLines({"results kept to write again"}).empty())
      << "node1 never had to keep a result: the outage did not cover the write";
  EXPECT_TRUE(node1->LogLines({"run result rejected", run_id}).empty());
  EXPECT_TRUE(node1->LogLines({"run result not written", run_id}).empty());
  EXPECT_TRUE(node1->LogLines({"self-fencing", run_id}).empty());

  ASSERT_EQ(run.attempts.size(), 1u) << DescribeRun(run);
  EXPECT_EQ(run.attempts[0].node, "node1") << DescribeRun(run);
  EXPECT_EQ(run.attempts[0].outcome, "succeeded") << DescribeRun(run);
}

}  // namespace
}  // namespace jobsched::chaos
