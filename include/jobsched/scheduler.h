// JobScheduler: jobsched embedded in a C++ program.
//
//   jobsched::JobScheduler scheduler({.store_url = "sqlite:./data/jobs.db", .concurrency = 4});
//   scheduler.scheduleCron("report", "0 2 * * *", [](jobsched::RunContext& ctx) {
//     ctx.Log("building the report");
//     return jobsched::Status::Ok();
//   });
//   scheduler.start();
//   ...
//   scheduler.stop();  // running attempts finish within shutdown_grace or are handed back
//
// Handlers run on the scheduler's worker threads. A job whose handler is a C++ function is
// looked up by name (scheduleCron and scheduleOnce register it under the job id) on the node that
// claims the run: any node serving the job's queue may. In a cluster whose programs register
// different functions, give those jobs a queue served only by nodes that register them
// (SchedulerOptions::queues); elsewhere the attempt fails with "no handler named ...".
//
// Methods throw jobsched::Error for invalid input (the message names the field) and when the
// store cannot be reached; they are thread-safe.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/job.h>
#include <jobsched/status.h>

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace jobsched {

class Store;

// The exception of the public API: a Status that escaped.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status)
      : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// What a builtin handler sees of its run.
class RunContext {
 public:
  virtual ~RunContext() = default;
  virtual const std::string& tenant() const = 0;
  virtual const std::string& job_id() const = 0;
  virtual const std::string& run_id() const = 0;
  virtual int attempt() const = 0;    // 1-based
  virtual int64_t fence() const = 0;  // the attempt's fencing token (for idempotent effects)
  virtual const std::string& payload() const = 0;  // JSON text
  virtual TimePoint scheduled_at() const = 0;
  // The node executing this attempt (as shell jobs see JOBSCHED_NODE_ID).
  virtual const std::string& node_id() const = 0;
  // True once the attempt must stop: timeout, cancellation, or this node lost the lease.
  virtual bool cancelled() const = 0;
  // Waits up to `d` (Duration::max(): until cancelled); returns true when `d` has passed, false
  // early (at once) when cancelled.
  virtual bool WaitFor(Duration d) const = 0;
  // Appends a line to the run's captured output.
  virtual void Log(std::string_view line) = 0;
};

// A C++ job handler. Return OK for success; an error fails the attempt (retried per policy).
using JobHandler = std::function<Status(RunContext&)>;

enum class EventType {
  kRunStarted,  // the handler begins (an attempt that ended before it, e.g. cancelled, has none)
  kRunSucceeded,
  kRunFailed,
  kRunRetrying,
  kRunTimedOut,
  // An attempt that ended cancelled. A run cancelled while queued or waiting to retry (by
  // cancelRun, cancelJob or pauseJob) emits none: the call that cancelled it says so.
  kRunCancelled,
  kRunSkipped,  // an occurrence recorded skipped (overlap, misfire, a failed dependency)
  kJobChanged,
  kRunLeaseLost,  // this node stopped an attempt because it lost (or could not renew) its lease
  kRunRecovered,  // a run whose lease had expired was queued again (or failed) by this node;
                  // error: its lost attempt's
};

struct SchedulerEvent {
  EventType type;
  std::string tenant;
  std::string job_id;
  std::string run_id;  // empty for kJobChanged
  int attempt = 0;
  std::string error;
  std::string queue;
  TimePoint scheduled_at{};  // the occurrence's nominal time (runs)
  // When the attempt could start (runs): the occurrence's time plus its jitter, a retry's time,
  // or when the run was queued (a trigger, a run handed back after a lost lease).
  TimePoint available_at{};
  Duration duration{0};      // the attempt's run time (finished runs)
};

struct SchedulerOptions {
  // Where state lives: "sqlite:PATH", "sqlite::memory:". Default: "sqlite:./data/jobsched.db"
  std::string store_url = "sqlite:./data/jobsched.db";
  // A store to use instead of store_url (tests, custom backends). Default: none
  std::shared_ptr<Store> store;
  // Unique among live nodes; a node restarting with the same id recovers its own unfinished
  // attempts at once. Default: "" = the host name
  std::string node_id;
  // Worker threads (attempts running at once on this node). Default: 4
  int concurrency = 4;
  // Queues this node executes; empty = all. Default: all
  std::vector<std::string> queues;
  // Tenant of the jobs created through this object. Default: "default"
  std::string tenant = "default";
  // Lease of a running attempt, and how often leases are renewed. Default: 15 s, 5 s
  Duration lease{15000};
  Duration renew_interval{5000};
  // How often expired leases are looked for (by every node). Default: 1 s
  Duration reaper_interval{1000};
  // Heartbeats, and how long without one makes a node dead. Default: 2 s, 10 s
  Duration heartbeat_interval{2000};
  Duration node_dead_after{10000};
  // The leader lease's TTL and how often its holder renews it. Default: 10 s, 3 s
  Duration leader_ttl{10000};
  Duration leader_renew{3000};
  // Firing and claiming ahead, so that a burst of occurrences starts on time: occurrences are
  // fired up to `fire_ahead` before their time (their runs become claimable at the time; an
  // occurrence whose overlap decision depends on unfinished runs of its job waits for its
  // time), and an idle node claims runs up to `claim_ahead` before their time and starts each
  // when it comes. 0 turns either off. Default: 500 ms, 250 ms
  Duration fire_ahead{500};
  Duration claim_ahead{250};
  // On stop(): how long running attempts may take to finish before they are stopped and
  // handed back for re-execution. Default: 30 s
  Duration shutdown_grace{30000};
  // Shell attempts: SIGTERM, then SIGKILL after this. Default: 5 s
  Duration kill_grace{5000};
  // Shell attempts: a cgroup v2 directory under which each attempt gets a cgroup of its own,
  // with memory.max from limits.memory_mb and cpu.max from limits.cpu_cores, removed after it;
  // stopping the attempt then kills everything it started, also what left its process group. Where
  // the directory is not writable, attempts run with rlimits only (a warning is logged once).
  // Default: none
  std::string cgroup_parent;
  // Run history kept per job: the newest N, and anything younger than the age. Default: 100, 7 d
  int keep_runs_per_job = 100;
  Duration keep_runs_for{int64_t{7} * 24 * 3600 * 1000};
  // The clock (tests pass a FakeClock). Default: the system clock, offset to the store's clock
  // when it has one (Redis TIME), re-synced every 5 s
  Clock* clock = nullptr;
  // Whether this node executes runs (false: it only fires and serves). Default: true
  bool execute = true;
};

class Node;

class JobScheduler {
 public:
  // Opens the store; throws Error if it cannot. Nothing fires before start().
  explicit JobScheduler(SchedulerOptions options = {});
  ~JobScheduler();  // stop()s if running
  JobScheduler(const JobScheduler&) = delete;
  JobScheduler& operator=(const JobScheduler&) = delete;

  // Creates or replaces job `job_id` with a cron schedule (UTC, or `timezone`) running
  // `handler`, registered under the job id, with the defaults of a JobSpec: one attempt (no
  // retry), no timeout; schedule() sets those. Returns true if the job was created, false if it
  // replaced an existing one (which stays paused if it was: a program that schedules its jobs at
  // every start keeps an operator's pause). The id may not be that of a handler every node ships
  // (noop, sleep), and the handler may not be empty. Nothing changes if it throws.
  bool scheduleCron(const std::string& job_id, const std::string& cron_expression,
                    JobHandler handler);
  bool scheduleCron(const std::string& job_id, const std::string& cron_expression,
                    const std::string& timezone, JobHandler handler);
  // Creates or replaces a one-time job at `time`, as scheduleCron does.
  bool scheduleOnce(const std::string& job_id, TimePoint time, JobHandler handler);
  // Creates or replaces a job from a full spec (its tenant is this scheduler's).
  JobRecord schedule(JobSpec spec);

  // Removes the job's schedule and cancels its queued runs (and running ones with
  // kill_running). Returns false if there was no such job (an id no job can have included).
  bool cancelJob(const std::string& job_id, bool kill_running = false);
  // Returns false if there is no such job, or it was not active (resp. not paused): already
  // paused, or completed (a one-time job that fired, a schedule past its end_at).
  bool pauseJob(const std::string& job_id);
  bool resumeJob(const std::string& job_id);

  // Runs the job now, once per payload (JSON texts; none = one run with the job's payload); not
  // subject to the overlap policy. Returns the new run ids. Throws Error (kNotFound) for an
  // unknown job.
  std::vector<std::string> trigger(const std::string& job_id,
                                   const std::vector<std::string>& payloads = {});

  std::optional<JobRecord> getJob(const std::string& job_id);
  // Newest first, at most `limit` (1 to 1000) of them.
  std::vector<RunRecord> listRuns(const std::string& job_id, int limit = 100);
  std::optional<RunRecord> getRun(const std::string& run_id);
  // Cancels a queued or retry-waiting run, or asks a running one to stop (it ends cancelled
  // when its attempt has stopped). Returns false if there is no such run or it already ended;
  // true again for a running run asked before.
  bool cancelRun(const std::string& run_id);

  // Registers a named C++ handler for jobs with {"type": "builtin", "name": name}, replacing
  // one registered under that name before. Not empty, and not a name every node ships (noop,
  // sleep).
  void registerHandler(const std::string& name, JobHandler handler);
  // Calls `callback` for events of runs executed or fired by this node and jobs changed
  // through it. Callbacks of runs run on internal threads, those of kJobChanged on the thread
  // that changed the job; they must not block. Returns an id for off().
  int64_t on(EventType type, std::function<void(const SchedulerEvent&)> callback);
  // Removes a callback added by on(); a call of it already under way may still finish.
  void off(int64_t id);

  // Not from a handler or an event callback: they run on the threads these wait for (throws
  // kFailedPrecondition). Thread-safe with each other. stop() waits for running C++ handlers
  // to return: after shutdown_grace their cancellation flag is set and their runs are handed
  // back, but a function that never looks at the flag holds stop() until it returns.
  void start();
  void stop();

  Store& store();
  Node& node();

 private:
  JobRecord Upsert(JobSpec spec, bool* created, bool keep_paused = false);
  bool ScheduleWithHandler(JobSpec spec, JobHandler handler);

  std::unique_ptr<Node> node_;
  std::string tenant_;
};

}  // namespace jobsched
