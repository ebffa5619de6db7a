// jobsched-bench: end-to-end workloads of docs/performance.md, one JSON line each, with the keys
// of the BullMQ harness so that the numbers can be compared as ratios (bench/vs-bullmq runs both).
//
//   jobsched-bench throughput --store sqlite:/tmp/b.db --n 20000 --concurrency 10
//   jobsched-bench latency --store sqlite:/tmp/b.db --m 1000 --spread-ms 5000 --lead-ms 2000
//   jobsched-bench cron-scale --store redis://127.0.0.1:6391 --k 2000 --window-s 10 --warm-s 3
//   jobsched-bench failover --store redis://127.0.0.1:6391 --runs 3
//   jobsched-bench prune --store sqlite:/tmp/b.db --n 200000
//
// Percentiles are nearest-rank (as the BullMQ harness computes them).
#include <hiredis/hiredis.h>
#include <jobsched/scheduler.h>
#include <jobsched/store.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/redis_store.h"

namespace {

using jobsched::Duration;
using jobsched::JobScheduler;
using jobsched::TimePoint;
using Json = nlohmann::ordered_json;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

struct Options {
  std::string store;
  int n = 20000;
  int concurrency = 10;
  int64_t fire_ahead_ms = -1;   // -1: the library's default
  int64_t claim_ahead_ms = -1;  // -1: the library's default
  int batch = 1000;
  int m = 1000;
  int64_t spread_ms = 5000;
  int64_t lead_ms = 2000;
  // cron-scale
  int k = 2000;
  std::string pattern = "* * * * * *";
  int create_concurrency = 8;
  double window_s = 10;
  double warm_s = 3;
  // failover
  int runs = 1;
  int64_t kill_after_ms = -1;  // -1: uniform random [1000, 1000 + renew interval)
  int64_t pre_delay_ms = -1;   // -1: uniform random [0, renew interval)
  double timeout_s = 120;
  // throughput: Redis's per-command statistics of the processing phase, on standard error
  bool command_stats = false;
  int idle_tenants = 0;
  // hidden "node" mode (a failover node process)
  std::string node_id;
};

// The bench node's options: the store, its concurrency and, when given, fire/claim-ahead.
jobsched::SchedulerOptions BenchNode(const Options& o, const std::string& url) {
  jobsched::SchedulerOptions n{.store_url = url, .node_id = "bench", .concurrency = o.concurrency};
  if (o.fire_ahead_ms >= 0) n.fire_ahead = jobsched::Duration(o.fire_ahead_ms);
  if (o.claim_ahead_ms >= 0) n.claim_ahead = jobsched::Duration(o.claim_ahead_ms);
  return n;
}

// A store URL for this run: the one given, or a fresh SQLite file in a temp directory.
std::string StoreUrl(const Options& o, std::filesystem::path* scratch) {
  if (!o.store.empty()) return o.store;
  *scratch =
      std::filesystem::temp_directory_path() / ("jobsched-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(*scratch);
  return "sqlite:" + (*scratch / "bench.db").string();
}

std::string StoreName(const Options& o) { return o.store.empty() ? "sqlite:(temp file)" : o.store; }

bool IsRedisUrl(const std::string& url) { return url.rfind("redis://", 0) == 0; }

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

double Round3(double x) { return std::round(x * 1000) / 1000; }

// Wall clock in milliseconds with sub-millisecond resolution (comparable across processes).
double NowMs() {
  return std::chrono::duration<double, std::milli>(SystemClock::now().time_since_epoch()).count();
}

double Ms(TimePoint t) { return static_cast<double>(jobsched::ToUnixMillis(t)); }

// CPU seconds (user + system) used by this process so far.
double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// {p50, p95, p99, max, min, mean} of `v` (sorted in place), nearest rank; zeros when empty.
Json Percentiles(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    if (v.empty()) return 0.0;
    const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return Round3(v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)]);
  };
  return Json{{"p50", pct(50)},
              {"p95", pct(95)},
              {"p99", pct(99)},
              {"max", v.empty() ? 0.0 : Round3(v.back())},
              {"min", v.empty() ? 0.0 : Round3(v.front())},
              {"mean", v.empty() ? 0.0
                                 : Round3(std::accumulate(v.begin(), v.end(), 0.0) /
                                          static_cast<double>(v.size()))}};
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// INFO of the Redis server behind a redis:// store URL, on a connection of its own (the bench
// reads used_memory and CPU as the BullMQ harness does).
class RedisInfo {
 public:
  static std::unique_ptr<RedisInfo> Connect(const std::string& url) {
    if (!IsRedisUrl(url)) return nullptr;
    auto opts = jobsched::RedisStore::ParseUrl(url);
    if (!opts.ok()) throw std::runtime_error(opts.status().ToString());
    timeval tv{2, 0};
    redisContext* c = redisConnectWithTimeout(opts->host.c_str(), opts->port, tv);
    if (c == nullptr || c->err) {
      std::string err = c ? c->errstr : "out of memory";
      if (c) redisFree(c);
      throw std::runtime_error("redis INFO connection: " + err);
    }
    auto info = std::unique_ptr<RedisInfo>(new RedisInfo(c));
    if (!opts->password.empty()) {
      if (opts->user.empty()) {
        info->Command({"AUTH", opts->password});
      } else {
        info->Command({"AUTH", opts->user, opts->password});
      }
    }
    return info;
  }
  ~RedisInfo() { redisFree(c_); }

