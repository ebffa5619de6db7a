// The client subcommands (`jobsched jobs|runs|events|nodes|keys|tenants`) against a real node and
// REST API in-process on port 0, driven through cli::Main with stdout and stderr captured.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "api/server.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "engine/node.h"

namespace jobsched::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::ordered_json;

constexpr std::chrono::seconds kGuard{20};

// A streambuf that several threads may write and one may wait on.
class SyncBuf : public std::streambuf {
 public:
  std::string str() {
    std::lock_guard lock(mu_);
    return data_;
  }
  // Waits until pred(contents) holds; false after kGuard.
  bool WaitFor(const std::function<bool(const std::string&)>& pred) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kGuard, [&] { return pred(data_); });
  }

 protected:
  int_type overflow(int_type c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    std::lock_guard lock(mu_);
    data_ += traits_type::to_char_type(c);
    cv_.notify_all();
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::lock_guard lock(mu_);
    data_.append(s, static_cast<size_t>(n));
    cv_.notify_all();
    return n;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string data_;
};

// std::cout and std::cerr redirected for the lifetime of the object.
class Capture {
 public:
  Capture() : old_out_(std::cout.rdbuf(&out)), old_err_(std::cerr.rdbuf(&err)) {}
  ~Capture() {
    std::cout.rdbuf(old_out_);
    std::cerr.rdbuf(old_err_);
  }
  SyncBuf out;
  SyncBuf err;

 private:
  std::streambuf* old_out_;
  std::streambuf* old_err_;
};

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

// Runs cli::Main with exactly these arguments (after "jobsched").
CliResult RunMain(const std::vector<std::string>& args) {
  std::vector<std::string> storage{"jobsched"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  Capture capture;
  const int code = Main(static_cast<int>(argv.size()), argv.data());
  return {code, capture.out.str(), capture.err.str()};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size()))
    ++n;
  return n;
}

const char* const kEnv[] = {"JOBSCHED_URL", "JOBSCHED_KEY", "JOBSCHED_KEY_FILE", "JOBSCHED_TENANT",
                            "JOBSCHED_CA_CERT"};

class CliClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kEnv) unsetenv(name);
    // Runs in queue "parked" are never executed: they stay queued for the tests that need that.
    auto node =
        Node::Create({.store_url = "sqlite::memory:", .node_id = "t", .queues = {"default"}});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
    ASSERT_TRUE(node_->Start().ok());
    auto key = api::GenerateKey(api::Role::kAdmin, "", true, "test", node_->clock().Now());
    ASSERT_TRUE(key.ok());
    ASSERT_TRUE(node_->store().PutApiKey(key->record).ok());
    key_ = key->key;
    StartServer("127.0.0.1:0");
    url_ = "http://127.0.0.1:" + std::to_string(servers_.back()->port());
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("cli_client_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override {
    for (auto& s : servers_) s->Stop();
    if (node_) node_->Stop();
    servers_.clear();  // after the node: the servers listen to its events
    node_.reset();
    for (const char* name : kEnv) unsetenv(name);
    std::filesystem::remove_all(dir_);
  }

  void StartServer(const std::string& listen) {
    auto server = api::ApiServer::Create(*node_, {.listen = listen});
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    ASSERT_TRUE((*server)->Start().ok());
    // Start() returns before the accept loop runs, and a Stop() before then is lost (httplib's
    // stop() only acts on a running server): an answer shows the loop is running.
    auto client =
        Client::Create({.server = "http://127.0.0.1:" + std::to_string((*server)->port())});
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE((*client)->Get("/healthz").ok());
    servers_.push_back(std::move(*server));
  }

  // `args` with `flags` right after the subcommand path ("jobs add", "nodes"): a shell command
  // at the end of `jobs add` takes every argument after it.
  static std::vector<std::string> With(std::vector<std::string> args,
                                       const std::vector<std::string>& flags) {
    const bool one_level = args[0] == "events" || args[0] == "nodes";
    args.insert(args.begin() + (one_level ? 1 : 2), flags.begin(), flags.end());
    return args;
  }

  // Runs `jobsched SUBCOMMAND --server URL --key KEY ARGS...`.
  CliResult Run(std::vector<std::string> args) {
    return RunMain(With(args, {"--server", url_, "--key", key_}));
  }

  Json RunJson(std::vector<std::string> args) {
    CliResult r = Run(With(args, {"-o", "json"}));
    EXPECT_EQ(r.code, 0) << r.err;
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  // `jobsched events --job JOB --count COUNT` on a thread; its exit code in *code when it ends.
  std::thread FollowEvents(const std::string& job, int count, int* code) {
    std::vector<std::string> args{
        "jobsched", "events", "--job", job, "--count", std::to_string(count),
        "--server", url_,     "--key", key_};
    return std::thread([args = std::move(args), code]() mutable {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      *code = Main(static_cast<int>(argv.size()), argv.data());
    });
  }

  // Polls `runs get` until the run is in `state` (at most 10 s).
  bool WaitForState(const std::string& run_id, const std::string& state) {
    for (int i = 0; i < 1000; ++i) {
      if (RunJson({"runs", "get", run_id})["state"] == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::string NotFoundMessage(const std::string& job) {
    return node_->store().GetJob("default", job).status().message();
  }

  std::unique_ptr<Node> node_;
  std::vector<std::unique_ptr<api::ApiServer>> servers_;
  std::string key_;
  std::string url_;
  std::filesystem::path dir_;
};

// ---- jobs add / get / list ----------------------------------------------------------------

TEST_F(CliClientTest, AddGetAndListAJob) {
  CliResult add = Run({"jobs", "add", "report", "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
                       "--builtin", "noop"});
  ASSERT_EQ(add.code, kExitOk) << add.err;
  EXPECT_THAT(add.out, HasSubstr("created job report"));
  EXPECT_THAT(add.out, HasSubstr("cron 0 2 * * * (Europe/Berlin)"));

  CliResult get = Run({"jobs", "get", "report"});
  ASSERT_EQ(get.code, kExitOk) << get.err;
  EXPECT_THAT(get.out, HasSubstr("builtin noop"));
  EXPECT_THAT(get.out, HasSubstr("next_fire_times"));

  ASSERT_EQ(
      Run({"jobs", "add", "ping", "--every", "90s", "--builtin", "noop", "--queue", "critical"})
          .code,
      0);
  CliResult list = Run({"jobs", "list"});
  ASSERT_EQ(list.code, kExitOk) << list.err;
  const auto lines = Lines(list.out);
  ASSERT_EQ(lines.size(), 3u) << list.out;
  EXPECT_THAT(lines[0], HasSubstr("ID"));
  EXPECT_THAT(lines[0], HasSubstr("NEXT_FIRE"));
  // Aligned: every row has its STATE column where the header has it.
  const size_t state_col = lines[0].find("STATE");
  EXPECT_EQ(lines[1].find("active"), state_col) << list.out;
  EXPECT_EQ(lines[2].find("active"), state_col) << list.out;
  EXPECT_THAT(list.out, HasSubstr("every 1m30s"));

  Json filtered = RunJson({"jobs", "list", "--queue", "critical"});
  ASSERT_EQ(filtered["items"].size(), 1u);
  EXPECT_EQ(filtered["items"][0]["id"], "ping");

  // A label filter is written as `jobs add` takes a label: KEY:VALUE or KEY=VALUE.
  ASSERT_EQ(Run({"jobs", "add", "labelled", "--label", "team=data", "--builtin", "noop"}).code, 0);
  for (const char* label : {"team:data", "team=data"}) {
    Json by_label = RunJson({"jobs", "list", "--label", label});
    ASSERT_EQ(by_label["items"].size(), 1u) << label;
    EXPECT_EQ(by_label["items"][0]["id"], "labelled");
  }
}

TEST_F(CliClientTest, AddBuildsTheSpecFromFlags) {
  Json job = RunJson({"jobs",       "add",       "full",      "--at",      "2030-01-01T00:00:00Z",
                      "--priority", "7",         "--retries", "2",         "--timeout",
                      "30s",        "--queue",   "q1",        "--payload", R"({"a":1})",
                      "--overlap",  "allow",     "--label",   "team:data", "--paused",
                      "--shell",    "/bin/echo", "hi"});
  const Json& spec = job["spec"];
  EXPECT_EQ(spec["schedule"]["at"], "2030-01-01T00:00:00.000Z");
  EXPECT_EQ(spec["handler"]["command"], Json({"/bin/echo", "hi"}));
  EXPECT_EQ(spec["priority"], 7);
  EXPECT_EQ(spec["retry"]["max_attempts"], 3);
  EXPECT_EQ(spec["timeout_ms"], 30000);
  EXPECT_EQ(spec["queue"], "q1");
  EXPECT_EQ(spec["payload"], Json({{"a", 1}}));
  EXPECT_EQ(spec["overlap"], "allow");
  EXPECT_EQ(spec["labels"]["team"], "data");
  EXPECT_EQ(spec["paused"], true);
  EXPECT_EQ(job["state"], "paused");

  // One argument with spaces runs through sh -c; flags after the program are its own.
  Json line = RunJson({"jobs", "add", "line", "--every", "1h", "--shell", "echo hi > /dev/null"});
  EXPECT_EQ(line["spec"]["handler"]["command"], Json({"sh", "-c", "echo hi > /dev/null"}));
  // So does one the shell would expand or quote, without a space.
  for (const std::string shell_line :
       {"~/bin/backup.sh", "echo`date`", "rm*.tmp", "it's", "a(b)", "{a,b}", "x?y", "a\\b"}) {
    Json j = RunJson({"jobs", "add",
                      "sh-" + std::to_string(shell_line.size()) + "-" +
                          std::to_string(static_cast<unsigned char>(shell_line[1])),
                      "--shell", shell_line});
    EXPECT_EQ(j["spec"]["handler"]["command"], Json({"sh", "-c", shell_line})) << shell_line;
  }
  EXPECT_EQ(
      RunJson({"jobs", "add", "plain", "--shell", "/usr/bin/true"})["spec"]["handler"]["command"],
      Json({"/usr/bin/true"}));
  Json ls =
      RunJson({"jobs", "add", "ls", "--shell", "/bin/ls", "-l", "--every", "1h", "-o", "table"});
  EXPECT_EQ(ls["spec"]["handler"]["command"],
            Json({"/bin/ls", "-l", "--every", "1h", "-o", "table"}));
  EXPECT_TRUE(ls["spec"]["schedule"].is_null());
  Json argv = RunJson({"jobs", "add", "argv", "--shell-argv", R"(["/bin/ls","-la"])"});
  EXPECT_EQ(argv["spec"]["handler"]["command"], Json({"/bin/ls", "-la"}));

  Json http = RunJson({"jobs", "add", "hook", "--http", "http://127.0.0.1:9/x", "--method", "POST",
                       "--header", "X-Token: abc", "--body", "{}"});
  EXPECT_EQ(http["spec"]["handler"]["method"], "POST");
  EXPECT_EQ(http["spec"]["handler"]["headers"]["X-Token"], "abc");

  Json dep = RunJson({"jobs", "add", "after", "--depends-on", "full,line", "--builtin", "noop"});
  EXPECT_EQ(dep["spec"]["depends_on"], Json({"full", "line"}));
  EXPECT_TRUE(dep["spec"]["schedule"].is_null());
}

TEST_F(CliClientTest, AddNeedsExactlyOneHandler) {
  CliResult none = Run({"jobs", "add", "x", "--cron", "* * * * *"});
  EXPECT_EQ(none.code, kExitUsage);
  EXPECT_THAT(none.err, HasSubstr("give exactly one handler"));

  CliResult two = Run({"jobs", "add", "x", "--builtin", "noop", "--http", "http://a/"});
  EXPECT_EQ(two.code, kExitUsage);
  EXPECT_THAT(two.err, HasSubstr("give exactly one handler"));

  CliResult bad_every = Run({"jobs", "add", "x", "--every", "soon", "--builtin", "noop"});
  EXPECT_EQ(bad_every.code, kExitUsage);
  EXPECT_THAT(bad_every.err, HasSubstr("--every"));

  CliResult bad_payload = Run({"jobs", "add", "x", "--builtin", "noop", "--payload", "{nope"});
  EXPECT_EQ(bad_payload.code, kExitUsage);
  EXPECT_THAT(bad_payload.err, HasSubstr("--payload: not valid JSON"));

  // Flags whose value would be dropped or overwritten unseen.
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--http", "http://a/", "--header", "A: b", "--header", "a: c"},
            "--header: 'a' given twice"},
           {{"--builtin", "noop", "--label", "a:b", "--label", "a=c"}, "--label: 'a' given twice"},
           {{"--builtin", "noop", "--depends-on", "a,,b"}, "--depends-on: empty job id in 'a,,b'"},
           {{"--builtin", "noop", "--payload", ""}, "--payload: empty"},
           {{"--builtin", "noop", "--queue", ""}, "--queue: empty"},
       }) {
    std::vector<std::string> argv = {"jobs", "add", "x"};
    argv.insert(argv.end(), args.begin(), args.end());
    CliResult r = Run(argv);
    EXPECT_EQ(r.code, kExitUsage) << message;
    EXPECT_THAT(r.err, HasSubstr(message));
  }
  EXPECT_EQ(RunJson({"jobs", "list"})["items"].size(), 0u);

  CliResult stray = Run({"jobs", "add", "x", "--builtin", "noop", "/bin/echo"});
  EXPECT_EQ(stray.code, kExitUsage);
  EXPECT_THAT(stray.err, HasSubstr("follows --shell"));

  CliResult unknown = Run({"jobs", "add", "x", "--bogus", "--shell", "/bin/echo"});
  EXPECT_EQ(unknown.code, kExitUsage);
  EXPECT_THAT(unknown.err, HasSubstr("unknown option '--bogus'"));

  CliResult no_command = Run({"jobs", "add", "x", "--shell"});
  EXPECT_EQ(no_command.code, kExitUsage);
  EXPECT_THAT(no_command.err, HasSubstr("the command is missing"));
  // Nothing was sent.
  EXPECT_EQ(node_->store().GetJob("default", "x").status().code(), StatusCode::kNotFound);
}

