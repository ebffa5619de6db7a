#include "exec/http_executor.h"

#include <errno.h>
#include <httplib.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "core/http_url.h"
#include "exec/shell_executor.h"

namespace jobsched::exec {
namespace {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

// A request without a timeout still needs some per-read limit in cpp-httplib.
constexpr Duration kNoTimeoutReadLimit{24 * 3600 * 1000};
// cpp-httplib's own read/write timeouts are set this much past our deadline, so that the
// watchdog (exact) always fires first and the outcome is kTimedOut, not a read error.
constexpr Duration kLibraryTimeoutSlack{1000};
// While a stop is pending, the watchdog repeats Client::stop() this often: a stop issued just
// before a request registers its socket would otherwise be lost.
constexpr Duration kStopRetry{20};
// Poll interval for a CancelSource without an eventfd.
constexpr Duration kFallbackPoll{50};

// ---------------------------------------------------------------------------------------------
// Request checks

Status Validate(const HttpRequest& req) {
  if (!IsHttpToken(req.method)) {
    return InvalidArgument("invalid HTTP method '" + req.method + "'", "handler.method");
  }
  RETURN_IF_ERROR(CheckHttpHeaders(req.headers));
  if (req.max_redirects < 0) {
    return InvalidArgument("max_redirects must not be negative", "handler.max_redirects");
  }
  if (req.timeout.count() < 0) {
    return InvalidArgument("timeout must not be negative", "timeout_ms");
  }
  if (req.connect_timeout.count() <= 0) {
    return InvalidArgument("connect_timeout must be positive", "handler.connect_timeout_ms");
  }
  return Status::Ok();
}

bool HasHeader(const std::map<std::string, std::string>& headers, std::string_view name) {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& kv) { return EqualsIgnoreCase(kv.first, name); });
}

void EraseHeader(std::map<std::string, std::string>* headers, std::string_view name) {
  std::erase_if(*headers, [&](const auto& kv) { return EqualsIgnoreCase(kv.first, name); });
}

// `tls_verify_result`: OpenSSL's verification result of the server's certificate chain.
std::string DescribeError(httplib::Error err, const Url& url, long tls_verify_result) {
  const std::string where = url.Authority();
  switch (err) {
    case httplib::Error::Connection:
      return "cannot connect to " + where;
    case httplib::Error::ConnectionTimeout:
      return "connecting to " + where + " timed out";
    case httplib::Error::Read:
      return "error reading the response from " + where;
    case httplib::Error::Write:
      return "error sending the request to " + where;
    case httplib::Error::SSLConnection:
      return "TLS handshake with " + where + " failed";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load the CA certificates";
    case httplib::Error::SSLServerVerification:
      // The chain verified, so the name check failed (or the server sent no certificate).
      return "TLS certificate of " + where + " could not be verified: " +
             (tls_verify_result != X509_V_OK ? X509_verify_cert_error_string(tls_verify_result)
                                             : "it does not name the host");
    case httplib::Error::Compression:
      return "cannot decompress the response from " + where;
    default:
      return "request to " + where + " failed: " + httplib::to_string(err);
  }
}

void SetTimeout(httplib::Client& client, void (httplib::Client::*setter)(time_t, time_t),
                Duration d) {
  int64_t ms = std::max<int64_t>(1, d.count());
  (client.*setter)(static_cast<time_t>(ms / 1000), static_cast<time_t>((ms % 1000) * 1000));
}

// ---------------------------------------------------------------------------------------------
// The watchdog: a helper thread that turns the deadline and the CancelSource into
// Client::stop(), which makes a blocked socket read or write fail at once.