  int64_t UsedMemory() { return static_cast<int64_t>(Field("memory", "used_memory")); }
  double CpuSeconds() { return Field("cpu", "used_cpu_user") + Field("cpu", "used_cpu_sys"); }

  std::string Command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) throw std::runtime_error(std::string("redis: ") + c_->errstr);
    std::string out = r->str ? std::string(r->str, r->len) : "";
    const bool error = r->type == REDIS_REPLY_ERROR;
    freeReplyObject(r);
    if (error) throw std::runtime_error("redis: " + out);
    return out;
  }

 private:
  explicit RedisInfo(redisContext* c) : c_(c) {}

  double Field(const std::string& section, const std::string& name) {
    const std::string text = Command({"INFO", section});
    const std::string key = "\n" + name + ":";
    const size_t at = ("\n" + text).find(key);
    if (at == std::string::npos) throw std::runtime_error("redis INFO: no field " + name);
    return std::stod(text.substr(at + key.size() - 1));
  }

  redisContext* c_;
};

// Bytes a SQLite store takes on disk (the file and its WAL).
int64_t SqliteBytes(const std::string& url) {
  std::string path = url.substr(std::string("sqlite:").size());
  int64_t total = 0;
  for (const std::string& p : {path, path + "-wal"}) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(p, ec);
    if (!ec) total += static_cast<int64_t>(size);
  }
  return total;
}

// ---------------------------------------------------------------------------- throughput

// Adds `count` tenants that have had work and have none now: each with a job and a run that
// was queued and then cancelled (so its default queue is known to the store); with `due_in`, the
// job's next fire is that far ahead. Tenants left by an earlier run on the same store are kept
// as they are.
void AddIdleTenants(const std::string& url, int count,
                    std::optional<Duration> due_in = std::nullopt) {
  auto store = jobsched::OpenStore(url);
  if (!store.ok()) throw std::runtime_error(store.status().ToString());
  const TimePoint now = std::chrono::floor<Duration>(SystemClock::now());
  for (int t = 0; t < count; ++t) {
    jobsched::JobRecord job;
    job.spec.id = "idle";
    job.spec.tenant = "idle-" + std::to_string(t);
    job.spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "noop"};
    job.created_at = job.updated_at = job.dependency_since = now;
    if (due_in) job.next_fire = now + *due_in;
    if (auto made = (*store)->CreateJob(job); !made.ok()) {
      if (made.status().code() == jobsched::StatusCode::kAlreadyExists) continue;
      throw std::runtime_error(made.status().ToString());
    }
    jobsched::RunRecord r;
    r.id = "idle@1";
    r.job_id = job.spec.id;
    r.tenant = job.spec.tenant;
    r.created_at = r.scheduled_at = r.available_at = now;
    if (auto s = (*store)->EnqueueRuns(r.tenant, r.job_id, std::span(&r, 1)); !s.ok())
      throw std::runtime_error(s.ToString());
    if (auto s = (*store)->CancelRun(r.tenant, r.id, now); !s.ok())
      throw std::runtime_error(s.ToString());
  }
}

