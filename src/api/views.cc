#include "api/views.h"

#include "core/job_codec.h"
#include "core/time_util.h"
#include "engine/cluster.h"

namespace jobsched::api {

Json TimeJson(const std::optional<TimePoint>& t) {
  return t ? Json(FormatRfc3339(*t)) : Json(nullptr);
}

namespace {
Json OptInt(const std::optional<int>& v) { return v ? Json(*v) : Json(nullptr); }
Json PayloadJson(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? Json(nullptr) : j;
}
}  // namespace

Json RunJson(const RunRecord& r) {
  const int64_t whole_output = r.output_bytes.value_or(static_cast<int64_t>(r.output.size()));
  Json attempts = Json::array();
  for (const AttemptRecord& a : r.attempts) {
    attempts.push_back({{"number", a.number},
                        {"node", a.node},
                        {"fence", a.fence},
                        {"started_at", TimeJson(a.started_at)},
                        {"finished_at", TimeJson(a.finished_at)},
                        {"outcome", a.outcome},
                        {"error", a.error}});
  }
  Json duration = nullptr;
  if (r.started_at && r.finished_at) duration = (*r.finished_at - *r.started_at).count();
  return Json{{"id", r.id},
              {"job_id", r.job_id},
              {"tenant", r.tenant},
              {"queue", r.queue},
              {"priority", r.priority},
              {"scheduled_at", TimeJson(r.scheduled_at)},
              {"available_at", TimeJson(r.available_at)},
              {"created_at", TimeJson(r.created_at)},
              {"reason", RunReasonName(r.reason)},
              {"state", RunStateName(r.state)},
              {"attempt", r.attempt},
              {"max_attempts", r.max_attempts},
              {"leases_lost", r.leases_lost},
              {"node", r.node.empty() ? Json(nullptr) : Json(r.node)},
              {"fence", r.fence},
              {"started_at", TimeJson(r.started_at)},
              {"finished_at", TimeJson(r.finished_at)},
              {"duration_ms", duration},
              {"exit_code", OptInt(r.exit_code)},
              {"http_status", OptInt(r.http_status)},
              {"output", r.output},
              {"output_bytes", whole_output},
              {"output_truncated", static_cast<int64_t>(r.output.size()) < whole_output},
              {"error", r.error},
              {"payload", PayloadJson(r.payload)},
              {"cancel_requested", r.cancel_requested},
              {"attempts", attempts}};
}

Json JobJson(const JobRecord& job) {
  return Json{{"id", job.spec.id},
              {"tenant", job.spec.tenant},
              {"version", job.version},
              {"state", JobStateName(job.state)},
              {"next_fire", TimeJson(job.next_fire)},
              {"created_at", TimeJson(job.created_at)},
              {"updated_at", TimeJson(job.updated_at)},
              {"spec", Json::parse(JobSpecToJson(job.spec))}};
}

Json EventJson(const Event& e) {
  return Json{{"seq", e.seq},
              {"tenant", e.tenant},
              {"time", TimeJson(e.time)},
              {"type", e.type},
              {"job_id", e.job_id},
              {"run_id", e.run_id.empty() ? Json(nullptr) : Json(e.run_id)},
              {"data", PayloadJson(e.data)}};
}

Json NodeJson(const NodeInfo& n, TimePoint now, Duration dead_after) {
  return Json{{"id", n.id},
              {"host", n.host},
              {"pid", n.pid},
              {"version", n.version},
              {"queues", n.queues},
              {"concurrency", n.concurrency},
              {"cpu_seconds", n.cpu_seconds},
              {"rss_bytes", n.rss_bytes},
              {"started_at", TimeJson(n.started_at)},
              {"heartbeat_at", TimeJson(n.heartbeat_at)},
              {"alive", NodeAlive(n, now, dead_after)}};
}

Json KeyJson(const ApiKeyRecord& k) {
  return Json{{"id", k.id},
              {"name", k.name},
              {"role", k.role},
              {"tenant", k.tenant.empty() ? Json(nullptr) : Json(k.tenant)},
              {"allow_shell", k.allow_shell},
              {"created_at", TimeJson(k.created_at)}};
}

Json TenantJson(const TenantRecord& t) {
  // The built-in default tenant, never written: no time is known (not 1970).
  auto known = [](TimePoint at) {
    return at == TimePoint{} ? std::nullopt : std::optional<TimePoint>(at);
  };
  return Json{{"id", t.id},
              {"max_jobs", t.max_jobs},
              {"max_concurrent_runs", t.max_concurrent_runs},
              {"queue_limits", t.queue_limits},
              {"created_at", TimeJson(known(t.created_at))},
              {"updated_at", TimeJson(known(t.updated_at))}};
}

}  // namespace jobsched::api
