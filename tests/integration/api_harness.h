// An in-process node and REST API server for tests, spoken to over real HTTP on 127.0.0.1:<port 0>.
//
//   ApiHarness h;                                   // tenants acme + other, one key per role
//   auto r = h.Post("/v1/tenants/acme/jobs", Who::kOperator, R"({"id": "a", ...})");
//   EXPECT_EQ(r.status, 201) << r;
//   ASSERT_TRUE(h.events.Wait(EventType::kRunSucceeded, run_id));
//
// The node runs its real actors on the real clock (the server is what is under test, and it
// serves real worker threads). Tests wait for engine work through the node's EventBus
// (h.events) or for stream data through a condition variable (SseStream), never by sleeping.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "api/server.h"
#include "engine/node.h"
#include "engine_harness.h"  // EventLog, Gate, kGuard

namespace jobsched::testing {

using Json = nlohmann::json;

// Which API key a request carries.
enum class Who {
  kNone,           // no Authorization header
  kAdmin,          // admin (every tenant)
  kOperator,       // operator of "acme", without allow_shell
  kShellOperator,  // operator of "acme", with allow_shell
  kViewer,         // viewer of "acme"
  kOther,          // operator of "other"
};

inline const char* WhoName(Who w) {
  switch (w) {
    case Who::kNone:
      return "no key";
    case Who::kAdmin:
      return "admin";
    case Who::kOperator:
      return "operator(acme)";
    case Who::kShellOperator:
      return "operator(acme, allow_shell)";
    case Who::kViewer:
      return "viewer(acme)";
    case Who::kOther:
      return "operator(other)";
  }
  return "?";
}

// An HTTP answer. status -1: no answer at all (transport error in `transport_error`).
struct Response {
  int status = -1;
  std::string body;
  std::string content_type;
  httplib::Headers headers;
  std::string transport_error;
  Json json;  // the parsed body (discarded when it is not JSON)

