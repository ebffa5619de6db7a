#include "engine/executor.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <thread>

#include "exec/http_executor.h"
#include "exec/shell_executor.h"

namespace jobsched {
namespace {

using Kind = AttemptOutcome::Kind;

// The outcome a cancellation reason turns an attempt into.
Kind KindOfCancel(exec::CancelReason reason) {
  switch (reason) {
    case exec::CancelReason::kTimeout:
      return Kind::kTimedOut;
    case exec::CancelReason::kFenced:
      return Kind::kFenced;
    default:
      return Kind::kCancelled;
  }
}

class BuiltinContext final : public RunContext {
 public:
  BuiltinContext(const RunRecord& run, exec::CancelSource& cancel, size_t max_output)
      : run_(run), cancel_(cancel), output_(max_output) {}

  const std::string& tenant() const override { return run_.tenant; }
  const std::string& job_id() const override { return run_.job_id; }
  const std::string& run_id() const override { return run_.id; }
  int attempt() const override { return run_.attempt; }
  int64_t fence() const override { return run_.fence; }
  const std::string& payload() const override { return run_.payload; }
  TimePoint scheduled_at() const override { return run_.scheduled_at; }
  const std::string& node_id() const override { return run_.node; }
  bool cancelled() const override { return cancel_.cancelled(); }

  bool WaitFor(Duration d) const override {
    // A century stands for "until cancelled": the clock's nanoseconds overflow not far beyond.
    const auto deadline =
        std::chrono::steady_clock::now() + std::min<Duration>(d, std::chrono::hours(24 * 36525));
    while (!cancel_.cancelled()) {
      const auto left =
          std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return true;
      if (cancel_.fd() >= 0) {
        pollfd p{.fd = cancel_.fd(), .events = POLLIN, .revents = 0};
        ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
      } else {
        std::this_thread::sleep_for(std::min(left, Duration(10)));
      }
    }
    return false;
  }

  void Log(std::string_view line) override {
    std::lock_guard lock(mu_);
    output_.Append(line);
    output_.Append("\n");
  }

  // The kept output, and the length of the whole when some of it was dropped.
  std::string TakeOutput(std::optional<int64_t>& whole_bytes) {
    std::lock_guard lock(mu_);
    if (output_.truncated()) whole_bytes = static_cast<int64_t>(output_.total_bytes());
    return std::move(output_).Take();
  }

