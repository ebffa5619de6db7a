// The http executor (docs/engine.md): one HTTP(S) request with a total timeout, a redirect limit,
// cancellation, and the response status and a capped tail of the body recorded.
//
//   HttpRequest req{.method = "POST", .url = "https://hooks.example.com/x",
//                   .headers = {{"Content-Type", "application/json"}}, .body = payload,
//                   .timeout = Duration(30'000)};
//   CancelSource cancel;
//   ASSIGN_OR_RETURN(HttpResult r, RunHttp(req, cancel));
//   bool ok = r.success;  // a 2xx answer
//
// Thread safety: RunHttp may run concurrently from many threads. Each call uses its own
// connections (no keep-alive across calls) and one helper thread that watches the deadline and
// the CancelSource.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "exec/cancellation.h"

namespace jobsched::exec {

struct HttpRequest {
  // An HTTP method token ("GET", "POST", "PUT", "DELETE", ...). Default: "GET".
  std::string method = "GET";
  // http:// or https://, with an optional port; no user info. Default: empty (invalid).
  std::string url;
  // Sent as given. A body without Content-Type is sent as text/plain. Names must be HTTP
  // tokens and values must not contain CR or LF. Authorization and Cookie are dropped when a
  // redirect leads to another host. Default: empty (User-Agent: jobsched).
  std::map<std::string, std::string> headers;
  // Default: empty.
  std::string body;
  // For the whole exchange, redirects included; then the outcome is kTimedOut.
  // Default: 0 (none).
  Duration timeout{0};
  // Upper bound on establishing one TCP (and TLS) connection, also when timeout is 0; a
  // cancellation cannot interrupt a connect, so this also bounds how late it takes effect.
  // Must be positive. Default: 10 s.
  Duration connect_timeout{10000};
  // Redirects (301, 302, 303, 307, 308) followed; one more is an error. 303, and 301/302 after
  // a POST, continue as GET without a body. Default: 5.
  int max_redirects = 5;
  // Only the last max_output_bytes of the final response's body are kept. Default: 65536.
  size_t max_output_bytes = 65536;
  // Verify the server's TLS certificate against the system CA store. Default: true.
  bool verify_tls = true;
};

enum class HttpOutcome {
  kCompleted,  // a final response arrived: see status and success
  kFailed,     // no usable response: connection refused, TLS error, too many redirects, ...
  kTimedOut,   // request.timeout passed (or CancelReason::kTimeout)
  kCancelled,  // CancelReason::kCancelled
  kFenced,     // CancelReason::kFenced: do not report the result
};

// "completed", "failed", "timed_out", "cancelled", "fenced".
std::string_view HttpOutcomeName(HttpOutcome outcome);

struct HttpResult {
  HttpOutcome outcome = HttpOutcome::kFailed;
  // Status code of the last response received (0 if none).
  int status = 0;
  // True only for kCompleted with a 2xx status.
  bool success = false;
  // The tail of the final response's body, at most max_output_bytes (see OutputTail).
  std::string body;
  bool body_truncated = false;
  uint64_t body_bytes = 0;  // the length of the whole body, kept or not
  // The URL that produced the final response, and how many redirects led to it.
  std::string final_url;
  int redirects = 0;
  Duration duration{0};
  // Empty on success, else what went wrong: "HTTP 500", "timed out after 500ms",
  // "connection to 127.0.0.1:1 failed: Connection", "too many redirects (max 5)".
  std::string error;
};

// Performs the request, following redirects.
//
// Returns an HttpResult for every request that was attempted, whatever the network did.
// Errors:
//   kInvalidArgument  bad url (naming it), method or header;
//   kInternal         the helper thread could not be started, or cpp-httplib threw.
Result<HttpResult> RunHttp(const HttpRequest& request, CancelSource& cancel);

}  // namespace jobsched::exec
