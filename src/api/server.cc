#include "api/server.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <regex>

#include "api/dashboard.h"
#include "api/views.h"
#include "core/cron.h"
#include "core/http_url.h"
#include "core/job_codec.h"
#include "core/log_fields.h"
#include "core/policy.h"
#include "core/time_util.h"
#include "engine/heartbeater.h"
#include "engine/node.h"

namespace jobsched::api {
namespace {

// An answer: a status and a JSON body (or raw text for /metrics and the dashboard).
struct Reply {
  int status = 200;
  Json body;
  std::string text;
  std::string content_type;
};

// An error answered directly by the HTTP layer (authentication, authorization).
struct HttpError {
  int status;
  std::string code;
  std::string message;
  std::string field;
};

// The error body as text; bytes that are not UTF-8 (echoed from bad input) are replaced.
std::string ErrorBody(const std::string& code, const std::string& message,
                      const std::string& field) {
  Json e{{"code", code}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  return Json{{"error", e}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

const char* CodeForHttp(int status) {
  switch (status) {
    case 400:
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 409:
      return "already_exists";
    case 411:
      return "length_required";
    case 412:
      return "failed_precondition";
    case 413:
      return "payload_too_large";
    case 414:
      return "uri_too_long";
    case 415:
      return "unsupported_media_type";
    case 429:
      return "resource_exhausted";
    case 503:
      return "unavailable";
    default:
      return "internal";
  }
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

Result<std::pair<std::string, int>> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("listen: expected HOST:PORT, got '" + listen + "'", "listen");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port_text = listen.substr(colon + 1);
  int port = -1;
  try {
    size_t used = 0;
    port = std::stoi(port_text, &used);
    if (used != port_text.size()) port = -1;
  } catch (...) {
  }
  if (port < 0 || port > 65535)
    return InvalidArgument("listen: bad port '" + port_text + "'", "listen");
  return std::make_pair(host, port);
}

// Query parameter helpers: errors name the parameter.
Result<int> IntParam(const httplib::Request& req, const char* name, int def, int min, int max) {
  if (!req.has_param(name)) return def;
  const std::string v = req.get_param_value(name);
  int n = 0;  // digits, with an optional '-': no space, no '+'
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec == std::errc() && end == v.data() + v.size() && n >= min && n <= max) return n;
  return InvalidArgument(std::string(name) + ": must be an integer from " + std::to_string(min) +
                             " to " + std::to_string(max) + ", got '" + v + "'",
                         name);
}

Result<bool> BoolParam(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  const std::string v = req.get_param_value(name);
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  return InvalidArgument(std::string(name) + ": must be true or false, got '" + v + "'", name);
}

// A JSON body of bounded nesting; empty bodies are `null`.
Result<Json> ParseBody(const httplib::Request& req) {
  if (req.body.empty()) return Json(nullptr);
  if (JsonNestingDepth(req.body) > kMaxJsonNesting) {
    return InvalidArgument("JSON nesting deeper than " + std::to_string(kMaxJsonNesting) +
                           " levels");
  }
  Json body;
  try {
    body = Json::parse(req.body);
  } catch (const Json::exception& e) {
    return InvalidArgument("invalid JSON: " + JsonErrorText(e));
  }
  if (auto twice = FirstDuplicateKey(req.body)) {
    return InvalidArgument(*twice + ": given twice", *twice);
  }
  return body;
}

// kInvalidArgument naming the first member of `body` not in `allowed`.
Status OnlyFields(const Json& body, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) return InvalidArgument(key + ": unknown field", key);
  }
  return Status::Ok();
}

}  // namespace

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kFailedPrecondition:
      return 412;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

// ---- The route table ----------------------------------------------------------------------

class ApiServer::Impl {
 public:
  struct Call {
    const httplib::Request& req;
    httplib::Response& res;
    Principal who;
    std::string tenant;  // {t}
    std::string id;      // {id} or {runId}
  };
  using Handler = Result<Reply> (Impl::*)(Call&);

  struct Route {
    RouteInfo info;
    Handler handler;
  };

  static const std::vector<Route>& Table();

  Impl(Node& node, const ServerOptions& options, Metrics& metrics);
  void Register(httplib::Server& http);
  // The methods of the routes whose path matches `path` ("GET, PUT"), "" for none.
  std::string MethodsOf(const std::string& path) const;
  // jobsched_http_requests_total: `route` is "<method> <path pattern>", or "unmatched".
  void CountRequest(const std::string& route, int code);
  ~Impl() {
    for (int64_t id : listeners_) node_.events().Off(id);
  }
  void Stop() {
    stopping_ = true;
    events_cv_.notify_all();
  }

 private:
  void Serve(const Route& route, const httplib::Request& req, httplib::Response& res);
  std::optional<HttpError> Authorize(const Route& route, Call& call);
  // Keys verified in the store by the routes that answer during an outage (by key hash).
  void RememberKey(std::string_view key, const Principal& who);
  std::optional<Principal> RecentKey(std::string_view key);
  void ForgetKey(const std::string& id);
  // An unknown or repeated query parameter: a typo would otherwise drop a filter unseen.
  static std::optional<HttpError> CheckParams(const Route& route, const httplib::Request& req);
  void Audit(const Call& call, const Route& route, int status);
  void OnEngineEvent(const SchedulerEvent& e);

  Result<Reply> Healthz(Call&);
  Result<Reply> Readyz(Call&);
  // A 503 (the store unreachable, streams all in use, a probe of /readyz): expected during an
  // outage, so logged at most every 10 s, with how many there were meanwhile.
  void LogUnavailable(const std::string& request, const Status& s);

  Result<Reply> MetricsText(Call&);
  // The gauges read from the store; a tenant's key (`only`) sees its own tenant's.
  Status ClusterGauges(std::string& out, const std::string& only);
  Result<Reply> Dashboard(Call&);
  Result<Reply> CronNext(Call&);
  Result<Reply> CreateJob(Call&);
  Result<Reply> PutJob(Call&);
  Result<Reply> ListJobs(Call&);
  Result<Reply> GetJob(Call&);
  Result<Reply> DeleteJob(Call&);
  Result<Reply> PauseJob(Call&);
  Result<Reply> ResumeJob(Call&);
  Result<Reply> TriggerJob(Call&);
  Result<Reply> JobRuns(Call&);
  Result<Reply> TenantRuns(Call&);
  Result<Reply> GetRun(Call&);
  Result<Reply> CancelRun(Call&);
  Result<Reply> Events(Call&);
  Result<Reply> Stats(Call&);
  Result<Reply> Nodes(Call&);
  Result<Reply> Cluster(Call&);
  Result<Reply> CreateKey(Call&);
  Result<Reply> ListKeys(Call&);
  Result<Reply> DeleteKey(Call&);
  Result<Reply> ListTenants(Call&);
  Result<Reply> PutTenant(Call&);

  Result<Json> JobDetail(const JobRecord& job);
  Result<Reply> Runs(Call& call, const std::string& job_id);
  Status CheckShellAllowed(const Call& call, const JobSpec& spec);

