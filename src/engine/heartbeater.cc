#include "engine/heartbeater.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>

#include "engine/failure_log.h"

namespace jobsched {

double ProcessCpuSeconds() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

int64_t ProcessRssBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

Status Heartbeater::Tick() {
  const TimePoint now = clock_.Now();
  if (info_.started_at == TimePoint{}) info_.started_at = now;
  info_.heartbeat_at = now;
  info_.cpu_seconds = ProcessCpuSeconds();
  info_.rss_bytes = ProcessRssBytes();
  Status s = store_.Heartbeat(info_);
  {
    std::lock_guard lock(mu_);
    last_error_ = s.ok() ? "" : s.message();
  }
  registered_ = s.ok();
  return s;
}

std::string Heartbeater::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void Heartbeater::Start() {
  thread_.Start(
      "heartbeater",
      [this, failures = FailureLog("heartbeater")]() mutable {
        failures.Record(Tick());
        return interval_;
      },
      interval_);
}

}  // namespace jobsched
