// Self-fencing: a node that cannot renew a lease before it ends stops the attempt and reports
// nothing; the run is executed again elsewhere after the lease expires.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <span>
#include <vector>

#include "core/time_util.h"
#include "engine/node.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"

namespace jobsched {
namespace {

// The store becomes unreachable for every call while `down` is set, and for the writes of
// results while `results_down` is set.
class FaultyStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status Before(std::string_view op) override {
    const bool result = op == "Complete" || op == "CompleteMany";
    if (down.load() || (result && results_down.load()) ||
        (op == "RenewLeases" && renewals_down.load())) {
      if (result) ++results_refused;
      return Unavailable("store unreachable (injected) in " + std::string(op));
    }
    return Status::Ok();
  }
  // The next `lost_replies` writes of results are made, but answered as unreachable (a reply
  // lost to a timeout).
  std::vector<Status> CompleteMany(std::span<const Completion> completions) override {
    std::vector<Status> out = StoreWrapper::CompleteMany(completions);
    if (lost_replies.load() > 0) {
      --lost_replies;
      for (Status& s : out) s = Unavailable("reply lost (injected)");
    }
    return out;
  }
  std::atomic<bool> down{false};
  std::atomic<int> lost_replies{0};
  std::atomic<bool> results_down{false};
  std::atomic<bool> renewals_down{false};
  std::atomic<int> results_refused{0};
};

// Whether `done` holds within 20 s (polled: the events are in other threads).
template <typename F>
bool Eventually(F done) {
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > limit) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

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

  // Job "long" whose first attempt holds until `release_held` (later ones return at once),
  // triggered once, with the processor started and that attempt running. The run's id ("" after a
  // failure).
  std::string StartHeldRun() {
    node_->builtins().Register("once", [this](RunContext&) {
      if (++held_executions == 1) {
        held_started.Set();
        release_held.WaitFor(std::chrono::seconds(20));
      }
      return Status::Ok();
    });
    const std::string run_id = TriggerLongJob("once");
    node_->processor().Start();
    EXPECT_TRUE(held_started.WaitFor(std::chrono::seconds(20)));
    return run_id;
  }

  Signal held_started, release_held;
  std::atomic<int> held_executions{0};
  FakeClock clock{*ParseRfc3339("2024-01-01T00:00:00Z")};
  std::unique_ptr<SqliteStore> sqlite_;
  std::shared_ptr<FaultyStore> faulty;
  std::unique_ptr<Node> node_;  // last: gone before the store and the clock
};

TEST_F(SelfFencingTest, UnrenewableLeaseStopsTheAttemptReportsNothingAndTheRunIsRecovered) {
  Node& n = *node_;
  // What the metrics count (jobsched_leases_lost_total, jobsched_runs_recovered_total).
  std::atomic<int> lost{0}, recovered_events{0};
  std::mutex recovered_mu;
  std::string recovered_error;
  n.events().On(EventType::kRunLeaseLost, [&](const SchedulerEvent&) { ++lost; });
  n.events().On(EventType::kRunRecovered, [&](const SchedulerEvent& e) {
    std::lock_guard lock(recovered_mu);
    recovered_error = e.error;
    ++recovered_events;
  });

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
  EXPECT_TRUE(Eventually([&] { return lost.load() == 1; })) << lost.load();

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
  EXPECT_EQ(recovered_events.load(), 1);
  {
    std::lock_guard lock(recovered_mu);
    EXPECT_FALSE(recovered_error.empty()) << "the event says why: its lost attempt's error";
  }
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

// A result the store cannot take (an outage as the attempt ends) is kept and written when the
// store is back: the finished run is not run again, and the attempt is not self-fenced while it
// waits (nothing of it runs any more).
TEST_F(SelfFencingTest, AResultTheStoreCannotTakeIsWrittenWhenItIsBack) {
  Node& n = *node_;
  const std::string run_id = StartHeldRun();
  ASSERT_FALSE(run_id.empty());

  faulty->down = true;
  release_held.Set();
  ASSERT_TRUE(Eventually([&] { return faulty->results_refused.load() >= 2; }))
      << "the result was not written again";
  EXPECT_EQ(n.processor().active(), 1) << "the result was dropped";
  clock.Advance(Duration(9000));  // within the renewal margin of the lease
  n.processor().RenewOnce();

  faulty->down = false;
  ASSERT_TRUE(Eventually([&] { return n.processor().active() == 0; }));
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->state, RunState::kSucceeded);
  ASSERT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].outcome, "succeeded");
  EXPECT_EQ(held_executions.load(), 1);
  n.processor().Stop(Duration(0));
}

