#include "engine/janitor.h"

#include <spdlog/spdlog.h>

namespace jobsched {

Result<int64_t> Janitor::Tick() {
  ASSIGN_OR_RETURN(int64_t deleted, store_.PruneRuns(clock_.Now() - options_.keep_runs_for,
                                                     options_.keep_runs_per_job));
  RETURN_IF_ERROR(store_.PruneEvents(options_.keep_events));
  if (deleted > 0) spdlog::info("janitor: deleted {} old runs", deleted);
  return deleted;
}

void Janitor::Start(std::function<bool()> active) {
  thread_.Start(
      "janitor",
      [this, active = std::move(active)] {
        if (active && !active()) return options_.interval;
        auto n = Tick();
        if (!n.ok()) spdlog::warn("janitor: {}", n.status().ToString());
        return options_.interval;
      },
      options_.interval);
}

}  // namespace jobsched