  bool is_json() const { return !json.is_discarded(); }
  const Json& Error() const {
    static const Json kNull;
    if (!json.is_object() || !json.contains("error")) return kNull;
    return json["error"];
  }
  std::string ErrorCode() const { return Error().is_object() ? Error().value("code", "") : ""; }
  std::string ErrorMessage() const {
    return Error().is_object() ? Error().value("message", "") : "";
  }
  // "" when the error has no field.
  std::string ErrorField() const { return Error().is_object() ? Error().value("field", "") : ""; }
  bool HasErrorField() const { return Error().is_object() && Error().contains("field"); }
};

inline std::ostream& operator<<(std::ostream& out, const Response& r) {
  out << "HTTP " << r.status;
  if (!r.transport_error.empty()) out << " (" << r.transport_error << ")";
  out << " [" << r.content_type << "] ";
  if (r.body.size() > 600) {
    out << r.body.substr(0, 600) << "... (" << r.body.size() << " bytes)";
  } else {
    out << r.body;
  }
  return out;
}

// Percent-encodes the bytes of s for which keep(byte) is false.
template <typename Keep>
std::string PercentEncode(const std::string& s, Keep keep) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (keep(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Percent-encodes a query parameter value (everything but the unreserved characters).
inline std::string Q(const std::string& s) {
  return PercentEncode(s, [](unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
  });
}

// docs/api.md: RFC 3339 UTC with milliseconds, e.g. 2026-12-01T10:00:00.000Z.
inline bool IsApiTime(const Json& v) {
  static const std::regex kTime(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$)");
  return v.is_string() && std::regex_match(v.get<std::string>(), kTime);
}

inline ::testing::AssertionResult IsTimeOrNull(const Json& v) {
  if (v.is_null() || IsApiTime(v)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << v.dump() << " is not an RFC 3339 UTC time with milliseconds";
}
inline ::testing::AssertionResult IsTime(const Json& v) {
  if (IsApiTime(v)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << v.dump() << " is not an RFC 3339 UTC time with milliseconds";
}

// {"items": [...], "next_cursor": "..." | null}
inline ::testing::AssertionResult IsList(const Json& body) {
  if (!body.is_object()) return ::testing::AssertionFailure() << "not an object: " << body.dump();
  if (!body.contains("items") || !body["items"].is_array()) {
    return ::testing::AssertionFailure() << "no items array: " << body.dump().substr(0, 300);
  }
  if (!body.contains("next_cursor") ||
      !(body["next_cursor"].is_null() || body["next_cursor"].is_string())) {
    return ::testing::AssertionFailure()
           << "next_cursor missing or neither null nor a string: " << body.dump().substr(0, 300);
  }
  return ::testing::AssertionSuccess();
}

// {"error": {"code": "...", "message": "...", "field"?: "..."}} and nothing else.
inline ::testing::AssertionResult IsErrorBody(const Response& r) {
  if (!r.json.is_object() || r.json.size() != 1 || !r.json.contains("error")) {
    return ::testing::AssertionFailure() << "not an error body: " << r;
  }
  const Json& e = r.json["error"];
  if (!e.is_object() || !e.contains("code") || !e["code"].is_string() || !e.contains("message") ||
      !e["message"].is_string() || e["message"].get<std::string>().empty()) {
    return ::testing::AssertionFailure() << "error without code and message: " << r;
  }
  for (const auto& [k, v] : e.items()) {
    if (k != "code" && k != "message" && k != "field") {
      return ::testing::AssertionFailure() << "unexpected member error." << k << ": " << r;
    }
    if (k == "field" && !v.is_string())
      return ::testing::AssertionFailure() << "field is not a string: " << r;
  }
  return ::testing::AssertionSuccess();
}

// The error code docs/api.md pairs with an HTTP status.
inline std::string CodeForStatus(int status) {
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
  }
  return "?";
}

struct ApiHarnessOptions {
  // SSE keep-alive period of the server (short, so that tests see keep-alive comments).
  Duration keepalive{200};
  // Request threads of the server. Default: the server's
  int threads = api::ServerOptions{}.threads;
  // The node's store instead of a fresh "sqlite::memory:" (fault injection). Default: none
  std::shared_ptr<Store> store;
};

// One Server-Sent Event as received.
struct SseEvent {
  std::string id;
  std::string type;
  std::string data;
  Json json;  // data parsed
};

// An event stream read on its own thread with the httplib client's content receiver.
class SseStream {
 public:
  SseStream(int port, std::string path, std::string key, std::string last_event_id = "") {
    thread_ = std::thread([this, port, path = std::move(path), key = std::move(key),
                           last_event_id = std::move(last_event_id)] {
      httplib::Client client("127.0.0.1", port);
      client.set_url_encode(false);
      client.set_read_timeout(std::chrono::seconds(60));
      httplib::Headers headers;
      if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
      if (!last_event_id.empty()) headers.emplace("Last-Event-ID", last_event_id);
      auto result = client.Get(
          path, headers,
          [this](const httplib::Response& res) {
            {
              std::lock_guard lock(mu_);
              status_ = res.status;
              content_type_ = res.get_header_value("Content-Type");
            }
            cv_.notify_all();
            return !stop_;
          },
          [this](const char* data, size_t n) {
            {
              std::lock_guard lock(mu_);
              text_.append(data, n);
            }
            cv_.notify_all();
            return !stop_;
          });
      {
        std::lock_guard lock(mu_);
        done_ = true;
        if (!result && status_ < 0) transport_error_ = httplib::to_string(result.error());
        if (result && status_ < 0) status_ = result->status;
        if (result && text_.empty()) text_ = result->body;
      }
      cv_.notify_all();
    });
  }

  ~SseStream() { Close(); }
  SseStream(const SseStream&) = delete;
  SseStream& operator=(const SseStream&) = delete;

  // Ends the stream: the receiver refuses the next chunk (keep-alives come every
  // ApiHarnessOptions::keepalive, so that is soon).
  void Close() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Waits until `done(text so far)` holds; on timeout fails the test naming `what`.
  bool WaitUntil(const std::function<bool(const std::string&)>& done, const std::string& what) {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, kGuard, [&] { return done(text_) || done_; }) && done(text_))
      return true;
    ADD_FAILURE() << "event stream: timed out or ended waiting for " << what << "; status "
                  << status_ << " " << transport_error_ << "; received:\n"
                  << text_;
    return false;
  }

  // Waits for an event of `type` (about `run_id` when not empty).
  std::optional<SseEvent> WaitEvent(const std::string& type, const std::string& run_id = "") {
    std::optional<SseEvent> found;
    WaitUntil(
        [&](const std::string& text) {
          for (const SseEvent& e : Parse(text)) {
            if (e.type == type && (run_id.empty() || (e.json.is_object() &&
                                                      e.json.value("run_id", Json()) == run_id))) {
              found = e;
              return true;
            }
          }
          return false;
        },
        "event " + type + (run_id.empty() ? "" : " of " + run_id));
    return found;
  }

  // Waits until the stream has ended (the server closed it or answered with an error).
  bool WaitDone() {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, kGuard, [&] { return done_; })) return true;
    ADD_FAILURE() << "event stream did not end";
    return false;
  }

