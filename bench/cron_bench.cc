// CronSchedule::Next() and Parse() cost. `make bench` runs it; numbers go in docs/performance.md.
#include <benchmark/benchmark.h>

#include "core/cron.h"
#include "core/time_util.h"

namespace {

using jobsched::CronSchedule;
using jobsched::TimePoint;

// Next() called repeatedly, each call starting from the previous answer, so the benchmark walks
// through days, months and DST transitions the way a scheduler does.
void BM_Next(benchmark::State& state, const char* expr, const char* tz) {
  auto schedule = CronSchedule::Parse(expr, tz);
  if (!schedule.ok()) {
    state.SkipWithError(schedule.status().message().c_str());
    return;
  }
  const TimePoint start = *jobsched::ParseRfc3339("2024-01-01T00:00:00Z");
  TimePoint t = start;
  for (auto _ : state) {
    auto next = schedule->Next(t);
    benchmark::DoNotOptimize(next);
    t = next ? *next : start;
  }
}

BENCHMARK_CAPTURE(BM_Next, every_minute_utc, "* * * * *", "UTC");
BENCHMARK_CAPTURE(BM_Next, every_5_minutes_utc, "*/5 * * * *", "UTC");
BENCHMARK_CAPTURE(BM_Next, daily_utc, "0 2 * * *", "UTC");
BENCHMARK_CAPTURE(BM_Next, weekdays_utc, "30 9 * * MON-FRI", "UTC");
BENCHMARK_CAPTURE(BM_Next, every_second_utc, "* * * * * *", "UTC");
BENCHMARK_CAPTURE(BM_Next, monthly_lw_utc, "0 0 LW * *", "UTC");
BENCHMARK_CAPTURE(BM_Next, nth_friday_utc, "0 0 ? * 5#3", "UTC");
BENCHMARK_CAPTURE(BM_Next, leap_day_utc, "0 0 29 2 *", "UTC");
BENCHMARK_CAPTURE(BM_Next, every_5_minutes_new_york, "*/5 * * * *", "America/New_York");
BENCHMARK_CAPTURE(BM_Next, daily_new_york, "30 2 * * *", "America/New_York");
BENCHMARK_CAPTURE(BM_Next, daily_lord_howe, "30 2 * * *", "Australia/Lord_Howe");

void BM_Parse(benchmark::State& state, const char* expr) {
  for (auto _ : state) {
    auto schedule = CronSchedule::Parse(expr, "UTC");
    benchmark::DoNotOptimize(schedule);
  }
}
BENCHMARK_CAPTURE(BM_Parse, simple, "*/5 * * * *");
BENCHMARK_CAPTURE(BM_Parse, lists_and_names, "0 0,30 9-17 * JAN-MAR MON-FRI");

}  // namespace
