// The public JobScheduler: a thin layer over Node that turns Status into jobsched::Error.
#include <jobsched/scheduler.h>
#include <spdlog/spdlog.h>

#include "core/job_codec.h"
#include "engine/actor.h"
#include "engine/node.h"

namespace jobsched {
namespace {

template <typename T>
T OrThrow(Result<T> result) {
  if (!result.ok()) throw Error(std::move(result).status());
  return std::move(result).value();
}

void OrThrow(Status status) {
  if (!status.ok()) throw Error(std::move(status));
}

// A handler that can be registered under `name` (`field` names it in the error).
void CheckHandler(const std::string& name, const JobHandler& handler, const char* field) {
  if (!handler) throw Error(InvalidArgument("handler: an empty function", "handler"));
  if (BuiltinRegistry::Shipped(name)) {
    throw Error(InvalidArgument(
        std::string(field) + ": '" + name + "' is a handler every node ships; choose another name",
        field));
  }
}

// start() and stop() wait for the scheduler's threads, where handlers and callbacks run.
void CheckNotOnNodeThread(const char* method) {
  if (OnNodeThread()) {
    throw Error(FailedPrecondition(std::string(method) +
                                   " called from a handler or an event callback, which run on "
                                   "the scheduler's own threads; call it from another thread"));
  }
}

}  // namespace

JobScheduler::JobScheduler(SchedulerOptions options) : tenant_(options.tenant) {
  OrThrow(ValidateTenantId(tenant_));
  node_ = OrThrow(Node::Create(std::move(options)));
}

JobScheduler::~JobScheduler() {
  try {
    stop();
  } catch (const Error& e) {
    spdlog::error("JobScheduler destroyed: {}", e.what());
  }
}

JobRecord JobScheduler::Upsert(JobSpec spec, bool* created, bool keep_paused) {
  spec.tenant = tenant_;
  return OrThrow(node_->jobs().Put(std::move(spec), std::nullopt, created, keep_paused));
}

bool JobScheduler::scheduleCron(const std::string& job_id, const std::string& cron_expression,
                                JobHandler handler) {
  return scheduleCron(job_id, cron_expression, "UTC", std::move(handler));
}

bool JobScheduler::scheduleCron(const std::string& job_id, const std::string& cron_expression,
                                const std::string& timezone, JobHandler handler) {
  return ScheduleWithHandler(
      {.id = job_id,
       .schedule = {.kind = Schedule::Kind::kCron, .cron = cron_expression, .timezone = timezone}},
      std::move(handler));
}

bool JobScheduler::scheduleOnce(const std::string& job_id, TimePoint time, JobHandler handler) {
  return ScheduleWithHandler({.id = job_id, .schedule = {.kind = Schedule::Kind::kAt, .at = time}},
                             std::move(handler));
}

bool JobScheduler::ScheduleWithHandler(JobSpec spec, JobHandler handler) {
  spec.tenant = tenant_;
  spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = spec.id};
  OrThrow(ValidateJobSpec(spec));
  CheckHandler(spec.id, handler, "id");
  // Registered before the write (a run due at once finds it), put back if the write fails.
  const std::string id = spec.id;
  JobHandler previous = node_->builtins().Find(id);
  node_->builtins().Register(id, std::move(handler));
  bool created = false;
  try {
    // A program that schedules its jobs at every start keeps an operator's pause.
    Upsert(std::move(spec), &created, /*keep_paused=*/true);
  } catch (const Error&) {
    node_->builtins().Register(id, std::move(previous));
    throw;
  }
  return created;
}

JobRecord JobScheduler::schedule(JobSpec spec) { return Upsert(std::move(spec), nullptr); }

bool JobScheduler::cancelJob(const std::string& job_id, bool kill_running) {
  Status s = node_->jobs().Delete(tenant_, job_id, kill_running);
  if (s.code() == StatusCode::kNotFound) return false;
  OrThrow(s);
  return true;
}

bool JobScheduler::pauseJob(const std::string& job_id) {
  auto r = node_->jobs().Pause(tenant_, job_id);
  if (!r.ok() && r.status().code() == StatusCode::kNotFound) return false;
  return OrThrow(std::move(r));
}

bool JobScheduler::resumeJob(const std::string& job_id) {
  auto r = node_->jobs().Resume(tenant_, job_id);
  if (!r.ok() && r.status().code() == StatusCode::kNotFound) return false;
  return OrThrow(std::move(r));
}

std::vector<std::string> JobScheduler::trigger(const std::string& job_id,
                                               const std::vector<std::string>& payloads) {
  return OrThrow(node_->jobs().Trigger(tenant_, job_id, payloads));
}

std::optional<JobRecord> JobScheduler::getJob(const std::string& job_id) {
  auto r = node_->store().GetJob(tenant_, job_id);
  if (!r.ok() && r.status().code() == StatusCode::kNotFound) return std::nullopt;
  return OrThrow(std::move(r));
}

std::vector<RunRecord> JobScheduler::listRuns(const std::string& job_id, int limit) {
  if (limit < 1 || limit > 1000)
    throw Error(InvalidArgument("limit: must be between 1 and 1000", "limit"));
  return OrThrow(node_->store().ListRuns(tenant_, RunFilter{.job_id = job_id, .limit = limit}))
      .items;
}

std::optional<RunRecord> JobScheduler::getRun(const std::string& run_id) {
  auto r = node_->store().GetRun(tenant_, run_id);
  if (!r.ok() && r.status().code() == StatusCode::kNotFound) return std::nullopt;
  return OrThrow(std::move(r));
}

bool JobScheduler::cancelRun(const std::string& run_id) {
  Status s = node_->jobs().CancelRun(tenant_, run_id);
  if (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kFailedPrecondition)
    return false;
  OrThrow(s);
  return true;
}

void JobScheduler::registerHandler(const std::string& name, JobHandler handler) {
  if (name.empty()) throw Error(InvalidArgument("name: empty", "name"));
  CheckHandler(name, handler, "name");
  node_->builtins().Register(name, std::move(handler));
}

int64_t JobScheduler::on(EventType type, std::function<void(const SchedulerEvent&)> callback) {
  return node_->events().On(type, std::move(callback));
}

void JobScheduler::off(int64_t id) { node_->events().Off(id); }

void JobScheduler::start() {
  CheckNotOnNodeThread("start()");
  OrThrow(node_->Start());
}

void JobScheduler::stop() {
  if (!node_) return;
  CheckNotOnNodeThread("stop()");
  node_->Stop();
}

Store& JobScheduler::store() { return node_->store(); }
Node& JobScheduler::node() { return *node_; }

}  // namespace jobsched
