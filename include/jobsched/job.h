// Jobs and runs: the data model shared by the library API, the stores, the REST API and the
// CLI. Plain structs with the defaults of docs/job-spec.md written on every field; the JSON form
// is read and written by src/core/job_codec.h.
#pragma once

#include <jobsched/clock.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace jobsched {

// When a job fires. Exactly one kind; kNone = manual or dependency-triggered only.
struct Schedule {
  enum class Kind { kNone, kCron, kAt, kEvery };
  Kind kind = Kind::kNone;
  std::string cron;                   // kCron: the expression (docs/cron.md). Default: ""
  std::string timezone = "UTC";       // kCron: IANA zone. Default: "UTC"
  TimePoint at{};                     // kAt: the instant
  Duration every{0};                  // kEvery: the interval (> 0)
  Duration jitter{0};                 // random delay in [0, jitter] added to each fire. Default: 0
  std::optional<TimePoint> start_at;  // no fire before. Default: none
  std::optional<TimePoint> end_at;    // no fire after; the job completes. Default: none
};

struct HandlerSpec {
  enum class Type { kBuiltin, kShell, kHttp };
  Type type = Type::kBuiltin;
  // kBuiltin: the name of a function registered on the nodes ("noop", "sleep" ship built in).
  std::string name;
  // kShell: argv, executed with execve (no shell unless argv is one); extra environment; cwd.
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  std::string cwd;  // Default: "" (the node's working directory)
  // kHttp: success is a 2xx status.
  std::string method = "GET";
  std::string url;
  std::map<std::string, std::string> headers;
  std::string body;
};

enum class Backoff { kFixed, kExponential };

struct RetryPolicy {
  int max_attempts = 1;                     // 1 = no retry. Default: 1
  Backoff backoff = Backoff::kExponential;  // Default: exponential
  Duration initial_delay{1000};             // Default: 1 s
  Duration max_delay{300000};               // Default: 5 min
  double jitter = 0.2;                      // fraction of the delay, 0-1. Default: 0.2
};

enum class Overlap { kSkip, kAllow, kQueue, kReplace };

enum class Misfire { kFireOnce, kSkip, kFireAll };

struct MisfirePolicy {
  Misfire policy = Misfire::kFireOnce;  // Default: fire_once
  Duration grace{60000};                // later than this is a misfire. Default: 60 s
};

struct Limits {
  int64_t cpu_seconds = 0;           // RLIMIT_CPU; 0 = none. Default: 0
  int64_t memory_mb = 0;             // RLIMIT_AS (+ cgroup memory.max); 0 = none. Default: 0
  int64_t max_output_bytes = 65536;  // tail of stdout+stderr / response body kept. Default: 64 KiB
  double cpu_cores = 0;              // cgroup cpu.max (needs a cgroup parent); 0 = none. Default: 0
};

struct JobSpec {
  std::string id;                  // [A-Za-z0-9._:-]{1,128}, unique per tenant
  std::string tenant = "default";  // Default: "default"
  std::string queue = "default";   // Default: "default"
  Schedule schedule;
  HandlerSpec handler;
  std::string payload = "null";  // JSON text handed to the handler. Default: null
  int priority = 5;              // 0-9, higher first. Default: 5
  RetryPolicy retry;
  Duration timeout{0};  // 0 = none. Default: 0
  Overlap overlap = Overlap::kSkip;
  MisfirePolicy misfire;
  Limits limits;
  std::vector<std::string> depends_on;  // job ids in the same tenant; no time schedule then
  std::map<std::string, std::string> labels;
  bool paused = false;
};

enum class JobState {
  kActive,     // will fire (unless paused)
  kPaused,     // fires nothing; occurrences missed meanwhile follow the misfire policy
  kCompleted,  // a one-time job after its run, a cron job after its end_at
};

// A job as stored: the spec plus its schedule state.
struct JobRecord {
  JobSpec spec;
  int64_t version = 0;  // bumped by every change of the spec or of its state by a user
  JobState state = JobState::kActive;
  std::optional<TimePoint> next_fire;  // the next occurrence's nominal time; none = nothing due
  // Dependency barrier: runs of the dependencies that finished after this count for the next
  // trigger.
  TimePoint dependency_since{};
  TimePoint created_at{};
  TimePoint updated_at{};
};

enum class RunState {
  kQueued,
  kRunning,
  kRetryWait,
  kSucceeded,
  kFailed,
  kTimedOut,
  kCancelled,
  kSkipped
};
enum class RunReason { kSchedule, kManual, kDependency, kMisfireCatchup };

// One execution of a run on one node.
struct AttemptRecord {
  int number = 0;  // 1-based
  std::string node;
  int64_t fence = 0;
  TimePoint started_at{};
  std::optional<TimePoint> finished_at;
  // succeeded, failed, timed_out, cancelled, lease_lost, running
  std::string outcome = "running";
  std::string error;
};

struct RunRecord {
  std::string id;  // <jobId>@<scheduledMs>, <jobId>@m<ms>-<rand>, <jobId>@d<hash>
  std::string job_id;
  std::string tenant = "default";
  std::string queue = "default";
  int priority = 5;
  TimePoint scheduled_at{};  // the nominal occurrence time (or the trigger time)
  TimePoint available_at{};  // not claimable before (jitter, retry backoff)
  TimePoint created_at{};
  RunReason reason = RunReason::kSchedule;
  RunState state = RunState::kQueued;
  int attempt = 0;  // attempts started so far
  int max_attempts = 1;
  bool exclusive = false;  // overlap "queue": not claimed while another run of the job runs
  std::string node;        // holder of the current or last attempt
  int64_t fence = 0;       // the current attempt's fencing token
  std::optional<TimePoint> lease_deadline;
  std::optional<TimePoint> started_at;
  std::optional<TimePoint> finished_at;
  std::optional<int> exit_code;
  std::optional<int> http_status;
  std::string output;  // tail, capped by limits.max_output_bytes
  // Set when `output` holds only the end of the output: the length of the whole, in bytes. The
  // handler wrote more than limits.max_output_bytes, or a list cut it (RunFilter::output_tail).
  // Unset: `output` is whole.
  std::optional<int64_t> output_bytes;
  std::string error;
  std::string payload = "null";  // JSON text
  bool cancel_requested = false;
  int leases_lost = 0;
  std::vector<AttemptRecord> attempts;
};

bool IsTerminal(RunState state);
const char* RunStateName(RunState state);
const char* RunReasonName(RunReason reason);
const char* JobStateName(JobState state);
const char* OverlapName(Overlap overlap);
const char* MisfireName(Misfire misfire);

}  // namespace jobsched
