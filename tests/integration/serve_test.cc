// `jobsched serve` as a user runs it: the real binary, its admin key file, readiness, the
// sample job, graceful shutdown on SIGTERM; and the config file / environment / flag layers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "api/auth.h"
#include "cli/serve_cmd.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"

namespace jobsched::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ServeProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) / ("serve-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }

  void Start(std::vector<std::string> args) {
    log_ = (dir_ / ("serve-" + std::to_string(++starts_) + ".log")).string();
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log_.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> argv{const_cast<char*>(JOBSCHED_BIN), const_cast<char*>("serve")};
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(JOBSCHED_BIN, argv.data());
      ::_exit(127);
    }
  }

  std::string Log() {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // The port from "listening on http://127.0.0.1:PORT", once the server logged it.
  int WaitForPort() {
    const std::regex re("listening on https?://[^:]+:([0-9]+)");
    for (int i = 0; i < 1500; ++i) {
      std::smatch m;
      const std::string log = Log();
      if (std::regex_search(log, m, re)) return std::stoi(m[1]);
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "serve exited early: " << log;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "serve never listened: " << Log();
    return -1;
  }

  // Starts serve on a free port with its data in the test's directory (and `more` arguments), and
  // waits until it listens: its port (-1 after a failure) and the admin key it wrote.
  std::pair<int, std::string> StartServing(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--data-dir",
                                     (dir_ / "data").string()};
    args.insert(args.end(), more.begin(), more.end());
    Start(std::move(args));
    const int port = WaitForPort();
    std::string key;
    std::ifstream(dir_ / "data" / "admin.key") >> key;
    return {port, key};
  }

  int WaitExit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::filesystem::path dir_;
  std::string log_;
  int starts_ = 0;
  pid_t pid_ = -1;
};

