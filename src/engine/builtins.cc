#include "engine/builtins.h"

#include <mutex>
#include <nlohmann/json.hpp>

namespace jobsched {

BuiltinRegistry::BuiltinRegistry() {
  Register("noop", [](RunContext&) { return Status::Ok(); });
  Register("sleep", [](RunContext& ctx) {
    int64_t ms = 100;
    const auto payload = nlohmann::json::parse(ctx.payload(), nullptr, /*allow_exceptions=*/false);
    if (payload.is_object() && payload.contains("ms") && payload["ms"].is_number_integer()) {
      ms = payload["ms"].get<int64_t>();
    }
    if (!ctx.WaitFor(Duration(ms))) return Status(StatusCode::kFailedPrecondition, "cancelled");
    return Status::Ok();
  });
}

bool BuiltinRegistry::Shipped(const std::string& name) { return name == "noop" || name == "sleep"; }

void BuiltinRegistry::Register(const std::string& name, JobHandler handler) {
  std::unique_lock lock(mu_);
  handlers_[name] = std::move(handler);
}

JobHandler BuiltinRegistry::Find(const std::string& name) const {
  std::shared_lock lock(mu_);
  auto it = handlers_.find(name);
  return it == handlers_.end() ? JobHandler() : it->second;
}

}  // namespace jobsched
