// kill -9 of a node of three while it runs attempts (one run per occurrence, no lost occurrences,
// at-least-once execution). 200 one-time jobs fall due at the same instant and 10
// every-second cron jobs fire for 10 s, all on three nodes sharing one Redis; the node with the
// most running attempts is SIGKILLed. From the records read straight from Redis: every
// occurrence has exactly one run and it succeeded; each attempt the dead node left ended
// lease_lost and its run succeeded on another node; and from the handler log: no attempt was
// started twice, and every start belongs to an attempt of the record.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using std::chrono::seconds;

constexpr int kOnceJobs = 200;
constexpr int kCronJobs = 10;
constexpr int kCronSeconds = 10;  // each cron job fires at t0, t0 + 1 s, ..., t0 + 9 s

TEST(Chaos, Kill9OfABusyNodeLosesNoOccurrenceAndRunsEachOnce) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  std::vector<ServeNode*> nodes;
  std::map<pid_t, std::string> node_of_pid;  // kept: a killed node's pid is still in the log
  for (int i = 1; i <= 3; ++i) {
    ServeNode* n = cluster.StartNode({.id = "node" + std::to_string(i), .concurrency = 32});
    ASSERT_NE(n, nullptr);
    nodes.push_back(n);
    node_of_pid[n->pid()] = n->id();
  }

  // Every occurrence is at or after t0, a whole second far enough ahead for the jobs to exist.
  const TimePoint t0 = std::chrono::ceil<seconds>(WallNow() + seconds(5));
  std::set<std::string> expected;  // run ids: <job>@<ms>, one per occurrence
  for (int i = 0; i < kOnceJobs; ++i) {
    const std::string id = "once-" + std::to_string(i);
    const Json job = {{"schedule", {{"at", Rfc3339(t0)}}},
                      {"handler", cluster.ShellHandler("sleep 1." + std::to_string(i % 10))}};
    const HttpReply r = nodes[i % 3]->Put("/v1/tenants/default/jobs/" + id, job);
    ASSERT_EQ(r.status, 201) << id << ": " << r;
    expected.insert(id + "@" + std::to_string(ToUnixMillis(t0)));
  }
  for (int j = 0; j < kCronJobs; ++j) {
    const std::string id = "cron-" + std::to_string(j);
    const Json job = {
        {"schedule",
         {{"cron", "* * * * * *"},
          {"start_at", Rfc3339(t0)},
          {"end_at", Rfc3339(t0 + seconds(kCronSeconds - 1))}}},
        {"overlap", "allow"},  // a run takes longer than a second: each occurrence still runs
        {"handler", cluster.ShellHandler("sleep 1." + std::to_string(j % 10))}};
    const HttpReply r = nodes[j % 3]->Put("/v1/tenants/default/jobs/" + id, job);
    ASSERT_EQ(r.status, 201) << id << ": " << r;
    for (int k = 0; k < kCronSeconds; ++k) {
      expected.insert(id + "@" + std::to_string(ToUnixMillis(t0 + seconds(k))));
    }
  }
  ASSERT_LT(WallNow(), t0) << "creating the jobs took more than 5 s: the test's premise (every "
                              "occurrence after its job exists) does not hold";

  // The victim: the node with the most running attempts, read from the records.
  std::string victim;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto runs = cluster.Runs("default");
        if (!runs.ok()) return false;
        std::map<std::string, int> running;
        for (const RunRecord& r : *runs) {
          if (r.state == RunState::kRunning) ++running[r.node];
        }
        int most = 0;
        for (const auto& [node, count] : running) {
          if (count > most) std::tie(victim, most) = std::tie(node, count);
        }
        return most >= 3;
      },
      seconds(30)))
      << "no node ran several attempts at once";
  ServeNode* dead = cluster.node(victim);
  ASSERT_NE(dead, nullptr) << victim;
  dead->Kill();

  // Every occurrence's run reaches a final state (the dead node's after its leases expire):
  // one run per occurrence, and it succeeded.
  const auto settled = cluster.WaitForFinalRuns("default", expected.size(), seconds(60));
  ASSERT_TRUE(settled);
  const std::vector<RunRecord>& runs = *settled;
  ExpectOneSucceededRunPerOccurrence(runs, expected);
  std::map<std::string, const RunRecord*> by_id;
  for (const RunRecord& r : runs) by_id[r.id] = &r;

  int lease_lost_on_victim = 0;
  for (const RunRecord& r : runs) {
    ASSERT_FALSE(r.attempts.empty()) << DescribeRun(r);
    const AttemptRecord& last = r.attempts.back();
    EXPECT_EQ(last.outcome, "succeeded") << DescribeRun(r);
    for (const AttemptRecord& a : r.attempts) {
      if (a.node != victim || a.outcome == "succeeded") continue;
      // The dead node's unfinished attempt: lost with its lease, run again elsewhere.
      EXPECT_EQ(a.outcome, "lease_lost") << DescribeRun(r);
      EXPECT_NE(last.node, victim) << DescribeRun(r);
      ++lease_lost_on_victim;
    }
  }
  EXPECT_GT(lease_lost_on_victim, 0) << victim << " was killed while it ran attempts";

  // The handler log: every start is an attempt of the record (same fence, same node), no
  // attempt started twice, a run with one attempt started once, and every succeeded attempt
  // ran to its end.
  std::map<std::pair<std::string, int>, int> starts, ends;
  for (const HandlerLine& line : cluster.HandlerLines()) {
    auto it = by_id.find(line.run_id);
    ASSERT_NE(it, by_id.end()) << "handler ran for unknown run " << line.run_id;
    const RunRecord& r = *it->second;
    ASSERT_GE(line.attempt, 1) << DescribeRun(r);
    ASSERT_LE(line.attempt, static_cast<int>(r.attempts.size())) << DescribeRun(r);
    const AttemptRecord& a = r.attempts[line.attempt - 1];
    EXPECT_EQ(line.fence, a.fence) << DescribeRun(r);
    // The shell's parent is the node that forked it, or this process (the subreaper) when that
    // node was killed between the fork and the shell's start: then it was the victim.
    const std::string node = line.node_pid == getpid() ? victim : node_of_pid[line.node_pid];
    EXPECT_EQ(node, a.node) << DescribeRun(r) << ", handler's parent pid " << line.node_pid;
    (line.event == "start" ? starts : ends)[{line.run_id, line.attempt}]++;
    // Fired and claimed ahead of its time, a run still begins at it. (The nodes' time base is
    // the Redis clock, the same clock on this host up to the precision of their sync.)
    if (line.event == "start") {
      EXPECT_GE(line.at_ms, ToUnixMillis(r.scheduled_at) - 5)
          << "a handler began before its occurrence: " << DescribeRun(r);
    }
  }
  for (const RunRecord& r : runs) {
    EXPECT_GE(r.attempts.front().started_at, r.scheduled_at)
        << "an attempt is recorded as begun before its occurrence: " << DescribeRun(r);
  }
  for (const auto& [key, count] : starts) {
    EXPECT_EQ(count, 1) << key.first << " attempt " << key.second << " started " << count
                        << " times";
  }
  for (const RunRecord& r : runs) {
    if (r.attempts.size() == 1) {
      EXPECT_EQ((starts[{r.id, 1}]), 1) << DescribeRun(r);
    }
    const int last = static_cast<int>(r.attempts.size());
    EXPECT_EQ((ends[{r.id, last}]), 1) << "the succeeded attempt's end: " << DescribeRun(r);
  }
}

}  // namespace
}  // namespace jobsched::chaos