TEST_F(ServeProcessTest, FirstStartWritesAnAdminKeyServesTheSampleJobAndStopsOnSigterm) {
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string(), "--sample-job"});
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  const auto key_path = dir_ / "data" / "admin.key";
  ASSERT_TRUE(std::filesystem::exists(key_path));
  struct stat st {};
  ASSERT_EQ(::stat(key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::string key;
  std::ifstream(key_path) >> key;
  EXPECT_THAT(Log(), HasSubstr(key_path.string()));
  // The sample job exists before the API listens (a client that saw the port finds it).
  const std::string log = Log();
  const size_t created = log.find("job created job_id=sample");
  ASSERT_NE(created, std::string::npos) << log;
  EXPECT_LT(created, log.find("listening on")) << log;

  httplib::Client client("127.0.0.1", port);
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  auto job = client.Get("/v1/tenants/default/jobs/sample", {{"Authorization", "Bearer " + key}});
  ASSERT_TRUE(job);
  ASSERT_EQ(job->status, 200) << job->body;
  auto j = nlohmann::json::parse(job->body);
  EXPECT_EQ(j["spec"]["handler"]["type"], "shell");
  EXPECT_EQ(j["next_fire_times"].size(), 5u);
  auto unauthorized = client.Get("/v1/tenants/default/jobs/sample");
  ASSERT_TRUE(unauthorized);
  EXPECT_EQ(unauthorized->status, 401);

  ::kill(pid_, SIGTERM);
  EXPECT_EQ(WaitExit(), 0);
  EXPECT_THAT(Log(), HasSubstr("received SIGTERM"));
}

// Creates job `id`, with the noop handler, through the API.
void CreateNoopJob(httplib::Client& client, const httplib::Headers& auth, const std::string& id) {
  auto made =
      client.Post("/v1/tenants/default/jobs", auth,
                  R"({"id": ")" + id + R"(", "handler": {"type": "builtin", "name": "noop"}})",
                  "application/json");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
}

// One run of job `id` (its own payload).
void TriggerJob(httplib::Client& client, const httplib::Headers& auth, const std::string& id) {
  auto trig = client.Post("/v1/tenants/default/jobs/" + id + "/trigger", auth, "",
                          "application/json");
  ASSERT_TRUE(trig);
  ASSERT_EQ(trig->status, 201) << trig->body;
}

// Waits (15 s at most) until job `id` has `n` succeeded runs.
bool WaitForSucceededRuns(httplib::Client& client, const httplib::Headers& auth,
                          const std::string& id, size_t n) {
  for (int i = 0; i < 1500; ++i) {
    auto runs = client.Get("/v1/tenants/default/jobs/" + id + "/runs?state=succeeded", auth);
    if (runs && runs->status == 200 && nlohmann::json::parse(runs->body)["items"].size() >= n)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// The page as Chromium (headless, a profile of its own under `profile`) has it once its script
// ran: the DOM after the page's fetches, with a few seconds of the page's own time. A page that
// keeps fetching holds the page's time still: it is given up after 60 s (a failure).
std::string BrowserDom(const std::string& url, const std::filesystem::path& profile) {
  const std::string command =
      "timeout -k 5 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir='" +
      profile.string() + "' --virtual-time-budget=3000 --dump-dom '" + url + "' 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string dom;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) dom.append(buf, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << "chromium failed (status " << status << "): is it installed?";
  return dom;
}

TEST_F(ServeProcessTest, DashboardInARealBrowserShowsJobsAndRunsWithTheKeyOfItsLink) {
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string(), "--sample-job"});
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  std::string key;
  std::ifstream(dir_ / "data" / "admin.key") >> key;
  ASSERT_FALSE(key.empty());

  // One run of the sample job, finished before the page is opened.
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers auth{{"Authorization", "Bearer " + key}};
  ASSERT_NO_FATAL_FAILURE(TriggerJob(client, auth, "sample"));
  ASSERT_TRUE(WaitForSucceededRuns(client, auth, "sample", 1)) << Log();

  const std::string base = "http://127.0.0.1:" + std::to_string(port) + "/";
  const std::string dom = BrowserDom(base + "#key=" + key, dir_ / "browser");
  EXPECT_THAT(dom, HasSubstr("<td>sample</td><td class=\"active\">active</td>")) << dom;
  EXPECT_THAT(dom, HasSubstr("<td class=\"succeeded\">succeeded</td>")) << dom;
  EXPECT_THAT(dom, HasSubstr("<td>*/10 * * * * *</td>"));
  EXPECT_THAT(dom, HasSubstr("<span id=\"error\"></span>"));

  // The key stays with the browser profile: the same page without the fragment still works.
  EXPECT_THAT(BrowserDom(base, dir_ / "browser"), HasSubstr("<td>sample</td>"));

  // A wrong key: no rows, and the server's reason on the page.
  const std::string refused =
      BrowserDom(base + "#key=js_wrong_0000000000000000000000000000", dir_ / "browser2");
  EXPECT_THAT(refused, Not(HasSubstr("<td>sample</td>")));
  EXPECT_THAT(refused, ::testing::MatchesRegex(".*<span id=\"error\">[^<]+</span>.*"));
}

// A busy cluster sends the page thousands of events a second: it shows the newest 200 and reads
// its tables at most once a second, not once an event (which would flood the API).
TEST_F(ServeProcessTest, DashboardUnderABurstOfEventsKeepsItsReadsAndItsListBounded) {
  const auto [port, key] = StartServing({"--concurrency", "8"});
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers auth{{"Authorization", "Bearer " + key}};
  ASSERT_NO_FATAL_FAILURE(CreateNoopJob(client, auth, "burst"));

  // Runs triggered for as long as the page is open.
  std::atomic<bool> open{true};
  std::thread load([&] {
    httplib::Client loader("127.0.0.1", port);
    const std::string payloads = R"({"payloads": [)" + [] {
      std::string list;
      for (int i = 0; i < 20; ++i) list += (i ? ",{}" : "{}");
      return list;
    }() + "]}";
    while (open) {
      loader.Post("/v1/tenants/default/jobs/burst/trigger", auth, payloads, "application/json");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const std::string dom =
      BrowserDom("http://127.0.0.1:" + std::to_string(port) + "/#key=" + key, dir_ / "browser");
  open = false;
  load.join();

  const size_t from = dom.find("<div id=\"events\">");
  ASSERT_NE(from, std::string::npos) << dom;
  const std::string events = dom.substr(from, dom.find("</section>", from) - from);
  int lines = 0;
  for (size_t at = events.find("<div>"); at != std::string::npos; at = events.find("<div>", at + 1))
    ++lines;
  EXPECT_GE(lines, 50) << "the page saw the burst: " << events.substr(0, 2000);
  EXPECT_LE(lines, 200);

  auto metrics = client.Get("/metrics", auth);
  ASSERT_TRUE(metrics);
  const std::regex reads(
      R"re(jobsched_http_requests_total\{route="GET /v1/tenants/\{t\}/runs",code="200"\} (\d+))re");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics->body, m, reads)) << metrics->body;
  EXPECT_LE(std::stoi(m[1]), 10) << "run table reads for " << lines << "+ events";
}

TEST_F(ServeProcessTest, SecondStartKeepsTheKeyAndAGivenAdminKeyIsAccepted) {
  const std::string data = (dir_ / "data").string();
  Start({"--listen", "127.0.0.1:0", "--data-dir", data});
  ASSERT_GT(WaitForPort(), 0);
  std::string first;
  std::ifstream(dir_ / "data" / "admin.key") >> first;
  ::kill(pid_, SIGTERM);
  ASSERT_EQ(WaitExit(), 0);

  const std::string given = "js_automation_" + std::string(64, 'a');
  ::setenv("JOBSCHED_ADMIN_KEY", given.c_str(), 1);
  Start({"--listen", "127.0.0.1:0", "--data-dir", data});
  ::unsetenv("JOBSCHED_ADMIN_KEY");
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  std::string again;
  std::ifstream(dir_ / "data" / "admin.key") >> again;
  EXPECT_EQ(first, again);
  httplib::Client client("127.0.0.1", port);
  for (const std::string& key : {first, given}) {
    auto keys = client.Get("/v1/keys", {{"Authorization", "Bearer " + key}});
    ASSERT_TRUE(keys);
    EXPECT_EQ(keys->status, 200) << key;
  }
}

// A data dir whose admin.key belongs to another store (here the file store, while the new
// start uses an in-memory one): the new store's first key does not overwrite it.
TEST_F(ServeProcessTest, AnotherStoresAdminKeyIsKeptAside) {
  const auto [port, first] = StartServing();
  ASSERT_GT(port, 0);
  ::kill(pid_, SIGTERM);
  ASSERT_EQ(WaitExit(), 0);

  const auto [other_port, second] = StartServing({"--store", "sqlite::memory:"});
  ASSERT_GT(other_port, 0);
  EXPECT_NE(second, first);
  std::vector<std::filesystem::path> kept;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "data")) {
    if (entry.path().filename().string().starts_with("admin.key.")) kept.push_back(entry.path());
  }
  ASSERT_EQ(kept.size(), 1u);
  std::string old;
  std::ifstream(kept[0]) >> old;
  EXPECT_EQ(old, first);
  EXPECT_THAT(Log(), HasSubstr("kept as " + kept[0].string()));
}

