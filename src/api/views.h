// The JSON form of records in API answers (docs/api.md: RFC 3339 UTC times with milliseconds,
// durations in ms).
#pragma once

#include <jobsched/store.h>

#include <nlohmann/json.hpp>

namespace jobsched::api {

using Json = nlohmann::ordered_json;

Json TimeJson(const std::optional<TimePoint>& t);
Json RunJson(const RunRecord& run);
// A job in lists: spec plus version, state, next fire time.
Json JobJson(const JobRecord& job);
Json EventJson(const Event& event);
// `alive`: a heartbeat less than `dead_after` before `now`.
Json NodeJson(const NodeInfo& node, TimePoint now, Duration dead_after);
Json KeyJson(const ApiKeyRecord& key);
Json TenantJson(const TenantRecord& tenant);

}  // namespace jobsched::api
