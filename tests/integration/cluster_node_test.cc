// The cluster actor on one shared store with a fake clock: leadership, its epoch, tenant
// assignment and the scope each node fires, as nodes join and die; and the node id check.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <jobsched/store.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "core/job_codec.h"
#include "engine/cluster.h"
#include "engine/node.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"

namespace jobsched {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const TimePoint kT0 = FromUnixMillis(1'700'000'000'000);

class ClusterActorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = SqliteStore::Open({.path = ":memory:"});
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    for (const char* t : {"acme", "beta", "gamma"}) {
      ASSERT_TRUE(store_->PutTenant({.id = t, .created_at = kT0, .updated_at = kT0}).ok());
    }
  }

  std::unique_ptr<ClusterActor> Actor(const std::string& id) {
    return std::make_unique<ClusterActor>(*store_, clock_, nullptr,
                                          ClusterOptions{.node_id = id,
                                                         .leader_ttl = Duration(10000),
                                                         .leader_renew = Duration(3000),
                                                         .node_dead_after = Duration(10000)},
                                          nullptr);
  }
  void Beat(const std::string& id) {
    ASSERT_TRUE(store_->Heartbeat({.id = id, .host = "h", .heartbeat_at = clock_.Now()}).ok());
  }
  TenantOwners Owners() {
    Result<Assignment> a = store_->GetAssignment();
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? a->owners : TenantOwners{};
  }
  std::map<std::string, int> Load() {
    std::map<std::string, int> load;
    for (const auto& [tenant, node] : Owners()) ++load[node];
    return load;
  }

  FakeClock clock_{kT0};
  std::unique_ptr<Store> store_;
};

TEST_F(ClusterActorTest, OneLeaderAssignsTenantsAndEachNodeFiresOnlyItsOwnAndOrphans) {
  auto a = Actor("a"), b = Actor("b");
  Beat("a");
  ASSERT_TRUE(a->Tick().ok());
  EXPECT_TRUE(a->IsLeader());
  // Alone: a owns every tenant ("default" included) and fires everything.
  EXPECT_EQ(Load(), (std::map<std::string, int>{{"a", 4}}));
  EXPECT_THAT(a->Scope().excluded, IsEmpty());

  Beat("b");
  ASSERT_TRUE(b->Tick().ok());
  EXPECT_FALSE(b->IsLeader()) << "a's lease runs";
  // b is not assigned anything yet: a's tenants are a's.
  EXPECT_THAT(b->Scope().excluded, ElementsAre("acme", "beta", "default", "gamma"));

  // a renews (leader_renew later) and rebalances: two tenants each, a keeps two of its own.
  clock_.Advance(Duration(3000));
  Beat("a");
  Beat("b");
  ASSERT_TRUE(a->Tick().ok());
  ASSERT_TRUE(b->Tick().ok());
  EXPECT_EQ(Load(), (std::map<std::string, int>{{"a", 2}, {"b", 2}}));
  const TenantOwners owners = Owners();
  for (const auto& [tenant, owner] : owners) {
    EXPECT_EQ(a->Scope().Covers(tenant), owner == "a") << tenant;
    EXPECT_EQ(b->Scope().Covers(tenant), owner == "b") << tenant;
  }
  auto status = a->Describe();
  ASSERT_TRUE(status.ok());
  ASSERT_TRUE(status->leader.has_value());
  EXPECT_EQ(status->leader->node, "a");
  ASSERT_EQ(status->members.size(), 2u);
  EXPECT_TRUE(status->members[0].alive);
  EXPECT_EQ(status->members[1].tenants.size(), 2u);
}

