// The registry of C++ job handlers by name. "noop" and "sleep" are always there: noop succeeds
// at once; sleep waits payload.ms (default 100) milliseconds, stopping early when cancelled.
// Thread-safe.
#pragma once

#include <jobsched/scheduler.h>

#include <map>
#include <shared_mutex>
#include <string>

namespace jobsched {

class BuiltinRegistry {
 public:
  BuiltinRegistry();

  // Whether every node ships a handler of that name ("noop", "sleep").
  static bool Shipped(const std::string& name);

  void Register(const std::string& name, JobHandler handler);
  // A copy of the handler, or an empty function.
  JobHandler Find(const std::string& name) const;

 private:
  mutable std::shared_mutex mu_;
  std::map<std::string, JobHandler> handlers_;  // guarded by mu_
};

}  // namespace jobsched