  Node& node_;
  const ServerOptions& options_;
  Metrics& metrics_;
  std::atomic<bool> stopping_{false};
  std::mutex events_mu_;
  std::condition_variable events_cv_;  // local activity: streams look at the store at once
  std::vector<int64_t> listeners_;     // on node_.events(), removed with the server
  std::mutex keys_mu_;
  std::unordered_map<std::string, std::pair<Principal, std::chrono::steady_clock::time_point>>
      verified_;                      // guarded by keys_mu_
  std::atomic<uint64_t> revoked_{0};  // keys revoked through this node: streams check theirs
  std::atomic<int> open_streams_{0};
  std::vector<std::pair<std::regex, std::string>> patterns_;  // path pattern, method (Register)
  std::mutex unavailable_mu_;                                 // LogUnavailable
  std::chrono::steady_clock::time_point unavailable_logged_;  // guarded by unavailable_mu_
  int64_t unavailable_count_ = 0;                             // guarded by unavailable_mu_
};

const std::vector<ApiServer::Impl::Route>& ApiServer::Impl::Table() {
  using I = ApiServer::Impl;
  static const std::vector<Route> kTable = {
      {{"GET", "/healthz", Access::kPublic, "Liveness"}, &I::Healthz},
      {{"GET", "/readyz", Access::kPublic, "Readiness: store reachable, node registered"},
       &I::Readyz},
      {{"GET", "/metrics", Access::kViewer, "Prometheus metrics", "", false, true},
       &I::MetricsText},
      {{"GET", "/", Access::kPublic, "Dashboard (asks for a key)"}, &I::Dashboard},
      {{"GET", "/v1/cron/next", Access::kAnyKey, "Preview fire times: expr, tz, from, n",
        "expr,tz,from,n"},
       &I::CronNext},
      {{"POST", "/v1/tenants/{t}/jobs", Access::kOperator, "Create a job (409 if the id exists)",
        "", true},
       &I::CreateJob},
      {{"PUT", "/v1/tenants/{t}/jobs/{id}", Access::kOperator,
        "Create or replace a job; If-Match: <version>", "", true},
       &I::PutJob},
      {{"GET", "/v1/tenants/{t}/jobs", Access::kViewer,
        "List jobs: queue, state, label=k:v, limit, cursor", "queue,state,label,limit,cursor"},
       &I::ListJobs},
      {{"GET", "/v1/tenants/{t}/jobs/{id}", Access::kViewer,
        "A job: spec, version, state, next 5 fire times, last run, counts"},
       &I::GetJob},
      {{"DELETE", "/v1/tenants/{t}/jobs/{id}", Access::kOperator,
        "Delete a job, cancel its queued runs; kill_running=true", "kill_running"},
       &I::DeleteJob},
      {{"POST", "/v1/tenants/{t}/jobs/{id}/pause", Access::kOperator, "Pause a job"}, &I::PauseJob},
      {{"POST", "/v1/tenants/{t}/jobs/{id}/resume", Access::kOperator, "Resume a job"},
       &I::ResumeJob},
      {{"POST", "/v1/tenants/{t}/jobs/{id}/trigger", Access::kOperator,
        "Run now: {\"payload\": …} or {\"payloads\": […]}", "", true},
       &I::TriggerJob},
      {{"GET", "/v1/tenants/{t}/jobs/{id}/runs", Access::kViewer,
        "Run history of a job: state, limit, cursor", "state,limit,cursor"},
       &I::JobRuns},
      {{"GET", "/v1/tenants/{t}/runs", Access::kViewer, "Runs of a tenant: state, limit, cursor",
        "state,limit,cursor"},
       &I::TenantRuns},
      {{"GET", "/v1/tenants/{t}/runs/{id}", Access::kViewer, "A run"}, &I::GetRun},
      {{"POST", "/v1/tenants/{t}/runs/{id}/cancel", Access::kOperator,
        "Cancel a queued or running run"},
       &I::CancelRun},
      {{"GET", "/v1/tenants/{t}/events", Access::kViewer,
        "Server-Sent Events of run and job changes: job, after; Last-Event-ID", "job,after"},
       &I::Events},
      {{"GET", "/v1/tenants/{t}/stats", Access::kViewer,
        "Counts by state and queue, average duration, failure rate"},
       &I::Stats},
      {{"GET", "/v1/nodes", Access::kAdmin, "Nodes"}, &I::Nodes},
      {{"GET", "/v1/cluster", Access::kAdmin, "Nodes, leader, epoch, assignment"}, &I::Cluster},
      {{"POST", "/v1/keys", Access::kAdmin, "Create an API key (shown once)", "", true},
       &I::CreateKey},
      {{"GET", "/v1/keys", Access::kAdmin, "API keys (without secrets)"}, &I::ListKeys},
      {{"DELETE", "/v1/keys/{id}", Access::kAdmin, "Revoke an API key"}, &I::DeleteKey},
      {{"GET", "/v1/tenants", Access::kAdmin, "Tenants and their quotas"}, &I::ListTenants},
      {{"PUT", "/v1/tenants/{t}", Access::kAdmin,
        "Create or change a tenant: max_jobs, max_concurrent_runs, queue_limits", "", true},
       &I::PutTenant},
  };
  return kTable;
}

const std::vector<RouteInfo>& Routes() {
  static const std::vector<RouteInfo> kRoutes = [] {
    std::vector<RouteInfo> out;
    for (const auto& r : ApiServer::Impl::Table()) out.push_back(r.info);
    return out;
  }();
  return kRoutes;
}

std::string RoutesMarkdown() {
  static const char* kAccess[] = {"none", "any key", "viewer", "operator", "admin"};
  std::string out = "| method | path | role | what |\n|---|---|---|---|\n";
  for (const RouteInfo& r : Routes()) {
    out += fmt::format("| {} | `{}` | {} | {} |\n", r.method, r.path,
                       kAccess[static_cast<int>(r.access)], r.summary);
  }
  return out;
}

ApiServer::Impl::Impl(Node& node, const ServerOptions& options, Metrics& metrics)
    : node_(node), options_(options), metrics_(metrics) {
  for (EventType t : {EventType::kRunStarted, EventType::kRunSucceeded, EventType::kRunFailed,
                      EventType::kRunRetrying, EventType::kRunTimedOut, EventType::kRunCancelled,
                      EventType::kRunSkipped, EventType::kJobChanged, EventType::kRunLeaseLost,
                      EventType::kRunRecovered}) {
    listeners_.push_back(
        node_.events().On(t, [this](const SchedulerEvent& e) { OnEngineEvent(e); }));
  }
}

void ApiServer::Impl::OnEngineEvent(const SchedulerEvent& e) {
  const std::string labels =
      "tenant=\"" + Metrics::Label(e.tenant) + "\",queue=\"" + Metrics::Label(e.queue) + "\"";
  auto seconds = [](Duration d) { return std::chrono::duration<double>(d).count(); };
  switch (e.type) {
    case EventType::kRunStarted:
      // How late the node was: not a retry's backoff or a jitter, which are asked for.
      metrics_.Observe("jobsched_fire_delay_seconds", "tenant=\"" + Metrics::Label(e.tenant) + "\"",
                       std::max(0.0, seconds(node_.clock().Now() - e.available_at)));
      break;
    case EventType::kRunSucceeded:
    case EventType::kRunFailed:
    case EventType::kRunRetrying:
    case EventType::kRunTimedOut:
    case EventType::kRunCancelled: {
      static const char* kOutcome[] = {"",         "succeeded", "failed",
                                       "retrying", "timed_out", "cancelled"};
      metrics_.Inc("jobsched_runs_total",
                   labels + ",outcome=\"" + kOutcome[static_cast<int>(e.type)] + "\"");
      metrics_.Observe("jobsched_run_duration_seconds", labels, seconds(e.duration));
      break;
    }
    case EventType::kRunLeaseLost:
      metrics_.Inc("jobsched_leases_lost_total", labels);
      break;
    case EventType::kRunRecovered:
      metrics_.Inc("jobsched_runs_recovered_total", labels);
      break;
    default:
      break;
  }
  events_cv_.notify_all();
}

void ApiServer::Impl::Register(httplib::Server& http) {
  for (const Route& route : Table()) {
    std::string pattern = "^";
    for (const char* p = route.info.path; *p != '\0'; ++p) {
      if (*p == '{') {
        while (*p != '}') ++p;
        pattern += "([^/]+)";
      } else if (std::string_view(".+*?()[]^$|\\").find(*p) != std::string_view::npos) {
        pattern += '\\';
        pattern += *p;
      } else {
        pattern += *p;
      }
    }
    pattern += "$";
    patterns_.emplace_back(std::regex(pattern), route.info.method);
    auto handler = [this, &route](const httplib::Request& req, httplib::Response& res) {
      Serve(route, req, res);
    };
    const std::string method = route.info.method;
    if (method == "GET") {
      http.Get(pattern, handler);
    } else if (method == "POST") {
      http.Post(pattern, handler);
    } else if (method == "PUT") {
      http.Put(pattern, handler);
    } else if (method == "DELETE") {
      http.Delete(pattern, handler);
    }
  }
}

std::string ApiServer::Impl::MethodsOf(const std::string& path) const {
  std::string methods;
  for (const auto& [pattern, method] : patterns_) {
    if (std::regex_match(path, pattern) && methods.find(method) == std::string::npos) {
      methods += (methods.empty() ? "" : ", ") + method;
    }
  }
  return methods;
}

std::optional<HttpError> ApiServer::Impl::CheckParams(const Route& route,
                                                      const httplib::Request& req) {
  // The public routes (health checks, the dashboard page) are asked by tools and browsers that
  // may add parameters of their own; they take none and ignore any.
  if (route.info.access == Access::kPublic) return std::nullopt;
  const std::string_view takes = route.info.params;
  auto listed = [&](const std::string& name) {
    for (size_t start = 0; start <= takes.size();) {
      size_t comma = takes.find(',', start);
      if (comma == std::string_view::npos) comma = takes.size();
      if (takes.substr(start, comma - start) == name) return true;
      start = comma + 1;
    }
    return false;
  };
  for (auto it = req.params.begin(); it != req.params.end();
       it = req.params.upper_bound(it->first)) {
    const std::string& name = it->first;
    if (name.empty() || !listed(name)) {
      std::string takes_text = takes.empty() ? "none" : std::string(takes);
      for (size_t at = takes_text.find(','); at != std::string::npos;
           at = takes_text.find(',', at + 2)) {
        takes_text.replace(at, 1, ", ");
      }
      return HttpError{400, "invalid_argument",
                       name + ": unknown query parameter (this route takes " + takes_text + ")",
                       name};
    }
    if (req.params.count(name) > 1) {
      return HttpError{400, "invalid_argument", name + ": given more than once", name};
    }
  }
  return std::nullopt;
}

void ApiServer::Impl::RememberKey(std::string_view key, const Principal& who) {
  std::string hash = HashKey(key);
  std::lock_guard lock(keys_mu_);
  if (verified_.size() >= 1024 && !verified_.contains(hash)) verified_.clear();
  verified_[std::move(hash)] = {who, std::chrono::steady_clock::now()};
}

std::optional<Principal> ApiServer::Impl::RecentKey(std::string_view key) {
  const std::string hash = HashKey(key);
  std::lock_guard lock(keys_mu_);
  auto it = verified_.find(hash);
  if (it == verified_.end() ||
      std::chrono::steady_clock::now() - it->second.second > std::chrono::minutes(10)) {
    return std::nullopt;
  }
  return it->second.first;
}

void ApiServer::Impl::ForgetKey(const std::string& id) {
  {
    std::lock_guard lock(keys_mu_);
    std::erase_if(verified_, [&](const auto& entry) { return entry.second.first.key_id == id; });
  }
  ++revoked_;
  events_cv_.notify_all();
}

std::optional<HttpError> ApiServer::Impl::Authorize(const Route& route, Call& call) {
  const Access access = route.info.access;
  if (access == Access::kPublic) return std::nullopt;
  const std::string header = call.req.get_header_value("Authorization");
  if (header.empty()) {
    return HttpError{401, "unauthenticated", "missing 'Authorization: Bearer <api key>' header"};
  }
  const bool bearer = header.size() > 7 && (header.compare(0, 7, "Bearer ") == 0 ||
                                            header.compare(0, 7, "bearer ") == 0 ||
                                            header.compare(0, 7, "BEARER ") == 0);
  if (!bearer) {
    return HttpError{401, "unauthenticated", "the Authorization header must be 'Bearer <api key>'"};
  }
  const std::string_view key = std::string_view(header).substr(7);
  auto who = Authenticate(node_.store(), key);
  if (who.ok()) {
    if (route.info.during_outage) RememberKey(key, *who);
  } else if (who.status().code() != StatusCode::kUnavailable) {
    return HttpError{401, "unauthenticated", "invalid API key"};
  } else if (auto recent = route.info.during_outage ? RecentKey(key) : std::nullopt) {
    who = *recent;
  } else {
    return HttpError{503, "unavailable", "the store is unreachable: " + who.status().message()};
  }
  call.who = *who;
  if (access == Access::kAnyKey) return std::nullopt;
  if (access == Access::kAdmin) {
    if (call.who.role != Role::kAdmin)
      return HttpError{403, "permission_denied", "this route needs an admin key"};
    return std::nullopt;
  }
  // Tenant routes: another tenant's resources do not exist for this key.
  if (!call.tenant.empty()) {
    if (call.who.role != Role::kAdmin && call.who.tenant != call.tenant) {
      return HttpError{404, "not_found", "tenant '" + call.tenant + "' not found"};
    }
    auto tenant = node_.store().GetTenant(call.tenant);
    if (!tenant.ok()) {
      const int status = HttpStatusFor(tenant.status().code());
      return HttpError{status, CodeForHttp(status), tenant.status().message()};
    }
  }
  const Role needed = access == Access::kOperator ? Role::kOperator : Role::kViewer;
  if (static_cast<int>(call.who.role) < static_cast<int>(needed)) {
    return HttpError{403, "permission_denied",
                     std::string("this route needs an ") + RoleName(needed) + " key"};
  }
  return std::nullopt;
}

void ApiServer::Impl::Audit(const Call& call, const Route& route, int status) {
  const std::string what = std::string(route.info.method) + " " + call.req.path;
  spdlog::info("audit who={} role={} tenant={} what={} status={}", call.who.key_id,
               RoleName(call.who.role), call.tenant, LogValue(what), status);
  Event e{.tenant = call.tenant,
          .time = node_.clock().Now(),
          .type = "audit",
          .job_id = route.info.path == std::string_view("/v1/tenants/{t}/jobs") ? "" : call.id,
          .data = Json{{"who", call.who.key_id},
                       {"role", RoleName(call.who.role)},
                       {"what", what},
                       {"status", status}}
                      .dump()};
  Status s = node_.store().AppendEvent(e);
  if (!s.ok()) spdlog::warn("audit event not stored: {}", s.ToString());
}

void ApiServer::Impl::Serve(const Route& route, const httplib::Request& req,
                            httplib::Response& res) {
  Call call{.req = req, .res = res};
  // Path parameters in order: {t} first where present, then {id}.
  const std::string_view path = route.info.path;
  size_t match = 1;
  if (path.find("{t}") != std::string_view::npos && req.matches.size() > match)
    call.tenant = req.matches[match++];
  if (path.find("{id}") != std::string_view::npos && req.matches.size() > match)
    call.id = req.matches[match++];

  int status = 200;
  auto send_error = [&](int http_status, const std::string& code, const std::string& message,
                        const std::string& field) {
    status = http_status;
    res.status = http_status;
    res.set_content(ErrorBody(code, message, field), "application/json");
  };
  if (auto denied = Authorize(route, call)) {
    send_error(denied->status, denied->code, denied->message, denied->field);
  } else if (auto bad = CheckParams(route, req)) {
    send_error(400, "invalid_argument", bad->message, bad->field);
  } else if (!route.info.takes_body && req.body.find_first_not_of(" \t\r\n") != std::string::npos) {
    send_error(
        400, "invalid_argument",
        std::string("this route takes no body (") + route.info.method + " " + route.info.path + ")",
        "");
  } else {
    Result<Reply> reply = Internal("no reply");
    try {
      reply = (this->*route.handler)(call);
    } catch (const std::exception& e) {
      reply = Internal(std::string("unexpected error: ") + e.what());
    }
    if (!reply.ok()) {
      const Status& s = reply.status();
      const int http_status = HttpStatusFor(s.code());
      send_error(http_status, std::string(StatusCodeName(s.code())), s.message(), s.field());
      if (http_status == 503) {
        LogUnavailable(req.method + " " + req.path, s);
      } else if (http_status >= 500) {
        spdlog::error("{} {}: {}", req.method, req.path, s.ToString());
      }
    } else if (reply->status != 0) {  // 0: the handler wrote a streaming response itself
      status = reply->status;
      res.status = reply->status;
      if (!reply->content_type.empty()) {
        res.set_content(reply->text, reply->content_type.c_str());
      } else if (reply->status != 204) {
        res.set_content(reply->body.dump(-1, ' ', false, Json::error_handler_t::replace),
                        "application/json");
      }
    }
    const std::string method = req.method;
    if (method != "GET" && status < 400) Audit(call, route, status);
  }
  CountRequest(std::string(route.info.method) + " " + route.info.path, status);
}

void ApiServer::Impl::CountRequest(const std::string& route, int code) {
  metrics_.Inc("jobsched_http_requests_total",
               "route=\"" + Metrics::Label(route) + "\",code=\"" + std::to_string(code) + "\"");
}

// ---- Handlers -----------------------------------------------------------------------------

Result<Reply> ApiServer::Impl::Healthz(Call&) { return Reply{.body = {{"status", "ok"}}}; }

void ApiServer::Impl::LogUnavailable(const std::string& request, const Status& s) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(unavailable_mu_);
  ++unavailable_count_;
  if (unavailable_logged_ != std::chrono::steady_clock::time_point{} &&
      now - unavailable_logged_ < std::chrono::seconds(10)) {
    return;
  }
  spdlog::warn("{}: {} ({} answered 503 since the last such line)", request, s.ToString(),
               unavailable_count_);
  unavailable_logged_ = now;
  unavailable_count_ = 0;
}

