#include "exec/http_executor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "exec/cancellation.h"

namespace jobsched::exec {
namespace {

using ::testing::HasSubstr;

HttpResult MustRun(const HttpRequest& req) {
  CancelSource cancel;
  Result<HttpResult> r = RunHttp(req, cancel);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : HttpResult{};
}

// A cpp-httplib server on 127.0.0.1 and a free port, serving the routes the tests use.
class HttpExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Get("/ok", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("hello", "text/plain");
    });
    server_.Get("/fail", [](const httplib::Request&, httplib::Response& res) {
      res.status = 500;
      res.set_content("boom", "text/plain");
    });
    server_.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 201;
      res.set_content(req.method + "|" + req.get_header_value("X-Token") + "|" +
                          req.get_header_value("Content-Type") + "|" + req.body,
                      "text/plain");
    });
    server_.Get("/redirect", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/ok", 302);
    });
    server_.Get("/redirect-twice", [this](const httplib::Request&, httplib::Response& res) {
      res.set_redirect(Url("/redirect"), 301);  // absolute, then relative
    });
    server_.Get("/loop", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/loop", 302);
    });
    server_.Post("/see-other", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("/method", 303);
    });
    server_.Get("/method", [](const httplib::Request& req, httplib::Response& res) {
      res.set_content(req.method + " body=" + req.body, "text/plain");
    });
    server_.Get("/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(100000, 'a') + "END", "text/plain");
    });
    server_.Get("/slow", [this](const httplib::Request&, httplib::Response& res) {
      std::unique_lock<std::mutex> lock(mu_);
      ++slow_arrived_;
      cv_.notify_all();
      // Bounded, so that a broken test cannot hang the server's shutdown forever.
      cv_.wait_for(lock, std::chrono::seconds(30), [this] { return released_; });
      res.set_content("late", "text/plain");
    });
    server_.Get("/ping", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("pong", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // The listening socket already queues connections; one answered request proves the accept
    // loop runs, so stop() in TearDown cannot race with its start.
    httplib::Client client("127.0.0.1", port_);
    auto res = client.Get("/ping");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
  }

  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  bool WaitForSlowRequest() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [this] { return slow_arrived_ > 0; });
  }

  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  int slow_arrived_ = 0;   // guarded by mu_
  bool released_ = false;  // guarded by mu_
};

TEST_F(HttpExecutorTest, SuccessfulGet) {
  HttpResult r = MustRun({.url = Url("/ok")});
  EXPECT_EQ(r.outcome, HttpOutcome::kCompleted);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.success);
  EXPECT_EQ(r.body, "hello");
  EXPECT_FALSE(r.body_truncated);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.redirects, 0);
}

TEST_F(HttpExecutorTest, ServerErrorIsCompletedButNotSuccess) {
  HttpResult r = MustRun({.url = Url("/fail")});
  EXPECT_EQ(r.outcome, HttpOutcome::kCompleted);
  EXPECT_EQ(r.status, 500);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.body, "boom");
  EXPECT_EQ(r.error, "HTTP 500");
}

TEST_F(HttpExecutorTest, NotFoundIsNotSuccess) {
  HttpResult r = MustRun({.url = Url("/nope")});
  EXPECT_EQ(r.status, 404);
  EXPECT_FALSE(r.success);
}

TEST_F(HttpExecutorTest, MethodHeadersAndBodyAreSent) {
  HttpResult r = MustRun({.method = "POST",
                          .url = Url("/echo"),
                          .headers = {{"X-Token", "t0k3n"}, {"Content-Type", "application/json"}},
                          .body = R"({"a":1})"});
  EXPECT_EQ(r.status, 201);
  EXPECT_TRUE(r.success);
  EXPECT_EQ(r.body, R"(POST|t0k3n|application/json|{"a":1})");
}

TEST_F(HttpExecutorTest, ABodyWithoutAContentTypeIsSentAsPlainText) {
  HttpResult r = MustRun({.method = "POST", .url = Url("/echo"), .body = "hi"});
  EXPECT_EQ(r.body, "POST||text/plain|hi");
}

TEST_F(HttpExecutorTest, RedirectsAreFollowed) {
  HttpResult r = MustRun({.url = Url("/redirect")});
  EXPECT_EQ(r.outcome, HttpOutcome::kCompleted);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.redirects, 1);
  EXPECT_EQ(r.final_url, Url("/ok"));

  HttpResult twice = MustRun({.url = Url("/redirect-twice")});
  EXPECT_EQ(twice.body, "hello");
  EXPECT_EQ(twice.redirects, 2);
}