int Throughput(const Options& o) {
  std::filesystem::path scratch;
  const std::string url = StoreUrl(o, &scratch);
  JobScheduler scheduler(BenchNode(o, url));
  auto redis = RedisInfo::Connect(url);
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
  if (o.idle_tenants > 0) AddIdleTenants(url, o.idle_tenants);

  const double redis_e0 = redis ? redis->CpuSeconds() : 0;
  const auto e0 = SteadyClock::now();
  for (int i = 0; i < o.n; i += o.batch) {
    std::vector<std::string> payloads;
    for (int k = i; k < std::min(o.n, i + o.batch); ++k)
      payloads.push_back("{\"i\":" + std::to_string(k) + "}");
    scheduler.trigger("bench-noop", payloads);
  }
  const auto e1 = SteadyClock::now();
  if (redis && o.command_stats) redis->Command({"CONFIG", "RESETSTAT"});
  const double redis_p0 = redis ? redis->CpuSeconds() : 0;
  const double cpu_p0 = ProcessCpuSeconds();
  scheduler.start();
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::minutes(10), [&] { return done.load() >= o.n; });
  }
  const auto p1 = SteadyClock::now();
  const double cpu_p1 = ProcessCpuSeconds();
  const double redis_p1 = redis ? redis->CpuSeconds() : 0;
  if (redis && o.command_stats) std::cerr << redis->Command({"INFO", "commandstats"});
  scheduler.stop();
  Json out{{"bench", "throughput"},
           {"store", StoreName(o)},
           {"n", o.n},
           {"concurrency", o.concurrency},
           {"batch", o.batch},
           {"idle_tenants", o.idle_tenants},
           {"enqueue_s", Seconds(e1 - e0)},
           {"enqueue_jobs_per_s", static_cast<int64_t>(o.n / Seconds(e1 - e0))},
           {"process_s", Seconds(p1 - e1)},
           {"process_jobs_per_s", static_cast<int64_t>(done.load() / Seconds(p1 - e1))},
           {"first_completion_ms", Seconds(first_done - e1) * 1000},
           {"completed", done.load()},
           // CPU over the processing phase, per processed run (BullMQ's worker_cpu_us_per_job)
           {"process_cpu_util", Round3((cpu_p1 - cpu_p0) / Seconds(p1 - e1))},
           {"process_cpu_us_per_job", Round3((cpu_p1 - cpu_p0) / o.n * 1e6)}};
  if (redis) {
    out["redis_cpu_util"] = Round3((redis_p1 - redis_p0) / Seconds(p1 - e1));
    out["redis_cpu_us_per_job"] = Round3((redis_p1 - redis_p0) / o.n * 1e6);
    out["redis_cpu_us_per_enqueued_job"] = Round3((redis_p0 - redis_e0) / o.n * 1e6);
  }
  std::cout << out.dump() << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return done.load() >= o.n ? 0 : 1;
}

// ---------------------------------------------------------------------------- latency

int Latency(const Options& o) {
  std::filesystem::path scratch;
  JobScheduler scheduler(BenchNode(o, StoreUrl(o, &scratch)));
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> lateness;
  scheduler.registerHandler("record", [&](jobsched::RunContext& ctx) {
    const double late_ms = NowMs() - Ms(ctx.scheduled_at());
    std::lock_guard lock(mu);
    lateness.push_back(late_ms);
    if (static_cast<int>(lateness.size()) >= o.m) cv.notify_all();
    return jobsched::Status::Ok();
  });
  scheduler.start();
  const TimePoint t0 = std::chrono::floor<Duration>(SystemClock::now()) + Duration(o.lead_ms);
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
  const auto early = std::count_if(l.begin(), l.end(), [](double x) { return x < 0; });
  Json out{{"bench", "latency"},       {"store", StoreName(o)}, {"m", o.m},
           {"spread_ms", o.spread_ms}, {"lead_ms", o.lead_ms},  {"concurrency", o.concurrency},
           {"completed", l.size()},    {"early_count", early},  {"lateness_ms", Percentiles(l)}};
  std::cout << out.dump() << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return static_cast<int>(l.size()) >= o.m ? 0 : 1;
}

// ---------------------------------------------------------------------------- cron-scale

// Runs `fn(i)` for i in [0, n) on `threads` threads.
template <typename Fn>
void ParallelFor(int n, int threads, Fn fn) {
  std::atomic<int> next{0};
  std::mutex err_mu;
  std::string first_error;
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, std::min(threads, n)); ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < n; i = next++) {
        try {
          fn(i);
        } catch (const std::exception& e) {
          std::lock_guard lock(err_mu);
          if (first_error.empty()) first_error = e.what();
          next = n;
        }
      }
    });
  }
  for (std::thread& t : pool) t.join();
  if (!first_error.empty()) throw std::runtime_error(first_error);
}

