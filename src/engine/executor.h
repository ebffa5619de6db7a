// Runs one attempt of a run with the handler its job names: builtin, shell or http.
#pragma once

#include <jobsched/job.h>

#include <atomic>
#include <optional>
#include <string>

#include "engine/builtins.h"
#include "exec/cancellation.h"

namespace jobsched {

struct AttemptOutcome {
  enum class Kind { kSucceeded, kFailed, kTimedOut, kCancelled, kFenced };
  Kind kind = Kind::kFailed;
  std::optional<int> exit_code;
  std::optional<int> http_status;
  std::string output;
  // Set when `output` is only the end of what the handler wrote (limits.max_output_bytes): the
  // length of the whole.
  std::optional<int64_t> output_bytes;
  std::string error;
};

struct ExecutorOptions {
  // Shell attempts: SIGTERM to the group, then SIGKILL after this. Default: 5 s
  Duration kill_grace{5000};
  // cgroup v2 parent directory for per-run cgroups, where writable. Default: none
  std::optional<std::string> cgroup_parent;
};

class Executor {
 public:
  Executor(const BuiltinRegistry& builtins, ExecutorOptions options)
      : builtins_(builtins), options_(std::move(options)) {}

  // Runs the attempt to its end. `cancel` fires on timeout (builtins: set by the caller's
  // watchdog; shell and http enforce spec.timeout themselves), cancellation or fencing.
  // Thread-safe.
  AttemptOutcome Run(const JobSpec& spec, const RunRecord& run, exec::CancelSource& cancel) const;

 private:
  AttemptOutcome RunBuiltin(const JobSpec& spec, const RunRecord& run,
                            exec::CancelSource& cancel) const;
  AttemptOutcome RunShell(const JobSpec& spec, const RunRecord& run,
                          exec::CancelSource& cancel) const;
  AttemptOutcome RunHttp(const JobSpec& spec, const RunRecord& run,
                         exec::CancelSource& cancel) const;

  const BuiltinRegistry& builtins_;
  const ExecutorOptions options_;
  // Whether a run went without its cgroup (or some of its limits) already: warned once.
  mutable std::atomic<bool> cgroup_warned_{false};
  mutable std::atomic<bool> cores_warned_{false};  // cpu_cores without a cgroup_parent
};

}  // namespace jobsched