// A node started by a job (a shell job's environment holds JOBSCHED_RUN_ID and the executing
// node's JOBSCHED_NODE_ID) does not take the executing node's id.
TEST_F(ServeProcessTest, ANodeStartedByAJobDoesNotTakeTheExecutingNodesId) {
  ::setenv("JOBSCHED_RUN_ID", "parent@1", 1);
  ::setenv("JOBSCHED_NODE_ID", "parent-node", 1);
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string()});
  ::unsetenv("JOBSCHED_RUN_ID");
  ::unsetenv("JOBSCHED_NODE_ID");
  ASSERT_GT(WaitForPort(), 0);
  std::string log = Log();
  for (int i = 0; i < 1500 && log.find("serve ready: node ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // logged after "listening"
    log = Log();
  }
  EXPECT_THAT(log, HasSubstr("jobsched serve ready: node "));
  EXPECT_THAT(log, Not(HasSubstr("node parent-node"))) << log;
}

TEST_F(ServeProcessTest, JsonLogsCarryRunTransitionsAsFields) {
  const std::string given = "js_logtest_" + std::string(64, 'b');
  ::setenv("JOBSCHED_ADMIN_KEY", given.c_str(), 1);
  Start(
      {"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string(), "--log-format", "json"});
  ::unsetenv("JOBSCHED_ADMIN_KEY");
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers auth{{"Authorization", "Bearer " + given}};
  ASSERT_NO_FATAL_FAILURE(CreateNoopJob(client, auth, "logged"));
  auto trig = client.Post("/v1/tenants/default/jobs/logged/trigger", auth, "", "application/json");
  ASSERT_TRUE(trig);
  ASSERT_EQ(trig->status, 201) << trig->body;
  const std::string run_id = nlohmann::json::parse(trig->body)["run_ids"][0];
  // Wait for the run's final log line, then check every line is a JSON object.
  bool seen = false;
  for (int i = 0; i < 1500 && !seen; ++i) {
    seen = Log().find("\"run succeeded") != std::string::npos;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(seen) << Log();
  std::istringstream lines(Log());
  bool found = false;
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    ASSERT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
    if (j.value("run_id", "") == run_id &&
        j["msg"].get<std::string>().starts_with("run succeeded")) {
      found = true;
      EXPECT_EQ(j["job_id"], "logged");
      EXPECT_EQ(j["tenant"], "default");
      EXPECT_TRUE(j.contains("node"));
    }
  }
  EXPECT_TRUE(found);
}

// What a job's author writes (here a builtin handler name, which the run's error repeats) cannot
// forge a log record: not a line of its own in the text format, not a field (level, tenant) in
// the JSON format.
class ServeLogForgeryTest : public ServeProcessTest,
                            public ::testing::WithParamInterface<std::string> {};

TEST_P(ServeLogForgeryTest, AJobCannotForgeALogRecord) {
  const std::string format = GetParam();
  const auto [port, key] = StartServing({"--log-format", format});
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers auth{{"Authorization", "Bearer " + key}};
  const std::string forged = "[2020-01-01 00:00:00.000] [jobsched] [critical] FORGED";
  const nlohmann::json spec = {
      {"id", "forger"},
      {"handler", {{"type", "builtin"}, {"name", "x\" level=critical tenant=other\n" + forged}}}};
  auto made = client.Post("/v1/tenants/default/jobs", auth, spec.dump(), "application/json");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  ASSERT_NO_FATAL_FAILURE(TriggerJob(client, auth, "forger"));
  bool seen = false;
  for (int i = 0; i < 1500 && !seen; ++i) {
    seen = Log().find("run failed") != std::string::npos;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(seen) << Log();
  std::istringstream lines(Log());
  bool found = false;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_FALSE(line.starts_with("[2020-01-01")) << "a forged line: " << line;
    if (format == "text") {
      if (line.find("run failed") == std::string::npos) continue;
      found = true;
      EXPECT_THAT(line,
                  HasSubstr(R"(error="no handler named 'x\" level=critical tenant=other\n[2020)"));
      continue;
    }
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    if (!j["msg"].get<std::string>().starts_with("run failed")) continue;
    found = true;
    EXPECT_EQ(j["level"], "info") << line;
    EXPECT_EQ(j["tenant"], "default") << line;
    EXPECT_EQ(j["job_id"], "forger") << line;
    EXPECT_THAT(j["error"].get<std::string>(),
                HasSubstr("x\" level=critical tenant=other\n" + forged))
        << line;
  }
  EXPECT_TRUE(found) << Log();
}

INSTANTIATE_TEST_SUITE_P(Formats, ServeLogForgeryTest, ::testing::Values("text", "json"));

// The password of a Redis store URL is masked wherever serve logs the URL.
TEST_F(ServeProcessTest, TheStorePasswordIsNotLogged) {
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string(), "--store",
         "redis://default:SECRETPW@127.0.0.1:1"});
  EXPECT_NE(WaitExit(), 0);
  const std::string log = Log();
  EXPECT_THAT(log, HasSubstr("cannot open the store redis://default:***@127.0.0.1:1"));
  EXPECT_THAT(log, Not(HasSubstr("SECRETPW")));
}

// limits.cpu_cores needs a cgroup_parent: a node without one runs the job and says, once, that
// the limit is not applied.
TEST_F(ServeProcessTest, CpuCoresOnANodeWithoutACgroupParentIsLoggedAsNotApplied) {
  const auto [port, key] = StartServing();
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  const httplib::Headers auth{{"Authorization", "Bearer " + key}};
  auto made = client.Post("/v1/tenants/default/jobs", auth,
                          R"({"id": "capped", "handler": {"type": "shell", "command": ["true"]},
          "limits": {"cpu_cores": 0.5}})",
                          "application/json");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  for (int i = 0; i < 2; ++i) ASSERT_NO_FATAL_FAILURE(TriggerJob(client, auth, "capped"));
  ASSERT_TRUE(WaitForSucceededRuns(client, auth, "capped", 2)) << Log();
  const std::string log = Log();
  const std::string line = "limits.cpu_cores (job capped tenant default) is not applied";
  EXPECT_THAT(log, HasSubstr(line + ": this node has no cgroup_parent"));
  EXPECT_EQ(log.find(line), log.rfind(line)) << "once: " << log;
}

