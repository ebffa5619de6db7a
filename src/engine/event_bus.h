// Local listeners of SchedulerEvents (JobScheduler::on). Thread-safe; callbacks run on the
// emitting thread, outside the lock.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include <jobsched/scheduler.h>

namespace jobsched {

class EventBus {
 public:
  void On(EventType type, std::function<void(const SchedulerEvent&)> callback) {
    std::lock_guard lock(mu_);
    listeners_[type].push_back(std::move(callback));
  }
  void Emit(const SchedulerEvent& event) const {
    std::vector<std::function<void(const SchedulerEvent&)>> callbacks;
    {
      std::lock_guard lock(mu_);
      auto it = listeners_.find(event.type);
      if (it == listeners_.end()) return;
      callbacks = it->second;
    }
    for (const auto& cb : callbacks) {
      try {
        cb(event);
      } catch (...) {
        // A listener's failure must not break the engine.
      }
    }
  }

 private:
  mutable std::mutex mu_;
  std::map<EventType, std::vector<std::function<void(const SchedulerEvent&)>>> listeners_;
};

}  // namespace jobsched
