#include "chaos/cluster_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "core/time_util.h"

extern char** environ;

namespace jobsched::chaos {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// The file's contents; what could be read of it if reading fails ("" if it cannot be opened).
// Plain read(2): a /proc/<pid> file of a process that exits while it is read fails with ESRCH,
// which std::ifstream turns into an exception.
std::string ReadFile(const std::string& path) {
  std::string out;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::string Tail(const std::string& text, size_t max = 4000) {
  return text.size() > max ? "..." + text.substr(text.size() - max) : text;
}

// The parent pid of `pid` from /proc/<pid>/stat, or 0; `zombie` tells whether it has exited.
pid_t ParentOf(pid_t pid, bool* zombie = nullptr) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');  // the command name may contain anything
  if (close == std::string::npos || close + 4 > stat.size()) return 0;
  std::istringstream rest(stat.substr(close + 2));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  if (zombie != nullptr) *zombie = state == 'Z';
  return ppid;
}

bool ReapWithin(pid_t pid, milliseconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  for (;;) {
    const pid_t got = waitpid(pid, nullptr, WNOHANG);
    if (got == pid || (got < 0 && errno == ECHILD)) return true;
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const HttpReply& r) {
  if (r.status < 0) return os << "no answer (" << r.error << ")";
  return os << r.status << " " << r.body;
}

bool WaitUntil(const std::function<bool()>& done, milliseconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (SteadyClock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(100));
  }
}

bool ProcessAlive(pid_t pid) {
  bool zombie = false;
  return ParentOf(pid, &zombie) != 0 && !zombie;
}

TimePoint WallNow() {
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

std::string Rfc3339(TimePoint t) { return FormatRfc3339(t); }

std::string DescribeRun(const RunRecord& run) {
  std::string out = run.id + ": " + RunStateName(run.state) + ", attempts [";
  for (size_t i = 0; i < run.attempts.size(); ++i) {
    const AttemptRecord& a = run.attempts[i];
    if (i > 0) out += ", ";
    out += "#" + std::to_string(a.number) + " " + a.node + " " + a.outcome + " fence " +
           std::to_string(a.fence);
    if (!a.error.empty()) out += " (" + a.error + ")";
  }
  return out + "]";
}

void ExpectOneSucceededRunPerOccurrence(const std::vector<RunRecord>& runs,
                                        const std::set<std::string>& expected) {
  std::set<std::string> actual;
  for (const RunRecord& r : runs) {
    EXPECT_TRUE(actual.insert(r.id).second) << "two records of run " << r.id;
    EXPECT_EQ(r.state, RunState::kSucceeded) << DescribeRun(r);
  }
  for (const std::string& id : expected) EXPECT_TRUE(actual.count(id)) << "lost occurrence " << id;
  for (const std::string& id : actual) EXPECT_TRUE(expected.count(id)) << "unexpected run " << id;
}

// ---- ServeNode ------------------------------------------------------------------------------

std::string ServeNode::Log() const { return ReadFile(log_path_); }

std::vector<std::string> ServeNode::LogLines(const std::vector<std::string>& parts) const {
  std::vector<std::string> out;
  std::istringstream in(Log());
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const std::string& p : parts) all = all && line.find(p) != std::string::npos;
    if (all) out.push_back(line);
  }
  return out;
}

void ServeNode::Signal(int sig) const {
  if (pid_ > 0) kill(pid_, sig);
}

void ServeNode::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int ServeNode::Terminate() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  const pid_t reaped = waitpid(pid_, &status, 0);
  pid_ = -1;
  return reaped > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

HttpReply ServeNode::Get(const std::string& path, bool with_key) const {
  return Send("GET", path, "", with_key);
}
HttpReply ServeNode::Put(const std::string& path, const Json& body) const {
  return Send("PUT", path, body.dump(), true);
}
HttpReply ServeNode::Post(const std::string& path, const Json& body) const {
  return Send("POST", path, body.dump(), true);
}

