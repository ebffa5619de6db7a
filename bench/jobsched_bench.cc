// jobsched-bench: end-to-end workloads of DESIGN §11, one JSON line each, with the keys of the
// BullMQ harness so that the numbers can be compared as ratios.
//
//   jobsched-bench throughput --store sqlite:/tmp/b.db --n 20000 --concurrency 10
//   jobsched-bench latency --store sqlite:/tmp/b.db --m 1000 --spread-ms 5000 --lead-ms 2000
#include <jobsched/scheduler.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using jobsched::Duration;
using jobsched::JobScheduler;
using jobsched::TimePoint;
using Json = nlohmann::ordered_json;
using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string store;
  int n = 20000;
  int concurrency = 10;
  int batch = 1000;
  int m = 1000;
  int64_t spread_ms = 5000;
  int64_t lead_ms = 2000;
};

// A store URL for this run: the one given, or a fresh SQLite file in a temp directory.
std::string StoreUrl(const Options& o, std::filesystem::path* scratch) {
  if (!o.store.empty()) return o.store;
  *scratch =
      std::filesystem::temp_directory_path() / ("jobsched-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(*scratch);
  return "sqlite:" + (*scratch / "bench.db").string();
}

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

int Throughput(const Options& o) {
  std::filesystem::path scratch;
  JobScheduler scheduler(
      {.store_url = StoreUrl(o, &scratch), .node_id = "bench", .concurrency = o.concurrency});
  std::atomic<int> done{0};
  std::mutex mu;
  std::condition_variable cv;
  SteadyClock::time_point first_done{};
  scheduler.on(jobsched::EventType::kRunSucceeded, [&](const jobsched::SchedulerEvent&) {
    if (done.fetch_add(1) + 1 == 1) first_done = SteadyClock::now();
    if (done.load() >= o.n) cv.notify_all();
  });
  jobsched::JobSpec spec{.id = "bench-noop"};
  spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "noop"};
  scheduler.schedule(spec);

  const auto e0 = SteadyClock::now();
  for (int i = 0; i < o.n; i += o.batch) {
    std::vector<std::string> payloads;
    for (int k = i; k < std::min(o.n, i + o.batch); ++k)
      payloads.push_back("{\"i\":" + std::to_string(k) + "}");
    scheduler.trigger("bench-noop", payloads);
  }
  const auto e1 = SteadyClock::now();
  scheduler.start();
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::minutes(10), [&] { return done.load() >= o.n; });
  }
  const auto p1 = SteadyClock::now();
  scheduler.stop();
  Json out{{"bench", "throughput"},
           {"store", o.store.empty() ? "sqlite:(temp file)" : o.store},
           {"n", o.n},
           {"concurrency", o.concurrency},
           {"batch", o.batch},
           {"enqueue_s", Seconds(e1 - e0)},
           {"enqueue_jobs_per_s", static_cast<int64_t>(o.n / Seconds(e1 - e0))},
           {"process_s", Seconds(p1 - e1)},
           {"process_jobs_per_s", static_cast<int64_t>(done.load() / Seconds(p1 - e1))},
           {"first_completion_ms", Seconds(first_done - e1) * 1000},
           {"completed", done.load()}};
  std::cout << out.dump() << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return done.load() >= o.n ? 0 : 1;
}

int Latency(const Options& o) {
  std::filesystem::path scratch;
  JobScheduler scheduler(
      {.store_url = StoreUrl(o, &scratch), .node_id = "bench", .concurrency = o.concurrency});
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> lateness;
  scheduler.registerHandler("record", [&](jobsched::RunContext& ctx) {
    const auto now = std::chrono::system_clock::now();
    const double late_ms =
        std::chrono::duration<double, std::milli>(now - ctx.scheduled_at()).count();
    std::lock_guard lock(mu);
    lateness.push_back(late_ms);
    if (static_cast<int>(lateness.size()) >= o.m) cv.notify_all();
    return jobsched::Status::Ok();
  });
  scheduler.start();
  const TimePoint t0 =
      std::chrono::floor<Duration>(std::chrono::system_clock::now()) + Duration(o.lead_ms);
  for (int i = 0; i < o.m; ++i) {
    jobsched::JobSpec spec{.id = "late-" + std::to_string(i)};
    spec.schedule = {.kind = jobsched::Schedule::Kind::kAt,
                     .at = t0 + Duration(o.m > 1 ? o.spread_ms * i / (o.m - 1) : 0)};
    spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "record"};
    scheduler.schedule(spec);
  }
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::milliseconds(o.lead_ms + o.spread_ms + 60000),
                [&] { return static_cast<int>(lateness.size()) >= o.m; });
  }
  scheduler.stop();
  std::vector<double> l;
  {
    std::lock_guard lock(mu);
    l = lateness;
  }
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0
                     : l[std::min(l.size() - 1, static_cast<size_t>(p * (l.size() - 1) + 0.5))];
  };
  Json out{{"bench", "latency"},
           {"store", o.store.empty() ? "sqlite:(temp file)" : o.store},
           {"m", o.m},
           {"spread_ms", o.spread_ms},
           {"lead_ms", o.lead_ms},
           {"concurrency", o.concurrency},
           {"completed", l.size()},
           {"lateness_ms",
            {{"p50", pct(0.5)},
             {"p95", pct(0.95)},
             {"p99", pct(0.99)},
             {"max", l.empty() ? 0.0 : l.back()}}}};
  std::cout << out.dump() << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return static_cast<int>(l.size()) >= o.m ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobsched-bench: end-to-end workloads, one JSON line each"};
  app.require_subcommand(1);
  Options o;
  spdlog::set_level(spdlog::level::warn);
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--store", o.store, "Store URL (default: a temporary SQLite file)");
    sub->add_option("--concurrency", o.concurrency, "Worker threads")->capture_default_str();
  };
  CLI::App* tp =
      app.add_subcommand("throughput", "N runs enqueued in bulk, then processed (no-op handler)");
  add_common(tp);
  tp->add_option("--n", o.n, "Runs")->capture_default_str();
  tp->add_option("--batch", o.batch, "Runs per bulk trigger")->capture_default_str();
  CLI::App* lat =
      app.add_subcommand("latency", "M one-time jobs due over a window: lateness of start");
  add_common(lat);
  lat->add_option("--m", o.m, "Jobs")->capture_default_str();
  lat->add_option("--spread-ms", o.spread_ms, "Window the due times are spread over")
      ->capture_default_str();
  lat->add_option("--lead-ms", o.lead_ms, "Time from now to the first due time")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (tp->parsed()) return Throughput(o);
    if (lat->parsed()) return Latency(o);
  } catch (const std::exception& e) {
    std::cerr << "jobsched-bench: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