 private:
  const RunRecord& run_;
  exec::CancelSource& cancel_;
  std::mutex mu_;
  exec::OutputTail output_;  // guarded by mu_
};

}  // namespace

AttemptOutcome Executor::Run(const JobSpec& spec, const RunRecord& run,
                             exec::CancelSource& cancel) const {
  switch (spec.handler.type) {
    case HandlerSpec::Type::kBuiltin:
      return RunBuiltin(spec, run, cancel);
    case HandlerSpec::Type::kShell:
      return RunShell(spec, run, cancel);
    case HandlerSpec::Type::kHttp:
      return RunHttp(spec, run, cancel);
  }
  return {.kind = Kind::kFailed, .error = "unknown handler type"};
}

AttemptOutcome Executor::RunBuiltin(const JobSpec& spec, const RunRecord& run,
                                    exec::CancelSource& cancel) const {
  AttemptOutcome out;
  JobHandler handler = builtins_.Find(spec.handler.name);
  if (!handler) {
    out.error = "no handler named '" + spec.handler.name + "' is registered on this node";
    return out;
  }
  BuiltinContext ctx(run, cancel, static_cast<size_t>(spec.limits.max_output_bytes));
  Status status;
  try {
    status = handler(ctx);
  } catch (const std::exception& e) {
    status = Status(StatusCode::kInternal, std::string("handler threw: ") + e.what());
  } catch (...) {
    status = Status(StatusCode::kInternal, "handler threw a non-standard exception");
  }
  out.output = ctx.TakeOutput(out.output_bytes);
  if (cancel.cancelled()) {
    out.kind = KindOfCancel(cancel.reason());
    out.error = out.kind == Kind::kTimedOut
                    ? "timed out after " + std::to_string(spec.timeout.count()) + "ms"
                    : std::string(exec::CancelReasonName(cancel.reason()));
    return out;
  }
  out.kind = status.ok() ? Kind::kSucceeded : Kind::kFailed;
  out.error = status.ok() ? "" : status.message();
  return out;
}

AttemptOutcome Executor::RunShell(const JobSpec& spec, const RunRecord& run,
                                  exec::CancelSource& cancel) const {
  exec::ShellRequest req;
  req.argv = spec.handler.command;
  req.env = spec.handler.env;
  req.env["JOBSCHED_RUN_ID"] = run.id;
  req.env["JOBSCHED_JOB_ID"] = run.job_id;
  req.env["JOBSCHED_TENANT"] = run.tenant;
  req.env["JOBSCHED_ATTEMPT"] = std::to_string(run.attempt);
  req.env["JOBSCHED_FENCE"] = std::to_string(run.fence);
  req.env["JOBSCHED_NODE_ID"] = run.node;
  if (!spec.handler.cwd.empty()) req.cwd = spec.handler.cwd;
  req.stdin_data = run.payload;
  req.limits.cpu_seconds = spec.limits.cpu_seconds;
  req.limits.memory_mb = spec.limits.memory_mb;
  req.limits.cpu_cores = spec.limits.cpu_cores;
  req.timeout = spec.timeout;
  req.kill_grace = options_.kill_grace;
  req.max_output_bytes = static_cast<size_t>(spec.limits.max_output_bytes);
  req.cgroup_parent = options_.cgroup_parent;

  if (spec.limits.cpu_cores > 0 && !options_.cgroup_parent && !cores_warned_.exchange(true)) {
    spdlog::warn(
        "limits.cpu_cores (job {} tenant {}) is not applied: this node has no cgroup_parent "
        "(warned once)",
        spec.id, spec.tenant);
  }
  AttemptOutcome out;
  auto result = exec::RunShell(req, cancel);
  if (!result.ok()) {
    out.error = result.status().message();
    return out;
  }
  if ((result->cgroup == exec::CgroupUse::kSkipped ||
       result->cgroup == exec::CgroupUse::kPartial) &&
      !cgroup_warned_.exchange(true)) {
    spdlog::warn("shell runs go without their own cgroup or some of its limits (warned once): {}",
                 result->cgroup_note);
  }
  out.output = std::move(result->output);
  if (result->output_truncated) out.output_bytes = static_cast<int64_t>(result->output_bytes);
  out.error = result->error;
  if (result->exit_code >= 0) out.exit_code = result->exit_code;
  switch (result->outcome) {
    case exec::ShellOutcome::kExited:
      out.kind = result->exit_code == 0 ? Kind::kSucceeded : Kind::kFailed;
      break;
    case exec::ShellOutcome::kSignaled:
    case exec::ShellOutcome::kSpawnFailed:
      out.kind = Kind::kFailed;
      break;
    case exec::ShellOutcome::kTimedOut:
      out.kind = Kind::kTimedOut;
      break;
    case exec::ShellOutcome::kCancelled:
      out.kind = Kind::kCancelled;
      break;
    case exec::ShellOutcome::kFenced:
      out.kind = Kind::kFenced;
      break;
  }
  return out;
}

AttemptOutcome Executor::RunHttp(const JobSpec& spec, const RunRecord& run,
                                 exec::CancelSource& cancel) const {
  exec::HttpRequest req;
  req.method = spec.handler.method;
  req.url = spec.handler.url;
  req.headers = spec.handler.headers;
  req.headers["X-Jobsched-Run-Id"] = run.id;
  req.headers["X-Jobsched-Attempt"] = std::to_string(run.attempt);
  req.headers["X-Jobsched-Fence"] = std::to_string(run.fence);
  req.headers["X-Jobsched-Node-Id"] = run.node;
  req.body = spec.handler.body;
  req.timeout = spec.timeout;
  req.max_output_bytes = static_cast<size_t>(spec.limits.max_output_bytes);

  AttemptOutcome out;
  auto result = exec::RunHttp(req, cancel);
  if (!result.ok()) {
    out.error = result.status().message();
    return out;
  }
  out.output = std::move(result->body);
  if (result->body_truncated) out.output_bytes = static_cast<int64_t>(result->body_bytes);
  out.error = result->error;
  if (result->status > 0) out.http_status = result->status;
  switch (result->outcome) {
    case exec::HttpOutcome::kCompleted:
      out.kind = result->success ? Kind::kSucceeded : Kind::kFailed;
      if (!result->success && out.error.empty())
        out.error = "HTTP " + std::to_string(result->status);
      break;
    case exec::HttpOutcome::kFailed:
      out.kind = Kind::kFailed;
      break;
    case exec::HttpOutcome::kTimedOut:
      out.kind = Kind::kTimedOut;
      break;
    case exec::HttpOutcome::kCancelled:
      out.kind = Kind::kCancelled;
      break;
    case exec::HttpOutcome::kFenced:
      out.kind = Kind::kFenced;
      break;
  }
  if (out.kind == Kind::kSucceeded) out.error.clear();
  return out;
}

}  // namespace jobsched
