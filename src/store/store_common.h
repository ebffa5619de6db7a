// Checks and formats shared by the Store backends, so that every backend applies the contract
// of store.h the same way.
#pragma once

#include <jobsched/job.h>
#include <jobsched/status.h>
#include <jobsched/store.h>

#include <span>
#include <string>

namespace jobsched {

// What Fire and EnqueueRuns may insert: new runs (queued or skipped) of that tenant's job.
// kInvalidArgument naming the offending run otherwise.
Status CheckNewRuns(const std::string& tenant, const std::string& job_id,
                    std::span<const RunRecord> runs);

// The instant a Fire stamps its cancellations and events with: the request's `now`; for requests
// built without one, the newest run committed with them, else the expected fire.
TimePoint FireTime(const FireRequest& request);

// Store::Complete's checks of a completion before it is applied: an end state an attempt can
// have (kRetryWait with retry_at), and `began` false with kCancelled only.
Status CheckCompletion(const Completion& completion);

// A run that Fire may replace with the same occurrence fired again: cancelled before any of its
// attempts began (attempt 0).
inline bool NeverStarted(const RunRecord& run) {
  return run.state == RunState::kCancelled && run.attempt == 0;
}

// RunFilter::output_tail applied to a run read whole: keeps the last `tail` bytes of its output
// from a UTF-8 character's start, and records the whole length in output_bytes (unless it holds
// a longer one: the handler's). `tail` 0, or an output not longer, leaves the run as it is.
void CutOutput(RunRecord& run, size_t tail);

// DeleteApiKey's refusal of the last admin key.
Status LastAdminKey(const std::string& id);

}  // namespace jobsched