TEST_F(ClusterActorTest, WhenTheLeaderDiesAnotherTakesOverWithAHigherEpochAndItsTenants) {
  auto a = Actor("a"), b = Actor("b");
  Beat("a");
  Beat("b");
  ASSERT_TRUE(a->Tick().ok());
  ASSERT_TRUE(b->Tick().ok());
  clock_.Advance(Duration(3000));
  Beat("a");
  Beat("b");
  ASSERT_TRUE(a->Tick().ok());
  ASSERT_TRUE(b->Tick().ok());
  const int64_t epoch = store_->GetLeader(clock_.Now())->value().epoch;
  ASSERT_EQ(Load(), (std::map<std::string, int>{{"a", 2}, {"b", 2}}));

  // a stops heartbeating and renewing. Once its heartbeat is older than node_dead_after, b
  // fires a's tenants too (orphans), before any new assignment.
  clock_.Advance(Duration(10001));
  Beat("b");
  ASSERT_TRUE(b->Tick().ok());
  EXPECT_THAT(b->Scope().excluded, IsEmpty());
  // a's lease (renewed at +3 s, TTL 10 s) has expired too: b leads with the next epoch and
  // owns every tenant.
  EXPECT_TRUE(b->IsLeader());
  auto leader = store_->GetLeader(clock_.Now());
  ASSERT_TRUE(leader.ok());
  ASSERT_TRUE(leader->has_value());
  EXPECT_EQ((*leader)->node, "b");
  EXPECT_EQ((*leader)->epoch, epoch + 1);
  EXPECT_EQ(Load(), (std::map<std::string, int>{{"b", 4}}));

  // a comes back: it is not the leader, and its next assignment write would be refused.
  Beat("a");
  ASSERT_TRUE(a->Tick().ok());
  EXPECT_FALSE(a->IsLeader());
  EXPECT_EQ(store_->PutAssignment("a", epoch, clock_.Now(), {{"acme", "a"}}).code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(ClusterActorTest, AStoppedLeaderGivesTheLeaseUpAtOnce) {
  auto a = Actor("a"), b = Actor("b");
  Beat("a");
  ASSERT_TRUE(a->Tick().ok());
  ASSERT_TRUE(a->IsLeader());
  a->Stop();
  EXPECT_FALSE(a->IsLeader());
  Beat("b");
  ASSERT_TRUE(b->Tick().ok());
  EXPECT_TRUE(b->IsLeader()) << "no wait for the TTL after a clean stop";
}

// ---- Node ids -------------------------------------------------------------------------------

TEST(NodeIdTest, AGivenIdInUseByALiveNodeElsewhereIsRefusedAndADefaultedOneMadeUnique) {
  FakeClock clock(kT0);
  std::shared_ptr<Store> store = SqliteStore::Open({.path = ":memory:"}).value();
  ASSERT_TRUE(
      store->Heartbeat({.id = "n1", .host = "elsewhere", .pid = 4242, .heartbeat_at = clock.Now()})
          .ok());
  ASSERT_TRUE(store
                  ->Heartbeat({.id = DefaultNodeId(),
                               .host = "elsewhere",
                               .pid = 4242,
                               .heartbeat_at = clock.Now()})
                  .ok());

  auto taken = Node::Create({.store = store, .node_id = "n1", .clock = &clock});
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(taken.status().message(), HasSubstr("node_id: 'n1' is in use"));
  EXPECT_THAT(taken.status().message(), HasSubstr("elsewhere"));

  auto defaulted = Node::Create({.store = store, .clock = &clock});
  ASSERT_TRUE(defaulted.ok()) << defaulted.status().ToString();
  EXPECT_EQ((*defaulted)->options().node_id, DefaultNodeId() + "-" + std::to_string(::getpid()));

  // Dead (no heartbeat for node_dead_after): the id is free again.
  clock.Advance(Duration(10000));
  auto free_again = Node::Create({.store = store, .node_id = "n1", .clock = &clock});
  EXPECT_TRUE(free_again.ok()) << free_again.status().ToString();
}

TEST(NodeIdTest, ARecordOfThisProcessOrOfAGoneProcessOfThisHostIsARestart) {
  FakeClock clock(kT0);
  std::shared_ptr<Store> store = SqliteStore::Open({.path = ":memory:"}).value();
  ASSERT_TRUE(
      store
          ->Heartbeat(
              {.id = "me", .host = DefaultNodeId(), .pid = ::getpid(), .heartbeat_at = clock.Now()})
          .ok());
  EXPECT_TRUE(Node::Create({.store = store, .node_id = "me", .clock = &clock}).ok());
  // A pid that cannot be running (above the kernel's pid_max).
  ASSERT_TRUE(
      store
          ->Heartbeat(
              {.id = "gone", .host = DefaultNodeId(), .pid = 1 << 30, .heartbeat_at = clock.Now()})
          .ok());
  EXPECT_TRUE(Node::Create({.store = store, .node_id = "gone", .clock = &clock}).ok());
}

// A process killed and not yet waited for by its parent (a zombie) has ended too.
TEST(NodeIdTest, ARecordOfAKilledProcessNotYetWaitedForIsARestart) {
  FakeClock clock(kT0);
  std::shared_ptr<Store> store = SqliteStore::Open({.path = ":memory:"}).value();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  // Until the child has exited (then a zombie: this test does not wait for it yet).
  for (int i = 0; i < 10000; ++i) {
    siginfo_t info{};
    if (::waitid(P_PID, child, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == child)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(
      store
          ->Heartbeat(
              {.id = "zombie", .host = DefaultNodeId(), .pid = child, .heartbeat_at = clock.Now()})
          .ok());
  auto restarted = Node::Create({.store = store, .node_id = "zombie", .clock = &clock});
  EXPECT_TRUE(restarted.ok()) << restarted.status().ToString();
  ::waitpid(child, nullptr, 0);
}

// A node that stops leaves: its record is removed (its tenants go elsewhere at the leader's next
// pass, not after node_dead_after), and its id is free at once.
TEST(NodeIdTest, AStoppedNodeRemovesItsRecord) {
  FakeClock clock(kT0);
  std::shared_ptr<Store> store = SqliteStore::Open({.path = ":memory:"}).value();
  auto node = Node::Create({.store = store, .node_id = "leaving", .clock = &clock});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  auto nodes = store->ListNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ(nodes->front().id, "leaving");
  (*node)->Stop();
  nodes = store->ListNodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_THAT(*nodes, IsEmpty());
}

// ---- What a job is told -----------------------------------------------------------------------

TEST(JobEnvironmentTest, AShellJobIsToldItsRunAttemptFenceAndNode) {
  auto node = Node::Create({.store_url = "sqlite::memory:", .node_id = "n7", .concurrency = 1});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  auto spec =
      ParseJobSpec(R"({"id": "env", "handler": {"type": "shell", "command": ["/usr/bin/env"]}})");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  ASSERT_TRUE((*node)->jobs().Create(*spec).ok());
  auto ids = (*node)->jobs().Trigger("default", "env", {});
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  const std::string run_id = ids->front();
  // Synchronised on the record: polled until finished, bounded only to turn a hang into a failure.
  RunRecord run;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = (*node)->store().GetRun("default", run_id);
    ASSERT_TRUE(r.ok());
    run = *r;
    if (run.state == RunState::kSucceeded || run.state == RunState::kFailed) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (*node)->Stop();
  ASSERT_EQ(run.state, RunState::kSucceeded) << run.error;
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_RUN_ID=" + run_id + "\n"));
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_JOB_ID=env\n"));
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_TENANT=default\n"));
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_ATTEMPT=1\n"));
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_FENCE=" + std::to_string(run.fence) + "\n"));
  EXPECT_THAT(run.output, HasSubstr("JOBSCHED_NODE_ID=n7\n"));
  EXPECT_GT(run.fence, 0);
}

// ---- The time base ---------------------------------------------------------------------------

// A store whose clock runs `skew` ahead of this machine's (another host's Redis), and whose
// TIME request and reply can be made slow (a request queued behind a long script, a reply that
// is late).
class SkewedClockStore final : public StoreWrapper {
 public:
  SkewedClockStore(Store& target, Duration skew) : StoreWrapper(target), skew_(skew) {}
  Result<std::optional<ServerTimePoint>> ServerTime() override {
    std::this_thread::sleep_for(request_delay.load());
    const auto t = std::chrono::time_point_cast<std::chrono::microseconds>(
        std::chrono::system_clock::now() + skew_.load());
    std::this_thread::sleep_for(reply_delay.load());
    return std::optional<ServerTimePoint>(t);
  }
  // The store's clock now, as a StoreClock reads it.
  TimePoint Now() const {
    return std::chrono::floor<Duration>(std::chrono::system_clock::now() + skew_.load());
  }
  void set_skew(Duration skew) { skew_ = skew; }

  std::atomic<Duration> request_delay{Duration(0)};
  std::atomic<Duration> reply_delay{Duration(0)};

 private:
  std::atomic<Duration> skew_;
};

// A request that waited before the store read its clock: half the round trip counted would put
// this node's clock 20 ms ahead, and an occurrence would start before its time.
TEST(TimeBaseTest, AStoreClockIsNeverAheadOfTheStore) {
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok());
  SkewedClockStore store(**sqlite, std::chrono::hours(1));
  store.request_delay = Duration(40);
  StoreClock clock;
  ASSERT_TRUE(clock.Sync(store).ok());
  EXPECT_LE(clock.precise_offset(), std::chrono::hours(1));
  EXPECT_GT(clock.precise_offset(), std::chrono::hours(1) - std::chrono::seconds(1));
  for (int i = 0; i < 100; ++i) {
    const TimePoint ours = clock.Now();
    ASSERT_LE(ours, store.Now());
  }
}

TEST(TimeBaseTest, TheSampleWithTheShortestRoundTripIsKept) {
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok());
  SkewedClockStore store(**sqlite, Duration(5000));
  StoreClock clock;
  ASSERT_TRUE(clock.Sync(store).ok());
  const auto synced = clock.precise_offset();
  EXPECT_LE(synced, Duration(5000));
  EXPECT_GT(synced, Duration(4000));

  // Late replies (a loaded store): their samples are wider than the one in use; it stays.
  store.reply_delay = Duration(100);
  ASSERT_TRUE(clock.Sync(store).ok());
  EXPECT_EQ(clock.precise_offset(), synced);

  // The store's clock stepped an hour: the samples disagree with the one in use, and win.
  store.set_skew(std::chrono::hours(1));
  ASSERT_TRUE(clock.Sync(store).ok());
  EXPECT_LE(clock.precise_offset(), std::chrono::hours(1));
  EXPECT_GT(clock.precise_offset(), std::chrono::hours(1) - std::chrono::seconds(1));
}

TEST(TimeBaseTest, ANodeStampsEverythingWithTheStoresClockNotItsOwn) {
  const Duration skew = std::chrono::hours(1);
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok());
  auto store = std::make_shared<SkewedClockStore>(**sqlite, skew);
  StoreClock clock;
  ASSERT_TRUE(clock.Sync(*store).ok());
  EXPECT_NEAR(static_cast<double>(clock.offset().count()), static_cast<double>(skew.count()),
              1000.0);
  EXPECT_NEAR(static_cast<double>((clock.Now() - Clock::Real()->Now()).count()),
              static_cast<double>(skew.count()), 1000.0);

  // A node without an injected clock takes the store's: its heartbeat and the lease of the run
  // it claims are an hour "ahead" of this machine, as every other node of the cluster sees them.
  auto node = Node::Create({.store = store, .node_id = "skewed", .concurrency = 1});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  const TimePoint local = Clock::Real()->Now();
  auto nodes = store->ListNodes();
  auto leader = store->GetLeader(local + skew);
  (*node)->Stop();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_NEAR(static_cast<double>(((*nodes)[0].heartbeat_at - local).count()),
              static_cast<double>(skew.count()), 5000.0);
  ASSERT_TRUE(leader.ok());
  ASSERT_TRUE(leader->has_value()) << "the lease is counted on the store's clock";
  EXPECT_EQ((*leader)->node, "skewed");
}

}  // namespace
}  // namespace jobsched
