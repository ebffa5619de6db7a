// `jobsched serve` processes started with nothing but the same --store form one cluster: each
// picks a node id of its own, one leads, the tenants are assigned. A --node-id that a live node
// of another process uses is refused at start.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "chaos/cluster_harness.h"

namespace jobsched::chaos {
namespace {

using ::testing::HasSubstr;

TEST(Chaos, ServeProcessesWithoutNodeIdsFormOneClusterAndAnIdInUseIsRefused) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartRedis());
  ServeNode* a = cluster.StartNode({.id = "a", .default_node_id = true});
  ASSERT_NE(a, nullptr);
  ServeNode* b = cluster.StartNode({.id = "b", .default_node_id = true});
  ASSERT_NE(b, nullptr);

  // Polled until both have heartbeated and the leader has assigned the tenant (bounded only to
  // turn a hang into a failure).
  Json view;
  std::set<std::string> ids;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    const HttpReply r = b->Get("/v1/cluster");
    ASSERT_EQ(r.status, 200) << r;
    view = r.json;
    ids.clear();
    int alive = 0;
    for (const Json& n : view["nodes"]) {
      ids.insert(n.value("id", ""));
      alive += n.value("alive", false) ? 1 : 0;
    }
    if (alive == 2 && view["leader"].is_object() && view["assignment"].contains("default")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(ids.size(), 2u) << view.dump();
  ASSERT_TRUE(view["leader"].is_object()) << view.dump();
  EXPECT_TRUE(ids.contains(view["leader"]["node"].get<std::string>())) << view.dump();
  ASSERT_TRUE(view["assignment"].contains("default")) << view.dump();
  EXPECT_TRUE(ids.contains(view["assignment"]["default"].get<std::string>())) << view.dump();
  // The same view from the other node.
  const HttpReply from_a = a->Get("/v1/cluster");
  ASSERT_EQ(from_a.status, 200);
  EXPECT_EQ(from_a.json["leader"]["node"], view["leader"]["node"]);

  // A third process told to use a live node's id is refused, naming it.
  const std::string taken = *ids.begin();
  const std::string log = cluster.dir() + "/taken.log";
  const std::string command = std::string(JOBSCHED_BIN) + " serve --store " + cluster.redis_url() +
                              " --listen 127.0.0.1:0 --data-dir " + cluster.dir() +
                              "/taken --node-id " + taken + " > " + log + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 2) << "a usage error";
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("node_id: '" + taken + "' is in use by a live node"));
}

}  // namespace
}  // namespace jobsched::chaos