TEST_F(CliClientTest, ServerErrorsExitOneWithTheServerMessage) {
  CliResult get = Run({"jobs", "get", "nope"});
  EXPECT_EQ(get.code, kExitFailure);
  EXPECT_EQ(get.err, "error: " + NotFoundMessage("nope") + "\n");
  EXPECT_EQ(get.out, "");

  ASSERT_EQ(Run({"jobs", "add", "dup", "--builtin", "noop"}).code, 0);
  CliResult again = Run({"jobs", "add", "dup", "--builtin", "noop"});
  EXPECT_EQ(again.code, kExitFailure);
  EXPECT_THAT(again.err, HasSubstr("error: "));
  EXPECT_THAT(again.err, HasSubstr("dup"));

  CliResult cron = Run({"jobs", "add", "bad", "--cron", "0 25 * * *", "--builtin", "noop"});
  EXPECT_EQ(cron.code, kExitFailure);
  EXPECT_THAT(cron.err, HasSubstr("hour: value 25 out of range 0-23"));
}

// ---- pause / resume / trigger / rm --------------------------------------------------------

TEST_F(CliClientTest, PauseResumeTriggerAndRemove) {
  ASSERT_EQ(Run({"jobs", "add", "j", "--every", "1h", "--builtin", "noop"}).code, 0);
  CliResult pause = Run({"jobs", "pause", "j"});
  ASSERT_EQ(pause.code, 0) << pause.err;
  EXPECT_EQ(pause.out, "job j paused\n");
  EXPECT_EQ(Run({"jobs", "pause", "j"}).out, "job j was already paused\n");
  EXPECT_EQ(RunJson({"jobs", "get", "j"})["state"], "paused");
  EXPECT_EQ(Run({"jobs", "resume", "j"}).out, "job j resumed\n");
  EXPECT_EQ(RunJson({"jobs", "get", "j"})["state"], "active");

  // A one-time job whose instant has passed has fired and completed: nothing to pause.
  ASSERT_EQ(Run({"jobs", "add", "past", "--at", "2020-01-01T00:00:00Z", "--builtin", "noop"}).code,
            0);
  bool completed = false;
  for (int i = 0; i < 1000 && !completed; ++i) {
    completed = RunJson({"jobs", "get", "past"})["state"] == "completed";
    if (!completed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(completed);
  EXPECT_EQ(Run({"jobs", "pause", "past"}).out,
            "job past is completed (it has nothing more to fire): not paused\n");

  CliResult one = Run({"jobs", "trigger", "j"});
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(Lines(one.out).size(), 2u) << one.out;
  EXPECT_EQ(Lines(one.out)[0], "RUN_ID");
  EXPECT_THAT(Lines(one.out)[1], HasSubstr("j@m"));

  Json many =
      RunJson({"jobs", "trigger", "j", "--payload", R"({"n":1})", "--payload", R"({"n":2})"});
  ASSERT_EQ(many["run_ids"].size(), 2u);
  Json run = RunJson({"runs", "get", many["run_ids"][1].get<std::string>()});
  EXPECT_EQ(run["payload"], Json({{"n", 2}}));

  CliResult rm = Run({"jobs", "rm", "j", "--kill-running"});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(rm.out, "deleted job j\n");
  EXPECT_EQ(Run({"jobs", "get", "j"}).code, kExitFailure);
  CliResult rm_again = Run({"jobs", "rm", "j"});
  EXPECT_EQ(rm_again.code, kExitFailure);
  EXPECT_THAT(rm_again.err, HasSubstr("error: "));
}

// ---- runs ---------------------------------------------------------------------------------

// A job's output may hold terminal escape sequences: the table shows them, it does not send them.
TEST_F(CliClientTest, RunsGetShowsControlCharactersOfTheOutputInsteadOfSendingThem) {
  node_->builtins().Register("escapes", [](RunContext& ctx) {
    ctx.Log("\x1b[31mred\x1b[0m\x07\tend");
    return Status::Ok();
  });
  ASSERT_EQ(Run({"jobs", "add", "esc", "--builtin", "escapes"}).code, 0);
  const std::string id = RunJson({"jobs", "trigger", "esc"})["run_ids"][0];
  ASSERT_TRUE(WaitForState(id, "succeeded"));
  CliResult get = Run({"runs", "get", id});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("^[[31mred^[[0m^G\tend"));
  EXPECT_EQ(get.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(RunJson({"runs", "get", id})["output"], "\x1b[31mred\x1b[0m\x07\tend\n")
      << "the JSON output is the output as it is";
}

// An output longer than limits.max_output_bytes: `runs get` says it shows the end.
TEST_F(CliClientTest, RunsGetSaysTheOutputIsTheEndOfALongerOne) {
  node_->builtins().Register("long", [](RunContext& ctx) {
    ctx.Log(std::string(100, 'a') + "END");
    return Status::Ok();
  });
  const std::string file = WriteFile("long.json", R"({"jobs": [
    {"id": "long", "handler": {"type": "builtin", "name": "long"},
     "limits": {"max_output_bytes": 10}}]})");
  ASSERT_EQ(Run({"jobs", "apply", "-f", file}).code, 0);
  const std::string id = RunJson({"jobs", "trigger", "long"})["run_ids"][0];
  ASSERT_TRUE(WaitForState(id, "succeeded"));
  CliResult get = Run({"runs", "get", id});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("output (the end of 104 bytes):\naaaaaaEND\n"));
}

