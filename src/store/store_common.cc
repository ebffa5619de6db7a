#include "store/store_common.h"

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

}  // namespace jobsched
