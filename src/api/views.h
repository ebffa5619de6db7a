// The JSON form of records in API answers (docs/api.md: RFC 3339 UTC times with milliseconds,
// durations in ms).
#pragma once

#include <jobsched/store.h>

#include <nlohmann/json.hpp>

namespace jobsched::api {

using Json = nlohmann::ordered_json;

Json TimeJson(const std::optional<TimePoint>& t);
// A run; `output` as read (a list's store cuts it: RunFilter::output_tail), `output_bytes` the
// whole length (what the handler wrote: lists carry a tail, and the run keeps the last
// limits.max_output_bytes), `output_truncated` whether `output` is only a tail.
Json RunJson(const RunRecord& run);
// What lists of runs (and a job's last run) carry of each run's output: the stores cut it.
inline constexpr size_t kListedOutputBytes = 4096;
// A job in lists: spec plus version, state, next fire time.
Json JobJson(const JobRecord& job);
Json EventJson(const Event& event);
// `alive`: a heartbeat less than `dead_after` before `now`.
Json NodeJson(const NodeInfo& node, TimePoint now, Duration dead_after);
Json KeyJson(const ApiKeyRecord& key);
Json TenantJson(const TenantRecord& tenant);

}  // namespace jobsched::api