// An attempt lost with its node's lease does not count against max_attempts: the run says so
// next to its attempt number, which is otherwise over the limit ("2/1").
TEST_F(CliClientTest, RunsShowAttemptsLostWithTheirLease) {
  // In a queue this test's node does not serve: only the nodes below claim it.
  ASSERT_EQ(Run({"jobs", "add", "lossy", "--builtin", "noop", "--queue", "elsewhere"}).code, 0);
  const std::string id = RunJson({"jobs", "trigger", "lossy"})["run_ids"][0];
  // Twice, another node claims it and dies: its lease expires, and the run is queued again.
  Store& store = node_->store();
  TimePoint now = node_->clock().Now();
  for (int i = 0; i < 2; ++i) {
    auto claimed = store.ClaimRuns({.node = "gone", .queues = {"elsewhere"}, .now = now});
    ASSERT_TRUE(claimed.ok() && claimed->size() == 1u) << i << claimed.status().ToString();
    now += Duration(60000);  // its lease (15 s) has expired
    auto lost = store.RecoverLostRuns(now, "", 5, 100);
    ASSERT_TRUE(lost.ok()) << lost.status().ToString();
  }
  const Json run = RunJson({"runs", "get", id});
  EXPECT_EQ(run["state"], "queued");
  EXPECT_EQ(run["leases_lost"], 2);
  CliResult get = Run({"runs", "get", id});
  EXPECT_THAT(get.out, HasSubstr("2/1 (2 lost)")) << get.out;
  CliResult list = Run({"runs", "list", "--job", "lossy"});
  EXPECT_THAT(list.out, HasSubstr("2/1 (2 lost)")) << list.out;
}

TEST_F(CliClientTest, RunsListGetAndCancel) {
  ASSERT_EQ(Run({"jobs", "add", "slow", "--builtin", "noop", "--queue", "parked"}).code, 0);
  ASSERT_EQ(Run({"jobs", "add", "fast", "--builtin", "noop"}).code, 0);
  const std::string slow_run = RunJson({"jobs", "trigger", "slow"})["run_ids"][0];
  const std::string fast_run = RunJson({"jobs", "trigger", "fast"})["run_ids"][0];

  CliResult list = Run({"runs", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(Lines(list.out)[0], HasSubstr("SCHEDULED_AT"));
  EXPECT_THAT(list.out, HasSubstr(slow_run));
  EXPECT_THAT(list.out, HasSubstr(fast_run));

  Json only_slow = RunJson({"runs", "list", "--job", "slow"});
  ASSERT_EQ(only_slow["items"].size(), 1u);
  EXPECT_EQ(only_slow["items"][0]["id"], slow_run);
  EXPECT_EQ(RunJson({"runs", "list", "--limit", "1"})["items"].size(), 1u);

  CliResult get = Run({"runs", "get", slow_run});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("slow"));
  EXPECT_THAT(get.out, HasSubstr("manual"));
  EXPECT_THAT(get.out, HasSubstr("queued"));

  CliResult cancel = Run({"runs", "cancel", slow_run});
  ASSERT_EQ(cancel.code, 0) << cancel.err;
  EXPECT_THAT(cancel.out, HasSubstr("cancel requested"));
  Json cancelled = RunJson({"runs", "get", slow_run});
  EXPECT_EQ(cancelled["state"], "cancelled");
  EXPECT_EQ(RunJson({"runs", "list", "--state", "cancelled"})["items"].size(), 1u);

  CliResult bad_state = Run({"runs", "list", "--state", "sideways"});
  EXPECT_EQ(bad_state.code, kExitFailure);
  EXPECT_THAT(bad_state.err, HasSubstr("state: must be"));
}

TEST_F(CliClientTest, ListFollowsCursorsUpToTheLimit) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Run({"jobs", "add", "j" + std::to_string(i), "--builtin", "noop"}).code, 0);
  }
  EXPECT_EQ(RunJson({"jobs", "list", "--limit", "3"})["items"].size(), 3u);
  Json all = RunJson({"jobs", "list"});
  EXPECT_EQ(all["items"].size(), 5u);
  EXPECT_TRUE(all["next_cursor"].is_null());
}

// ---- apply --------------------------------------------------------------------------------

TEST_F(CliClientTest, ApplyJsonIsIdempotent) {
  const std::string file = WriteFile("jobs.json", R"({"jobs": [
    {"id": "a", "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
     "handler": {"type": "builtin", "name": "noop"}, "retry": {"max_attempts": 3}},
    {"id": "b", "handler": {"type": "shell", "command": ["/bin/true"]}, "labels": {"team": "x"}}
  ]})");
  CliResult first = Run({"jobs", "apply", "-f", file});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "a: created\nb: created\n");

  CliResult second = Run({"jobs", "apply", "-f", file});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_EQ(second.out, "a: unchanged\nb: unchanged\n");
  EXPECT_EQ(RunJson({"jobs", "get", "a"})["version"], 1);

  const std::string changed = WriteFile("one.json", R"([
    {"id": "a", "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
     "handler": {"type": "builtin", "name": "noop"}, "retry": {"max_attempts": 3}},
    {"id": "b", "handler": {"type": "shell", "command": ["/bin/true"]}, "labels": {"team": "x"}}])");
  CliResult third = Run({"jobs", "apply", "-f", changed});
  ASSERT_EQ(third.code, 0) << third.err;
  EXPECT_EQ(third.out, "a: updated\nb: unchanged\n");
  EXPECT_EQ(RunJson({"jobs", "get", "a"})["spec"]["schedule"]["cron"], "0 3 * * *");

  Json as_json = RunJson({"jobs", "apply", "-f", changed});
  EXPECT_EQ(as_json["items"][0]["result"], "unchanged");
  EXPECT_EQ(as_json["items"][1]["id"], "b");

  // A file with no jobs applies nothing, and says so.
  CliResult empty = Run({"jobs", "apply", "-f", WriteFile("none.json", "[]")});
  EXPECT_EQ(empty.code, 0) << empty.err;
  EXPECT_EQ(empty.out, "");
  EXPECT_THAT(empty.err, HasSubstr("none.json: no jobs in it: nothing applied"));
}

TEST_F(CliClientTest, ApplyToml) {
  const std::string file = WriteFile("jobs.toml", R"(
[[jobs]]
id = "nightly"
priority = 7
timeout_ms = 60000
labels = { team = "data" }
payload = { rows = 10 }

[jobs.schedule]
cron = "0 2 * * *"
timezone = "Europe/Berlin"

[jobs.handler]
type = "shell"
command = ["/usr/bin/backup", "--full"]

[jobs.retry]
max_attempts = 3
jitter = 0.5

[[jobs]]
id = "once"
schedule = { at = 2030-06-01T12:00:00Z }
handler = { type = "builtin", name = "noop" }
)");
  CliResult first = Run({"jobs", "apply", "-f", file});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "nightly: created\nonce: created\n");
  Json nightly = RunJson({"jobs", "get", "nightly"});
  EXPECT_EQ(nightly["spec"]["schedule"]["timezone"], "Europe/Berlin");
  EXPECT_EQ(nightly["spec"]["handler"]["command"], Json({"/usr/bin/backup", "--full"}));
  EXPECT_EQ(nightly["spec"]["retry"]["max_attempts"], 3);
  EXPECT_EQ(nightly["spec"]["retry"]["jitter"], 0.5);
  EXPECT_EQ(nightly["spec"]["payload"]["rows"], 10);
  EXPECT_EQ(RunJson({"jobs", "get", "once"})["spec"]["schedule"]["at"], "2030-06-01T12:00:00.000Z");

  CliResult second = Run({"jobs", "apply", "-f", file});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_EQ(second.out, "nightly: unchanged\nonce: unchanged\n");
}

