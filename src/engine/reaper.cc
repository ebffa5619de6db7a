#include "engine/reaper.h"

#include <spdlog/spdlog.h>

#include "engine/failure_log.h"

namespace jobsched {

Result<int> Reaper::Tick() {
  ASSIGN_OR_RETURN(
      std::vector<RunRecord> runs,
      store_.RecoverLostRuns(clock_.Now(), "", options_.max_leases_lost, options_.batch));
  for (const RunRecord& run : runs) {
    spdlog::warn("run lease_lost run_id={} job_id={} tenant={} node={} now={}", run.id, run.job_id,
                 run.tenant, run.node, RunStateName(run.state));
    events_.Emit(RecoveredEvent(run));
  }
  if (!runs.empty() && on_recovered_) on_recovered_();
  return static_cast<int>(runs.size());
}

void Reaper::Start() {
  thread_.Start(
      "reaper",
      [this, failures = FailureLog("reaper")]() mutable {
        failures.Record(Tick().status());
        return options_.interval;
      },
      options_.interval);
}

}  // namespace jobsched
