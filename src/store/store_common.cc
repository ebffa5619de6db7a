#include "store/store_common.h"

#include <algorithm>

namespace jobsched {

Status CheckNewRuns(const std::string& tenant, const std::string& job_id,
                    std::span<const RunRecord> runs) {
  for (const RunRecord& run : runs) {
    if (run.tenant != tenant || run.job_id != job_id) {
      return InvalidArgument("run '" + run.id + "' belongs to job '" + run.job_id +
                             "' in tenant '" + run.tenant + "', not to job '" + job_id +
                             "' in tenant '" + tenant + "'");
    }
    if (run.state != RunState::kQueued && run.state != RunState::kSkipped) {
      return InvalidArgument("run '" + run.id + "': a new run must be queued or skipped, not " +
                             RunStateName(run.state));
    }
    if (run.id.empty()) return InvalidArgument("a run id is empty");
  }
  return Status::Ok();
}

TimePoint FireTime(const FireRequest& request) {
  if (request.now != TimePoint{}) return request.now;
  if (!request.runs.empty()) {
    return std::max_element(
               request.runs.begin(), request.runs.end(),
               [](const RunRecord& a, const RunRecord& b) { return a.created_at < b.created_at; })
        ->created_at;
  }
  return request.expected_next_fire.value_or(TimePoint{});
}

void CutOutput(RunRecord& run, size_t tail) {
  if (tail == 0 || run.output.size() <= tail) return;
  if (!run.output_bytes) run.output_bytes = static_cast<int64_t>(run.output.size());
  run.output.erase(0, run.output.size() - tail);
  // Not in the middle of a UTF-8 character: continuation bytes are 10xxxxxx.
  size_t cut = 0;
  while (cut < run.output.size() && (static_cast<unsigned char>(run.output[cut]) & 0xC0) == 0x80)
    ++cut;
  run.output.erase(0, cut);
}

Status CheckCompletion(const Completion& c) {
  switch (c.state) {
    case RunState::kSucceeded:
    case RunState::kFailed:
    case RunState::kTimedOut:
    case RunState::kCancelled:
      break;
    case RunState::kRetryWait:
      if (!c.retry_at) return InvalidArgument("retry_wait needs retry_at", "retry_at");
      break;
    default:
      return InvalidArgument(std::string("an attempt cannot end in state ") + RunStateName(c.state),
                             "state");
  }
  if (!c.began && c.state != RunState::kCancelled) {
    return InvalidArgument(std::string("an attempt that never began cannot end ") +
                               RunStateName(c.state) + ": only cancelled",
                           "began");
  }
  return Status::Ok();
}

Status LastAdminKey(const std::string& id) {
  return Status(StatusCode::kFailedPrecondition,
                "key " + id + " is the last admin key: create another admin key before revoking it",
                "id");
}

}  // namespace jobsched