TEST_F(CliClientTest, ApplyReportsABadSpecAndAppliesTheRest) {
  const std::string file = WriteFile("mixed.json", R"([
    {"id": "good1", "handler": {"type": "builtin", "name": "noop"}},
    {"id": "bad", "schedule": {"cron": "0 25 * * *"}, "handler": {"type": "builtin", "name": "noop"}},
    {"id": "typo", "handler": {"type": "builtin", "name": "noop"}, "priorty": 3},
    {"handler": {"type": "builtin", "name": "noop"}},
    {"id": "good2", "handler": {"type": "builtin", "name": "noop"}},
    {"id": "a/b", "handler": {"type": "builtin", "name": "noop"}}
  ])");
  CliResult r = Run({"jobs", "apply", "-f", file});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "good1: created\ngood2: created\n");
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[1] (bad): "));
  EXPECT_THAT(r.err, HasSubstr("hour: value 25 out of range 0-23"));
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[2] (typo): priorty"));
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[3] (?): id: missing"));
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[5] (a/b): id: 'a/b' may only contain"));
  EXPECT_THAT(r.err, HasSubstr("error: 4 of 6 jobs"));
  EXPECT_EQ(node_->store().GetJob("default", "bad").status().code(), StatusCode::kNotFound);
}

// The server cannot be reached: the first job says why, the others are reported not sent, and
// the count says none was applied; the JSON lists every job.
TEST_F(CliClientTest, ApplyToAnUnreachableServerReportsEveryJobNotApplied) {
  const std::string file = WriteFile("three.json", R"([
    {"id": "u1", "handler": {"type": "builtin", "name": "noop"}},
    {"id": "u2", "handler": {"type": "builtin", "name": "noop"}},
    {"id": "u3", "handler": {"type": "builtin", "name": "noop"}}
  ])");
  CliResult r =
      RunMain({"jobs", "apply", "-f", file, "--server", "http://127.0.0.1:1", "--key", key_});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[0] (u1): cannot reach http://127.0.0.1:1"));
  EXPECT_THAT(r.err, HasSubstr(file + ": jobs[1] to jobs[2] not sent"));
  EXPECT_THAT(r.err, HasSubstr("error: 3 of 3 jobs"));

  CliResult json = RunMain(
      {"jobs", "apply", "-f", file, "-o", "json", "--server", "http://127.0.0.1:1", "--key", key_});
  EXPECT_EQ(json.code, kExitFailure);
  const Json items = Json::parse(json.out, nullptr, false)["items"];
  ASSERT_EQ(items.size(), 3u) << json.out;
  EXPECT_EQ(items[0]["result"], "error");
  EXPECT_EQ(items[1]["result"], "not_sent");
  EXPECT_EQ(items[2]["id"], "u3");
  EXPECT_EQ(items[2]["result"], "not_sent");
}

TEST_F(CliClientTest, ApplyUnreadableOrUnknownFilesAreUsageErrors) {
  CliResult missing = Run({"jobs", "apply", "-f", (dir_ / "nope.json").string()});
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_THAT(missing.err, HasSubstr("cannot read"));

  CliResult yaml = Run({"jobs", "apply", "-f", WriteFile("jobs.yaml", "jobs: []")});
  EXPECT_EQ(yaml.code, kExitUsage);
  EXPECT_THAT(yaml.err, HasSubstr(".json or .toml"));

  CliResult broken = Run({"jobs", "apply", "-f", WriteFile("broken.toml", "[[jobs]\nid = 1")});
  EXPECT_EQ(broken.code, kExitUsage);
  EXPECT_THAT(broken.err, HasSubstr("broken.toml:1:"));

  CliResult bad_json = Run({"jobs", "apply", "-f", WriteFile("bad.json", "{\"id\": ")});
  EXPECT_EQ(bad_json.code, kExitUsage);
  EXPECT_THAT(bad_json.err, HasSubstr("invalid JSON"));
}

// What a file says is applied whole or not at all: a repeated member, a job id given twice (the
// second spec would replace the first) or a TOML inf/nan (JSON has no form for them) is refused
// before anything is sent.
TEST_F(CliClientTest, ApplyRefusesAFileThatWouldLoseWhatItSays) {
  const std::string noop = R"("handler": {"type": "builtin", "name": "noop"})";
  CliResult member = Run({"jobs", "apply", "-f",
                          WriteFile("member.json", R"([{"id": "a", "id": "b", )" + noop + "}]")});
  EXPECT_EQ(member.code, kExitUsage);
  EXPECT_THAT(member.err, HasSubstr("member.json: [0].id: given twice"));

  CliResult ids = Run({"jobs", "apply", "-f",
                       WriteFile("ids.toml",
                                 "[[jobs]]\nid = \"t\"\nhandler = { type = "
                                 "\"builtin\", name = \"noop\" }\n[[jobs]]\nid = "
                                 "\"t\"\nhandler = { type = \"builtin\", name = "
                                 "\"noop\" }\npriority = 9\n")});
  EXPECT_EQ(ids.code, kExitUsage);
  EXPECT_THAT(ids.err, HasSubstr("ids.toml: jobs[1].id: 't' is also the id of jobs[0]"));

  CliResult inf = Run({"jobs", "apply", "-f",
                       WriteFile("inf.toml",
                                 "[[jobs]]\nid = \"x\"\nhandler = { type = "
                                 "\"builtin\", name = \"noop\" }\npayload = { x "
                                 "= inf }\n")});
  EXPECT_EQ(inf.code, kExitUsage);
  EXPECT_THAT(inf.err, HasSubstr("inf.toml:4: inf and nan"));
  EXPECT_EQ(RunJson({"jobs", "list"})["items"].size(), 0u);
}

TEST_F(CliClientTest, ApplyReadsJsonFromStdin) {
  std::istringstream in(R"({"id": "piped", "handler": {"type": "builtin", "name": "noop"}})");
  std::streambuf* old = std::cin.rdbuf(in.rdbuf());
  CliResult r = Run({"jobs", "apply", "-f", "-"});
  std::cin.rdbuf(old);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "piped: created\n");
}