Result<Reply> ApiServer::Impl::Readyz(Call&) {
  auto store = node_.store().GetTenant("default");
  if (!store.ok()) return Unavailable("store unreachable: " + store.status().message());
  if (!node_.heartbeater().registered()) {
    const std::string why = node_.heartbeater().last_error();
    return Unavailable(why.empty() ? "node not registered in the store yet"
                                   : "node not registered in the store: " + why);
  }
  return Reply{.body = {{"status", "ready"}, {"node", node_.options().node_id}}};
}

Status ApiServer::Impl::ClusterGauges(std::string& out, const std::string& only) {
  ASSIGN_OR_RETURN(std::vector<JobCount> jobs, node_.store().CountJobs());
  MetricHeader(out, "jobsched_jobs", "gauge", "Jobs by tenant and state.");
  for (const JobCount& c : jobs) {
    if (!only.empty() && c.tenant != only) continue;
    out += fmt::format("jobsched_jobs{{tenant=\"{}\",state=\"{}\"}} {}\n", Metrics::Label(c.tenant),
                       JobStateName(c.state), c.count);
  }
  ASSIGN_OR_RETURN(std::vector<RunCount> runs, node_.store().CountRuns("", ""));
  MetricHeader(out, "jobsched_queue_ready", "gauge",
               "Runs queued or waiting to retry, by tenant and queue.");
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>>
      by_queue;  // ready, running
  for (const RunCount& c : runs) {
    if (!only.empty() && c.tenant != only) continue;
    auto& slot = by_queue[{c.tenant, c.queue}];
    if (c.state == RunState::kQueued || c.state == RunState::kRetryWait) slot.first += c.count;
    if (c.state == RunState::kRunning) slot.second += c.count;
  }
  for (const auto& [key, counts] : by_queue) {
    out += fmt::format("jobsched_queue_ready{{tenant=\"{}\",queue=\"{}\"}} {}\n",
                       Metrics::Label(key.first), Metrics::Label(key.second), counts.first);
  }
  MetricHeader(out, "jobsched_running", "gauge", "Runs running, by tenant and queue.");
  for (const auto& [key, counts] : by_queue) {
    out += fmt::format("jobsched_running{{tenant=\"{}\",queue=\"{}\"}} {}\n",
                       Metrics::Label(key.first), Metrics::Label(key.second), counts.second);
  }
  ASSIGN_OR_RETURN(std::vector<NodeInfo> nodes, node_.store().ListNodes());
  const TimePoint now = node_.clock().Now();
  int alive = 0;
  for (const NodeInfo& n : nodes) alive += NodeAlive(n, now, node_.options().node_dead_after);
  MetricHeader(out, "jobsched_nodes_alive", "gauge", "Nodes with a recent heartbeat.");
  out += fmt::format("jobsched_nodes_alive {}\n", alive);
  return Status::Ok();
}