// A TLS pair that cannot be used: the error names the file that cannot be read, or says the
// pair is not a certificate and its key.
TEST_F(ServeProcessTest, ABadTlsPairIsNamed) {
  const std::string data = (dir_ / "data").string();
  const std::string not_pem = (dir_ / "not.pem").string();
  std::ofstream(not_pem) << "not a certificate\n";
  const std::string missing = (dir_ / "missing.pem").string();
  Start(
      {"--listen", "127.0.0.1:0", "--data-dir", data, "--tls-cert", not_pem, "--tls-key", missing});
  EXPECT_NE(WaitExit(), 0);
  EXPECT_THAT(Log(), HasSubstr("tls_key: cannot read '" + missing + "'"));
  Start(
      {"--listen", "127.0.0.1:0", "--data-dir", data, "--tls-cert", not_pem, "--tls-key", not_pem});
  EXPECT_NE(WaitExit(), 0);
  EXPECT_THAT(Log(), HasSubstr("are not a PEM certificate and its private key"));
}

TEST_F(ServeProcessTest, ServesHttpsWithTheGivenCertificate) {
  const std::string cert = (dir_ / "cert.pem").string();
  const std::string key = (dir_ / "key.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -addext "
      "subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string(), "--tls-cert", cert,
         "--tls-key", key});
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  EXPECT_THAT(Log(), HasSubstr("listening on https://"));
  httplib::SSLClient tls("127.0.0.1", port);
  tls.set_ca_cert_path(cert.c_str());
  tls.enable_server_certificate_verification(true);
  auto health = tls.Get("/healthz");
  ASSERT_TRUE(health) << "TLS request failed: " << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  // Plain HTTP on the TLS port gets no HTTP answer.
  httplib::Client plain("127.0.0.1", port);
  auto refused = plain.Get("/healthz");
  EXPECT_FALSE(refused && refused->status == 200);
}