// ---- events -------------------------------------------------------------------------------

TEST_F(CliClientTest, EventsPrintsATriggerHappeningMeanwhile) {
  ASSERT_EQ(Run({"jobs", "add", "ev", "--builtin", "noop"}).code, 0);
  Capture capture;
  int code = -1;
  std::thread events = FollowEvents("ev", 2, &code);
  // The header is printed once the server has accepted the stream: events from now on are seen.
  const bool open =
      capture.out.WaitFor([](const std::string& s) { return s.find("TIME") != std::string::npos; });
  std::string run_id;
  if (open) {
    auto ids = node_->jobs().Trigger("default", "ev", {});
    ASSERT_TRUE(ids.ok());
    run_id = ids->front();
  }
  events.join();
  ASSERT_TRUE(open) << capture.err.str();
  EXPECT_EQ(code, kExitOk) << capture.err.str();
  const auto lines = Lines(capture.out.str());
  ASSERT_EQ(lines.size(), 3u) << capture.out.str();
  EXPECT_THAT(lines[0], HasSubstr("TYPE"));
  EXPECT_THAT(lines[0], HasSubstr("RUN"));
  EXPECT_THAT(lines[1], HasSubstr("run."));
  EXPECT_THAT(lines[1], HasSubstr(run_id));
  EXPECT_THAT(lines[2], HasSubstr(run_id));
}

