// Embedding jobsched: two C++ handlers on a schedule, with the embedded SQLite store.
//
//   build/bin/jobsched-example [seconds to run, default 10]
#include <jobsched/scheduler.h>

#include <cstdlib>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
  const int seconds = argc > 1 ? std::atoi(argv[1]) : 10;
  jobsched::JobScheduler scheduler(
      {.store_url = "sqlite:./data/example.db", .node_id = "example", .concurrency = 2});

  // Every 2 seconds (a 6-field cron expression: seconds first).
  scheduler.scheduleCron("heartbeat", "*/2 * * * * *", [](jobsched::RunContext& ctx) {
    std::cout << "heartbeat " << ctx.run_id() << " (attempt " << ctx.attempt() << ")\n";
    return jobsched::Status::Ok();
  });
  // Once, three seconds from now; it fails on its first attempt and is retried.
  jobsched::JobSpec once{.id = "flaky-once"};
  once.schedule = {.kind = jobsched::Schedule::Kind::kAt,
                   .at = std::chrono::floor<jobsched::Duration>(std::chrono::system_clock::now()) +
                         std::chrono::seconds(3)};
  once.handler = {.type = jobsched::HandlerSpec::Type::kBuiltin, .name = "flaky"};
  once.retry = {.max_attempts = 3, .initial_delay = jobsched::Duration(500)};
  scheduler.registerHandler("flaky", [](jobsched::RunContext& ctx) {
    std::cout << "flaky attempt " << ctx.attempt() << "\n";
    if (ctx.attempt() == 1)
      return jobsched::Status(jobsched::StatusCode::kUnavailable, "first try fails");
    return jobsched::Status::Ok();
  });
  scheduler.schedule(once);

  scheduler.on(jobsched::EventType::kRunRetrying, [](const jobsched::SchedulerEvent& e) {
    std::cout << "retrying " << e.run_id << ": " << e.error << "\n";
  });
  scheduler.start();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  scheduler.stop();
  for (const auto& run : scheduler.listRuns("flaky-once")) {
    std::cout << run.id << " " << jobsched::RunStateName(run.state) << " after " << run.attempt
              << " attempts\n";
  }
  return 0;
}
