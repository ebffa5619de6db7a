// The public JobScheduler: a thin layer over Node that turns Status into jobsched::Error.
#include <jobsched/scheduler.h>

#include "core/job_codec.h"
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

}  // namespace

JobScheduler::JobScheduler(SchedulerOptions options) : tenant_(options.tenant) {
  OrThrow(ValidateTenantId(tenant_));
  node_ = OrThrow(Node::Create(std::move(options)));
}

JobScheduler::~JobScheduler() { stop(); }

JobRecord JobScheduler::Upsert(JobSpec spec, bool* created) {
  spec.tenant = tenant_;
  return OrThrow(node_->jobs().Put(std::move(spec), std::nullopt, created));
}

bool JobScheduler::scheduleCron(const std::string& job_id, const std::string& cron_expression,
                                JobHandler handler) {
  return scheduleCron(job_id, cron_expression, "UTC", std::move(handler));
}

bool JobScheduler::scheduleCron(const std::string& job_id, const std::string& cron_expression,
                                const std::string& timezone, JobHandler handler) {
  JobSpec spec{.id = job_id};
  spec.schedule = {.kind = Schedule::Kind::kCron, .cron = cron_expression, .timezone = timezone};
  spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = job_id};
  OrThrow(ValidateJobSpec(JobSpec{spec.id, tenant_, spec.queue, spec.schedule, spec.handler}));
  node_->builtins().Register(job_id, std::move(handler));
  bool created = false;
  Upsert(std::move(spec), &created);
  return created;
}

bool JobScheduler::scheduleOnce(const std::string& job_id, TimePoint time, JobHandler handler) {
  JobSpec spec{.id = job_id};
  spec.schedule = {.kind = Schedule::Kind::kAt, .at = time};
  spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = job_id};
  OrThrow(ValidateJobId(job_id));
  node_->builtins().Register(job_id, std::move(handler));
  bool created = false;
  Upsert(std::move(spec), &created);
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
  node_->builtins().Register(name, std::move(handler));
}

void JobScheduler::on(EventType type, std::function<void(const SchedulerEvent&)> callback) {
  node_->events().On(type, std::move(callback));
}

void JobScheduler::start() { OrThrow(node_->Start()); }
void JobScheduler::stop() {
  if (node_) node_->Stop();
}

Store& JobScheduler::store() { return node_->store(); }
Node& JobScheduler::node() { return *node_; }

}  // namespace jobsched