// K cron jobs (the "noop" builtin): creation rate and the store's growth per job with nothing
// fired (as the BullMQ harness measures its job schedulers: used_memory after creating them,
// before any worker runs); then, with --window-s > 0, one node fires them for the window and
// the runs started after the warm-up give firings/s and lateness = started_at − scheduled_at
// (from the run records).
int CronScale(const Options& o) {
  std::filesystem::path scratch;
  const std::string url = StoreUrl(o, &scratch);
  JobScheduler scheduler(BenchNode(o, url));
  auto redis = RedisInfo::Connect(url);
  // A lateness taken on the node's own clock with sub-millisecond resolution, as the attempt
  // begins (kRunStarted); the run records keep whole milliseconds.
  std::mutex mu;
  std::vector<std::pair<double, double>> started;  // (wall ms, lateness ms)
  scheduler.on(jobsched::EventType::kRunStarted, [&](const jobsched::SchedulerEvent& e) {
    const double now = NowMs();
    std::lock_guard lock(mu);
    started.emplace_back(now, now - Ms(e.scheduled_at));
  });

  auto job_id = [](int i) { return "cron-" + std::to_string(i); };
  // Tenants with a job due tomorrow: the schedulers' wake-ups must not cost a read of each.
  if (o.idle_tenants > 0) AddIdleTenants(url, o.idle_tenants, std::chrono::hours(24));
  const int64_t bytes0 = redis ? redis->UsedMemory() : SqliteBytes(url);
  const auto c0 = SteadyClock::now();
  ParallelFor(o.k, o.create_concurrency, [&](int i) {
    jobsched::JobSpec spec{.id = job_id(i)};
    spec.schedule = {.kind = jobsched::Schedule::Kind::kCron, .cron = o.pattern};
    spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "noop"};
    spec.payload = "{\"i\":" + std::to_string(i) + "}";
    scheduler.schedule(spec);
  });
  const auto c1 = SteadyClock::now();
  const int64_t bytes1 = redis ? redis->UsedMemory() : SqliteBytes(url);

  Json out{{"bench", "cron_scale"},
           {"store", StoreName(o)},
           {"k", o.k},
           {"pattern", o.pattern},
           {"create_concurrency", o.create_concurrency},
           {"idle_tenants", o.idle_tenants},
           {"create_s", Round3(Seconds(c1 - c0))},
           {"create_per_s", static_cast<int64_t>(o.k / Seconds(c1 - c0))},
           {redis ? "used_memory_delta_bytes" : "store_file_delta_bytes", bytes1 - bytes0},
           {"bytes_per_scheduler", (bytes1 - bytes0) / std::max(1, o.k)}};
  int rc = 0;
  if (o.window_s > 0) {
    const double t0 = NowMs();
    const double from = t0 + o.warm_s * 1000;
    const double to = t0 + o.window_s * 1000;
    const double measured_s = o.window_s - o.warm_s;
    scheduler.start();
    std::this_thread::sleep_until(
        SteadyClock::now() +
        std::chrono::microseconds(static_cast<int64_t>(std::max(0.0, from - NowMs()) * 1000)));
    const double redis_c0 = redis ? redis->CpuSeconds() : 0;
    const double cpu_c0 = ProcessCpuSeconds();
    std::this_thread::sleep_until(
        SteadyClock::now() +
        std::chrono::microseconds(static_cast<int64_t>(std::max(0.0, to - NowMs()) * 1000)));
    const double redis_c1 = redis ? redis->CpuSeconds() : 0;
    const double cpu_c1 = ProcessCpuSeconds();
    scheduler.stop();

    // Every run of the tenant, newest first, a page at a time.
    std::vector<double> late;
    std::vector<int64_t> per_second(static_cast<size_t>(std::ceil(measured_s)), 0);
    int64_t recorded = 0;
    jobsched::RunFilter filter{.limit = 1000};
    while (true) {
      auto page = scheduler.store().ListRuns("default", filter);
      if (!page.ok()) throw jobsched::Error(page.status());
      for (const jobsched::RunRecord& run : page->items) {
        ++recorded;
        if (run.attempts.empty()) continue;
        const double start = Ms(run.attempts.front().started_at);
        if (start < from || start >= to) continue;
        late.push_back(start - Ms(run.scheduled_at));
        const auto sec = static_cast<size_t>((start - from) / 1000);
        if (sec < per_second.size()) ++per_second[sec];
      }
      if (!page->next_cursor) break;
      filter.cursor = *page->next_cursor;
    }
    std::vector<double> event_late;
    {
      std::lock_guard lock(mu);
      for (const auto& [when, l] : started)
        if (when >= from && when < to) event_late.push_back(l);
    }
    out["concurrency"] = o.concurrency;
    out["window_s"] = measured_s;
    out["warm_s"] = o.warm_s;
    if (o.pattern == "* * * * * *") out["demanded_firings_per_s"] = o.k;
    out["firings_per_s"] = static_cast<int64_t>(std::llround(late.size() / measured_s));
    out["firings_per_s_each_second"] = per_second;
    out["measured_runs"] = late.size();
    const auto early = std::count_if(late.begin(), late.end(), [](double x) { return x < 0; });
    out["early_count"] = early;
    out["lateness_ms"] = Percentiles(late);
    out["event_lateness_ms"] = Percentiles(event_late);
    if (redis) out["redis_cpu_util"] = Round3((redis_c1 - redis_c0) / measured_s);
    out["process_cpu_util"] = Round3((cpu_c1 - cpu_c0) / measured_s);
    out["runs_recorded"] = recorded;
    if (late.empty()) rc = 1;
  }
  // Nothing keeps firing once the bench is gone.
  ParallelFor(o.k, o.create_concurrency, [&](int i) { scheduler.cancelJob(job_id(i)); });
  std::cout << out.dump() << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return rc;
}

