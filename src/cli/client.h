// The client side of the REST API v1 (docs/api.md) used by the `jobsched` client subcommands: a
// small JSON-over-HTTP(S) client with a Bearer key, an SSE reader for the event stream, and the
// resolution of the client settings (docs/configuration.md: flag > environment > default).
//
// Errors: a server error {"error": {"code", "message", "field"}} becomes a Status whose message
// and field are the server's and whose code follows the HTTP status (400 kInvalidArgument,
// 404 kNotFound, 409 kAlreadyExists, 412 kFailedPrecondition, 429 kResourceExhausted,
// 403 kPermissionDenied, 503 kUnavailable; 401 kFailedPrecondition; anything else kInternal).
// A server that cannot be reached is kUnavailable "cannot reach <url>: <reason>".
//
// Thread safety: a Client is used by one thread at a time.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace httplib {
class Client;
}

namespace jobsched::cli {

using Json = nlohmann::ordered_json;

struct ClientOptions {
  // http(s)://host[:port][/path-prefix]. Default: "http://127.0.0.1:8080"
  std::string server = "http://127.0.0.1:8080";
  // API key sent as "Authorization: Bearer <key>"; empty = no header. Default: ""
  std::string key;
  // PEM CA bundle that verifies an https server; empty = the system's CAs. Default: ""
  std::string ca_cert;
  // Default: 5 s
  Duration connect_timeout{5000};
  // Per read on ordinary requests. Default: 60 s
  Duration read_timeout{60000};
  // Per read on event streams; the server sends a keep-alive every 15 s. Default: 60 s
  Duration stream_read_timeout{60000};
};

// One Server-Sent Event.
struct SseEvent {
  std::string id;    // "" when the event has no id line
  std::string type;  // "message" when the event has no event line
  std::string data;  // data lines joined by '\n'
};

// Splits an SSE byte stream (any chunking) into events; comments (":...") are skipped.
class SseParser {
 public:
  // Calls on_event for every complete event in `chunk`; stops and returns false as soon as
  // on_event returns false.
  bool Feed(std::string_view chunk, const std::function<bool(const SseEvent&)>& on_event);
  // The last id the stream sent, with an event or alone ("" before any).
  const std::string& last_id() const { return event_.id; }

 private:
  bool Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event);

  std::string pending_;  // an unfinished line
  SseEvent event_;
  bool has_data_ = false;
};

class Client {
 public:
  // kInvalidArgument when options.server is not http(s)://host[:port][/prefix].
  static Result<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();

  // `path` starts with "/" and is already escaped (see PathSegment, QueryValue). The answer's
  // JSON body; `null` for an empty body (204). Errors: see the header comment.
  Result<Json> Get(const std::string& path);
  Result<Json> Delete(const std::string& path);
  // `body` is sent as application/json; `null` sends an empty body. `if_match` (a job version)
  // is sent as If-Match when not empty.
  Result<Json> Post(const std::string& path, const Json& body);
  Result<Json> Put(const std::string& path, const Json& body, const std::string& if_match = "");

  // Follows an event stream: GET `path` (with Last-Event-ID when `last_event_id` is not empty),
  // calls on_open once the server has accepted the stream, then on_event for each event until
  // on_event returns false (→ OK). A stream that ends or breaks is kUnavailable; a refusal by
  // the server is the server's error. `last_event_id` is then the stream's last id (an id the
  // server sent without an event counts: where the stream started), for a reconnect.
  Status Stream(const std::string& path, std::string& last_event_id,
                const std::function<void()>& on_open,
                const std::function<bool(const SseEvent&)>& on_event);

  // "http://127.0.0.1:8080" (without a trailing slash).
  const std::string& base_url() const { return base_url_; }
  bool has_key() const { return !options_.key.empty(); }

 private:
  Client(ClientOptions options, std::string base_url, std::string prefix);
  Result<Json> Send(const std::string& method, const std::string& path, const Json* body,
                    const std::string& if_match);

  const ClientOptions options_;
  const std::string base_url_;  // scheme://host:port[/prefix]
  const std::string prefix_;    // "" or "/prefix"
  std::unique_ptr<httplib::Client> http_;
};

// Percent-escapes one path segment or query value (everything but A-Z a-z 0-9 - . _ ~).
std::string Escape(std::string_view text);

// The client settings as given on the command line; empty = not given.
struct ConnectionFlags {
  std::string server;    // --server
  std::string key;       // --key
  std::string key_file;  // --key-file
  std::string tenant;    // --tenant
  std::string ca_cert;   // --ca-cert
};

struct Connection {
  ClientOptions options;
  std::string tenant;
  // Where the key came from ("--key", "JOBSCHED_KEY", "./data/admin.key", ...); "" = no key.
  std::string key_source;
};

// Flag > environment > default, for each setting:
//   server  --server, JOBSCHED_URL, "http://127.0.0.1:8080"
//   key     --key, --key-file, JOBSCHED_KEY, JOBSCHED_KEY_FILE, ./data/admin.key if it exists
//   tenant  --tenant, JOBSCHED_TENANT, "default"
//   ca-cert --ca-cert, JOBSCHED_CA_CERT, none
// A key file holds the key (surrounding whitespace ignored). kInvalidArgument when a key file
// that was named cannot be read or is empty.
Result<Connection> ResolveConnection(const ConnectionFlags& flags);

}  // namespace jobsched::cli
