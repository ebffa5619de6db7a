// A whole engine Node in-process for tests: SQLite in memory, a FakeClock the test moves by hand,
// and the actors driven one pass at a time (SchedulerActor::Tick, Reaper::Tick, ...). Only the
// processor (and, where a test asks, the dependency actor) runs on its own threads; tests wait
// for its results through the node's EventBus, never by sleeping.
//
//   EngineHarness h;                       // clock at kT0 = 2024-01-01T00:00:00Z
//   h.StartProcessor();
//   h.Create(CronSpec("job", "* * * * *"));
//   h.Advance(std::chrono::minutes(1));
//   h.Tick();                              // fires job@<kT0 + 1 min>
//   ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, RunId("job", kT0 + 1min)));
//
// Handlers that must stay "running" block on a Gate the test opens; a Gate also lets go when the
// attempt is cancelled, so a harness torn down mid-run never hangs.
#pragma once

#include <gtest/gtest.h>
#include <jobsched/clock.h>
#include <jobsched/job.h>
#include <jobsched/scheduler.h>
#include <jobsched/store.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "engine/node.h"

namespace jobsched::testing {

// 2024-01-01T00:00:00Z.
inline const TimePoint kT0 = FromUnixMillis(1704067200000);

// How long a test waits for something the engine does in real time before failing. Generous:
// reaching it means the engine never did it, not that it was slow.
inline constexpr std::chrono::seconds kGuard{20};

// A UTC instant from a calendar date and time of day.
inline TimePoint Utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  using namespace std::chrono;
  return time_point_cast<Duration>(sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} +
                                   seconds{s});
}

// The id of a scheduled occurrence: <jobId>@<scheduledMs>.
inline std::string RunId(const std::string& job_id, TimePoint scheduled_at) {
  return job_id + "@" + std::to_string(ToUnixMillis(scheduled_at));
}

inline const char* EventTypeName(EventType t) {
  switch (t) {
    case EventType::kRunStarted:
      return "run_started";
    case EventType::kRunSucceeded:
      return "run_succeeded";
    case EventType::kRunFailed:
      return "run_failed";
    case EventType::kRunRetrying:
      return "run_retrying";
    case EventType::kRunTimedOut:
      return "run_timed_out";
    case EventType::kRunCancelled:
      return "run_cancelled";
    case EventType::kRunSkipped:
      return "run_skipped";
    case EventType::kJobChanged:
      return "job_changed";
    case EventType::kRunLeaseLost:
      return "run_lease_lost";
    case EventType::kRunRecovered:
      return "run_recovered";
  }
  return "?";
}

inline constexpr EventType kAllEventTypes[] = {EventType::kRunStarted,   EventType::kRunSucceeded,
                                               EventType::kRunFailed,    EventType::kRunRetrying,
                                               EventType::kRunTimedOut,  EventType::kRunCancelled,
                                               EventType::kRunSkipped,   EventType::kJobChanged,
                                               EventType::kRunLeaseLost, EventType::kRunRecovered};

// Every SchedulerEvent of a node, in emission order, with waits that fail the test after kGuard.
class EventLog {
 public:
  void Attach(EventBus& bus) {
    for (EventType t : kAllEventTypes) {
      bus.On(t, [this](const SchedulerEvent& e) { Push(e); });
    }
  }

