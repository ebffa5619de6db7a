// The REST API v1 of a node: one declarative route table (Routes()) registers every HTTP route,
// feeds docs/api.md (`jobsched serve --print-routes`) and labels the per-route metrics.
// Authentication is `Authorization: Bearer js_<id>_<secret>`; roles and tenant scoping are checked
// per route before its handler runs. Errors are
// {"error": {"code", "message", "field"}} with the status of HttpStatusFor().
#pragma once

#include <jobsched/status.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "api/metrics.h"

namespace httplib {
class Server;
}

namespace jobsched {
class Node;
}

namespace jobsched::api {

struct ServerOptions {
  // HOST:PORT; port 0 picks a free port (see ApiServer::port). Default: "127.0.0.1:8080"
  std::string listen = "127.0.0.1:8080";
  // TLS certificate and key (PEM files); both or neither. Default: none (plain HTTP)
  std::string tls_cert;
  std::string tls_key;
  // Allow a non-loopback listen address without TLS. Default: false
  bool insecure_listen = false;
  // Larger request bodies are answered 413. Default: 1 MiB
  size_t max_body_bytes = size_t{1} << 20;
  // Request threads (each open event stream holds one). Default: 32
  int threads = 32;
  // SSE keep-alive comment period. Default: 15 s
  Duration keepalive{15000};
};

// Who may call a route.
enum class Access { kPublic, kAnyKey, kViewer, kOperator, kAdmin };

struct RouteInfo {
  const char* method;
  const char* path;  // with {param} placeholders
  Access access;
  const char* summary;
  // The query parameters the route takes, comma-separated ("" for none); any other one, or one
  // given twice, is refused with 400.
  const char* params = "";
  // Whether the route reads a request body; a body sent to one that does not is refused.
  bool takes_body = false;
  // Whether the route answers while the store is unreachable, to a key this node verified in
  // the store for this route within the last 10 minutes (GET /metrics: a node's own series
  // matter most then).
  bool during_outage = false;
};

// Every route, in the order docs/api.md lists them.
const std::vector<RouteInfo>& Routes();
// Markdown table of Routes(), the body of docs/api.md.
std::string RoutesMarkdown();

// The HTTP status for a Status code (one mapping for the whole API).
int HttpStatusFor(StatusCode code);

class ApiServer {
 public:
  // kInvalidArgument for a bad listen address, TLS files given alone, or a non-loopback
  // address without TLS and without insecure_listen.
  static Result<std::unique_ptr<ApiServer>> Create(Node& node, ServerOptions options);
  ~ApiServer();

  // Binds and starts serving on a background thread: Bind() then Serve(). kUnavailable if the
  // address is taken.
  Status Start();
  // Takes the address (connections wait in the backlog until Serve), so that a process that
  // cannot have it fails before it starts anything else. kUnavailable if the address is taken.
  Status Bind();
  // Starts answering on a background thread. Requires Bind().
  void Serve();
  // Stops accepting, ends event streams, joins the thread. Idempotent.
  void Stop();
  int port() const { return port_; }
  Metrics& metrics() { return metrics_; }

  class Impl;

 private:
  ApiServer(Node& node, ServerOptions options);

  Node& node_;
  const ServerOptions options_;
  Metrics metrics_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
  int port_ = 0;
  std::string host_;  // the host bound to (Bind)
};

}  // namespace jobsched::api