// A write whose reply was lost (a timeout after the command was sent) may have landed: the
// second write finds the attempt ended by this very result, and the run is reported as it
// ended (its event, its dependents), not as a rejected result.
TEST_F(SelfFencingTest, AResultWhoseReplyWasLostIsNotReportedAsRejected) {
  Node& n = *node_;
  std::atomic<int> succeeded{0};
  n.events().On(EventType::kRunSucceeded, [&](const SchedulerEvent&) { ++succeeded; });
  const std::string run_id = StartHeldRun();
  ASSERT_FALSE(run_id.empty());
  faulty->lost_replies = 1;
  release_held.Set();
  ASSERT_TRUE(Eventually([&] { return n.processor().active() == 0; }));
  EXPECT_EQ(faulty->lost_replies.load(), 0) << "the reply was not lost";
  EXPECT_EQ(succeeded.load(), 1) << "the run's end was not reported";
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->attempts.size(), 1u);
  n.processor().Stop(Duration(0));
}

// While its result waits, the attempt's lease is renewed: the reaper does not give the finished
// run to a new attempt when the lease it had as it ended runs out.
TEST_F(SelfFencingTest, TheLeaseOfAResultWaitingForTheStoreIsRenewed) {
  Node& n = *node_;
  const std::string run_id = StartHeldRun();
  ASSERT_FALSE(run_id.empty());

  faulty->results_down = true;  // only the writes of results fail
  release_held.Set();
  ASSERT_TRUE(Eventually([&] { return faulty->results_refused.load() >= 1; }));
  clock.Advance(Duration(8000));
  n.processor().RenewOnce();      // lease now ends at 18 s
  clock.Advance(Duration(4000));  // 12 s: past the lease taken at the claim
  auto recovered = n.reaper().Tick();
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  EXPECT_EQ(*recovered, 0) << "the waiting result's lease was not renewed";

  faulty->results_down = false;
  ASSERT_TRUE(Eventually([&] { return n.processor().active() == 0; }));
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->state, RunState::kSucceeded);
  EXPECT_EQ(run->attempts.size(), 1u);
  n.processor().Stop(Duration(0));
}

// A result kept through an outage longer than its lease: the run went to a new attempt (a
// new fence), and the old result is refused as stale, not recorded over the new attempt.
TEST_F(SelfFencingTest, AResultKeptPastItsLeaseIsRefusedAsStale) {
  Node& n = *node_;
  const std::string run_id = StartHeldRun();
  ASSERT_FALSE(run_id.empty());
  faulty->results_down = true;
  faulty->renewals_down = true;
  release_held.Set();
  ASSERT_TRUE(Eventually([&] { return faulty->results_refused.load() >= 1; }));
  // Past the lease: the reaper (another node's, say) gives the run to a new attempt, whose
  // result waits too.
  clock.Advance(Duration(11000));
  auto recovered = n.reaper().Tick();
  ASSERT_TRUE(recovered.ok()) << recovered.status().ToString();
  ASSERT_EQ(*recovered, 1);
  ASSERT_TRUE(Eventually([&] { return held_executions.load() == 2; }));
  faulty->results_down = false;
  faulty->renewals_down = false;
  ASSERT_TRUE(Eventually([&] { return n.processor().active() == 0; }));
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->state, RunState::kSucceeded);
  ASSERT_EQ(run->attempts.size(), 2u);
  EXPECT_EQ(run->attempts[0].outcome, "lease_lost") << "the stale result was recorded";
  EXPECT_EQ(run->attempts[1].outcome, "succeeded");
  EXPECT_GT(run->attempts[1].fence, run->attempts[0].fence);
  n.processor().Stop(Duration(0));
}

// A node that stops (SIGTERM) while an attempt runs past the grace stops it and hands its run
// back at once: the attempt ends as lease_lost and the run is queued for a new attempt.
TEST_F(SelfFencingTest, StoppingHandsARunningAttemptBack) {
  Node& n = *node_;
  std::atomic<int> lost{0};
  n.events().On(EventType::kRunLeaseLost, [&](const SchedulerEvent&) { ++lost; });
  Signal started;
  n.builtins().Register("hold", [&](RunContext& ctx) {
    started.Set();
    while (ctx.WaitFor(Duration(5))) {
    }
    return Status::Ok();
  });
  const std::string run_id = TriggerLongJob("hold");
  ASSERT_FALSE(run_id.empty());
  n.processor().Start();
  ASSERT_TRUE(started.WaitFor(std::chrono::seconds(20)));
  n.processor().Stop(Duration(0));
  auto run = n.store().GetRun("default", run_id);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->state, RunState::kQueued) << RunStateName(run->state);
  ASSERT_EQ(run->attempts.size(), 1u);
  EXPECT_EQ(run->attempts[0].outcome, "lease_lost");
  EXPECT_EQ(lost.load(), 0) << "a stop is not a lost lease";
}

}  // namespace
}  // namespace jobsched
