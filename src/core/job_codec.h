// The JSON form of jobs and runs (docs/job-spec.md), and the validation of job specs. The same
// shape is used by the REST API, the CLI files and the stores.
#pragma once

#include <jobsched/job.h>
#include <jobsched/status.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace jobsched {

// Parses and validates a job spec. Unknown fields, wrong types and invalid values are
// kInvalidArgument errors whose field() is the JSON path ("schedule.cron", "retry.max_attempts")
// and whose message names the field and the problem. `tenant` is set from the argument (specs
// do not carry it). Input nesting deeper than 32 levels is rejected.
Result<JobSpec> ParseJobSpec(std::string_view json, const std::string& tenant = "default");

// Reads a spec as a store wrote it (JobSpecToJson): shape and types only, without the rules of
// ValidateJobSpec, so that a job which stopped validating (a time zone removed from the tz
// database, a stricter rule in a newer version) can still be read, shown, fixed or deleted.
Result<JobSpec> ParseStoredJobSpec(std::string_view json, const std::string& tenant);

// Checks every rule of docs/job-spec.md on a spec built in C++ (the same checks ParseJobSpec
// applies).
Status ValidateJobSpec(const JobSpec& spec);

// The spec as JSON (every field written), which ParseJobSpec reads back to an equal spec.
std::string JobSpecToJson(const JobSpec& spec);

// The spec as JSON without the fields that hold their default value (the type and target of its
// schedule and handler are always written): what a store keeps. ParseStoredJobSpec and
// ParseJobSpec read it back to an equal spec.
std::string JobSpecToCompactJson(const JobSpec& spec);

// Attempt lists as stored with a run.
std::string AttemptsToJson(const std::vector<AttemptRecord>& attempts);
Result<std::vector<AttemptRecord>> AttemptsFromJson(std::string_view json);

// Validates an id: [A-Za-z0-9._:-]{1,128} for jobs, [a-z0-9][a-z0-9_-]{0,62} for tenants,
// [A-Za-z0-9._-]{1,64} for queues. Errors name `field`.
Status ValidateJobId(std::string_view id, const std::string& field = "id");
Status ValidateTenantId(std::string_view id, const std::string& field = "tenant");
Status ValidateQueueName(std::string_view name, const std::string& field = "queue");

// The deepest nesting of [ and { in a JSON text (strings skipped). Bodies deeper than
// kMaxJsonNesting are rejected before parsing.
inline constexpr int kMaxJsonNesting = 32;
int JsonNestingDepth(std::string_view json);

// The path of the first member name given twice in one object of a JSON text ("id",
// "handler.env.A", "[1].id"), if any; a JSON parser would keep the last silently. Text that is
// not JSON has none (the parser says what is wrong with it).
std::optional<std::string> FirstDuplicateKey(std::string_view json);

// The message of a JSON parser exception without its tag ("[json.exception.parse_error.101] "):
// "parse error at line 1, column 7: syntax error while parsing ...".
std::string JsonErrorText(const std::exception& e);

// Enum names <-> values, as they appear in JSON.
Result<RunState> ParseRunState(std::string_view name);
Result<JobState> ParseJobState(std::string_view name);
Result<RunReason> ParseRunReason(std::string_view name);

}  // namespace jobsched
