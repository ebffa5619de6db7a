#include <jobsched/clock.h>

namespace jobsched {
namespace {

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::floor<Duration>(std::chrono::system_clock::now());
  }
};

}  // namespace

Clock* Clock::Real() {
  static SystemClock clock;
  return &clock;
}

}  // namespace jobsched
