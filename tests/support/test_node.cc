// A node in its own process, for tests that kill it: `jobsched_test_node --db PATH --node-id ID
// --log FILE [--setup]`. With --setup it creates the jobs below; then it runs until killed.
//
// Jobs:
//   work  no schedule; handler "record": logs "<run> <attempt> start", waits payload.ms on the
//         first attempt only, logs "<run> <attempt> end".
//   tick  every second, misfire fire_all with a 500 ms grace, handler "record" (no wait).
#include <jobsched/scheduler.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace {

std::mutex log_mu;

void Append(const std::string& path, const std::string& line) {
  std::lock_guard lock(log_mu);
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  out.flush();
}

}  // namespace

int main(int argc, char** argv) {
  std::string db, node_id = "node", log;
  bool setup = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--db" && i + 1 < argc)
      db = argv[++i];
    else if (a == "--node-id" && i + 1 < argc)
      node_id = argv[++i];
    else if (a == "--log" && i + 1 < argc)
      log = argv[++i];
    else if (a == "--setup")
      setup = true;
  }
  if (db.empty() || log.empty()) {
    std::fprintf(stderr, "usage: jobsched_test_node --db PATH --node-id ID --log FILE [--setup]\n");
    return 2;
  }
  jobsched::JobScheduler scheduler({.store_url = "sqlite:" + db,
                                    .node_id = node_id,
                                    .concurrency = 4,
                                    .lease = jobsched::Duration(2000),
                                    .renew_interval = jobsched::Duration(500),
                                    .shutdown_grace = jobsched::Duration(1000)});
  scheduler.registerHandler("record", [&](jobsched::RunContext& ctx) {
    Append(log, ctx.run_id() + " " + std::to_string(ctx.attempt()) + " start");
    const auto payload = nlohmann::json::parse(ctx.payload(), nullptr, false);
    if (ctx.attempt() == 1 && payload.is_object() && payload.contains("ms")) {
      ctx.WaitFor(jobsched::Duration(payload["ms"].get<int64_t>()));
    }
    Append(log, ctx.run_id() + " " + std::to_string(ctx.attempt()) + " end");
    return jobsched::Status::Ok();
  });
  if (setup) {
    jobsched::JobSpec work{.id = "work"};
    work.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "record"};
    scheduler.schedule(work);
    jobsched::JobSpec tick{.id = "tick"};
    tick.schedule = {.kind = jobsched::Schedule::Kind::kEvery, .every = jobsched::Duration(1000)};
    tick.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "record"};
    tick.misfire = {.policy = jobsched::Misfire::kFireAll, .grace = jobsched::Duration(500)};
    tick.overlap = jobsched::Overlap::kAllow;
    scheduler.schedule(tick);
    scheduler.trigger("work", {R"({"ms": 600000})"});
  }
  scheduler.start();
  Append(log, "node " + node_id + " started pid " + std::to_string(::getpid()));
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}