Result<Reply> ApiServer::Impl::MetricsText(Call& call) {
  // A tenant's key sees the series of its own tenant (and those without a tenant label).
  const std::string only = call.who.role == Role::kAdmin ? "" : call.who.tenant;
  std::string out;
  // The cluster-scoped gauges come from the store. While it is unreachable they are left out,
  // jobsched_store_up says so, and the node's own series are still served.
  Status read = ClusterGauges(out, only);
  if (!read.ok() && read.code() != StatusCode::kUnavailable) return read;
  if (!read.ok()) out.clear();
  MetricHeader(out, "jobsched_store_up", "gauge",
               "1 if this node read the store for this scrape, 0 if it could not reach it.");
  out += fmt::format("jobsched_store_up {}\n", read.ok() ? 1 : 0);
  MetricHeader(out, "jobsched_is_leader", "gauge", "1 if this node holds the leader lease.");
  out += fmt::format("jobsched_is_leader {}\n", node_.cluster().IsLeader() ? 1 : 0);
  metrics_.Render(out, only);
  MetricHeader(out, "process_cpu_seconds_total", "counter", "CPU time used by this process.");
  out += fmt::format("process_cpu_seconds_total {}\n", ProcessCpuSeconds());
  MetricHeader(out, "process_resident_memory_bytes", "gauge", "Resident memory of this process.");
  out += fmt::format("process_resident_memory_bytes {}\n", ProcessRssBytes());
  return Reply{.text = std::move(out), .content_type = "text/plain; version=0.0.4"};
}

namespace {

// 'sha256-<base64>' of the text between the first `open` tag and the `close` after it: what a
// Content-Security-Policy allows an inline script or style block by.
std::string InlineHash(std::string_view html, std::string_view open, std::string_view close) {
  const size_t from = html.find(open);
  const size_t to = from == std::string_view::npos ? from : html.find(close, from);
  if (to == std::string_view::npos) return "'none'";
  const std::string_view text = html.substr(from + open.size(), to - from - open.size());
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
  EVP_EncodeBlock(b64, digest, SHA256_DIGEST_LENGTH);
  return "'sha256-" + std::string(reinterpret_cast<const char*>(b64)) + "'";
}

}  // namespace

Result<Reply> ApiServer::Impl::Dashboard(Call& call) {
  // The page holds an API key: it runs its own script and style only (by their hashes), talks
  // to this server only, and is not framed, sniffed, cached or named in a Referer.
  static const std::string kPolicy =
      "default-src 'none'; script-src " + InlineHash(kDashboardHtml, "<script>", "</script>") +
      "; style-src " + InlineHash(kDashboardHtml, "<style>", "</style>") +
      "; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
      "frame-ancestors 'none'";
  call.res.set_header("Content-Security-Policy", kPolicy);
  call.res.set_header("X-Content-Type-Options", "nosniff");
  call.res.set_header("X-Frame-Options", "DENY");
  call.res.set_header("Referrer-Policy", "no-referrer");
  call.res.set_header("Cache-Control", "no-store");
  return Reply{.text = std::string(kDashboardHtml), .content_type = "text/html; charset=utf-8"};
}

Result<Reply> ApiServer::Impl::CronNext(Call& call) {
  const auto& req = call.req;
  if (!req.has_param("expr") || req.get_param_value("expr").empty())
    return InvalidArgument("expr: missing", "expr");
  const std::string expr = req.get_param_value("expr");
  const std::string tz = req.has_param("tz") ? req.get_param_value("tz") : "UTC";
  TimePoint from = node_.clock().Now();
  if (req.has_param("from")) {
    auto t = ParseRfc3339(req.get_param_value("from"));
    if (!t.ok()) return InvalidArgument("from: " + t.status().message(), "from");
    from = *t;
  }
  ASSIGN_OR_RETURN(int n, IntParam(req, "n", 5, 1, 1000));  // as `jobsched cron next -n`
  auto schedule = CronSchedule::Parse(expr, tz);
  if (!schedule.ok()) {
    const std::string& m = schedule.status().message();
    if (m.starts_with("timezone: ")) return InvalidArgument("tz: " + m.substr(10), "tz");
    return InvalidArgument("expr: " + m, "expr");
  }
  std::vector<TimePoint> times(static_cast<size_t>(n));
  times.resize(schedule->NextN(from, times));
  Json next = Json::array();
  for (TimePoint t : times) next.push_back(FormatRfc3339(t));
  return Reply{.body = {{"expr", expr}, {"tz", tz}, {"from", FormatRfc3339(from)}, {"next", next}}};
}

