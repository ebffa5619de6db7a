// Redis itself restarts under a running cluster (AOF everysec, as docs/redis-store.md recommends; a
// graceful SHUTDOWN writes and fsyncs the append-only file). Every-second cron jobs with the
// misfire policy that records every occurrence (fire_all) and one-time jobs fall due before, during
// and after the outage. Afterwards, from the records: each occurrence has exactly one run, and it
// succeeded.
#include <gmock/gmock.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using std::chrono::seconds;

constexpr int kCronJobs = 5;
constexpr int kSeconds = 15;  // occurrences at t0 .. t0 + 14 s

TEST(Chaos, RedisRestartWithAppendOnlyFileLosesAndDoublesNoOccurrence) {
  Cluster cluster({.redis_aof = true});
  ASSERT_TRUE(cluster.StartRedis());
  std::vector<ServeNode*> nodes;
  for (int i = 1; i <= 2; ++i) {
    ServeNode* n = cluster.StartNode({.id = "node" + std::to_string(i)});
    ASSERT_NE(n, nullptr);
    nodes.push_back(n);
  }

  const TimePoint t0 = std::chrono::ceil<seconds>(WallNow() + seconds(3));
  auto run_id = [](const std::string& job, TimePoint at) {
    return job + "@" + std::to_string(ToUnixMillis(at));
  };
  std::set<std::string> expected;
  for (int j = 0; j < kCronJobs; ++j) {
    const std::string id = "cron-" + std::to_string(j);
    const Json job = cluster.EverySecondJob(t0, kSeconds, "sleep 0.2");
    const HttpReply r = nodes[j % 2]->Put("/v1/tenants/default/jobs/" + id, job);
    ASSERT_EQ(r.status, 201) << id << ": " << r;
    for (int k = 0; k < kSeconds; ++k) expected.insert(run_id(id, t0 + seconds(k)));
  }
  for (int k = 0; k < kSeconds; ++k) {  // one one-time job per second of the window
    const std::string id = "once-" + std::to_string(k);
    const Json job = {{"schedule", {{"at", Rfc3339(t0 + seconds(k))}}},
                      {"handler", cluster.ShellHandler("sleep 0.2")}};
    const HttpReply r = nodes[k % 2]->Put("/v1/tenants/default/jobs/" + id, job);
    ASSERT_EQ(r.status, 201) << id << ": " << r;
    expected.insert(run_id(id, t0 + seconds(k)));
  }
  ASSERT_LT(WallNow(), t0) << "creating the jobs took more than 3 s";

  // The cluster works: the first three seconds' runs succeeded.
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto runs = cluster.Runs("default");
        if (!runs.ok()) return false;
        int done = 0;
        for (const RunRecord& r : *runs) {
          done += r.state == RunState::kSucceeded && r.scheduled_at <= t0 + seconds(2);
        }
        return done >= 3 * (kCronJobs + 1);
      },
      seconds(20)))
      << "the first occurrences did not run";

  // Redis goes down gracefully, stays down while two more occurrences fall due, and comes back
  // on the same port from its append-only file.
  ASSERT_TRUE(cluster.redis().Shutdown()) << "redis-server did not exit on SIGTERM";
  const TimePoint down_at = WallNow();
  for (ServeNode* n : nodes) {
    EXPECT_TRUE(WaitUntil([&] { return n->Get("/readyz", false).status == 503; }, seconds(10)))
        << n->id() << " still says it is ready with Redis down";
  }
  WaitUntil([&] { return WallNow() >= down_at + seconds(2); }, seconds(5));  // the outage itself
  ASSERT_TRUE(cluster.redis().Restart()) << cluster.redis().error();
  for (ServeNode* n : nodes) {
    EXPECT_TRUE(WaitUntil([&] { return n->Get("/readyz", false).status == 200; }, seconds(20)))
        << n->id() << " did not become ready after Redis came back";
  }

  const auto runs = cluster.WaitForFinalRuns("default", expected.size(), seconds(60));
  ASSERT_TRUE(runs);
  ExpectOneSucceededRunPerOccurrence(*runs, expected);
}

// Redis loses its data under a running node (here flushed; as a restart without persistence
// does): the node says so on /readyz, with what to do, instead of answering ready and refusing
// every key as unknown.
TEST(Chaos, AStoreWhoseDataIsGoneIsNotReady) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  ServeNode* node = cluster.StartNode({.id = "node1"});
  ASSERT_NE(node, nullptr);
  ASSERT_EQ(node->Get("/readyz", false).status, 200);
  ASSERT_TRUE(cluster.redis().FlushAll());
  HttpReply ready;
  EXPECT_TRUE(WaitUntil(
      [&] {
        ready = node->Get("/readyz", false);
        return ready.status == 503;
      },
      seconds(10)))
      << "still ready: " << ready;
  EXPECT_THAT(ready.body, ::testing::HasSubstr("data is gone")) << ready;
  EXPECT_THAT(ready.body, ::testing::HasSubstr("restart the nodes")) << ready;
}

}  // namespace
}  // namespace jobsched::chaos