TEST_F(CliClientTest, EventsJsonReplaysFromASequenceNumber) {
  ASSERT_EQ(Run({"jobs", "add", "ev", "--builtin", "noop"}).code, 0);
  ASSERT_EQ(Run({"jobs", "pause", "ev"}).code, 0);
  CliResult r = Run({"events", "--after", "0", "--count", "2", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  for (const std::string& line : lines) {
    Json e = Json::parse(line, nullptr, false);
    ASSERT_FALSE(e.is_discarded()) << line;
    EXPECT_EQ(e["job_id"], "ev");
    EXPECT_THAT(e["type"].get<std::string>(), HasSubstr("job."));
  }
}

TEST_F(CliClientTest, EventsReconnectsWhereItLeftOff) {
  ASSERT_EQ(Run({"jobs", "add", "ev", "--builtin", "noop"}).code, 0);
  const int port = servers_.back()->port();
  Capture capture;
  int code = -1;
  std::thread events = FollowEvents("ev", 2, &code);
  bool ok =
      capture.out.WaitFor([](const std::string& s) { return s.find("TIME") != std::string::npos; });
  if (ok) {
    EXPECT_TRUE(node_->jobs().Pause("default", "ev").ok());
    ok = capture.out.WaitFor([](const std::string& s) { return Lines(s).size() == 2; });
  }
  if (ok) {
    servers_.back()->Stop();  // drops the stream
    ok = capture.err.WaitFor(
        [](const std::string& s) { return s.find("reconnecting") != std::string::npos; });
    // Missed while disconnected: the client asks for it with Last-Event-ID.
    EXPECT_TRUE(node_->jobs().Resume("default", "ev").ok());
    StartServer("127.0.0.1:" + std::to_string(port));
  }
  events.join();
  ASSERT_TRUE(ok) << capture.out.str() << capture.err.str();
  EXPECT_EQ(code, kExitOk) << capture.err.str();
  const auto lines = Lines(capture.out.str());
  ASSERT_EQ(lines.size(), 3u) << capture.out.str();
  EXPECT_EQ(Count(capture.out.str(), "TIME"), 1u);  // one header across reconnects
  EXPECT_THAT(capture.err.str(), HasSubstr("reconnecting after event"));
}

// A stream that breaks before any event came: the client resumes where the stream began (the
// server's first id), so a change made while it was disconnected is not lost.
TEST_F(CliClientTest, EventsReconnectsWhereTheStreamBeganWhenNoEventHadCome) {
  ASSERT_EQ(Run({"jobs", "add", "ev", "--builtin", "noop"}).code, 0);
  const int port = servers_.back()->port();
  Capture capture;
  int code = -1;
  std::thread events = FollowEvents("ev", 1, &code);
  bool ok =
      capture.out.WaitFor([](const std::string& s) { return s.find("TIME") != std::string::npos; });
  if (ok) {
    servers_.back()->Stop();  // drops the stream before any event
    ok = capture.err.WaitFor(
        [](const std::string& s) { return s.find("reconnecting") != std::string::npos; });
  }
  if (ok) {
    EXPECT_TRUE(node_->jobs().Pause("default", "ev").ok());  // while disconnected
    StartServer("127.0.0.1:" + std::to_string(port));
    ok = capture.out.WaitFor(
        [](const std::string& s) { return s.find("job.updated") != std::string::npos; });
  }
  if (!ok) {
    EXPECT_TRUE(node_->jobs().Resume("default", "ev").ok());  // lets the client end
  }
  events.join();
  ASSERT_TRUE(ok) << capture.out.str() << capture.err.str();
  EXPECT_EQ(code, kExitOk) << capture.err.str();
  EXPECT_THAT(capture.err.str(), HasSubstr("reconnecting after event"));
}

// ---- nodes, keys, tenants -----------------------------------------------------------------

TEST_F(CliClientTest, Nodes) {
  CliResult r = Run({"nodes"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_GE(Lines(r.out).size(), 2u);
  EXPECT_THAT(Lines(r.out)[0], HasSubstr("HEARTBEAT_AT"));
  EXPECT_THAT(Lines(r.out)[0], HasSubstr("TENANTS"));
  EXPECT_EQ(Lines(r.out)[1].substr(0, 2), "t ");
  EXPECT_THAT(Lines(r.out)[1], HasSubstr("leader"));
  EXPECT_THAT(Lines(r.out)[1], HasSubstr("default"));
  EXPECT_THAT(r.out, HasSubstr("leader: t (epoch "));
  Json j = RunJson({"nodes"});
  ASSERT_EQ(j["nodes"].size(), 1u);
  EXPECT_EQ(j["nodes"][0]["id"], "t");
  EXPECT_EQ(j["leader"]["node"], "t");
}

TEST_F(CliClientTest, KeysCreateListUseAndRevoke) {
  CliResult create = Run({"keys", "create", "--role", "operator", "--name", "ci"});
  ASSERT_EQ(create.code, 0) << create.err;
  EXPECT_THAT(create.err, HasSubstr("not shown again"));
  std::string key, id;
  for (const std::string& line : Lines(create.out)) {
    if (line.starts_with("key ")) key = line.substr(line.find("js_"));
    if (line.starts_with("id ")) id = line.substr(line.find_last_of(' ') + 1);
  }
  ASSERT_THAT(key, HasSubstr("js_")) << create.out;
  EXPECT_THAT(create.out, HasSubstr("default"));  // operator keys default to the default tenant

  CliResult list = Run({"keys", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(id));
  EXPECT_THAT(list.out, HasSubstr("operator"));
  EXPECT_THAT(list.out, Not(HasSubstr(key)));

  // The new key works for its tenant, and may not create shell jobs.
  CliResult add =
      RunMain({"jobs", "add", "op", "--builtin", "noop", "--server", url_, "--key", key});
  EXPECT_EQ(add.code, 0) << add.err;
  CliResult shell =
      RunMain({"jobs", "add", "sh", "--server", url_, "--key", key, "--shell", "/bin/true"});
  EXPECT_EQ(shell.code, kExitFailure);
  EXPECT_THAT(shell.err, HasSubstr("allow_shell"));
  // ... and is no admin.
  CliResult nodes = RunMain({"nodes", "--server", url_, "--key", key});
  EXPECT_EQ(nodes.code, kExitFailure);
  EXPECT_THAT(nodes.err, HasSubstr("admin"));

  Json shell_key =
      RunJson({"keys", "create", "--role", "operator", "--tenant", "default", "--allow-shell"});
  EXPECT_EQ(shell_key["role"], "operator");
  EXPECT_EQ(shell_key["allow_shell"], true);
  EXPECT_THAT(shell_key["key"].get<std::string>(), HasSubstr("js_"));
  CliResult viewer_shell =
      Run({"keys", "create", "--role", "viewer", "--tenant", "default", "--allow-shell"});
  EXPECT_EQ(viewer_shell.code, kExitFailure);
  EXPECT_THAT(viewer_shell.err, HasSubstr("allow_shell: viewer keys create no jobs"));

  CliResult revoke = Run({"keys", "revoke", id});
  ASSERT_EQ(revoke.code, 0) << revoke.err;
  EXPECT_EQ(revoke.out, "revoked key " + id + "\n");
  CliResult after = RunMain({"jobs", "list", "--server", url_, "--key", key});
  EXPECT_EQ(after.code, kExitFailure);
  EXPECT_THAT(after.err, HasSubstr("invalid API key"));
}

TEST_F(CliClientTest, TenantsSetListAndQuota) {
  CliResult set = Run({"tenants", "set", "acme", "--max-jobs", "1"});
  ASSERT_EQ(set.code, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("MAX_JOBS"));
  EXPECT_THAT(set.out, HasSubstr("acme"));
  Json list = RunJson({"tenants", "list"});
  bool found = false;
  for (const Json& t : list["items"]) found = found || (t["id"] == "acme" && t["max_jobs"] == 1);
  EXPECT_TRUE(found) << list.dump();

  EXPECT_EQ(Run({"jobs", "add", "one", "--builtin", "noop", "--tenant", "acme"}).code, 0);
  CliResult two = Run({"jobs", "add", "two", "--builtin", "noop", "--tenant", "acme"});
  EXPECT_EQ(two.code, kExitFailure);
  EXPECT_THAT(two.err, HasSubstr("error: "));
  EXPECT_EQ(RunJson({"jobs", "list", "--tenant", "acme"})["items"].size(), 1u);
  EXPECT_EQ(RunJson({"jobs", "list"})["items"].size(), 0u);  // the default tenant

  CliResult bad = Run({"tenants", "set", "Not_Valid"});
  EXPECT_EQ(bad.code, kExitFailure);
  EXPECT_THAT(bad.err, HasSubstr("tenant"));
}

TEST_F(CliClientTest, TenantsSetQueueLimits) {
  CliResult set = Run({"tenants", "set", "acme", "--max-concurrent-runs", "4", "--queue-limit",
                       "reports=2", "--queue-limit", "slow=1"});
  ASSERT_EQ(set.code, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("QUEUE_LIMITS"));
  EXPECT_THAT(set.out, HasSubstr("reports=2,slow=1"));
  Json tenant = RunJson({"tenants", "set", "acme"});  // no flags: nothing changes
  EXPECT_EQ(tenant["max_concurrent_runs"], 4);
  EXPECT_EQ(tenant["queue_limits"], Json({{"reports", 2}, {"slow", 1}}));

  // A given set of limits replaces the whole map; --no-queue-limits empties it.
  tenant = RunJson({"tenants", "set", "acme", "--queue-limit", "slow=3"});
  EXPECT_EQ(tenant["queue_limits"], Json({{"slow", 3}}));
  tenant = RunJson({"tenants", "set", "acme", "--no-queue-limits"});
  EXPECT_EQ(tenant["queue_limits"], Json::object());
  EXPECT_EQ(tenant["max_concurrent_runs"], 4);

  // Bad limits are refused, naming the flag or the queue, and change nothing.
  CliResult word = Run({"tenants", "set", "acme", "--queue-limit", "slow=two"});
  EXPECT_EQ(word.code, kExitUsage);
  EXPECT_THAT(word.err, HasSubstr("--queue-limit: the limit of queue 'slow' must be a whole"));
  CliResult no_value = Run({"tenants", "set", "acme", "--queue-limit", "slow"});
  EXPECT_EQ(no_value.code, kExitUsage);
  EXPECT_THAT(no_value.err, HasSubstr("--queue-limit: expected KEY=VALUE"));
  CliResult zero = Run({"tenants", "set", "acme", "--queue-limit", "slow=0"});
  EXPECT_EQ(zero.code, kExitFailure);
  EXPECT_THAT(zero.err, HasSubstr("queue_limits.slow: must be an integer of at least 1"));
  CliResult both = Run({"tenants", "set", "acme", "--queue-limit", "slow=1", "--no-queue-limits"});
  EXPECT_EQ(both.code, kExitUsage);
  EXPECT_EQ(RunJson({"tenants", "set", "acme"})["queue_limits"], Json::object());

  // A number too large for 64 bits is refused, not clamped to the largest one.
  CliResult huge = Run({"tenants", "set", "acme", "--max-jobs", "99999999999999999999"});
  EXPECT_EQ(huge.code, kExitUsage);
  EXPECT_THAT(huge.err, HasSubstr("'99999999999999999999' is out of range"));
  EXPECT_EQ(RunJson({"tenants", "set", "acme"})["max_jobs"], 0);
}

// ---- settings -----------------------------------------------------------------------------

TEST_F(CliClientTest, FlagBeatsEnvironmentBeatsDefault) {
  auto defaults = ResolveConnection({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->options.server, "http://127.0.0.1:8080");
  EXPECT_EQ(defaults->tenant, "default");

  setenv("JOBSCHED_URL", "http://127.0.0.1:1", 1);
  setenv("JOBSCHED_TENANT", "nope", 1);
  setenv("JOBSCHED_KEY", "js_bad_key", 1);
  auto env = ResolveConnection({});
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->options.server, "http://127.0.0.1:1");
  EXPECT_EQ(env->tenant, "nope");
  EXPECT_EQ(env->options.key, "js_bad_key");
  EXPECT_EQ(env->key_source, "JOBSCHED_KEY");
  auto flags = ResolveConnection({.server = url_, .key = key_, .tenant = "default"});
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->options.server, url_);
  EXPECT_EQ(flags->tenant, "default");
  EXPECT_EQ(flags->key_source, "--key");

  // Through the command line: the environment alone points at nothing useful ...
  CliResult env_only = RunMain({"jobs", "list"});
  EXPECT_EQ(env_only.code, kExitFailure);
  EXPECT_THAT(env_only.err, HasSubstr("cannot reach http://127.0.0.1:1"));
  // ... the flags win over it, one at a time.
  CliResult server_flag = RunMain({"jobs", "list", "--server", url_});
  EXPECT_EQ(server_flag.code, kExitFailure);
  EXPECT_THAT(server_flag.err, HasSubstr("invalid API key"));
  CliResult key_flag = RunMain({"jobs", "list", "--server", url_, "--key", key_});
  EXPECT_EQ(key_flag.code, kExitFailure);
  EXPECT_THAT(key_flag.err, HasSubstr("tenant 'nope' not found"));
  CliResult all = RunMain({"jobs", "list", "--server", url_, "--key", key_, "--tenant", "default"});
  EXPECT_EQ(all.code, kExitOk) << all.err;

  // And the environment wins over the defaults.
  setenv("JOBSCHED_URL", url_.c_str(), 1);
  setenv("JOBSCHED_KEY", key_.c_str(), 1);
  setenv("JOBSCHED_TENANT", "default", 1);
  CliResult from_env = RunMain({"jobs", "list"});
  EXPECT_EQ(from_env.code, kExitOk) << from_env.err;
}

TEST_F(CliClientTest, KeyFilesAndTheDefaultAdminKey) {
  setenv("JOBSCHED_URL", url_.c_str(), 1);
  const std::string file = WriteFile("key.txt", "  " + key_ + "\n");
  setenv("JOBSCHED_KEY_FILE", file.c_str(), 1);
  auto from_file = ResolveConnection({});
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(from_file->options.key, key_);
  EXPECT_EQ(from_file->key_source, "JOBSCHED_KEY_FILE");
  EXPECT_EQ(RunMain({"jobs", "list"}).code, kExitOk);

  // JOBSCHED_KEY beats JOBSCHED_KEY_FILE; --key-file beats both.
  setenv("JOBSCHED_KEY", "js_wrong_key", 1);
  EXPECT_EQ(ResolveConnection({})->key_source, "JOBSCHED_KEY");
  EXPECT_EQ(RunMain({"jobs", "list", "--key-file", file}).code, kExitOk);
  unsetenv("JOBSCHED_KEY");

  setenv("JOBSCHED_KEY_FILE", (dir_ / "missing.key").c_str(), 1);
  CliResult missing = RunMain({"jobs", "list"});
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_THAT(missing.err, HasSubstr("missing.key"));
  unsetenv("JOBSCHED_KEY_FILE");

  // No key anywhere: ./data/admin.key, relative to the working directory.
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_);
  CliResult no_key = RunMain({"jobs", "list"});
  std::filesystem::create_directories(dir_ / "data");
  WriteFile("data/admin.key", key_ + "\n");
  auto default_file = ResolveConnection({});
  CliResult with_default = RunMain({"jobs", "list"});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(no_key.code, kExitFailure);
  EXPECT_THAT(no_key.err, HasSubstr("no API key given"));
  ASSERT_TRUE(default_file.ok());
  EXPECT_EQ(default_file->key_source, "./data/admin.key");
  EXPECT_EQ(with_default.code, kExitOk) << with_default.err;
}

TEST_F(CliClientTest, UnreachableAndMalformedServers) {
  CliResult down = RunMain({"nodes", "--server", "http://127.0.0.1:1", "--key", key_});
  EXPECT_EQ(down.code, kExitFailure);
  EXPECT_THAT(down.err, HasSubstr("error: cannot reach http://127.0.0.1:1: "));

  CliResult bad = RunMain({"nodes", "--server", "ftp://x", "--key", key_});
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("http(s)://HOST[:PORT]"));

  CliResult events =
      RunMain({"events", "--server", "http://127.0.0.1:1", "--key", key_, "--count", "1"});
  EXPECT_EQ(events.code, kExitFailure);
  EXPECT_THAT(events.err, HasSubstr("cannot reach"));

  CliResult bad_output = Run({"nodes", "-o", "yaml"});
  EXPECT_EQ(bad_output.code, kExitUsage);
}

TEST_F(CliClientTest, HelpDocumentsTheShellForms) {
  CliResult help = RunMain({"jobs", "add", "--help"});
  EXPECT_EQ(help.code, kExitOk);
  EXPECT_THAT(help.out, HasSubstr("sh\", \"-c\""));
  EXPECT_THAT(help.out, HasSubstr("--retries"));
}

// ---- SSE parsing --------------------------------------------------------------------------

TEST(SseParser, SplitsEventsAcrossChunksAndSkipsComments) {
  SseParser parser;
  std::vector<SseEvent> events;
  auto collect = [&](const SseEvent& e) {
    events.push_back(e);
    return true;
  };
  const std::string stream =
      ": keep-alive\n\nid: 7\nevent: run.queued\ndata: {\"a\":\r\ndata: 1}\n\nid: 8\ndata:x\n\n";
  for (char c : stream) ASSERT_TRUE(parser.Feed(std::string_view(&c, 1), collect));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[0].type, "run.queued");
  EXPECT_EQ(events[0].data, "{\"a\":\n1}");
  EXPECT_EQ(events[1].id, "8");
  EXPECT_EQ(events[1].type, "message");
  EXPECT_EQ(events[1].data, "x");
}

TEST(SseParser, StopsWhenTheCallbackSaysSo) {
  SseParser parser;
  int seen = 0;
  EXPECT_FALSE(parser.Feed("data: 1\n\ndata: 2\n\n", [&](const SseEvent&) { return ++seen < 1; }));
  EXPECT_EQ(seen, 1);
}

TEST(Escape, EscapesEverythingButUnreserved) {
  EXPECT_EQ(Escape("a-b_c.d~e"), "a-b_c.d~e");
  EXPECT_EQ(Escape("job@m1 x/y:z"), "job%40m1%20x%2Fy%3Az");
}

}  // namespace
}  // namespace jobsched::cli