// ---------------------------------------------------------------------------- prune

// The janitor's pass over one job's history of N runs: once when every run is younger than the
// retention (nothing to delete: what a pass costs every minute on a busy job), once when all
// but the newest 100 are old; and its pass over the event log (N events) keeping 100,000.
int Prune(const Options& o) {
  std::filesystem::path scratch;
  const std::string url = StoreUrl(o, &scratch);
  auto store = jobsched::OpenStore(url);
  if (!store.ok()) throw std::runtime_error(store.status().ToString());
  const TimePoint now = std::chrono::floor<Duration>(SystemClock::now());
  jobsched::JobRecord job;
  job.spec.id = "bench-prune";
  job.spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "noop"};
  job.created_at = job.updated_at = job.dependency_since = now;
  if (auto made = (*store)->CreateJob(job); !made.ok())
    throw std::runtime_error(made.status().ToString());
  for (int i = 0; i < o.n; i += o.batch) {
    std::vector<jobsched::RunRecord> runs;
    for (int k = i; k < std::min(o.n, i + o.batch); ++k) {
      jobsched::RunRecord r;
      r.id = "bench-prune@" + std::to_string(k);
      r.job_id = job.spec.id;
      r.tenant = job.spec.tenant;
      r.state = jobsched::RunState::kSkipped;  // terminal from the start: finished when created
      r.created_at = r.scheduled_at = r.available_at = r.finished_at.emplace(now + Duration(k));
      runs.push_back(std::move(r));
    }
    if (auto s = (*store)->EnqueueRuns(job.spec.tenant, job.spec.id, runs); !s.ok())
      throw std::runtime_error(s.ToString());
  }
  auto timed = [&](TimePoint older_than) {
    const auto t0 = SteadyClock::now();
    auto deleted = (*store)->PruneRuns(older_than, 100);
    if (!deleted.ok()) throw std::runtime_error(deleted.status().ToString());
    return std::make_pair(Seconds(SteadyClock::now() - t0) * 1000, *deleted);
  };
  const auto [young_ms, young_deleted] = timed(now - std::chrono::hours(24 * 7));
  // The event log (a run.queued event per run) pruned to the default 100,000 newest events.
  const auto e0 = SteadyClock::now();
  if (auto s = (*store)->PruneEvents(100000); !s.ok()) throw std::runtime_error(s.ToString());
  const double events_ms = Seconds(SteadyClock::now() - e0) * 1000;
  const auto [old_ms, old_deleted] = timed(now + Duration(o.n) + std::chrono::hours(1));
  std::cout << Json{{"bench", "prune"},
                    {"store", StoreName(o)},
                    {"n", o.n},
                    {"young_pass_ms", young_ms},
                    {"young_deleted", young_deleted},
                    {"events_pass_ms", events_ms},
                    {"old_pass_ms", old_ms},
                    {"old_deleted", old_deleted}}
                   .dump()
            << std::endl;
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
  return 0;
}

// ---------------------------------------------------------------------------- failover

constexpr const char* kLongHandler = "bench-long";