Status ApiServer::Impl::CheckShellAllowed(const Call& call, const JobSpec& spec) {
  if (spec.handler.type == HandlerSpec::Type::kShell && !call.who.allow_shell) {
    return Status(StatusCode::kPermissionDenied,
                  "handler.type: this API key may not create shell jobs (it lacks allow_shell)",
                  "handler.type");
  }
  return Status::Ok();
}

Result<Json> ApiServer::Impl::JobDetail(const JobRecord& job) {
  Json j = JobJson(job);
  Json next = Json::array();
  if (job.next_fire) {
    next.push_back(FormatRfc3339(*job.next_fire));
    auto occurrences = Occurrences::For(
        job.spec.schedule, OccurrenceAnchor(job.spec.schedule, job.created_at, job.next_fire));
    if (occurrences.ok()) {
      std::optional<TimePoint> t = job.next_fire;
      while (next.size() < 5 && (t = occurrences->After(*t))) next.push_back(FormatRfc3339(*t));
    }
  }
  j["next_fire_times"] = next;
  ASSIGN_OR_RETURN(
      Page<RunRecord> last,
      node_.store().ListRuns(
          job.spec.tenant, {.job_id = job.spec.id, .limit = 1, .output_tail = kListedOutputBytes}));
  j["last_run"] = last.items.empty() ? Json(nullptr) : RunJson(last.items.front());
  ASSIGN_OR_RETURN(std::vector<RunCount> counts,
                   node_.store().CountRuns(job.spec.tenant, job.spec.id));
  Json by_state = Json::object();
  for (const RunCount& c : counts) {
    by_state[RunStateName(c.state)] = by_state.value(RunStateName(c.state), int64_t{0}) + c.count;
  }
  j["counts"] = by_state;
  return j;
}

Result<Reply> ApiServer::Impl::CreateJob(Call& call) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(call.req.body, call.tenant));
  RETURN_IF_ERROR(CheckShellAllowed(call, spec));
  ASSIGN_OR_RETURN(JobRecord job, node_.jobs().Create(std::move(spec)));
  call.id = job.spec.id;
  ASSIGN_OR_RETURN(Json detail, JobDetail(job));
  return Reply{.status = 201, .body = std::move(detail)};
}

Result<Reply> ApiServer::Impl::PutJob(Call& call) {
  RETURN_IF_ERROR(ValidateJobId(call.id, "id"));
  ASSIGN_OR_RETURN(Json body, ParseBody(call.req));
  if (body.is_object() && (!body.contains("id") || body["id"].is_null())) {
    body["id"] = call.id;  // null counts as left out, as for every field
  } else if (body.is_object() && body["id"] != call.id) {
    return InvalidArgument(
        "id: " + body["id"].dump(-1, ' ', false, Json::error_handler_t::replace) +
            " does not match the path's '" + call.id + "'",
        "id");
  }
  ASSIGN_OR_RETURN(
      JobSpec spec,
      ParseJobSpec(body.dump(-1, ' ', false, Json::error_handler_t::replace), call.tenant));
  RETURN_IF_ERROR(CheckShellAllowed(call, spec));
  std::optional<int64_t> if_match;
  if (call.req.has_header("If-Match")) {
    std::string v = call.req.get_header_value("If-Match");
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    try {
      size_t used = 0;
      if_match = std::stoll(v, &used);
      if (used != v.size() || *if_match < 0) throw std::invalid_argument(v);
    } catch (...) {
      return InvalidArgument("If-Match: must be a job version (a whole number), got '" + v + "'",
                             "If-Match");
    }
  }
  bool created = false;
  ASSIGN_OR_RETURN(JobRecord job, node_.jobs().Put(std::move(spec), if_match, &created));
  ASSIGN_OR_RETURN(Json detail, JobDetail(job));
  return Reply{.status = created ? 201 : 200, .body = std::move(detail)};
}

Result<Reply> ApiServer::Impl::ListJobs(Call& call) {
  const auto& req = call.req;
  JobFilter filter;
  if (req.has_param("queue")) {
    filter.queue = req.get_param_value("queue");  // a name no queue can have matches nothing
    RETURN_IF_ERROR(ValidateQueueName(filter.queue, "queue"));
  }
  if (req.has_param("state")) {
    auto state = ParseJobState(req.get_param_value("state"));
    if (!state.ok()) return InvalidArgument("state: must be active, paused or completed", "state");
    filter.state = *state;
  }
  if (req.has_param("label")) {
    const std::string label = req.get_param_value("label");
    const size_t colon = label.find(':');
    if (colon == std::string::npos || colon == 0)
      return InvalidArgument("label: must be key:value", "label");
    filter.label_key = label.substr(0, colon);
    filter.label_value = label.substr(colon + 1);
  }
  ASSIGN_OR_RETURN(filter.limit, IntParam(req, "limit", 100, 1, 1000));
  if (req.has_param("cursor")) filter.cursor = req.get_param_value("cursor");
  auto page = node_.store().ListJobs(call.tenant, filter);
  if (!page.ok() && page.status().code() == StatusCode::kInvalidArgument) {
    return InvalidArgument("cursor: " + page.status().message(), "cursor");
  }
  ASSIGN_OR_RETURN(Page<JobRecord> jobs, std::move(page));
  Json items = Json::array();
  for (const JobRecord& j : jobs.items) items.push_back(JobJson(j));
  return Reply{
      .body = {{"items", items},
               {"next_cursor", jobs.next_cursor ? Json(*jobs.next_cursor) : Json(nullptr)}}};
}

Result<Reply> ApiServer::Impl::GetJob(Call& call) {
  ASSIGN_OR_RETURN(JobRecord job, node_.store().GetJob(call.tenant, call.id));
  ASSIGN_OR_RETURN(Json detail, JobDetail(job));
  return Reply{.body = std::move(detail)};
}

Result<Reply> ApiServer::Impl::DeleteJob(Call& call) {
  ASSIGN_OR_RETURN(bool kill, BoolParam(call.req, "kill_running"));
  RETURN_IF_ERROR(node_.jobs().Delete(call.tenant, call.id, kill));
  return Reply{.status = 204};
}

Result<Reply> ApiServer::Impl::PauseJob(Call& call) {
  ASSIGN_OR_RETURN(bool changed, node_.jobs().Pause(call.tenant, call.id));
  ASSIGN_OR_RETURN(JobRecord job, node_.store().GetJob(call.tenant, call.id));
  ASSIGN_OR_RETURN(Json detail, JobDetail(job));
  detail["changed"] = changed;
  return Reply{.body = std::move(detail)};
}

Result<Reply> ApiServer::Impl::ResumeJob(Call& call) {
  ASSIGN_OR_RETURN(bool changed, node_.jobs().Resume(call.tenant, call.id));
  ASSIGN_OR_RETURN(JobRecord job, node_.store().GetJob(call.tenant, call.id));
  ASSIGN_OR_RETURN(Json detail, JobDetail(job));
  detail["changed"] = changed;
  return Reply{.body = std::move(detail)};
}

Result<Reply> ApiServer::Impl::TriggerJob(Call& call) {
  ASSIGN_OR_RETURN(Json body, ParseBody(call.req));
  std::vector<std::string> payloads;
  if (!body.is_null()) {
    if (!body.is_object())
      return InvalidArgument(
          "the body must be a JSON object: {\"payload\": …} or {\"payloads\": […]}");
    RETURN_IF_ERROR(OnlyFields(body, {"payload", "payloads"}));
    if (body.contains("payload") && body.contains("payloads")) {
      return InvalidArgument("payloads: give payload or payloads, not both", "payloads");
    }
    if (body.contains("payload")) payloads.push_back(body["payload"].dump());
    if (body.contains("payloads")) {
      if (!body["payloads"].is_array() || body["payloads"].empty()) {
        return InvalidArgument("payloads: must be a non-empty array", "payloads");
      }
      if (body["payloads"].size() > 10000)
        return InvalidArgument("payloads: at most 10000 per request", "payloads");
      for (const Json& p : body["payloads"]) payloads.push_back(p.dump());
    }
  }
  // A shell program reads its run's payload on stdin: a payload of the caller's own is as much
  // a say in what runs as a command, and needs the same right.
  if (!payloads.empty() && !call.who.allow_shell) {
    ASSIGN_OR_RETURN(JobRecord job, node_.store().GetJob(call.tenant, call.id));
    if (job.spec.handler.type == HandlerSpec::Type::kShell) {
      return Status(StatusCode::kPermissionDenied,
                    "payload: this API key may not give a shell job a payload of its own (it "
                    "lacks allow_shell); trigger it without a body to run it with its payload",
                    body.contains("payload") ? "payload" : "payloads");
    }
  }
  ASSIGN_OR_RETURN(std::vector<std::string> ids,
                   node_.jobs().Trigger(call.tenant, call.id, payloads));
  return Reply{.status = 201, .body = {{"run_ids", ids}}};
}

