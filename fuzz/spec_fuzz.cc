// Fuzzes the job spec parser (the JSON of the REST API, of the CLI's files and of stored jobs)
// and the stored attempt lists: no crash, and whatever parses is valid and reads back the same
// through both of its JSON forms.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/job_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto spec = jobsched::ParseJobSpec(text, "t"); spec.ok()) {
    if (!jobsched::ValidateJobSpec(*spec).ok()) std::abort();
    const std::string json = jobsched::JobSpecToJson(*spec);
    auto again = jobsched::ParseJobSpec(json, "t");
    if (!again.ok() || jobsched::JobSpecToJson(*again) != json) std::abort();
    auto stored = jobsched::ParseStoredJobSpec(jobsched::JobSpecToCompactJson(*spec), "t");
    if (!stored.ok() || jobsched::JobSpecToJson(*stored) != json) std::abort();
  }
  // A stored spec is read without the validation rules, but never crashes on any input.
  if (auto stored = jobsched::ParseStoredJobSpec(text, "t"); stored.ok()) {
    (void)jobsched::JobSpecToJson(*stored);
  }
  if (auto attempts = jobsched::AttemptsFromJson(text); attempts.ok()) {
    const std::string json = jobsched::AttemptsToJson(*attempts);
    auto again = jobsched::AttemptsFromJson(json);
    if (!again.ok() || jobsched::AttemptsToJson(*again) != json) std::abort();
  }
  return 0;
}