class Watchdog {
 public:
  Watchdog(CancelSource& cancel, std::optional<SteadyTime> deadline)
      : cancel_(cancel), deadline_(deadline) {}
  ~Watchdog() { Stop(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  Status Start() {
    done_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (done_fd_ < 0) return Internal(std::string("eventfd: ") + strerrordesc_np(errno));
    try {
      thread_ = std::thread([this] { Loop(); });
    } catch (const std::exception& e) {
      return Internal(std::string("cannot start the http watchdog thread: ") + e.what());
    }
    return Status::Ok();
  }

  void Stop() {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      ssize_t n = write(done_fd_, &one, sizeof(one));
      (void)n;
      thread_.join();
    }
    if (done_fd_ >= 0) close(done_fd_);
    done_fd_ = -1;
  }

  // Why the watchdog fired; kNone while it has not.
  CancelReason fired() const { return fired_.load(std::memory_order_acquire); }

  // Registers the client whose request is about to start (nullptr after it returned, before
  // the client is destroyed). Returns false when the watchdog has already fired.
  bool SetClient(httplib::Client* client) {
    std::lock_guard<std::mutex> lock(mu_);
    client_ = client;
    return fired() == CancelReason::kNone;
  }

 private:
  void Loop() {
    try {
      for (;;) {
        SteadyTime now = SteadyClock::now();
        if (fired() == CancelReason::kNone) {
          if (cancel_.cancelled()) {
            Fire(cancel_.reason());
          } else if (deadline_ && now >= *deadline_) {
            Fire(CancelReason::kTimeout);
          }
        } else {
          StopClient();
        }
        struct pollfd fds[2] = {{done_fd_, POLLIN, 0}, {-1, 0, 0}};
        nfds_t nfds = 1;
        int timeout_ms = -1;
        if (fired() != CancelReason::kNone) {
          timeout_ms = static_cast<int>(kStopRetry.count());
        } else {
          if (cancel_.fd() >= 0) {
            fds[nfds++] = {cancel_.fd(), POLLIN, 0};
          } else {
            timeout_ms = static_cast<int>(kFallbackPoll.count());
          }
          if (deadline_) {
            int64_t left =
                std::max<int64_t>(0, std::chrono::ceil<Duration>(*deadline_ - now).count());
            if (timeout_ms < 0 || left < timeout_ms) timeout_ms = static_cast<int>(left);
          }
        }
        if (poll(fds, nfds, timeout_ms) > 0 && fds[0].revents != 0) return;
      }
    } catch (...) {
      // Thread entry point: nothing here throws in practice (stop() only shuts a socket down),
      // and there is nobody to report to; the request ends by its own timeouts.
    }
  }

  void Fire(CancelReason reason) {
    fired_.store(reason, std::memory_order_release);
    StopClient();
  }

  void StopClient() {
    std::lock_guard<std::mutex> lock(mu_);
    if (client_ != nullptr) client_->stop();
  }

  // Immutable after construction.
  CancelSource& cancel_;
  const std::optional<SteadyTime> deadline_;
  int done_fd_ = -1;  // set by Start(), closed by Stop()
  std::thread thread_;

  std::atomic<CancelReason> fired_{CancelReason::kNone};
  std::mutex mu_;
  httplib::Client* client_ = nullptr;  // guarded by mu_
};

void SetCancelled(CancelReason reason, SteadyTime start, HttpResult* result) {
  switch (reason) {
    case CancelReason::kTimeout:
      result->outcome = HttpOutcome::kTimedOut;
      result->error =
          "timed out after " +
          std::to_string(std::chrono::duration_cast<Duration>(SteadyClock::now() - start).count()) +
          "ms";
      break;
    case CancelReason::kFenced:
      result->outcome = HttpOutcome::kFenced;
      result->error = "fenced: the node lost the run's lease";
      break;
    case CancelReason::kCancelled:
    case CancelReason::kNone:
      result->outcome = HttpOutcome::kCancelled;
      result->error = "cancelled";
      break;
  }
}

bool IsRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

void Exchange(const HttpRequest& req, Url url, SteadyTime start, std::optional<SteadyTime> deadline,
              Watchdog& watchdog, HttpResult* result) {
  std::string method = req.method;
  std::string body = req.body;
  std::map<std::string, std::string> headers = req.headers;
  if (!HasHeader(headers, "User-Agent")) headers["User-Agent"] = "jobsched";
  const std::string first_origin = url.Origin();

  for (int hop = 0;; ++hop) {
    result->final_url = url.ToString();
    if (watchdog.fired() != CancelReason::kNone) {
      SetCancelled(watchdog.fired(), start, result);
      return;
    }
    Duration remaining = kNoTimeoutReadLimit;
    if (deadline) {
      remaining = std::chrono::duration_cast<Duration>(*deadline - SteadyClock::now());
      if (remaining.count() <= 0) {
        SetCancelled(CancelReason::kTimeout, start, result);
        return;
      }
    }
    httplib::Client client(url.SchemeHostPort());
    if (!client.is_valid()) {
      result->outcome = HttpOutcome::kFailed;
      result->error = "cannot create an HTTP client for " + url.Origin();
      return;
    }
    client.set_follow_location(false);
    client.set_keep_alive(false);
    // A connect cannot be interrupted by stop(), so its limit is the remaining time itself.
    const bool connect_capped_by_deadline = deadline && remaining <= req.connect_timeout;
    SetTimeout(client, &httplib::Client::set_connection_timeout,
               std::min(remaining, req.connect_timeout));
    SetTimeout(client, &httplib::Client::set_read_timeout, remaining + kLibraryTimeoutSlack);
    SetTimeout(client, &httplib::Client::set_write_timeout, remaining + kLibraryTimeoutSlack);
    if (url.scheme == "https") client.enable_server_certificate_verification(req.verify_tls);

    httplib::Request hreq;
    hreq.method = method;
    hreq.path = url.target;
    for (const auto& [name, value] : headers) hreq.headers.emplace(name, value);
    hreq.body = body;
    OutputTail tail(req.max_output_bytes);
    hreq.content_receiver = [&tail, &watchdog](const char* data, size_t n, uint64_t, uint64_t) {
      tail.Append(std::string_view(data, n));
      return watchdog.fired() == CancelReason::kNone;
    };
    hreq.progress = [&watchdog](uint64_t, uint64_t) {
      return watchdog.fired() == CancelReason::kNone;
    };

    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    bool sent = false;
    if (watchdog.SetClient(&client)) sent = client.send(hreq, res, err);
    watchdog.SetClient(nullptr);

    if (watchdog.fired() != CancelReason::kNone) {
      SetCancelled(watchdog.fired(), start, result);
      return;
    }
    if (!sent) {
      if (err == httplib::Error::ConnectionTimeout && connect_capped_by_deadline) {
        SetCancelled(CancelReason::kTimeout, start, result);
      } else {
        result->outcome = HttpOutcome::kFailed;
        result->error = DescribeError(err, url, client.get_openssl_verify_result());
      }
      return;
    }

    result->status = res.status;
    if (IsRedirect(res.status) && res.has_header("Location")) {
      if (hop >= req.max_redirects) {
        result->outcome = HttpOutcome::kFailed;
        result->error = "too many redirects (max " + std::to_string(req.max_redirects) + ")";
        result->body_truncated = tail.truncated();
        result->body_bytes = tail.total_bytes();
        result->body = std::move(tail).Take();
        return;
      }
      std::string location = res.get_header_value("Location");
      Result<Url> next = ResolveLocation(url, location);
      if (!next.ok()) {
        result->outcome = HttpOutcome::kFailed;
        result->error = "invalid redirect location '" + location + "'";
        return;
      }
      if (res.status == 303 || ((res.status == 301 || res.status == 302) && method == "POST")) {
        if (method != "HEAD") method = "GET";
        body.clear();
        EraseHeader(&headers, "Content-Type");
        EraseHeader(&headers, "Content-Length");
      }
      if (next->Origin() != first_origin) {
        // Credentials meant for one origin are not handed to another.
        EraseHeader(&headers, "Authorization");
        EraseHeader(&headers, "Cookie");
      }
      url = std::move(next).value();
      ++result->redirects;
      continue;
    }

    result->outcome = HttpOutcome::kCompleted;
    result->success = res.status >= 200 && res.status <= 299;
    if (!result->success) result->error = "HTTP " + std::to_string(res.status);
    result->body_truncated = tail.truncated();
    result->body_bytes = tail.total_bytes();
    result->body = std::move(tail).Take();
    return;
  }
}

}  // namespace

