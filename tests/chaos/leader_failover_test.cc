// The leader (docs/cluster.md: a lease key with an increasing epoch; it assigns tenants' firing to
// live nodes) is SIGKILLed. Another node becomes leader with a larger epoch, the dead node drops
// out of the assignment, and every-second cron jobs of three tenants keep firing across the change:
// from the records, exactly one run per scheduled second, every one succeeded (a gap while no live
// node owned a tenant is filled late, within the misfire grace).
//
// GET /v1/cluster (admin):
//   {"leader": {"node": "<id>", "epoch": <int>, "expires_at": "<RFC 3339>"} | null,
//    "nodes": [{"id": ..., "alive": bool, ...}], "assignment": {"<tenant>": "<node id>"}}
#include <signal.h>
#include <stdio.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using std::chrono::seconds;

const std::vector<std::string> kTenants = {"default", "t1", "t2"};
constexpr int kJobsPerTenant = 2;
constexpr int kSeconds = 25;  // occurrences at t0 .. t0 + 24 s

const std::vector<std::string> kLeaderFlags = {
    "--heartbeat-ms",  "500",  "--node-dead-ms",    "2000",
    "--leader-ttl-ms", "2000", "--leader-renew-ms", "500"};

std::string ServeHelp() {
  std::string out;
  FILE* p = popen((std::string(JOBSCHED_BIN) + " serve --help 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  return out;
}

// The leader from a /v1/cluster answer, if there is one.
struct Leader {
  std::string node;
  int64_t epoch = 0;
};
std::optional<Leader> LeaderOf(const HttpReply& r) {
  if (r.status != 200 || !r.json.is_object() || !r.json.contains("leader")) return std::nullopt;
  const Json& l = r.json["leader"];
  if (!l.is_object() || !l.contains("node") || !l["node"].is_string() || !l.contains("epoch") ||
      !l["epoch"].is_number_integer() || !l.contains("expires_at") ||
      !l["expires_at"].is_string()) {
    return std::nullopt;
  }
  return Leader{l["node"].get<std::string>(), l["epoch"].get<int64_t>()};
}

// Whether the answer assigns every tenant, to nodes in `live` only.
bool AssignsEveryTenantTo(const HttpReply& r, const std::set<std::string>& live) {
  if (r.status != 200 || !r.json.is_object() || !r.json.contains("assignment") ||
      !r.json["assignment"].is_object()) {
    return false;
  }
  const Json& a = r.json["assignment"];
  for (const std::string& t : kTenants) {
    if (!a.contains(t) || !a[t].is_string() || !live.count(a[t].get<std::string>())) return false;
  }
  for (const auto& [tenant, node] : a.items()) {
    if (!node.is_string() || !live.count(node.get<std::string>())) return false;
  }
  return true;
}

TEST(Chaos, LeaderFailoverElectsANewLeaderAndKeepsEveryCronOccurrence) {
  // The flags come with leader election: without them this test cannot run, and says why.
  const std::string help = ServeHelp();
  std::string missing;
  for (size_t i = 0; i < kLeaderFlags.size(); i += 2) {
    if (help.find(kLeaderFlags[i]) == std::string::npos) missing += " " + kLeaderFlags[i];
  }
  ASSERT_TRUE(missing.empty()) << "`jobsched serve` does not know" << missing
                               << " (not in `serve --help`): this test needs leader election "
                                  "and tenant assignment. serve --help says:\n"
                               << help;

  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  std::vector<ServeNode*> nodes;
  for (int i = 1; i <= 3; ++i) {
    ServeNode* n =
        cluster.StartNode({.id = "node" + std::to_string(i), .extra_flags = kLeaderFlags});
    ASSERT_NE(n, nullptr) << "jobsched serve did not start with "
                          << ::testing::PrintToString(kLeaderFlags);
    nodes.push_back(n);
  }
  for (const char* t : {"t1", "t2"}) {
    const HttpReply r = nodes[0]->Put(std::string("/v1/tenants/") + t, Json::object());
    ASSERT_TRUE(r.status == 200 || r.status == 201) << t << ": " << r;
  }

  const TimePoint t0 = std::chrono::ceil<seconds>(WallNow() + seconds(3));
  std::map<std::string, std::set<std::string>> expected;  // tenant -> run ids
  int made = 0;
  for (const std::string& tenant : kTenants) {
    for (int j = 0; j < kJobsPerTenant; ++j, ++made) {
      const std::string id = "cron-" + std::to_string(j);
      const Json job = cluster.EverySecondJob(t0, kSeconds, "sleep 0.1");
      const HttpReply r = nodes[made % 3]->Put("/v1/tenants/" + tenant + "/jobs/" + id, job);
      ASSERT_EQ(r.status, 201) << tenant << "/" << id << ": " << r;
      for (int k = 0; k < kSeconds; ++k) {
        expected[tenant].insert(id + "@" + std::to_string(ToUnixMillis(t0 + seconds(k))));
      }
    }
  }
  ASSERT_LT(WallNow(), t0) << "creating the jobs took more than 3 s";

  // A leader, and every tenant assigned to a live node.
  const std::set<std::string> all = {"node1", "node2", "node3"};
  std::optional<Leader> first;
  HttpReply view;
  ASSERT_TRUE(WaitUntil(
      [&] {
        view = nodes[0]->Get("/v1/cluster");
        first = LeaderOf(view);
        return first && all.count(first->node) && AssignsEveryTenantTo(view, all);
      },
      seconds(15)))
      << "no leader with an assignment of every tenant; last /v1/cluster: " << view;

  // Firing works before the failover: each job's first two occurrences succeeded.
  ASSERT_TRUE(WaitUntil(
      [&] {
        int done = 0;
        for (const std::string& tenant : kTenants) {
          auto runs = cluster.Runs(tenant);
          if (!runs.ok()) return false;
          for (const RunRecord& r : *runs) {
            done += r.state == RunState::kSucceeded && r.scheduled_at <= t0 + seconds(1);
          }
        }
        return done >= 2 * kJobsPerTenant * static_cast<int>(kTenants.size());
      },
      seconds(20)))
      << "the first occurrences did not run";

  ServeNode* leader = cluster.node(first->node);
  ASSERT_NE(leader, nullptr);
  leader->Kill();
  std::set<std::string> live;
  for (ServeNode* n : cluster.running_nodes()) live.insert(n->id());

  std::optional<Leader> second;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (ServeNode* n : cluster.running_nodes()) {
          view = n->Get("/v1/cluster");
          second = LeaderOf(view);
          if (second && live.count(second->node) && second->epoch > first->epoch) return true;
        }
        return false;
      },
      seconds(15)))
      << "no new leader after " << first->node << " (epoch " << first->epoch
      << ") was killed; last /v1/cluster: " << view;
  EXPECT_TRUE(WaitUntil(
      [&] {
        view = cluster.running_nodes()[0]->Get("/v1/cluster");
        if (!AssignsEveryTenantTo(view, live) || !view.json.contains("nodes")) return false;
        for (const Json& n : view.json["nodes"]) {
          if (n.value("id", "") == first->node) return n.value("alive", true) == false;
        }
        return true;
      },
      seconds(15)))
      << "the dead leader is still assigned tenants or alive; last /v1/cluster: " << view;

  // Every occurrence of the window: exactly one run, succeeded.
  for (const std::string& tenant : kTenants) {
    SCOPED_TRACE("tenant " + tenant);
    const auto runs = cluster.WaitForFinalRuns(tenant, expected[tenant].size(), seconds(60));
    ASSERT_TRUE(runs);
    ExpectOneSucceededRunPerOccurrence(*runs, expected[tenant]);
  }
}

}  // namespace
}  // namespace jobsched::chaos