HttpReply ServeNode::Send(const std::string& method, const std::string& path,
                          const std::string& body, bool with_key) const {
  HttpReply out;
  httplib::Client client("127.0.0.1", port_);
  client.set_connection_timeout(std::chrono::seconds(2));
  client.set_read_timeout(std::chrono::seconds(10));
  client.set_write_timeout(std::chrono::seconds(10));
  httplib::Headers headers;
  if (with_key) headers.emplace("Authorization", std::string("Bearer ") + kAdminKey);
  httplib::Result res = method == "GET"   ? client.Get(path, headers)
                        : method == "PUT" ? client.Put(path, headers, body, "application/json")
                                          : client.Post(path, headers, body, "application/json");
  if (!res) {
    out.error = httplib::to_string(res.error());
    return out;
  }
  out.status = res->status;
  out.body = res->body;
  out.json = Json::parse(out.body, nullptr, false);
  return out;
}

// ---- Cluster --------------------------------------------------------------------------------

Cluster::Cluster(Options options) : options_(options), redis_({.appendonly = options.redis_aof}) {
  // A node killed with SIGKILL leaves its jobs' processes behind: they become this process's
  // children, so the destructor can find and stop them.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = test != nullptr ? test->name() : "cluster";
  std::string tmpl =
      (fs::path(::testing::TempDir()) / ("jobsched-chaos-" + name + "-XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    return;
  }
  dir_ = tmpl;
  fs::create_directories(fs::path(dir_) / "pids");
  std::ofstream(handler_log()).flush();
}

Cluster::~Cluster() {
  // A node that died by itself (a crash, an exit) fails the test even when the others covered
  // for it.
  for (auto& n : nodes_) {
    int status = 0;
    if (n->pid_ > 0 && waitpid(n->pid_, &status, WNOHANG) == n->pid_) {
      ADD_FAILURE() << "node " << n->id() << " ended by itself during the test ("
                    << (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                          : "signal " + std::to_string(WTERMSIG(status)))
                    << ")";
      n->pid_ = -1;
    }
  }
  const bool failed = ::testing::Test::HasFailure();
  if (failed) std::cout << Describe();
  for (auto& n : nodes_) n->Kill();
  KillStrays();
  store_.reset();
  redis_.TearDown();
  if (dir_.empty()) return;
  if (failed) {
    std::cout << "chaos: the cluster's logs and data are kept in " << dir_ << "\n";
  } else {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

void Cluster::KillStrays() {
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  for (;;) {
    std::vector<pid_t> strays;
    if (DIR* proc = opendir("/proc")) {
      while (dirent* e = readdir(proc)) {
        char* end = nullptr;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end != '\0' || pid == redis_.pid()) continue;
        if (ParentOf(static_cast<pid_t>(pid)) == getpid())
          strays.push_back(static_cast<pid_t>(pid));
      }
      closedir(proc);
    }
    if (strays.empty() || SteadyClock::now() > deadline) return;
    for (pid_t pid : strays) {
      // A job's shell leads its own process group: the group goes with it.
      if (getpgid(pid) == pid) kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      ReapWithin(pid, milliseconds(2000));
    }
  }
}

bool Cluster::StartRedis() {
  redis_.SetUp();  // a failure names what is missing
  return redis_.ok();
}

std::string Cluster::redis_url() const { return "redis://" + redis_.address(); }

std::unique_ptr<ServeNode> Cluster::Spawn(const NodeOptions& o) {
  auto node = std::make_unique<ServeNode>();
  node->id_ = o.id;
  const fs::path data = fs::path(dir_) / o.id;
  fs::create_directories(data);
  node->log_path_ = (fs::path(dir_) / (o.id + ".log")).string();

  std::vector<std::string> args = {JOBSCHED_BIN,
                                   "serve",
                                   "--store",
                                   o.store_url.empty() ? redis_url() : o.store_url,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--data-dir",
                                   data.string(),
                                   "--concurrency",
                                   std::to_string(o.concurrency),
                                   "--lease-ms",
                                   std::to_string(o.lease_ms),
                                   "--renew-ms",
                                   std::to_string(o.renew_ms),
                                   "--reaper-ms",
                                   std::to_string(o.reaper_ms),
                                   "--shutdown-grace-ms",
                                   "1000"};
  if (!o.default_node_id) {
    args.push_back("--node-id");
    args.push_back(o.id);
  }
  args.insert(args.end(), o.extra_flags.begin(), o.extra_flags.end());
  // The environment without JOBSCHED_* settings of whoever runs the tests, plus the admin key.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "JOBSCHED_", 9) != 0) env.emplace_back(*e);
  }
  env.push_back(std::string("JOBSCHED_ADMIN_KEY=") + kAdminKey);
  // Everything the child needs is made before fork: the test process has threads.
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log_fd = open(node->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    ADD_FAILURE() << "cannot open " << node->log_path_ << ": " << std::strerror(errno);
    return nullptr;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // the node dies with the test process
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execve(JOBSCHED_BIN, argv.data(), envp.data());
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return nullptr;
  }
  node->pid_ = pid;
  return node;
}

ServeNode* Cluster::StartNode(NodeOptions options) {
  std::unique_ptr<ServeNode> node = Spawn(options);
  if (node == nullptr) return nullptr;
  ServeNode* n = node.get();
  nodes_.push_back(std::move(node));
  const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
  bool exited = false;
  const bool ready = WaitUntil(
      [&] {
        int status = 0;
        if (waitpid(n->pid_, &status, WNOHANG) == n->pid_) {
          n->pid_ = -1;
          exited = true;
          return true;
        }
        if (n->port_ == 0) {
          std::smatch m;
          const std::string log = n->Log();
          if (!std::regex_search(log, m, listening)) return false;
          n->port_ = std::stoi(m[1]);
        }
        return n->Get("/readyz", false).status == 200;
      },
      std::chrono::seconds(20));
  if (exited || !ready) {
    ADD_FAILURE() << "node " << options.id
                  << (exited ? " exited while starting" : " was not ready within 20 s")
                  << "; its log:\n"
                  << Tail(n->Log());
    n->Kill();
    return nullptr;
  }
  return n;
}

ServeNode* Cluster::node(const std::string& id) const {
  for (const auto& n : nodes_) {
    if (n->id() == id) return n.get();
  }
  return nullptr;
}

ServeNode* Cluster::NodeByPid(pid_t pid) const {
  for (const auto& n : nodes_) {
    if (n->pid() == pid) return n.get();
  }
  return nullptr;
}

std::vector<ServeNode*> Cluster::running_nodes() const {
  std::vector<ServeNode*> out;
  for (const auto& n : nodes_) {
    if (n->running()) out.push_back(n.get());
  }
  return out;
}

Result<RedisStore*> Cluster::store() {
  if (store_ == nullptr) {
    ASSIGN_OR_RETURN(store_, RedisStore::Open({.host = "127.0.0.1", .port = redis_.port()}));
  }
  return store_.get();
}

Result<RunRecord> Cluster::Run(const std::string& tenant, const std::string& run_id) {
  ASSIGN_OR_RETURN(RedisStore * store, store());
  return store->GetRun(tenant, run_id);
}

std::optional<RunRecord> Cluster::WaitForRun(const std::string& tenant, const std::string& run_id,
                                             const std::function<bool(const RunRecord&)>& done,
                                             milliseconds limit) {
  std::optional<RunRecord> out;
  WaitUntil(
      [&] {
        auto run = Run(tenant, run_id);
        if (run.ok() && done(*run)) out = std::move(run).value();
        return out.has_value();
      },
      limit);
  return out;
}

std::optional<std::vector<RunRecord>> Cluster::WaitForFinalRuns(const std::string& tenant,
                                                                size_t count, milliseconds limit) {
  std::vector<RunRecord> runs;
  size_t final_runs = 0;
  const bool settled = WaitUntil(
      [&] {
        auto got = Runs(tenant);
        if (!got.ok()) return false;
        runs = std::move(got).value();
        final_runs = 0;
        for (const RunRecord& r : runs) final_runs += IsTerminal(r.state);
        return runs.size() >= count && final_runs == runs.size();
      },
      limit);
  if (!settled) {
    ADD_FAILURE() << "tenant " << tenant << ": " << runs.size() << " runs (" << count
                  << " expected), " << final_runs << " of them final, after "
                  << limit.count() / 1000 << " s";
    return std::nullopt;
  }
  return runs;
}

Result<std::vector<RunRecord>> Cluster::Runs(const std::string& tenant, const std::string& job_id) {
  ASSIGN_OR_RETURN(RedisStore * store, store());
  std::vector<RunRecord> out;
  RunFilter filter{.job_id = job_id, .limit = 1000};
  for (;;) {
    ASSIGN_OR_RETURN(Page<RunRecord> page, store->ListRuns(tenant, filter));
    for (RunRecord& r : page.items) out.push_back(std::move(r));
    if (!page.next_cursor) return out;
    filter.cursor = *page.next_cursor;
  }
}

std::string Cluster::handler_log() const { return (fs::path(dir_) / "handler.log").string(); }

Json Cluster::EverySecondJob(TimePoint t0, int seconds, const std::string& body) const {
  return Json{{"schedule",
               {{"cron", "* * * * * *"},
                {"start_at", Rfc3339(t0)},
                {"end_at", Rfc3339(t0 + std::chrono::seconds(seconds - 1))}}},
              {"misfire", {{"policy", "fire_all"}, {"grace_ms", 60000}}},
              {"overlap", "allow"},
              {"handler", ShellHandler(body)}};
}

Json Cluster::ShellHandler(const std::string& body) const {
  const std::string line = "\"$JOBSCHED_RUN_ID $JOBSCHED_ATTEMPT $JOBSCHED_FENCE $PPID";
  const std::string script = "echo " + line + " start $(date +%s%3N)\" >> \"$CHAOS_LOG\"\n{ " +
                             body + "\n} && echo " + line +
                             " end $(date +%s%3N)\" >> \"$CHAOS_LOG\"\n";
  return Json{
      {"type", "shell"},
      {"command", {"/bin/sh", "-c", script}},
      {"env", {{"CHAOS_LOG", handler_log()}, {"PIDS", (fs::path(dir_) / "pids").string()}}}};
}

Json Cluster::SlowFirstAttemptHandler() const {
  return ShellHandler(
      "echo $$ > \"$PIDS/$JOBSCHED_RUN_ID.$JOBSCHED_ATTEMPT\"\n"
      "if [ \"$JOBSCHED_ATTEMPT\" = 1 ]; then sleep 30; else sleep 1; fi");
}

std::optional<RunRecord> Cluster::StartSlowRun(const ServeNode& via) {
  const HttpReply put =
      via.Put("/v1/tenants/default/jobs/long", {{"handler", SlowFirstAttemptHandler()}});
  if (put.status != 201) {
    ADD_FAILURE() << "creating the job: " << put;
    return std::nullopt;
  }
  const HttpReply trigger = via.Post("/v1/tenants/default/jobs/long/trigger");
  if (trigger.status != 201) {
    ADD_FAILURE() << "triggering the job: " << trigger;
    return std::nullopt;
  }
  const std::string run_id = trigger.json["run_ids"][0];
  auto running = WaitForRun(
      "default", run_id,
      [&](const RunRecord& r) {
        return r.state == RunState::kRunning && HandlerPid(run_id, 1).has_value();
      },
      std::chrono::seconds(20));
  if (!running) ADD_FAILURE() << "attempt 1 of " << run_id << " never ran";
  return running;
}

std::vector<HandlerLine> Cluster::HandlerLines() const {
  std::vector<HandlerLine> out;
  std::istringstream in(ReadFile(handler_log()));
  for (std::string text; std::getline(in, text);) {
    std::istringstream fields(text);
    HandlerLine line;
    if (fields >> line.run_id >> line.attempt >> line.fence >> line.node_pid >> line.event >>
        line.at_ms) {
      out.push_back(std::move(line));
    } else {
      ADD_FAILURE() << "malformed handler log line: " << text;
    }
  }
  return out;
}

std::optional<pid_t> Cluster::HandlerPid(const std::string& run_id, int attempt) const {
  const std::string text =
      ReadFile((fs::path(dir_) / "pids" / (run_id + "." + std::to_string(attempt))).string());
  const long pid = std::strtol(text.c_str(), nullptr, 10);
  if (pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

std::string Cluster::Describe() const {
  std::ostringstream out;
  for (const auto& n : nodes_) {
    out << "---- node " << n->id() << " (pid " << n->pid() << ", port " << n->port() << ", "
        << (n->running() ? "running" : "gone") << "), log tail:\n"
        << Tail(n->Log(), 3000) << "\n";
  }
  out << "---- handler log tail:\n" << Tail(ReadFile(handler_log()), 2000) << "\n";
  return out.str();
}

}  // namespace jobsched::chaos