// A second serve on the port of a running one exits with an error saying why, before it starts
// its node; the first one's ready line shows the port the system chose.
TEST_F(ServeProcessTest, APortInUseIsAnErrorNotASharedPort) {
  Start({"--listen", "127.0.0.1:0", "--data-dir", (dir_ / "data").string()});
  const int port = WaitForPort();
  ASSERT_GT(port, 0);
  const pid_t first = pid_;
  const std::string first_log = log_;
  pid_ = -1;
  Start({"--listen", "127.0.0.1:" + std::to_string(port), "--data-dir", (dir_ / "data2").string()});
  EXPECT_EQ(WaitExit(), 1);
  EXPECT_THAT(Log(), HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(port) +
                               ": Address already in use"));
  // Before it started its node: it neither joined the cluster nor ran a job.
  EXPECT_THAT(Log(), Not(HasSubstr("started (concurrency")));
  EXPECT_THAT(Log(), Not(HasSubstr("run succeeded")));
  pid_ = first;
  log_ = first_log;
  const std::string ready = "ready: node";
  for (int i = 0; i < 1500 && Log().find(ready) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_THAT(Log(), HasSubstr("listen 127.0.0.1:" + std::to_string(port) + "\n"));
}

TEST_F(ServeProcessTest, NonLoopbackListenWithoutTlsIsRefused) {
  Start({"--listen", "0.0.0.0:0", "--data-dir", (dir_ / "data").string()});
  EXPECT_EQ(WaitExit(), 2);
  EXPECT_THAT(Log(), HasSubstr("--insecure-listen"));
}

TEST_F(ServeProcessTest, BadConfigFileExitsWithTheKeyAndLine) {
  const auto path = dir_ / "bad.toml";
  std::ofstream(path) << "listen = \"127.0.0.1:0\"\nconcurency = 4\n";
  Start({"--config", path.string()});
  EXPECT_EQ(WaitExit(), 2);
  EXPECT_THAT(Log(), HasSubstr("unknown key 'concurency'"));
  EXPECT_THAT(Log(), HasSubstr("line 2"));
}

