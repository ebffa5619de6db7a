// Time in jobsched: instants are milliseconds since the Unix epoch (UTC), and every component
// that needs "now" asks an injected Clock instead of the system. Production code uses
// Clock::Real(); tests use FakeClock and move time by hand.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace jobsched {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::sys_time<Duration>;

inline int64_t ToUnixMillis(TimePoint t) { return t.time_since_epoch().count(); }
inline TimePoint FromUnixMillis(int64_t ms) { return TimePoint(Duration(ms)); }

class Clock {
 public:
  virtual ~Clock() = default;
  // The current wall-clock instant. Thread-safe.
  virtual TimePoint Now() const = 0;

  // The process-wide system clock. Never null; lives for the whole program.
  static Clock* Real();
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = FromUnixMillis(0)) : now_ms_(ToUnixMillis(start)) {}

  TimePoint Now() const override { return FromUnixMillis(now_ms_.load(std::memory_order_acquire)); }
  void Set(TimePoint t) { now_ms_.store(ToUnixMillis(t), std::memory_order_release); }
  void Advance(Duration d) { now_ms_.fetch_add(d.count(), std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace jobsched