TEST_F(HttpExecutorTest, SeeOtherContinuesAsGetWithoutBody) {
  HttpResult r = MustRun({.method = "POST", .url = Url("/see-other"), .body = "payload"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET body=");
}

TEST_F(HttpExecutorTest, RedirectLimitIsEnforced) {
  HttpResult r = MustRun({.url = Url("/loop")});
  EXPECT_EQ(r.outcome, HttpOutcome::kFailed);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.status, 302);
  EXPECT_EQ(r.redirects, 5);
  EXPECT_EQ(r.error, "too many redirects (max 5)");

  HttpResult none = MustRun({.url = Url("/redirect"), .max_redirects = 0});
  EXPECT_EQ(none.outcome, HttpOutcome::kFailed);
}

TEST_F(HttpExecutorTest, BodyIsCappedToTheTail) {
  HttpResult r = MustRun({.url = Url("/big"), .max_output_bytes = 1000});
  EXPECT_TRUE(r.success);
  EXPECT_TRUE(r.body_truncated);
  EXPECT_EQ(r.body_bytes, 100003u);
  ASSERT_EQ(r.body.size(), 1000u);
  EXPECT_EQ(r.body, std::string(997, 'a') + "END");
}

TEST_F(HttpExecutorTest, SlowServerTimesOut) {
  HttpResult r = MustRun({.url = Url("/slow"), .timeout = Duration(300)});
  EXPECT_EQ(r.outcome, HttpOutcome::kTimedOut);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.error, "timed out after 300ms");
  EXPECT_GE(r.duration.count(), 300);
  EXPECT_LT(r.duration.count(), 30000);  // did not wait for the handler
}

TEST_F(HttpExecutorTest, CancelFromAnotherThreadEndsTheRequest) {
  CancelSource cancel;
  std::optional<Result<HttpResult>> result;
  std::thread t([&] { result.emplace(RunHttp({.url = Url("/slow")}, cancel)); });
  ASSERT_TRUE(WaitForSlowRequest());
  cancel.Cancel(CancelReason::kCancelled);
  t.join();
  ASSERT_TRUE(result->ok()) << result->status().ToString();
  const HttpResult& r = result->value();
  EXPECT_EQ(r.outcome, HttpOutcome::kCancelled);
  EXPECT_EQ(r.error, "cancelled");
  EXPECT_LT(r.duration.count(), 30000);  // did not wait for the handler
}

TEST_F(HttpExecutorTest, FencedCancellationIsReportedAsFenced) {
  CancelSource cancel;
  std::optional<Result<HttpResult>> result;
  std::thread t([&] { result.emplace(RunHttp({.url = Url("/slow")}, cancel)); });
  ASSERT_TRUE(WaitForSlowRequest());
  cancel.Cancel(CancelReason::kFenced);
  t.join();
  ASSERT_TRUE(result->ok());
  EXPECT_EQ(result->value().outcome, HttpOutcome::kFenced);
}

TEST_F(HttpExecutorTest, AlreadyCancelledSourceSendsNothing) {
  CancelSource cancel;
  cancel.Cancel(CancelReason::kCancelled);
  Result<HttpResult> r = RunHttp({.url = Url("/slow")}, cancel);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, HttpOutcome::kCancelled);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(slow_arrived_, 0);
}

TEST_F(HttpExecutorTest, ConnectionRefusedIsAFailedOutcome) {
  // A port that was free a moment ago and has no listener now.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  int port = ntohs(addr.sin_port);

  HttpResult r = MustRun({.url = "http://127.0.0.1:" + std::to_string(port) + "/"});
  EXPECT_EQ(r.outcome, HttpOutcome::kFailed);
  EXPECT_FALSE(r.success);
  EXPECT_THAT(r.error, HasSubstr("127.0.0.1:" + std::to_string(port)));
}

// An https server whose certificate is self-signed: the error says why the certificate was
// refused; with verify_tls false the request goes through.
TEST(HttpExecutorTlsTest, AnUnverifiedCertificateSaysWhy) {
  char dir_template[] = "/tmp/jobsched-tls-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -addext "
      "subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  httplib::SSLServer server(cert.c_str(), key.c_str());
  ASSERT_TRUE(server.is_valid());
  server.Get("/ok", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("hello", "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread thread([&] { server.listen_after_bind(); });
  const std::string url = "https://127.0.0.1:" + std::to_string(port) + "/ok";

  HttpResult refused = MustRun({.url = url});
  EXPECT_EQ(refused.outcome, HttpOutcome::kFailed);
  EXPECT_THAT(refused.error, HasSubstr("TLS certificate of 127.0.0.1:" + std::to_string(port) +
                                       " could not be verified: self"))
      << "names OpenSSL's reason (a self-signed certificate): " << refused.error;
  HttpResult unverified = MustRun({.url = url, .verify_tls = false});
  EXPECT_TRUE(unverified.success) << unverified.error;
  EXPECT_EQ(unverified.body, "hello");

  server.stop();
  thread.join();
  std::filesystem::remove_all(dir);
}

TEST(HttpExecutorValidationTest, BadUrlsAreInvalidArgumentsNamingTheUrl) {
  CancelSource cancel;
  for (const char* url : {"", "ftp://example.com/", "example.com/path", "http://", "http://:80/",
                          "http://host:99999/", "http://host:x/", "http://user:pw@host/",
                          "http://exa mple.com/", "http://[::1/"}) {
    Result<HttpResult> r = RunHttp({.url = url}, cancel);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_THAT(r.status().message(), HasSubstr("'" + std::string(url) + "'"));
    EXPECT_EQ(r.status().field(), "handler.url");
  }
}

TEST(HttpExecutorValidationTest, BadMethodsAndHeadersAreRejected) {
  CancelSource cancel;
  EXPECT_EQ(RunHttp({.method = "GE T", .url = "http://127.0.0.1/"}, cancel).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RunHttp({.url = "http://127.0.0.1/", .headers = {{"X-A", "a\r\nInjected: 1"}}}, cancel)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RunHttp({.url = "http://127.0.0.1/", .headers = {{"Bad Name", "x"}}}, cancel).status().code(),
      StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace jobsched::exec