// Nodes started together with the same JOBSCHED_ADMIN_KEY race to register it: a node that
// finds it registered by another between its look and its write starts all the same.
TEST(ServeAdminKeyTest, AKeyRegisteredByAnotherNodeMeanwhileIsNoError) {
  const std::string key =
      "js_together_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  // The first look misses the key: the other node registers it just then.
  class Racing final : public StoreWrapper {
   public:
    Racing(Store& target, ApiKeyRecord other) : StoreWrapper(target), other_(std::move(other)) {}
    Result<ApiKeyRecord> GetApiKeyByHash(const std::string& hash) override {
      if (!raced_) {
        raced_ = true;
        EXPECT_TRUE(target_.PutApiKey(other_).ok());
        return NotFound("no such key (yet)");
      }
      return target_.GetApiKeyByHash(hash);
    }

   private:
    ApiKeyRecord other_;
    bool raced_ = false;
  };
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok()) << sqlite.status().ToString();
  const TimePoint now = Clock::Real()->Now();
  auto record = api::RecordForKey(key, api::Role::kAdmin, "JOBSCHED_ADMIN_KEY", now);
  ASSERT_TRUE(record.ok()) << record.status().ToString();
  Racing racing(**sqlite, *record);
  ::setenv("JOBSCHED_ADMIN_KEY", key.c_str(), 1);
  const Status s = BootstrapAdminKey(racing, ServeConfig{}, now);
  ::unsetenv("JOBSCHED_ADMIN_KEY");
  EXPECT_TRUE(s.ok()) << s.ToString();
  auto keys = (*sqlite)->ListApiKeys();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 1u);
}

TEST(ServeConfigTest, FileThenEnvironment) {
  const auto path =
      std::filesystem::path(testing::TempDir()) / ("cfg-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(path) << "listen = \"127.0.0.1:9000\"\nconcurrency = 8\nqueues = [\"a\", \"b\"]\n"
                         "log_format = \"json\"\ncgroup_parent = \"/sys/fs/cgroup/jobs\"\n";
  ServeConfig c;
  ASSERT_TRUE(LoadServeConfigFile(path.string(), c).ok());
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.cgroup_parent, "/sys/fs/cgroup/jobs");
  EXPECT_EQ(c.concurrency, 8);
  EXPECT_EQ(c.queues, (std::vector<std::string>{"a", "b"}));
  ::setenv("JOBSCHED_CONCURRENCY", "3", 1);
  ::setenv("JOBSCHED_QUEUES", "x,y,z", 1);
  ASSERT_TRUE(ApplyServeEnv(c).ok());
  ::unsetenv("JOBSCHED_CONCURRENCY");
  ::unsetenv("JOBSCHED_QUEUES");
  EXPECT_EQ(c.concurrency, 3);
  EXPECT_EQ(c.queues, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  std::filesystem::remove(path);
}

TEST(ServeConfigTest, ErrorsNameTheKey) {
  const auto path = std::filesystem::path(testing::TempDir()) /
                    ("cfg-bad-" + std::to_string(::getpid()) + ".toml");
  struct Case {
    const char* toml;
    const char* message;
  } cases[] = {
      {"concurrency = \"four\"\n", "concurrency: must be an integer"},
      {"queues = \"a\"\n", "queues: must be an array of strings"},
      {"insecure_listen = 1\n", "insecure_listen: must be true or false"},
      {"listen = \n", "line 1"},
      {"nope = 1\n", "unknown key 'nope'"},
  };
  for (const Case& k : cases) {
    std::ofstream(path) << k.toml;
    ServeConfig c;
    Status s = LoadServeConfigFile(path.string(), c);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << k.toml;
    EXPECT_THAT(s.message(), HasSubstr(k.message)) << k.toml;
  }
  std::filesystem::remove(path);
  {
    ServeConfig c;
    Status s = LoadServeConfigFile(path.string(), c);  // removed: cannot be read
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("config " + path.string() + ": cannot read the file"));
  }
  {
    ServeConfig c;
    const std::string dir = path.parent_path().string();
    Status s = LoadServeConfigFile(dir, c);  // a directory: an error, not an exception
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("config " + dir + ": is a directory"));
  }
  ::setenv("JOBSCHED_LEASE_MS", "soon", 1);
  ServeConfig c;
  Status s = ApplyServeEnv(c);
  ::unsetenv("JOBSCHED_LEASE_MS");
  EXPECT_THAT(s.message(), HasSubstr("JOBSCHED_LEASE_MS: must be an integer"));
  EXPECT_THAT(ValidateServeConfig({.log_format = "xml"}).message(), HasSubstr("log_format"));
  EXPECT_THAT(ValidateServeConfig({.lease_ms = 1000, .renew_ms = 1000}).message(),
              HasSubstr("renew_ms"));
  EXPECT_EQ(ValidateServeConfig({.fire_ahead_ms = -1}).message(),
            "fire_ahead_ms: must not be negative");
  EXPECT_EQ(ValidateServeConfig({.claim_ahead_ms = 15000}).message(),
            "claim_ahead_ms: must be shorter than lease_ms");
  EXPECT_TRUE(ValidateServeConfig({.fire_ahead_ms = 0, .claim_ahead_ms = 0}).ok())
      << "0 turns fire-ahead and claim-ahead off";
  EXPECT_EQ(ValidateServeConfig({.http_threads = 4}).message(), "http_threads: must be 8-4096");
}