std::string_view HttpOutcomeName(HttpOutcome outcome) {
  switch (outcome) {
    case HttpOutcome::kCompleted:
      return "completed";
    case HttpOutcome::kFailed:
      return "failed";
    case HttpOutcome::kTimedOut:
      return "timed_out";
    case HttpOutcome::kCancelled:
      return "cancelled";
    case HttpOutcome::kFenced:
      return "fenced";
  }
  return "unknown";
}

Result<HttpResult> RunHttp(const HttpRequest& request, CancelSource& cancel) {
  RETURN_IF_ERROR(Validate(request));
  ASSIGN_OR_RETURN(Url url, ParseUrl(request.url));
  const SteadyTime start = SteadyClock::now();
  const std::optional<SteadyTime> deadline =
      request.timeout.count() > 0 ? std::optional<SteadyTime>(start + request.timeout)
                                  : std::nullopt;
  HttpResult result;
  result.final_url = url.ToString();
  if (cancel.cancelled()) {
    SetCancelled(cancel.reason(), start, &result);
    return result;
  }
  try {
    Watchdog watchdog(cancel, deadline);
    RETURN_IF_ERROR(watchdog.Start());
    Exchange(request, std::move(url), start, deadline, watchdog, &result);
  } catch (const std::exception& e) {
    return Internal(std::string("http request to '") + request.url + "' failed: " + e.what());
  }
  if (result.outcome == HttpOutcome::kTimedOut && request.timeout.count() > 0 &&
      cancel.reason() != CancelReason::kTimeout) {  // our deadline, not the caller's
    result.error = "timed out after " + std::to_string(request.timeout.count()) + "ms";
  }
  result.duration = std::chrono::duration_cast<Duration>(SteadyClock::now() - start);
  return result;
}

}  // namespace jobsched::exec