  int status() const {
    std::lock_guard lock(mu_);
    return status_;
  }
  // Waits for the response's status (or the end of the stream); -1 if there was none.
  int WaitStatus() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, kGuard, [&] { return status_ >= 0 || done_; });
    return status_;
  }
  std::string content_type() const {
    std::lock_guard lock(mu_);
    return content_type_;
  }
  std::string text() const {
    std::lock_guard lock(mu_);
    return text_;
  }
  std::vector<SseEvent> Events() const { return Parse(text()); }

  // Complete events ("\n\n"-terminated blocks with data) of a stream text; comments skipped.
  static std::vector<SseEvent> Parse(const std::string& text) {
    std::vector<SseEvent> out;
    size_t pos = 0;
    while (true) {
      const size_t end = text.find("\n\n", pos);
      if (end == std::string::npos) break;
      const std::string block = text.substr(pos, end - pos);
      pos = end + 2;
      SseEvent e;
      bool any = false;  // a block with data: an event (one with an id alone only moves the id)
      size_t line_start = 0;
      while (line_start <= block.size()) {
        size_t line_end = block.find('\n', line_start);
        if (line_end == std::string::npos) line_end = block.size();
        const std::string line = block.substr(line_start, line_end - line_start);
        line_start = line_end + 1;
        auto value = [&](size_t n) {
          return line.size() > n && line[n] == ' ' ? line.substr(n + 1) : line.substr(n);
        };
        if (line.starts_with("id:")) {
          e.id = value(3);
        } else if (line.starts_with("event:")) {
          e.type = value(6);
        } else if (line.starts_with("data:")) {
          e.data += value(5);
          any = true;
        }
      }
      if (!any) continue;
      e.json = Json::parse(e.data, nullptr, /*allow_exceptions=*/false);
      out.push_back(std::move(e));
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;             // guarded by mu_
  int status_ = -1;              // guarded by mu_
  std::string content_type_;     // guarded by mu_
  std::string transport_error_;  // guarded by mu_
  bool done_ = false;            // guarded by mu_
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ApiHarness {
 public:
  explicit ApiHarness(ApiHarnessOptions options = {}) {
    auto node = Node::Create({.store_url = "sqlite::memory:",
                              .store = options.store,
                              .node_id = "t",
                              .concurrency = 2,
                              // A cancelled running run is stopped at the holder's next renewal.
                              .renew_interval = Duration(100),
                              .shutdown_grace = Duration(2000)});
    if (!node.ok()) {
      ADD_FAILURE() << "Node::Create: " << node.status().ToString();
      return;
    }
    node_ = std::move(node).value();
    for (const char* t : {"acme", "other"}) {
      Status s = node_->store().PutTenant(
          {.id = t, .created_at = node_->clock().Now(), .updated_at = node_->clock().Now()});
      if (!s.ok()) ADD_FAILURE() << "PutTenant " << t << ": " << s.ToString();
    }
    AddKey(Who::kAdmin, api::Role::kAdmin, "", false);
    AddKey(Who::kOperator, api::Role::kOperator, "acme", false);
    AddKey(Who::kShellOperator, api::Role::kOperator, "acme", true);
    AddKey(Who::kViewer, api::Role::kViewer, "acme", false);
    AddKey(Who::kOther, api::Role::kOperator, "other", false);

    Status started = node_->Start();
    if (!started.ok()) {
      ADD_FAILURE() << "Node::Start: " << started.ToString();
      return;
    }
    auto server = api::ApiServer::Create(
        *node_,
        {.listen = "127.0.0.1:0", .threads = options.threads, .keepalive = options.keepalive});
    if (!server.ok()) {
      ADD_FAILURE() << "ApiServer::Create: " << server.status().ToString();
      return;
    }
    server_ = std::move(server).value();
    Status listening = server_->Start();
    if (!listening.ok()) {
      ADD_FAILURE() << "ApiServer::Start: " << listening.ToString();
      return;
    }
    // Attached after the server so that, for one event, the server's listeners (metrics) have
    // run before a test that waited for it goes on.
    events.Attach(node_->events());
    ok_ = server_->port() > 0;
    if (!ok_) ADD_FAILURE() << "the server has no port";
  }

  ~ApiHarness() {
    for (Gate& g : gates_) g.Open();
    // The server's event listeners live in the node's EventBus and cannot be removed: the node
    // stops (no more events) before the server object goes away.
    if (server_) server_->Stop();
    if (node_) node_->Stop();
    server_.reset();
    node_.reset();
  }

  ApiHarness(const ApiHarness&) = delete;
  ApiHarness& operator=(const ApiHarness&) = delete;

  bool ok() const { return ok_; }
  Node& node() { return *node_; }
  Store& store() { return node_->store(); }
  api::ApiServer& server() { return *server_; }
  int port() const { return server_ ? server_->port() : 0; }
  const std::string& Key(Who who) const {
    static const std::string kEmpty;
    auto it = keys_.find(who);
    return it == keys_.end() ? kEmpty : it->second;
  }
  const ApiKeyRecord& KeyRecord(Who who) const { return records_.at(who); }

  // A gate owned by the harness (opened when the harness ends).
  Gate& NewGate() { return gates_.emplace_back(); }

  // One request. `headers` may carry its own Authorization (then `who` adds none).
  Response Send(const std::string& method, const std::string& path, Who who,
                const std::string& body = "", httplib::Headers headers = {}) {
    httplib::Client client("127.0.0.1", port());
    client.set_url_encode(false);
    client.set_read_timeout(std::chrono::seconds(30));
    client.set_write_timeout(std::chrono::seconds(30));
    if (who != Who::kNone && headers.find("Authorization") == headers.end()) {
      headers.emplace("Authorization", "Bearer " + Key(who));
    }
    httplib::Request req;
    req.method = method;
    req.path = path;
    req.headers = std::move(headers);
    req.body = body;
    if (!body.empty() && !req.has_header("Content-Type"))
      req.set_header("Content-Type", "application/json");
    auto result = client.send(req);
    Response r;
    if (!result) {
      r.transport_error = httplib::to_string(result.error());
      r.json = Json::value_t::discarded;
      return r;
    }
    r.status = result->status;
    r.body = result->body;
    r.headers = result->headers;
    r.content_type = result->get_header_value("Content-Type");
    r.json = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    return r;
  }
  Response Get(const std::string& path, Who who, httplib::Headers headers = {}) {
    return Send("GET", path, who, "", std::move(headers));
  }
  Response Post(const std::string& path, Who who, const std::string& body = "",
                httplib::Headers headers = {}) {
    return Send("POST", path, who, body, std::move(headers));
  }
  Response Put(const std::string& path, Who who, const std::string& body,
               httplib::Headers headers = {}) {
    return Send("PUT", path, who, body, std::move(headers));
  }
  Response Delete(const std::string& path, Who who) { return Send("DELETE", path, who); }

  // Creates a job through the API (operator with allow_shell of acme, or admin elsewhere); fails
  // the test unless it answers 201. Returns the answer's body.
  Json MustCreate(const std::string& tenant, const Json& spec) {
    const Who who = tenant == "acme" ? Who::kShellOperator : Who::kAdmin;
    Response r = Post("/v1/tenants/" + tenant + "/jobs", who, spec.dump());
    if (r.status != 201)
      ADD_FAILURE() << "creating " << spec.dump() << " in " << tenant << ": " << r;
    return r.json;
  }

  // Triggers a job (body as given) and fails the test unless it answers 201; the new run ids.
  std::vector<std::string> MustTrigger(const std::string& tenant, const std::string& job_id,
                                       const std::string& body = "") {
    Response r = Post("/v1/tenants/" + tenant + "/jobs/" + job_id + "/trigger",
                      tenant == "acme" ? Who::kOperator : Who::kAdmin, body);
    std::vector<std::string> ids;
    if (r.status != 201 || !r.json.is_object() || !r.json.contains("run_ids") ||
        !r.json["run_ids"].is_array()) {
      ADD_FAILURE() << "triggering " << tenant << "/" << job_id << ": " << r;
      return ids;
    }
    for (const Json& id : r.json["run_ids"]) ids.push_back(id.get<std::string>());
    return ids;
  }

  // Waits until the run has ended (succeeded, failed, timed out or cancelled by its holder).
  bool WaitFinished(const std::string& run_id) {
    return events.WaitUntil(
        [&](const std::vector<SchedulerEvent>& all) {
          for (const SchedulerEvent& e : all) {
            if (e.run_id != run_id) continue;
            if (e.type == EventType::kRunSucceeded || e.type == EventType::kRunFailed ||
                e.type == EventType::kRunTimedOut || e.type == EventType::kRunCancelled) {
              return true;
            }
          }
          return false;
        },
        "the end of run " + run_id);
  }

  EventLog events;

 private:
  void AddKey(Who who, api::Role role, const std::string& tenant, bool allow_shell) {
    auto k = api::GenerateKey(role, tenant, allow_shell, WhoName(who), node_->clock().Now());
    if (!k.ok()) {
      ADD_FAILURE() << "GenerateKey: " << k.status().ToString();
      return;
    }
    Status s = node_->store().PutApiKey(k->record);
    if (!s.ok()) ADD_FAILURE() << "PutApiKey: " << s.ToString();
    keys_[who] = k->key;
    records_[who] = k->record;
  }

  std::deque<Gate> gates_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<api::ApiServer> server_;
  std::map<Who, std::string> keys_;
  std::map<Who, ApiKeyRecord> records_;
  bool ok_ = false;
};

}  // namespace jobsched::testing