Result<Reply> ApiServer::Impl::Runs(Call& call, const std::string& job_id) {
  RunFilter filter{.job_id = job_id, .output_tail = kListedOutputBytes};
  if (call.req.has_param("state")) {
    auto state = ParseRunState(call.req.get_param_value("state"));
    if (!state.ok()) {
      return InvalidArgument(
          "state: must be queued, running, retry_wait, succeeded, failed, timed_out, cancelled or "
          "skipped",
          "state");
    }
    filter.state = *state;
  }
  ASSIGN_OR_RETURN(filter.limit, IntParam(call.req, "limit", 100, 1, 1000));
  if (call.req.has_param("cursor")) filter.cursor = call.req.get_param_value("cursor");
  auto page = node_.store().ListRuns(call.tenant, filter);
  if (!page.ok() && page.status().code() == StatusCode::kInvalidArgument) {
    return InvalidArgument("cursor: " + page.status().message(), "cursor");
  }
  ASSIGN_OR_RETURN(Page<RunRecord> runs, std::move(page));
  Json items = Json::array();
  for (const RunRecord& r : runs.items) items.push_back(RunJson(r));
  return Reply{
      .body = {{"items", items},
               {"next_cursor", runs.next_cursor ? Json(*runs.next_cursor) : Json(nullptr)}}};
}

Result<Reply> ApiServer::Impl::JobRuns(Call& call) {
  auto job = node_.store().GetJob(call.tenant, call.id);
  if (job.ok() || job.status().code() != StatusCode::kNotFound) {
    RETURN_IF_ERROR(job.status());
    return Runs(call, call.id);
  }
  // A deleted job's history stays until it is pruned: listed while it has runs.
  RETURN_IF_ERROR(ValidateJobId(call.id, "id"));
  ASSIGN_OR_RETURN(Page<RunRecord> any,
                   node_.store().ListRuns(
                       call.tenant, RunFilter{.job_id = call.id, .limit = 1, .output_tail = 1}));
  if (any.items.empty()) return job.status();
  return Runs(call, call.id);
}

Result<Reply> ApiServer::Impl::TenantRuns(Call& call) { return Runs(call, ""); }

Result<Reply> ApiServer::Impl::GetRun(Call& call) {
  ASSIGN_OR_RETURN(RunRecord run, node_.store().GetRun(call.tenant, call.id));
  return Reply{.body = RunJson(run)};
}

Result<Reply> ApiServer::Impl::CancelRun(Call& call) {
  RETURN_IF_ERROR(node_.jobs().CancelRun(call.tenant, call.id));
  ASSIGN_OR_RETURN(RunRecord run, node_.store().GetRun(call.tenant, call.id));
  return Reply{.body = RunJson(run)};
}

namespace {

// How often an open event stream checks that its key still exists (at once when a key is
// revoked through this node).
constexpr auto kStreamKeyRecheck = std::chrono::seconds(5);

// An open event stream's place in the count of them (open_streams_), for the stream's life.
class StreamSlot {
 public:
  explicit StreamSlot(std::atomic<int>& open) : open_(open) { ++open_; }
  ~StreamSlot() { --open_; }
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;

 private:
  std::atomic<int>& open_;
};

// The most event streams a server of `threads` request threads keeps open at once.
int MaxEventStreams(int threads) { return std::max(1, threads - std::max(4, threads / 4)); }

}  // namespace

Result<Reply> ApiServer::Impl::Events(Call& call) {
  // Each stream holds a request thread until its client leaves: some are kept for the other
  // routes (health checks among them), whoever opens streams.
  const int max_streams = MaxEventStreams(options_.threads);
  if (open_streams_.load() >= max_streams) {
    return Unavailable("this node has " + std::to_string(max_streams) +
                       " event streams open, the most it serves; close one, or follow the "
                       "events through another node");
  }
  int64_t after = -1;
  std::string resume = call.req.get_header_value("Last-Event-ID");
  std::string field = "Last-Event-ID";
  if (resume.empty() && call.req.has_param("after")) {
    resume = call.req.get_param_value("after");
    field = "after";
  }
  if (!resume.empty() || field == "after") {
    const auto [end, ec] = std::from_chars(resume.data(), resume.data() + resume.size(), after);
    if (resume.empty() || ec != std::errc() || end != resume.data() + resume.size() || after < 0) {
      return InvalidArgument(
          field + ": must be an event id (a non-negative integer), got '" + resume + "'", field);
    }
  }
  if (after < 0) {
    ASSIGN_OR_RETURN(after, node_.store().LastEventSeq());
  }
  const std::string job = call.req.has_param("job") ? call.req.get_param_value("job") : "";
  if (call.req.has_param("job")) RETURN_IF_ERROR(ValidateJobId(job, "job"));
  struct Stream {
    explicit Stream(std::atomic<int>& open) : slot(open) {}
    StreamSlot slot;
    int64_t after = 0;
    std::chrono::steady_clock::time_point last_write;
    bool positioned = false;  // the first write says where the stream starts (an id alone)
    std::string key;          // checked again while the stream is open: a revoked key's stream ends
    uint64_t revoked = 0;
    std::chrono::steady_clock::time_point key_checked;
  };
  auto stream = std::make_shared<Stream>(open_streams_);
  stream->after = after;
  stream->last_write = stream->key_checked = std::chrono::steady_clock::now();
  stream->key = call.req.get_header_value("Authorization").substr(7);  // Authorize read it
  stream->revoked = revoked_.load();
  const std::string tenant = call.tenant;
  call.res.set_header("Cache-Control", "no-cache");
  call.res.set_header("X-Accel-Buffering", "no");
  call.res.set_chunked_content_provider("text/event-stream", [this, stream, tenant, job](
                                                                 size_t, httplib::DataSink& sink) {
    if (stopping_) return false;
    const auto now = std::chrono::steady_clock::now();
    if (revoked_.load() != stream->revoked || now - stream->key_checked >= kStreamKeyRecheck) {
      stream->revoked = revoked_.load();
      stream->key_checked = now;
      auto who = Authenticate(node_.store(), stream->key);
      if (!who.ok() && who.status().code() != StatusCode::kUnavailable) return false;
    }
    if (!stream->positioned) {
      // An id without data: a client that reconnects before any event came resumes here, not
      // at the newest event of that time (events meanwhile would be lost to it).
      stream->positioned = true;
      stream->last_write = now;
      const std::string position = fmt::format("id: {}\n\n", stream->after);
      return sink.write(position.data(), position.size());
    }
    auto events = node_.store().ReadEvents(tenant, stream->after, 200);
    if (events.ok() && !events->empty()) {
      std::string chunk;
      for (const Event& e : *events) {
        stream->after = e.seq;
        if (e.type == "audit" || (!job.empty() && e.job_id != job)) continue;
        chunk += fmt::format("id: {}\nevent: {}\ndata: {}\n\n", e.seq, e.type, EventJson(e).dump());
      }
      if (!chunk.empty()) {
        stream->last_write = std::chrono::steady_clock::now();
        return sink.write(chunk.data(), chunk.size());
      }
      return sink.is_writable();
    }
    if (std::chrono::steady_clock::now() - stream->last_write >= options_.keepalive) {
      stream->last_write = std::chrono::steady_clock::now();
      static constexpr char kKeepAlive[] = ": keep-alive\n\n";
      return sink.write(kKeepAlive, sizeof kKeepAlive - 1);
    }
    std::unique_lock lock(events_mu_);
    events_cv_.wait_for(lock, std::chrono::milliseconds(250));
    return !stopping_ && sink.is_writable();
  });
  return Reply{.status = 0};
}

