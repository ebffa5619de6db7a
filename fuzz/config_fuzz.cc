// Fuzzes the `jobsched serve` config file reader (TOML): no crash, and errors name the file.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cli/serve_cmd.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  jobsched::cli::ServeConfig config;
  const jobsched::Status s = jobsched::cli::ParseServeConfig(text, "fuzz.toml", config);
  if (!s.ok()) {
    if (s.code() != jobsched::StatusCode::kInvalidArgument) std::abort();
    if (s.message().find("fuzz.toml") == std::string_view::npos) std::abort();
    return 0;
  }
  (void)jobsched::cli::ValidateServeConfig(config);
  return 0;
}