// The hidden "node" mode: one node with the default lease, renewal and reaper settings, the
// long handler registered, until SIGTERM. Prints "ready" once started.
int NodeMain(const Options& o) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread starts: all inherit it
  spdlog::set_level(spdlog::level::err);
  JobScheduler scheduler({.store_url = o.store, .node_id = o.node_id, .concurrency = 1});
  // The first attempt "works" until it is stopped (this node is the one killed); a later
  // attempt ends at once.
  scheduler.registerHandler(kLongHandler, [](jobsched::RunContext& ctx) {
    if (ctx.attempt() <= 1) ctx.WaitFor(Duration(600000));
    return jobsched::Status::Ok();
  });
  scheduler.start();
  std::cout << "ready " << o.node_id << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  scheduler.stop();
  return 0;
}

struct Child {
  pid_t pid = -1;
  std::string node_id;
  bool reaped = false;
};

// Starts this program in node mode; returns once it printed "ready".
Child SpawnNode(const std::string& store, const std::string& node_id) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    if (getppid() != parent) _exit(1);
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl("/proc/self/exe", "jobsched-bench", "node", "--store", store.c_str(), "--node-id",
          node_id.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* in = fdopen(fds[0], "r");
  char line[256] = {};
  const bool ok = in != nullptr && std::fgets(line, sizeof line, in) != nullptr &&
                  std::string(line).rfind("ready", 0) == 0;
  if (in) std::fclose(in);
  if (!ok) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    throw std::runtime_error("node " + node_id + " did not start");
  }
  return {pid, node_id};
}