Result<Reply> ApiServer::Impl::Stats(Call& call) {
  ASSIGN_OR_RETURN(std::vector<RunCount> counts, node_.store().CountRuns(call.tenant, ""));
  Json by_state = Json::object();
  Json by_queue = Json::object();
  int64_t finished = 0, failed = 0, duration_ms = 0, timed = 0;
  for (const RunCount& c : counts) {
    const char* state = RunStateName(c.state);
    by_state[state] = by_state.value(state, int64_t{0}) + c.count;
    by_queue[c.queue][state] = c.count;
    if (c.state == RunState::kSucceeded || c.state == RunState::kFailed ||
        c.state == RunState::kTimedOut) {
      finished += c.count;
      duration_ms += c.total_duration_ms;
      timed += c.count;
      if (c.state != RunState::kSucceeded) failed += c.count;
    }
  }
  return Reply{.body = {{"tenant", call.tenant},
                        {"by_state", by_state},
                        {"by_queue", by_queue},
                        {"average_duration_ms",
                         timed ? Json((duration_ms + timed / 2) / timed) : Json(nullptr)},
                        {"failure_rate",
                         finished ? Json(static_cast<double>(failed) / finished) : Json(nullptr)}}};
}

Result<Reply> ApiServer::Impl::Nodes(Call&) {
  ASSIGN_OR_RETURN(std::vector<NodeInfo> nodes, node_.store().ListNodes());
  Json items = Json::array();
  const TimePoint now = node_.clock().Now();
  for (const NodeInfo& n : nodes)
    items.push_back(NodeJson(n, now, node_.options().node_dead_after));
  return Reply{.body = {{"items", items}, {"next_cursor", nullptr}}};
}

Result<Reply> ApiServer::Impl::Cluster(Call&) {
  ASSIGN_OR_RETURN(ClusterStatus status, node_.cluster().Describe());
  const TimePoint now = node_.clock().Now();
  Json leader = nullptr;
  if (status.leader) {
    leader = {{"node", status.leader->node},
              {"epoch", status.leader->epoch},
              {"expires_at", TimeJson(status.leader->expires_at)}};
  }
  Json nodes = Json::array();
  for (const MemberInfo& m : status.members) {
    Json n = NodeJson(m.node, now, node_.options().node_dead_after);
    n["leader"] = status.leader && status.leader->node == m.node.id;
    n["tenants"] = m.tenants;
    nodes.push_back(std::move(n));
  }
  return Reply{.body = {{"node", node_.options().node_id},
                        {"now", TimeJson(now)},
                        {"leader", leader},
                        {"epoch", status.leader ? Json(status.leader->epoch) : Json(nullptr)},
                        {"nodes", nodes},
                        {"assignment", status.assignment.owners},
                        {"assignment_epoch", status.assignment.epoch}}};
}

Result<Reply> ApiServer::Impl::CreateKey(Call& call) {
  ASSIGN_OR_RETURN(Json body, ParseBody(call.req));
  if (!body.is_object())
    return InvalidArgument(
        "the body must be a JSON object: {\"role\", \"tenant\", \"allow_shell\", \"name\"}");
  RETURN_IF_ERROR(OnlyFields(body, {"role", "tenant", "allow_shell", "name"}));
  if (!body.contains("role") || !body["role"].is_string())
    return InvalidArgument("role: missing (admin, operator or viewer)", "role");
  ASSIGN_OR_RETURN(Role role, ParseRole(body["role"].get<std::string>()));
  std::string tenant;
  if (role != Role::kAdmin) {
    if (!body.contains("tenant") || !body["tenant"].is_string()) {
      return InvalidArgument("tenant: missing (operator and viewer keys belong to one tenant)",
                             "tenant");
    }
    tenant = body["tenant"].get<std::string>();
    RETURN_IF_ERROR(ValidateTenantId(tenant));
    if (Status s = node_.store().GetTenant(tenant).status(); !s.ok()) {
      if (s.code() != StatusCode::kNotFound) return s;
      return Status(
          StatusCode::kNotFound,
          "tenant: no tenant '" + tenant + "' (create it with PUT /v1/tenants/" + tenant + ")",
          "tenant");
    }
  } else if (body.contains("tenant") && !body["tenant"].is_null()) {
    return InvalidArgument("tenant: admin keys are for every tenant; leave it out", "tenant");
  }
  bool allow_shell = false;
  if (body.contains("allow_shell")) {
    if (!body["allow_shell"].is_boolean())
      return InvalidArgument("allow_shell: must be true or false", "allow_shell");
    allow_shell = body["allow_shell"].get<bool>();
    if (role == Role::kAdmin && !allow_shell) {
      return InvalidArgument("allow_shell: admin keys may always create shell jobs; leave it out",
                             "allow_shell");
    }
    if (role == Role::kViewer && allow_shell) {
      return InvalidArgument("allow_shell: viewer keys create no jobs; leave it out",
                             "allow_shell");
    }
  }
  std::string name;
  if (body.contains("name")) {
    if (!body["name"].is_string() || body["name"].get<std::string>().size() > 200) {
      return InvalidArgument("name: must be a string of at most 200 characters", "name");
    }
    name = body["name"].get<std::string>();
    if (std::any_of(name.begin(), name.end(),
                    [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
      return InvalidArgument("name: must not contain control characters", "name");
    }
  }
  ASSIGN_OR_RETURN(NewKey key, GenerateKey(role, tenant, allow_shell, name, node_.clock().Now()));
  RETURN_IF_ERROR(node_.store().PutApiKey(key.record));
  Json out = KeyJson(key.record);
  out["key"] = key.key;
  return Reply{.status = 201, .body = std::move(out)};
}

Result<Reply> ApiServer::Impl::ListKeys(Call&) {
  ASSIGN_OR_RETURN(std::vector<ApiKeyRecord> keys, node_.store().ListApiKeys());
  Json items = Json::array();
  for (const ApiKeyRecord& k : keys) items.push_back(KeyJson(k));
  return Reply{.body = {{"items", items}, {"next_cursor", nullptr}}};
}

Result<Reply> ApiServer::Impl::DeleteKey(Call& call) {
  // The store keeps the last admin key (412).
  RETURN_IF_ERROR(node_.store().DeleteApiKey(call.id));
  ForgetKey(call.id);
  return Reply{.status = 204};
}

Result<Reply> ApiServer::Impl::ListTenants(Call&) {
  ASSIGN_OR_RETURN(std::vector<TenantRecord> tenants, node_.store().ListTenants());
  Json items = Json::array();
  for (const TenantRecord& t : tenants) items.push_back(TenantJson(t));
  return Reply{.body = {{"items", items}, {"next_cursor", nullptr}}};
}

Result<Reply> ApiServer::Impl::PutTenant(Call& call) {
  RETURN_IF_ERROR(ValidateTenantId(call.tenant, "tenant"));
  ASSIGN_OR_RETURN(Json body, ParseBody(call.req));
  if (body.is_null()) body = Json::object();
  if (!body.is_object()) {
    return InvalidArgument(
        "the body must be a JSON object of max_jobs, max_concurrent_runs and queue_limits");
  }
  RETURN_IF_ERROR(OnlyFields(body, {"max_jobs", "max_concurrent_runs", "queue_limits"}));
  const TimePoint now = node_.clock().Now();
  TenantRecord t{.id = call.tenant, .created_at = now, .updated_at = now};
  auto existing = node_.store().GetTenant(call.tenant);
  if (existing.ok()) t = *existing;
  t.updated_at = now;
  for (const char* field : {"max_jobs", "max_concurrent_runs"}) {
    if (!body.contains(field)) continue;
    const Json& v = body[field];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return InvalidArgument(
          std::string(field) + ": must be a non-negative integer (0 = unlimited)", field);
    }
    (std::string_view(field) == "max_jobs" ? t.max_jobs : t.max_concurrent_runs) = v.get<int64_t>();
  }
  if (body.contains("queue_limits")) {
    const Json& limits = body["queue_limits"];
    if (!limits.is_object()) {
      return InvalidArgument("queue_limits: must be an object of queue name -> limit",
                             "queue_limits");
    }
    t.queue_limits.clear();
    for (const auto& [queue, limit] : limits.items()) {
      RETURN_IF_ERROR(ValidateQueueName(queue, "queue_limits." + queue));
      if (!limit.is_number_integer() || limit.get<int64_t>() < 1) {
        return InvalidArgument("queue_limits." + queue + ": must be an integer of at least 1",
                               "queue_limits." + queue);
      }
      t.queue_limits[queue] = limit.get<int64_t>();
    }
  }
  // The same quotas again: nothing is written (updated_at stays when it was last changed).
  if (existing.ok() && t.max_jobs == existing->max_jobs &&
      t.max_concurrent_runs == existing->max_concurrent_runs &&
      t.queue_limits == existing->queue_limits) {
    return Reply{.status = 200, .body = TenantJson(*existing)};
  }
  RETURN_IF_ERROR(node_.store().PutTenant(t));
  return Reply{.status = existing.ok() ? 200 : 201, .body = TenantJson(t)};
}

// ---- ApiServer ----------------------------------------------------------------------------

Result<std::unique_ptr<ApiServer>> ApiServer::Create(Node& node, ServerOptions options) {
  ASSIGN_OR_RETURN(auto hp, ParseListen(options.listen));
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return InvalidArgument("tls: give both --tls-cert and --tls-key", "tls_cert");
  }
  if (!IsLoopback(hp.first) && options.tls_cert.empty() && !options.insecure_listen) {
    return InvalidArgument(
        "listen: '" + options.listen +
            "' is not a loopback address; serve it with --tls-cert/--tls-key, or "
            "accept plain HTTP with --insecure-listen",
        "listen");
  }
  return std::unique_ptr<ApiServer>(new ApiServer(node, std::move(options)));
}

