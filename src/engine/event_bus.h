// Local listeners of SchedulerEvents (JobScheduler::on). Thread-safe; callbacks run on the
// emitting thread, outside the lock.
#pragma once

#include <jobsched/scheduler.h>

#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace jobsched {

// The event of `type` about a run: its tenant, job, id, attempt, queue, scheduled and available
// times.
inline SchedulerEvent RunEvent(EventType type, const RunRecord& run) {
  return {.type = type,
          .tenant = run.tenant,
          .job_id = run.job_id,
          .run_id = run.id,
          .attempt = run.attempt,
          .queue = run.queue,
          .scheduled_at = run.scheduled_at,
          .available_at = run.available_at};
}

// A run whose lease had expired, queued again (or failed): the error is its lost attempt's.
inline SchedulerEvent RecoveredEvent(const RunRecord& run) {
  SchedulerEvent e = RunEvent(EventType::kRunRecovered, run);
  if (!run.attempts.empty()) e.error = run.attempts.back().error;
  return e;
}

class EventBus {
 public:
  // Returns an id for Off().
  int64_t On(EventType type, std::function<void(const SchedulerEvent&)> callback) {
    std::lock_guard lock(mu_);
    listeners_[type].push_back({++last_id_, std::move(callback)});
    return last_id_;
  }
  // Removes a listener; after it returns the listener is not called again (Emit holds the lock
  // only to copy the list, so a call already under way on another thread may still finish).
  void Off(int64_t id) {
    std::lock_guard lock(mu_);
    for (auto& [type, list] : listeners_) {
      std::erase_if(list, [id](const Listener& l) { return l.id == id; });
    }
  }
  void Emit(const SchedulerEvent& event) const {
    std::vector<Listener> callbacks;
    {
      std::lock_guard lock(mu_);
      auto it = listeners_.find(event.type);
      if (it == listeners_.end()) return;
      callbacks = it->second;
    }
    for (const auto& listener : callbacks) {
      try {
        listener.callback(event);
      } catch (...) {
        // A listener's failure must not break the engine.
      }
    }
  }

 private:
  struct Listener {
    int64_t id;
    std::function<void(const SchedulerEvent&)> callback;
  };
  mutable std::mutex mu_;
  int64_t last_id_ = 0;                                   // guarded by mu_
  std::map<EventType, std::vector<Listener>> listeners_;  // guarded by mu_
};

}  // namespace jobsched
