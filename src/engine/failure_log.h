// Logging of a failure that repeats every pass of an actor (the store is down): the first
// failure is logged at once, then at most one line per `every` saying how many passes failed
// meanwhile, and one line when a pass succeeds again. One per actor; not thread-safe (an actor's
// passes run on its own thread).
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <string>

namespace jobsched {

class FailureLog {
 public:
  explicit FailureLog(std::string what, Duration every = Duration(10000))
      : what_(std::move(what)), every_(every) {}

  void Failed(const Status& status) {
    const auto now = std::chrono::steady_clock::now();
    ++failures_;
    if (failures_ == 1 || now - last_logged_ >= every_) {
      if (failures_ == 1) {
        spdlog::warn("{}: {}", what_, status.ToString());
      } else {
        spdlog::warn("{}: {} ({} failed passes so far)", what_, status.ToString(), failures_);
      }
      last_logged_ = now;
    }
  }

  // The outcome of one pass.
  void Record(const Status& status) {
    if (status.ok()) {
      Succeeded();
    } else {
      Failed(status);
    }
  }

  void Succeeded() {
    if (failures_ > 1) spdlog::info("{}: working again after {} failed passes", what_, failures_);
    failures_ = 0;
  }

 private:
  const std::string what_;
  const Duration every_;
  int64_t failures_ = 0;
  std::chrono::steady_clock::time_point last_logged_{};
};

}  // namespace jobsched
