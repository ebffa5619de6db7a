// Self-fencing: a node that cannot renew a lease before it ends stops the attempt and reports
// nothing; the run is executed again elsewhere after the lease expires.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "core/time_util.h"
#include "engine/node.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"

namespace jobsched {
namespace {

// The store becomes unreachable for every call while `down` is set.
class FaultyStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status Before(std::string_view op) override {
    if (down.load()) return Unavailable("store unreachable (injected) in " + std::string(op));
    return Status::Ok();
  }
  std::atomic<bool> down{false};
};

// A latch for handler threads.
class Signal {
 public:
  void Set() {
    std::lock_guard lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool WaitFor(std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [this] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

// A node of concurrency 1 (lease 10 s, renewed every 3 s) with a fake clock, on a store that
// the test makes unreachable.
class SelfFencingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sqlite = SqliteStore::Open({.path = ":memory:"});
    ASSERT_TRUE(sqlite.ok()) << sqlite.status().ToString();
    sqlite_ = std::move(*sqlite);
    faulty = std::make_shared<FaultyStore>(*sqlite_);
    auto node = Node::Create({.store = faulty,
                              .node_id = "n1",
                              .concurrency = 1,
                              .lease = Duration(10000),
                              .renew_interval = Duration(3000),
                              .clock = &clock});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
  }

  // Job "long" with builtin `handler`, triggered once; its run's id ("" after a failure).
  std::string TriggerLongJob(const std::string& handler) {
    JobSpec spec{.id = "long"};
    spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = handler};
    auto created = node_->jobs().Create(spec);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    auto ids = node_->jobs().Trigger("default", "long", {});
    EXPECT_TRUE(ids.ok() && !ids->empty()) << ids.status().ToString();
    return ids.ok() && !ids->empty() ? ids->front() : "";
  }

  FakeClock clock{*ParseRfc3339("2024-01-01T00:00:00Z")};
  std::unique_ptr<SqliteStore> sqlite_;
  std::shared_ptr<FaultyStore> faulty;
  std::unique_ptr<Node> node_;  // last: gone before the store and the clock
};

TEST_F(SelfFencingTest, UnrenewableLeaseStopsTheAttemptReportsNothingAndTheRunIsRecovered) {
  Node& n = *node_;

  Signal started, stopped;
  std::atomic<bool> saw_cancel{false};
  n.builtins().Register("hold", [&](RunContext& ctx) {
    started.Set();
    while (ctx.WaitFor(Duration(5))) {
    }  // WaitFor returns false once cancelled
    saw_cancel = ctx.cancelled();
    stopped.Set();
    return Status::Ok();
  });
  const std::string run_id = TriggerLongJob("hold");
  ASSERT_FALSE(run_id.empty());

  n.processor().Start();
  ASSERT_TRUE(started.WaitFor(std::chrono::seconds(20)));

  // The store goes away; 9 s into a 10 s lease the renewer must give the attempt up.
  faulty->down = true;
  clock.Advance(Duration(9000));
  n.processor().RenewOnce();
  ASSERT_TRUE(stopped.WaitFor(std::chrono::seconds(20))) << "the attempt was not stopped";
  EXPECT_TRUE(saw_cancel);

  // Nothing was reported: with the store back, the record still shows the attempt running.
  faulty->down = false;
  while (n.processor().active() > 0) std::this_thread::yield();
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, RunState::kRunning);
  EXPECT_EQ(run->attempts.size(), 1u);

  // After the lease, the reaper hands the run to a new attempt with a new fence (which the
  // processor, woken by the reaper, may already have claimed).
  clock.Advance(Duration(2000));
  auto recovered = n.reaper().Tick();
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 1);
  run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->state == RunState::kQueued || run->state == RunState::kRunning)
      << RunStateName(run->state);
  ASSERT_GE(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].outcome, "lease_lost");
  if (run->attempts.size() > 1) {
    EXPECT_GT(run->attempts[1].fence, run->attempts[0].fence);
  }
  n.processor().Stop(Duration(0));
}

// A self-fenced attempt whose handler has not returned yet when the store comes back is not
// renewed: its lease ends and the reaper hands the run on (a renewal would keep the given-up
// run "running" for another lease).
TEST_F(SelfFencingTest, AFencedAttemptIsNotRenewedWhenTheStoreIsBackBeforeItsHandlerReturns) {
  Node& n = *node_;
  Signal started, fenced, release;
  n.builtins().Register("stubborn", [&](RunContext& ctx) {
    started.Set();
    while (ctx.WaitFor(Duration(5))) {
    }
    fenced.Set();
    release.WaitFor(std::chrono::seconds(20));  // a handler slow to wind down
    return Status::Ok();
  });
  ASSERT_FALSE(TriggerLongJob("stubborn").empty());
  n.processor().Start();
  ASSERT_TRUE(started.WaitFor(std::chrono::seconds(20)));

  faulty->down = true;
  clock.Advance(Duration(9000));
  n.processor().RenewOnce();  // self-fences: the lease ends within the margin
  ASSERT_TRUE(fenced.WaitFor(std::chrono::seconds(20)));
  faulty->down = false;
  n.processor().RenewOnce();  // the store is back, the handler still in its wind-down

  clock.Advance(Duration(2000));  // past the lease taken at the claim
  auto recovered = n.reaper().Tick();
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  EXPECT_EQ(*recovered, 1) << "the fenced attempt's lease was renewed";
  release.Set();
  n.processor().Stop(Duration(0));
}

TEST_F(SelfFencingTest, RenewalWellBeforeTheLeaseEndsDoesNotFence) {
  Node& n = *node_;
  Signal started, release;
  std::atomic<bool> saw_cancel{false};
  n.builtins().Register("hold", [&](RunContext& ctx) {
    started.Set();
    release.WaitFor(std::chrono::seconds(20));
    saw_cancel = ctx.cancelled();
    return Status::Ok();
  });
  ASSERT_FALSE(TriggerLongJob("hold").empty());
  n.processor().Start();
  ASSERT_TRUE(started.WaitFor(std::chrono::seconds(20)));
  // A short outage early in the lease: renewal fails, but there is time left.
  faulty->down = true;
  clock.Advance(Duration(1000));
  n.processor().RenewOnce();
  faulty->down = false;
  release.Set();
  while (n.processor().active() > 0) std::this_thread::yield();
  EXPECT_FALSE(saw_cancel);
  auto runs = n.store().ListRuns("default", {.job_id = "long"});
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->items.size(), 1u);
  EXPECT_EQ(runs->items[0].state, RunState::kSucceeded);
  n.processor().Stop(Duration(0));
}

}  // namespace
}  // namespace jobsched