void StopNode(Child& c, std::chrono::seconds grace) {
  if (c.reaped || c.pid <= 0) return;
  kill(c.pid, SIGTERM);
  const auto deadline = SteadyClock::now() + grace;
  while (SteadyClock::now() < deadline) {
    if (waitpid(c.pid, nullptr, WNOHANG) == c.pid) {
      c.reaped = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(c.pid, SIGKILL);
  waitpid(c.pid, nullptr, 0);
  c.reaped = true;
}

// One failover run: two node processes, one long run; the node that starts it is SIGKILLed
// kill_after after the attempt began; pickup = start of the next attempt (on the other node) −
// the kill.
Json FailoverRun(const Options& o, JobScheduler& client, const jobsched::SchedulerOptions& d,
                 int index, std::mt19937_64& rng) {
  const std::string tag = std::to_string(getpid()) + "-" + std::to_string(index);
  std::vector<Child> nodes;
  Json res;
  try {
    for (int i = 0; i < 2; ++i)
      nodes.push_back(SpawnNode(o.store, "failover-" + tag + "-" + "ab"[i]));
    const double nodes_ready = NowMs();
    const int64_t renew_ms = d.renew_interval.count();
    const int64_t pre_delay = o.pre_delay_ms >= 0
                                  ? o.pre_delay_ms
                                  : std::uniform_int_distribution<int64_t>(0, renew_ms - 1)(rng);
    std::this_thread::sleep_for(Duration(pre_delay));

    jobsched::JobSpec spec{.id = "failover-" + tag};
    spec.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = kLongHandler};
    client.schedule(spec);
    const std::string run_id = client.trigger(spec.id).at(0);

    auto poll = [&](auto pred, double timeout_ms,
                    int every_ms) -> std::optional<jobsched::RunRecord> {
      const double deadline = NowMs() + timeout_ms;
      while (NowMs() < deadline) {
        auto run = client.getRun(run_id);
        if (run && pred(*run)) return run;
        std::this_thread::sleep_for(std::chrono::milliseconds(every_ms));
      }
      return std::nullopt;
    };
    auto first = poll([](const jobsched::RunRecord& r) { return !r.attempts.empty(); }, 10000, 5);
    if (!first) throw std::runtime_error("the run never started");
    const jobsched::AttemptRecord a1 = first->attempts.front();
    Child* victim = nullptr;
    for (Child& c : nodes)
      if (c.node_id == a1.node) victim = &c;
    if (victim == nullptr) throw std::runtime_error("run started on unknown node " + a1.node);

    const int64_t kill_after =
        o.kill_after_ms >= 0 ? o.kill_after_ms
                             : 1000 + std::uniform_int_distribution<int64_t>(0, renew_ms - 1)(rng);
    const double kill_at = Ms(a1.started_at) + static_cast<double>(kill_after);
    std::this_thread::sleep_for(
        std::chrono::microseconds(static_cast<int64_t>(std::max(0.0, kill_at - NowMs()) * 1000)));
    // Whether the node killed held the leader lease (the leader runs the reaper, so a new
    // leader has to take over before the run is recovered).
    auto leader = client.store().GetLeader(std::chrono::floor<Duration>(SystemClock::now()));
    const double t_kill = NowMs();
    kill(victim->pid, SIGKILL);
    waitpid(victim->pid, nullptr, 0);
    victim->reaped = true;

    auto second = poll([](const jobsched::RunRecord& r) { return r.attempts.size() >= 2; },
                       o.timeout_s * 1000, 10);
    res = Json{{"kill_after_start_ms", kill_after},
               {"job_added_after_nodes_ready_ms", static_cast<int64_t>(pre_delay)},
               {"job_start_after_nodes_ready_ms", std::llround(Ms(a1.started_at) - nodes_ready)},
               {"killed_node", victim->node_id},
               {"killed_leader", leader.ok() && leader->has_value()
                                     ? Json((*leader)->node == victim->node_id)
                                     : Json(nullptr)}};
    if (!second) {
      res["pickup_ms"] = nullptr;
      res["timed_out"] = true;
    } else {
      const jobsched::AttemptRecord& a2 = second->attempts[1];
      const jobsched::AttemptRecord& lost = second->attempts[0];
      res["lease_lost_detected_ms"] =
          lost.finished_at ? Json(std::llround(Ms(*lost.finished_at) - t_kill)) : Json(nullptr);
      res["pickup_ms"] = std::llround(Ms(a2.started_at) - t_kill);
      res["first_attempt_outcome"] = lost.outcome;
      res["pickup_node"] = a2.node;
      res["timed_out"] = false;
      auto done = poll([](const jobsched::RunRecord& r) { return jobsched::IsTerminal(r.state); },
                       10000, 10);
      res["final_state"] = done ? jobsched::RunStateName(done->state) : "not finished";
    }
    client.cancelJob(spec.id, /*kill_running=*/true);
  } catch (...) {
    for (Child& c : nodes) StopNode(c, std::chrono::seconds(0));
    throw;
  }
  for (Child& c : nodes) StopNode(c, std::chrono::seconds(40));
  return res;
}

int Failover(const Options& o) {
  if (o.store.empty())
    throw std::runtime_error("failover needs --store (a store two processes share)");
  const jobsched::SchedulerOptions d;  // the node processes run with these defaults
  // The bench's own handle on the store: it creates and triggers the job and reads the run
  // record; it is never started, so it fires and executes nothing.
  JobScheduler client({.store_url = o.store, .node_id = "failover-bench", .execute = false});
  std::mt19937_64 rng(std::random_device{}());
  Json detail = Json::array();
  std::vector<double> pickups;
  for (int r = 0; r < o.runs; ++r) {
    Json one = FailoverRun(o, client, d, r, rng);
    if (!one["pickup_ms"].is_null()) pickups.push_back(one["pickup_ms"].get<double>());
    std::cerr << "[bench] failover run " << r + 1 << "/" << o.runs << " " << one.dump() << "\n";
    detail.push_back(std::move(one));
  }
  const int64_t lease = d.lease.count(), renew = d.renew_interval.count(),
                reaper = d.reaper_interval.count();
  Json out{
      {"bench", "failover"},
      {"store", StoreName(o)},
      {"node_processes", 2},
      {"concurrency", 1},
      {"settings", "jobsched defaults"},
      {"node_settings",
       {{"lease_ms", lease},
        {"renew_interval_ms", renew},
        {"reaper_interval_ms", reaper},
        {"leader_ttl_ms", d.leader_ttl.count()},
        {"leader_renew_ms", d.leader_renew.count()}}},
      {"kill_after_start_ms", o.kill_after_ms >= 0
                                  ? Json(o.kill_after_ms)
                                  : Json("uniform random [1000, 1000 + renew_interval)")},
      {"job_added_after_nodes_ready_ms",
       o.pre_delay_ms >= 0 ? Json(o.pre_delay_ms) : Json("uniform random [0, renew_interval)")},
      // the lease was last renewed less than one renew interval before the kill; the reaper
      // (on the leader; with the defaults a killed leader's lease ends before the run's) finds
      // it expired within one reaper interval
      {"mechanism_range_ms", {lease - renew, lease + reaper}},
      {"runs", o.runs},
      {"pickup_ms", pickups.empty() ? Json(nullptr) : Json(std::llround(Median(pickups)))},
      {"pickup_ms_min",
       pickups.empty() ? Json(nullptr)
                       : Json(std::llround(*std::min_element(pickups.begin(), pickups.end())))},
      {"pickup_ms_max",
       pickups.empty() ? Json(nullptr)
                       : Json(std::llround(*std::max_element(pickups.begin(), pickups.end())))},
      {"runs_detail", detail}};
  std::cout << out.dump() << std::endl;
  return static_cast<int>(pickups.size()) == o.runs ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobsched-bench: end-to-end workloads, one JSON line each"};
  app.require_subcommand(1);
  Options o;
  spdlog::set_level(spdlog::level::warn);
  auto add_store = [&](CLI::App* sub) {
    sub->add_option("--store", o.store, "Store URL (default: a temporary SQLite file)");
  };
  auto add_common = [&](CLI::App* sub) {
    add_store(sub);
    sub->add_option("--concurrency", o.concurrency, "Worker threads")->capture_default_str();
    sub->add_option("--fire-ahead-ms", o.fire_ahead_ms,
                    "Fire occurrences this early (default: the library's)");
    sub->add_option("--claim-ahead-ms", o.claim_ahead_ms,
                    "Claim runs this early (default: the library's)");
  };
  CLI::App* tp =
      app.add_subcommand("throughput", "N runs enqueued in bulk, then processed (no-op handler)");
  add_common(tp);
  tp->add_option("--n", o.n, "Runs")->capture_default_str();
  tp->add_option("--batch", o.batch, "Runs per bulk trigger")->capture_default_str();
  tp->add_option("--idle-tenants", o.idle_tenants,
                 "Other tenants in the store, each with a job and nothing to run")
      ->capture_default_str();
  tp->add_flag("--command-stats", o.command_stats,
               "Print Redis's INFO commandstats of the processing phase on standard error");
  CLI::App* lat =
      app.add_subcommand("latency", "M one-time jobs due over a window: lateness of start");
  add_common(lat);
  lat->add_option("--m", o.m, "Jobs")->capture_default_str();
  lat->add_option("--spread-ms", o.spread_ms, "Window the due times are spread over")
      ->capture_default_str();
  lat->add_option("--lead-ms", o.lead_ms, "Time from now to the first due time")
      ->capture_default_str();
  CLI::App* cron = app.add_subcommand(
      "cron-scale", "K cron jobs: creation rate, store bytes per job, firings/s and lateness");
  add_common(cron);
  cron->add_option("--k", o.k, "Cron jobs")->capture_default_str();
  cron->add_option("--pattern", o.pattern, "Cron expression (seconds field first)")
      ->capture_default_str();
  cron->add_option("--create-concurrency", o.create_concurrency, "Jobs created at once")
      ->capture_default_str();
  cron->add_option("--window-s", o.window_s,
                   "Seconds the node runs after creation (0: creation and bytes only)")
      ->capture_default_str();
  cron->add_option("--warm-s", o.warm_s, "First seconds of the window not measured")
      ->capture_default_str();
  cron->add_option("--idle-tenants", o.idle_tenants,
                   "Other tenants in the store, each with a job due in a day")
      ->capture_default_str();
  CLI::App* fo = app.add_subcommand(
      "failover", "Two node processes; the one running a long run is SIGKILLed: pickup time");
  add_store(fo);
  fo->add_option("--runs", o.runs, "Repetitions")->capture_default_str();
  fo->add_option("--kill-after-ms", o.kill_after_ms,
                 "Kill this long after the attempt starts (-1: 1 s + uniform [0, renew interval))")
      ->capture_default_str();
  fo->add_option("--pre-delay-ms", o.pre_delay_ms,
                 "Wait this long after the nodes are up before triggering (-1: uniform [0, renew "
                 "interval))")
      ->capture_default_str();
  fo->add_option("--timeout-s", o.timeout_s, "Give up on a pickup after this long")
      ->capture_default_str();
  CLI::App* pr = app.add_subcommand(
      "prune", "One job's history of N runs: the janitor's pass when all are young, then old");
  add_store(pr);
  pr->add_option("--n", o.n, "Runs")->capture_default_str();
  pr->add_option("--batch", o.batch, "Runs per enqueue")->capture_default_str();
  CLI::App* node = app.add_subcommand("node", "(internal) a failover node process");
  node->group("");  // hidden
  add_store(node);
  node->add_option("--node-id", o.node_id)->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (tp->parsed()) return Throughput(o);
    if (lat->parsed()) return Latency(o);
    if (cron->parsed()) return CronScale(o);
    if (fo->parsed()) return Failover(o);
    if (pr->parsed()) return Prune(o);
    if (node->parsed()) return NodeMain(o);
  } catch (const std::exception& e) {
    std::cerr << "jobsched-bench: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
