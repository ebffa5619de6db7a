// The shell executor (docs/engine.md): runs one argv with fork/execve in its own process group,
// with a clean environment, rlimits, an optional per-run cgroup v2, a capped tail of
// stdout+stderr, a timeout and cancellation (SIGTERM to the group, SIGKILL after a grace period).
//
//   ShellRequest req{.argv = {"/usr/bin/backup", "--full"},
//                    .env = {{"JOBSCHED_RUN_ID", run_id}},
//                    .timeout = Duration(600'000)};
//   CancelSource cancel;
//   ASSIGN_OR_RETURN(ShellResult r, RunShell(req, cancel));
//   if (r.outcome == ShellOutcome::kFenced) return;  // lease lost: report nothing
//
// Thread safety: RunShell may run concurrently from many threads of one process. It only waits
// for its own child (waitpid on that pid), so it must not be combined with code that reaps
// arbitrary children (waitpid(-1), SIGCHLD set to SIG_IGN).
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "exec/cancellation.h"

namespace jobsched::exec {

// Limits applied to the child. 0 means unlimited for every field.
struct ResourceLimits {
  // RLIMIT_CPU, per process: SIGXCPU after this much CPU time, SIGKILL one second later.
  // Default: 0 (unlimited).
  int64_t cpu_seconds = 0;
  // RLIMIT_AS (address space, per process) and, in a cgroup, memory.max (the whole group).
  // Default: 0 (unlimited).
  int64_t memory_mb = 0;
  // RLIMIT_NOFILE; clamped to the parent's hard limit. 0 keeps the parent's limit.
  // Default: 1024.
  int64_t max_open_files = 1024;
  // cgroup cpu.max as a number of CPUs (0.5 = half of one CPU); only with a cgroup.
  // Default: 0 (unlimited).
  double cpu_cores = 0;
};

struct ShellRequest {
  // argv[0] is the program: a path if it contains '/', otherwise looked up in the child's PATH.
  // Must not be empty; no string may contain a NUL byte. Default: empty (invalid).
  std::vector<std::string> argv;
  // Added to the clean environment, which only holds PATH=/usr/local/bin:/usr/bin:/bin and
  // HOME and LANG when the parent has them; entries here override those. The caller passes the
  // JOBSCHED_* variables here. Names must be non-empty and contain no '='. Default: empty.
  std::map<std::string, std::string> env;
  // Working directory of the child. Default: the parent's.
  std::optional<std::string> cwd;
  // Written to the child's stdin, which is then closed (empty: the child reads EOF at once).
  // Written without blocking, so a child that never reads it does not stall the run.
  // Default: empty.
  std::string stdin_data;
  ResourceLimits limits;
  // Wall-clock limit from the start of the run; then the group is terminated and the outcome
  // is kTimedOut. Default: 0 (none).
  Duration timeout{0};
  // Time between SIGTERM and SIGKILL to the process group on timeout or cancellation.
  // Default: 5 s.
  Duration kill_grace{5000};
  // stdout and stderr are captured together; only the last max_output_bytes are kept (0 keeps
  // nothing). Default: 65536.
  size_t max_output_bytes = 65536;
  // A cgroup v2 directory (e.g. "/sys/fs/cgroup/jobsched") under which each run gets its own
  // child cgroup: memory.max from limits.memory_mb, cpu.max from limits.cpu_cores, removed after
  // the run. When the directory is not writable the run goes ahead without a cgroup (see
  // ShellResult::cgroup). Default: none.
  std::optional<std::string> cgroup_parent;
};

enum class ShellOutcome {
  kExited,       // the program exited by itself: see exit_code
  kSignaled,     // the program was killed by a signal it did not get from us: see term_signal
  kTimedOut,     // we terminated it because request.timeout passed (or CancelReason::kTimeout)
  kCancelled,    // we terminated it because of CancelReason::kCancelled
  kFenced,       // we terminated it because of CancelReason::kFenced: do not report the result
  kSpawnFailed,  // the program could not be started (not found, not executable, bad cwd, ...)
};

// "exited", "signaled", "timed_out", "cancelled", "fenced", "spawn_failed".
std::string_view ShellOutcomeName(ShellOutcome outcome);

enum class CgroupUse {
  kNotRequested,  // no cgroup_parent in the request
  kApplied,       // the run had its own cgroup, with every requested limit written
  kPartial,       // the run had its own cgroup (one kill reaches all of it), but a requested
                  // limit file was missing or not writable (controller not enabled): see note
  kSkipped,       // cgroup_parent was not writable: no cgroup, rlimits only; see note
};

struct ShellResult {
  ShellOutcome outcome = ShellOutcome::kSpawnFailed;
  // The exit status when the program exited (also after a timeout if it exited by itself
  // during the grace period), else -1.
  int exit_code = -1;
  // The signal that ended the program, else 0.
  int term_signal = 0;
  // The tail of stdout+stderr, at most max_output_bytes; when truncated, it starts at a UTF-8
  // character boundary (so it may be up to 3 bytes shorter).
  std::string output;
  bool output_truncated = false;
  uint64_t output_bytes = 0;  // how many bytes the program wrote, kept or not
  // From just before fork until the program and its output were collected.
  Duration duration{0};
  // Empty for exit code 0, else why the run did not succeed: "exited with code 3",
  // "killed by signal 9 (SIGKILL)", "timed out after 500ms", "cannot execute 'foo': ...".
  std::string error;
  CgroupUse cgroup = CgroupUse::kNotRequested;
  // Why the cgroup was skipped or partial; empty otherwise.
  std::string cgroup_note;

  bool succeeded() const { return outcome == ShellOutcome::kExited && exit_code == 0; }
};

// Runs request.argv to completion, timeout or cancellation and collects the result.
//
// Returns a ShellResult for every run that was attempted, including programs that cannot be
// started (outcome kSpawnFailed, error naming the program). Errors:
//   kInvalidArgument  bad request (empty argv, NUL bytes, bad env names, negative limits);
//   kInternal         the node itself failed (pipe2, fork, ...: file descriptors or processes
//                     exhausted), with the errno text.
// On timeout or cancellation the whole process group gets SIGTERM, then SIGKILL after
// kill_grace. When the program ends, whatever is left of its process group (and its cgroup) is
// SIGKILLed, so nothing it started survives it unless it left the group (setsid); output of such
// escapees is read for at most 2 s after the program ends.
Result<ShellResult> RunShell(const ShellRequest& request, CancelSource& cancel);

// Keeps the last `max_bytes` bytes of a stream (shared by the shell and http executors).
// Not thread-safe.
class OutputTail {
 public:
  explicit OutputTail(size_t max_bytes) : max_bytes_(max_bytes) {}

  void Append(std::string_view data);
  // True once more than max_bytes were appended.
  bool truncated() const { return total_bytes_ > max_bytes_; }
  uint64_t total_bytes() const { return total_bytes_; }
  // The kept tail; when truncated, leading UTF-8 continuation bytes are dropped.
  std::string Take() &&;

 private:
  size_t max_bytes_;
  uint64_t total_bytes_ = 0;
  std::string buf_;  // may hold up to 2 * max_bytes_ between trims
};

}  // namespace jobsched::exec