TEST(ServeConfigTest, NodeIdsQueueNamesAndEnvironmentNumbersAreChecked) {
  EXPECT_EQ(ValidateServeConfig({.node_id = "node 1"}).field(), "node_id");
  EXPECT_EQ(ValidateServeConfig({.node_id = std::string(2000, 'n')}).field(), "node_id");
  EXPECT_TRUE(ValidateServeConfig({.node_id = "web-1.example.com"}).ok());
  Status queue = ValidateServeConfig({.queues = {"default", "a b"}});
  EXPECT_EQ(queue.field(), "queues[1]");
  EXPECT_THAT(queue.message(), HasSubstr("queues[1]"));

  for (const char* text : {" 8", "+8", "8 ", "0x8", ""}) {
    ::setenv("JOBSCHED_CONCURRENCY", text, 1);
    ServeConfig c;
    Status s = ApplyServeEnv(c);
    EXPECT_THAT(s.message(), HasSubstr("JOBSCHED_CONCURRENCY: must be an integer")) << text;
  }
  ::unsetenv("JOBSCHED_CONCURRENCY");
}

TEST(ServeConfigTest, MisspeltEnvironmentVariablesAreFound) {
  std::string typo = "JOBSCHED_CONCURENCY=8", setting = "JOBSCHED_LEASE_MS=1000",
              client = "JOBSCHED_KEY_FILE=k", job = "JOBSCHED_RUN_ID=r", other = "PATH=/bin";
  char* environment[] = {typo.data(), setting.data(), client.data(),
                         job.data(),  other.data(),   nullptr};
  EXPECT_EQ(UnknownJobschedVariables(environment), std::vector<std::string>{"JOBSCHED_CONCURENCY"});
}

// Settings beyond any sensible value are refused: a lease of 2^63 ms, or a history of 2^63
// days, would overflow when turned into time points (and prune every run, or fence every one).
TEST(ServeConfigTest, HugeSettingsAreRefusedNotWrapped) {
  const int64_t huge = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(ValidateServeConfig({.lease_ms = huge}).message(),
            "lease_ms: must be between 10 and 86400000");
  EXPECT_EQ(ValidateServeConfig({.heartbeat_ms = 5}).message(),
            "heartbeat_ms: must be between 10 and 86400000");
  EXPECT_EQ(ValidateServeConfig({.shutdown_grace_ms = huge}).message(),
            "shutdown_grace_ms: must be between 0 and 86400000");
  EXPECT_EQ(ValidateServeConfig({.keep_runs_days = huge}).message(),
            "keep_runs_days: must be between 0 and 36500");
  EXPECT_EQ(ValidateServeConfig({.keep_runs_per_job = int64_t{1} << 32}).message(),
            "keep_runs_per_job: must be between 1 and 1000000");
  EXPECT_TRUE(ValidateServeConfig({.lease_ms = 86400000, .keep_runs_days = 36500}).ok());
}

}  // namespace
}  // namespace jobsched::cli