ApiServer::ApiServer(Node& node, ServerOptions options)
    : node_(node), options_(std::move(options)) {}

ApiServer::~ApiServer() { Stop(); }

Status ApiServer::Start() {
  RETURN_IF_ERROR(Bind());
  Serve();
  return Status::Ok();
}

Status ApiServer::Bind() {
  auto hp = ParseListen(options_.listen);
  if (!hp.ok()) return hp.status();
  if (!options_.tls_cert.empty()) {
    auto ssl =
        std::make_unique<httplib::SSLServer>(options_.tls_cert.c_str(), options_.tls_key.c_str());
    if (!ssl->is_valid()) {
      for (const auto& [field, path] :
           {std::pair{"tls_cert", &options_.tls_cert}, std::pair{"tls_key", &options_.tls_key}}) {
        if (::access(path->c_str(), R_OK) != 0) {
          return InvalidArgument(
              std::string(field) + ": cannot read '" + *path + "': " + std::strerror(errno), field);
        }
      }
      return InvalidArgument("tls: '" + options_.tls_cert + "' and '" + options_.tls_key +
                                 "' are not a PEM certificate and its private key",
                             "tls_cert");
    }
    http_ = std::move(ssl);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  impl_ = std::make_unique<Impl>(node_, options_, metrics_);
  const int threads = options_.threads;
  http_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  http_->set_payload_max_length(options_.max_body_bytes);
  // The library's default socket options set SO_REUSEPORT, with which a second server binds a
  // port this one listens on and the kernel splits the connections between the two. Only
  // SO_REUSEADDR (a restart may bind while old connections are in TIME_WAIT).
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Runs before the library reads a body. Every body of this API is JSON, whatever its
  // Content-Type says: a form-encoded one (curl -d's default) would be parsed as a form, and
  // refused as too large past 8 KiB; a POST, PUT or PATCH with neither Content-Length nor
  // Transfer-Encoding has an empty body (HTTP/1.1), where the library would read until the
  // connection closes or times out. (The request object is the library's own, not const.)
  //
  // It also refuses, unread, a body the library would read without the size limit (chunked, or
  // compressed: the limit holds for the bytes sent, not for what they inflate to) or one with an
  // ambiguous length (two Content-Length headers, or one that is not a number); the answer says
  // "Connection: close", as the unread body is still on the connection.
  http_->set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    auto& headers = const_cast<httplib::Request&>(req).headers;
    auto refuse = [&](int status, const std::string& message) {
      headers.erase("Connection");
      headers.emplace("Connection", "close");
      res.status = status;
      res.set_content(ErrorBody(CodeForHttp(status), message, ""), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    };
    if (req.has_header("Transfer-Encoding")) {
      return refuse(411, "send the body with a Content-Length header (Transfer-Encoding '" +
                             req.get_header_value("Transfer-Encoding") + "' is not accepted)");
    }
    const std::string encoding = req.get_header_value("Content-Encoding");
    if (!encoding.empty() && !EqualsIgnoreCase(encoding, "identity")) {
      return refuse(
          415, "Content-Encoding '" + encoding + "' is not accepted: send the body uncompressed");
    }
    if (req.get_header_value_count("Content-Length") > 1) {
      return refuse(400, "more than one Content-Length header");
    }
    const std::string length = req.get_header_value("Content-Length");
    if (req.has_header("Content-Length") &&
        (length.empty() || length.size() > 18 ||
         length.find_first_not_of("0123456789") != std::string::npos)) {
      return refuse(400, "Content-Length: must be a whole number of bytes, got '" + length + "'");
    }
    // No GET route reads a body, and the library leaves one unread on the connection (where
    // it would be taken for the next request).
    if ((req.method == "GET" || req.method == "HEAD") &&
        length.find_first_not_of('0') != std::string::npos) {
      return refuse(400,
                    "a " + req.method + " request takes no body (Content-Length " + length + ")");
    }
    // Bodies are JSON whatever their Content-Type: the library would parse a form (urlencoded or
    // multipart) into fields and leave the body empty, and the request would go on as if it had
    // none. As JSON, a form is refused as invalid JSON.
    const std::string type = req.get_header_value("Content-Type");
    if (type.rfind("application/x-www-form-urlencoded", 0) == 0 ||
        type.rfind("multipart/", 0) == 0) {
      headers.erase("Content-Type");
      headers.emplace("Content-Type", "application/json");
    }
    if ((req.method == "POST" || req.method == "PUT" || req.method == "PATCH") &&
        !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
      headers.emplace("Content-Length", "0");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = "no route " + req.method + " " + req.path;
    if (res.status == 404) {
      // A path that has routes, asked with another method.
      if (const std::string allowed = impl_->MethodsOf(req.path); !allowed.empty()) {
        res.status = 405;
        res.set_header("Allow", allowed);
        message = "method " + req.method + " is not allowed on " + req.path +
                  " (allowed: " + allowed + ")";
      }
    }
    if (res.status == 413) message = "request body larger than the 1 MiB limit";
    if (res.status == 414) message = "request line longer than 8 KiB";
    if (res.status == 400) message = "malformed HTTP request";
    res.set_content(ErrorBody(CodeForHttp(res.status), message, ""), "application/json");
    // Not a route's (those are counted with it): no route, a method not allowed, a request
    // that could not be read.
    impl_->CountRequest("unmatched", res.status);
  });
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content(ErrorBody("internal", "unexpected error", ""), "application/json");
      });
  impl_->Register(*http_);
  errno = 0;  // why a bind fails, below (a host that does not resolve sets none)
  const int port = hp->second == 0 ? http_->bind_to_any_port(hp->first)
                                   : (http_->bind_to_port(hp->first, hp->second) ? hp->second : -1);
  if (port < 0) {
    const int err = errno;
    return Unavailable("cannot listen on " + options_.listen +
                       (err != 0 ? std::string(": ") + std::strerror(err) : std::string()));
  }
  port_ = port;
  host_ = hp->first;
  return Status::Ok();
}

void ApiServer::Serve() {
  auto ended = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([this, ended] {
    try {
      http_->listen_after_bind();
    } catch (const std::exception& e) {
      spdlog::error("http server stopped: {}", e.what());
    }
    *ended = true;
  });
  // httplib's stop() is a no-op until its accept loop runs: return only once it does, so that
  // a Stop() right after Start() cannot hang.
  while (!http_->is_running() && !*ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  spdlog::info("listening on {}://{}:{}", options_.tls_cert.empty() ? "http" : "https",
               host_.find(':') == std::string::npos ? host_ : "[" + host_ + "]", port_);
}

void ApiServer::Stop() {
  if (impl_) impl_->Stop();
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace jobsched::api