  void Push(const SchedulerEvent& e) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(e);
    }
    cv_.notify_all();
  }

  // Waits until `done(events so far)` holds. On timeout: adds a test failure naming `what`,
  // listing the events seen, and returns false.
  bool WaitUntil(const std::function<bool(const std::vector<SchedulerEvent>&)>& done,
                 const std::string& what) {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, kGuard, [&] { return done(events_); })) return true;
    ADD_FAILURE() << "timed out after " << kGuard.count() << " s waiting for " << what
                  << "; events seen:\n"
                  << DescribeLocked();
    return false;
  }

  // Waits for an event of `type` about run `run_id` (and `attempt`, when > 0).
  bool Wait(EventType type, const std::string& run_id, int attempt = 0) {
    return WaitUntil(
        [&](const std::vector<SchedulerEvent>& events) {
          return std::any_of(events.begin(), events.end(), [&](const SchedulerEvent& e) {
            return e.type == type && e.run_id == run_id && (attempt == 0 || e.attempt == attempt);
          });
        },
        std::string(EventTypeName(type)) + " of " + run_id +
            (attempt > 0 ? " attempt " + std::to_string(attempt) : ""));
  }

  // Waits until `n` events of `type` about job `job_id` were seen.
  bool WaitForJob(EventType type, const std::string& job_id, int n = 1) {
    return WaitUntil(
        [&](const std::vector<SchedulerEvent>& events) {
          return CountIn(events, type, job_id) >= n;
        },
        std::to_string(n) + " x " + EventTypeName(type) + " of job " + job_id);
  }

  int Count(EventType type, const std::string& job_id = "") const {
    std::lock_guard lock(mu_);
    return CountIn(events_, type, job_id);
  }

  bool Seen(EventType type, const std::string& run_id) const {
    std::lock_guard lock(mu_);
    return std::any_of(events_.begin(), events_.end(), [&](const SchedulerEvent& e) {
      return e.type == type && e.run_id == run_id;
    });
  }

  std::vector<SchedulerEvent> All() const {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  static int CountIn(const std::vector<SchedulerEvent>& events, EventType type,
                     const std::string& job_id) {
    return static_cast<int>(
        std::count_if(events.begin(), events.end(), [&](const SchedulerEvent& e) {
          return e.type == type && (job_id.empty() || e.job_id == job_id);
        }));
  }

  std::string DescribeLocked() const {
    std::ostringstream out;
    for (const SchedulerEvent& e : events_) {
      out << "  " << EventTypeName(e.type) << " job=" << e.job_id << " run=" << e.run_id
          << " attempt=" << e.attempt << (e.error.empty() ? "" : " error=" + e.error) << "\n";
    }
    return out.str();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SchedulerEvent> events_;  // guarded by mu_
};

// Keeps handlers "running" until the test opens it (or their attempt is cancelled).
class Gate {
 public:
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

  // Blocks until Open() (returns true) or until the attempt is cancelled (returns false).
  // Cancellation is not a condition-variable notification, so it is looked at every 2 ms: this
  // bounds the handler's reaction time, it does not synchronise the test.
  bool Wait(const RunContext& ctx) {
    std::unique_lock lock(mu_);
    while (!open_) {
      if (ctx.cancelled()) return false;
      cv_.wait_for(lock, std::chrono::milliseconds(2));
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;  // guarded by mu_
};

// What a handler saw of its attempt, by run id (last attempt wins).
struct Observation {
  int attempt = 0;
  std::string payload;
  std::string node;         // RunContext::node_id()
  bool cancelled = false;   // RunContext::cancelled() when the handler returned
  int others_running = -1;  // other runs of the job in state running when the handler began
};

class Observations {
 public:
  // A handler began, at `now` on the test's clock, and took its Observation::others_running
  // (before it blocks on anything).
  void Enter(const std::string& run_id, TimePoint now) {
    {
      std::lock_guard lock(mu_);
      entered_.push_back(run_id);
      began_[run_id].push_back(now);
    }
    cv_.notify_all();
  }
  // When each attempt's handler of a run began, on the test's clock, in order.
  std::vector<TimePoint> Began(const std::string& run_id) const {
    std::lock_guard lock(mu_);
    auto it = began_.find(run_id);
    return it == began_.end() ? std::vector<TimePoint>{} : it->second;
  }
  // Waits until `n` handler invocations began; fails the test after kGuard.
  bool WaitEntered(int n) {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, kGuard, [&] { return static_cast<int>(entered_.size()) >= n; }))
      return true;
    ADD_FAILURE() << "timed out after " << kGuard.count() << " s waiting for " << n
                  << " handlers to begin; " << entered_.size() << " did";
    return false;
  }
  void Put(const std::string& run_id, const Observation& o) {
    std::lock_guard lock(mu_);
    by_run_[run_id] = o;
    order_.push_back(run_id);
  }
  std::optional<Observation> Get(const std::string& run_id) const {
    std::lock_guard lock(mu_);
    auto it = by_run_.find(run_id);
    if (it == by_run_.end()) return std::nullopt;
    return it->second;
  }
  // Run ids in the order their handlers finished (one entry per attempt).
  std::vector<std::string> Order() const {
    std::lock_guard lock(mu_);
    return order_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> entered_;                     // guarded by mu_
  std::map<std::string, std::vector<TimePoint>> began_;  // guarded by mu_
  std::map<std::string, Observation> by_run_;            // guarded by mu_
  std::vector<std::string> order_;                       // guarded by mu_
};

struct HarnessOptions {
  TimePoint start = kT0;
  int concurrency = 2;
  int keep_runs_per_job = 100;
  Duration keep_runs_for{int64_t{7} * 24 * 3600 * 1000};
};

inline JobSpec BuiltinSpec(const std::string& id, const std::string& handler = "noop") {
  JobSpec spec;
  spec.id = id;
  spec.handler.type = HandlerSpec::Type::kBuiltin;
  spec.handler.name = handler;
  return spec;
}

inline JobSpec CronSpec(const std::string& id, const std::string& cron,
                        const std::string& handler = "noop") {
  JobSpec spec = BuiltinSpec(id, handler);
  spec.schedule.kind = Schedule::Kind::kCron;
  spec.schedule.cron = cron;
  return spec;
}

class EngineHarness {
 public:
  explicit EngineHarness(HarnessOptions options = {}) : clock(options.start) {
    SchedulerOptions o;
    o.store_url = "sqlite::memory:";
    o.node_id = "test-node";
    o.concurrency = options.concurrency;
    o.keep_runs_per_job = options.keep_runs_per_job;
    o.keep_runs_for = options.keep_runs_for;
    o.clock = &clock;
    auto node = Node::Create(std::move(o));
    if (!node.ok()) {
      ADD_FAILURE() << "Node::Create: " << node.status().ToString();
      return;
    }
    node_ = std::move(node).value();
    events.Attach(node_->events());
  }

  ~EngineHarness() {
    for (Gate& g : gates_) g.Open();
    if (!node_) return;
    // Stop the threads this harness started before the node's members go away (the node only
    // stops its actors in Node::Stop, which a harness that never called Start does not reach).
    if (dependencies_started_) node_->dependencies().Stop();
    if (processor_started_) node_->processor().Stop(Duration(0));
    node_.reset();
  }

  EngineHarness(const EngineHarness&) = delete;
  EngineHarness& operator=(const EngineHarness&) = delete;

  bool ok() const { return node_ != nullptr; }
  Node& node() { return *node_; }
  Store& store() { return node_->store(); }

  void StartProcessor() {
    processor_started_ = true;
    node_->processor().Start();
  }
  void StartDependencies() {
    dependencies_started_ = true;
    node_->dependencies().Start();
  }

  // A gate owned by the harness (opened when the harness ends).
  Gate& NewGate() { return gates_.emplace_back(); }

  // Registers a handler that records what it saw (seen), optionally blocks on `gate`, then
  // returns `result(ctx)` (OK when not given).
  void RegisterProbe(const std::string& name, Gate* gate = nullptr,
                     std::function<Status(RunContext&)> result = nullptr) {
    node_->builtins().Register(name, [this, gate, result](RunContext& ctx) {
      Observation o{.attempt = ctx.attempt(), .payload = ctx.payload(), .node = ctx.node_id()};
      auto running = store().ListRuns(
          ctx.tenant(), RunFilter{.job_id = ctx.job_id(), .state = RunState::kRunning});
      if (running.ok()) {
        o.others_running = static_cast<int>(
            std::count_if(running->items.begin(), running->items.end(),
                          [&](const RunRecord& r) { return r.id != ctx.run_id(); }));
      }
      seen.Enter(ctx.run_id(), clock.Now());  // after looking around: WaitEntered() covers that
      const bool opened = gate == nullptr || gate->Wait(ctx);
      Status status = !opened  ? Status(StatusCode::kFailedPrecondition, "cancelled while blocked")
                      : result ? result(ctx)
                               : Status::Ok();
      o.cancelled = ctx.cancelled();
      seen.Put(ctx.run_id(), o);
      return status;
    });
  }

  Result<JobRecord> Create(JobSpec spec) { return node_->jobs().Create(std::move(spec)); }

  // Creates the job or fails the test (the returned record is then default).
  JobRecord MustCreate(JobSpec spec) {
    const std::string id = spec.id;
    auto job = Create(std::move(spec));
    if (!job.ok()) {
      ADD_FAILURE() << "creating job " << id << ": " << job.status().ToString();
      return {};
    }
    return *job;
  }

  // One scheduler pass at the clock's now; the runs it created (-1 after a test failure).
  int Tick() {
    auto n = node_->scheduler().Tick();
    if (!n.ok()) {
      ADD_FAILURE() << "SchedulerActor::Tick: " << n.status().ToString();
      return -1;
    }
    return *n;
  }

  // Ticks until a pass creates nothing (at most 20 passes); the runs created in total.
  int TickUntilIdle() {
    int total = 0;
    for (int i = 0; i < 20; ++i) {
      const int n = Tick();
      if (n <= 0) return total;
      total += n;
    }
    ADD_FAILURE() << "the scheduler still creates runs after 20 passes at the same instant";
    return total;
  }

  // Moves the fake clock and lets the processor look again at what became claimable.
  void Advance(Duration d) {
    clock.Advance(d);
    if (processor_started_) node_->processor().Wake();
  }
  void SetTime(TimePoint t) {
    clock.Set(t);
    if (processor_started_) node_->processor().Wake();
  }

  std::vector<std::string> Trigger(const std::string& job_id,
                                   const std::vector<std::string>& payloads = {"null"}) {
    auto ids = node_->jobs().Trigger("default", job_id, payloads);
    if (!ids.ok()) {
      ADD_FAILURE() << "Trigger(" << job_id << "): " << ids.status().ToString();
      return {};
    }
    return *ids;
  }

  std::optional<RunRecord> Run(const std::string& run_id) {
    auto run = store().GetRun("default", run_id);
    if (!run.ok()) {
      ADD_FAILURE() << "GetRun(" << run_id << "): " << run.status().ToString();
      return std::nullopt;
    }
    return *run;
  }

  // Every run of the job, by scheduled_at, then created_at, then id.
  std::vector<RunRecord> Runs(const std::string& job_id) {
    auto page = store().ListRuns("default", RunFilter{.job_id = job_id, .limit = 1000});
    if (!page.ok()) {
      ADD_FAILURE() << "ListRuns(" << job_id << "): " << page.status().ToString();
      return {};
    }
    std::vector<RunRecord> runs = page->items;
    std::sort(runs.begin(), runs.end(), [](const RunRecord& a, const RunRecord& b) {
      return std::tie(a.scheduled_at, a.created_at, a.id) <
             std::tie(b.scheduled_at, b.created_at, b.id);
    });
    return runs;
  }

  std::optional<JobRecord> Job(const std::string& id) {
    auto job = store().GetJob("default", id);
    if (!job.ok()) return std::nullopt;
    return *job;
  }

  // Declared before node_: they outlive the node's threads.
  FakeClock clock;
  EventLog events;
  Observations seen;

 private:
  std::deque<Gate> gates_;
  bool processor_started_ = false;
  bool dependencies_started_ = false;
  std::unique_ptr<Node> node_;
};

}  // namespace jobsched::testing
