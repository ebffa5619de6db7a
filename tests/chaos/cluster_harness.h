// A cluster of real processes for the chaos tests: a redis-server of the test's own and N
// `jobsched serve` processes on it, each with its own port, data directory, node id and log.
//
//   Cluster cluster;
//   ASSERT_TRUE(cluster.StartRedis());
//   ServeNode* a = cluster.StartNode({.id = "node1"});        // waits for /readyz 200
//   ASSERT_NE(a, nullptr);
//   a->Put("/v1/tenants/default/jobs/j", job_json);           // the admin key is sent
//   ... a->Kill();                                            // SIGKILL, reaped
//   auto runs = cluster.Runs("default");                      // straight from Redis
//
// Nodes get short timings (lease 2 s, renewal 0.5 s, reaper 0.25 s), so a failover takes seconds.
// Jobs are shell commands made by ShellHandler: they append
// "<run id> <attempt> <fence> <node pid> start|end" to one handler log shared by every node (the
// node pid is the shell's parent: the executor forks it straight from `jobsched serve`), which
// HandlerLines reads back. Verification reads run records straight from Redis with RedisStore,
// never through a node that might be lying.
//
// A node that ends by itself (a crash) fails the test. Everything started is stopped by its PID
// when the Cluster goes: nodes (SIGKILL), the processes their jobs left behind (the test process
// is a child subreaper, so a killed node's children become its own), then Redis. The cluster's
// directory (logs, data dirs, handler log) is kept when the test failed and named in the
// output; each node's log tail is printed then too.
#pragma once

#include <gtest/gtest.h>
#include <jobsched/clock.h>
#include <jobsched/job.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "store/redis_store.h"
#include "support/redis_server.h"

namespace jobsched::chaos {

using Json = nlohmann::json;

// The admin key every node registers (JOBSCHED_ADMIN_KEY) and every request carries.
inline constexpr const char* kAdminKey =
    "js_chaos_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// An HTTP answer. status -1: no answer (the transport error is in `error`).
struct HttpReply {
  int status = -1;
  std::string body;
  std::string error;
  Json json;  // the parsed body; discarded when it is not JSON
};
std::ostream& operator<<(std::ostream& os, const HttpReply& r);

struct NodeOptions {
  std::string id;                // --node-id, and the name of the node's log and data directory
  bool default_node_id = false;  // no --node-id: the node picks its own
  std::string store_url;         // --store; "" = the cluster's Redis
  int concurrency = 8;           // --concurrency
  int64_t lease_ms = 2000;       // --lease-ms
  int64_t renew_ms = 500;        // --renew-ms
  int64_t reaper_ms = 250;       // --reaper-ms
  std::vector<std::string> extra_flags;
};

// One `jobsched serve` process.
class ServeNode {
 public:
  const std::string& id() const { return id_; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& log_path() const { return log_path_; }
  // Started and not yet reaped (a stopped process counts as running).
  bool running() const { return pid_ > 0; }

  // What the process wrote to stdout and stderr so far.
  std::string Log() const;
  // Log lines that contain every one of `parts`.
  std::vector<std::string> LogLines(const std::vector<std::string>& parts) const;

  void Signal(int sig) const;  // kill(pid, sig)
  void Kill();                 // SIGKILL, then reaped
  // SIGTERM, then waits for the process to end (a clean stop). Its exit status; -1 if it was
  // not running or did not exit by itself.
  int Terminate();

  // Requests to this node's API, with the admin key unless `with_key` is false.
  HttpReply Get(const std::string& path, bool with_key = true) const;
  HttpReply Put(const std::string& path, const Json& body) const;
  HttpReply Post(const std::string& path, const Json& body = Json::object()) const;

 private:
  friend class Cluster;
  HttpReply Send(const std::string& method, const std::string& path, const std::string& body,
                 bool with_key) const;

  std::string id_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_path_;
};

// One line of the handler log.
struct HandlerLine {
  std::string run_id;
  int attempt = 0;
  int64_t fence = 0;
  // $PPID of the shell: the node that forked it, or this process (the subreaper) if that node
  // was killed before the shell started.
  pid_t node_pid = 0;
  std::string event;  // "start" or "end"
  int64_t at_ms = 0;  // the host's clock as the line was written (ms since the epoch)
};

class Cluster {
 public:
  struct Options {
    bool redis_aof = false;  // Redis with an append-only file (RedisServer::Options)
  };

  Cluster() : Cluster(Options{}) {}
  explicit Cluster(Options options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts the cluster's redis-server. False, with a test failure, when it cannot (a missing
  // redis-server fails the test: scripts/setup installs it).
  [[nodiscard]] bool StartRedis();
  ::jobsched::testing::RedisServer& redis() { return redis_; }
  // redis://127.0.0.1:<port>
  std::string redis_url() const;

  // Starts `jobsched serve --store <url> --listen 127.0.0.1:0 --data-dir <own> --node-id <id>`
  // with the timing flags and `extra_flags`, and waits until it listens and /readyz answers
  // 200. nullptr, with a test failure quoting its log, when it exits or is not ready in 20 s.
  ServeNode* StartNode(NodeOptions options);

  ServeNode* node(const std::string& id) const;
  ServeNode* NodeByPid(pid_t pid) const;
  // Nodes started and not killed.
  std::vector<ServeNode*> running_nodes() const;

  // Every run of a tenant (or of one job), all pages, and one run: straight from Redis, on the
  // test's own connection (kUnavailable while Redis is down).
  Result<std::vector<RunRecord>> Runs(const std::string& tenant, const std::string& job_id = "");
  Result<RunRecord> Run(const std::string& tenant, const std::string& run_id);
  // Polls the run until `done` holds for it; the run then, or nullopt after `limit`.
  std::optional<RunRecord> WaitForRun(const std::string& tenant, const std::string& run_id,
                                      const std::function<bool(const RunRecord&)>& done,
                                      std::chrono::milliseconds limit);
  // Polls until the tenant has at least `count` runs and every one is final; them, or nullopt
  // (with a test failure saying how far it got) after `limit`.
  std::optional<std::vector<RunRecord>> WaitForFinalRuns(const std::string& tenant, size_t count,
                                                         std::chrono::milliseconds limit);

  // The cluster's directory and the handler log every shell job appends to.
  const std::string& dir() const { return dir_; }
  std::string handler_log() const;
  // A shell handler: appends "<run> <attempt> <fence> <node pid> start" to the handler log, runs
  // `body` (sh), then appends "... end". `body` may use $JOBSCHED_ATTEMPT, $JOBSCHED_RUN_ID and
  // $PIDS (a directory: the tests write "$PIDS/<run id>.<attempt>" with the shell's $$).
  Json ShellHandler(const std::string& body) const;
  // A ShellHandler that writes its pid to $PIDS (see HandlerPid) and sleeps 30 s in attempt 1
  // (far past any lease here: it stays running until stopped) and 1 s in later attempts.
  Json SlowFirstAttemptHandler() const;
  // Creates job "long" with the SlowFirstAttemptHandler through `via`, triggers it once and
  // waits (up to 20 s) until attempt 1's shell runs. The run as it is then; none (after a test
  // failure saying why) if that did not happen.
  std::optional<RunRecord> StartSlowRun(const ServeNode& via);
  // A job firing every second from t0 for `seconds` seconds, running ShellHandler(body); runs
  // may overlap, and seconds missed while nothing could fire (Redis down, a leader change) are
  // all fired late (fire_all within 60 s).
  Json EverySecondJob(TimePoint t0, int seconds, const std::string& body) const;
  std::vector<HandlerLine> HandlerLines() const;
  // The pid the handler of (run, attempt) wrote to $PIDS, once written.
  std::optional<pid_t> HandlerPid(const std::string& run_id, int attempt) const;

  // Text describing the nodes and their log tails (for failure messages).
  std::string Describe() const;

 private:
  // Spawns the process; the node has its pid and log path (not yet its port).
  std::unique_ptr<ServeNode> Spawn(const NodeOptions& options);
  // Kills what the nodes' jobs left behind (reparented to this process).
  void KillStrays();
  // The test's own RedisStore, opened on first use.
  Result<RedisStore*> store();

  Options options_;
  ::jobsched::testing::RedisServer redis_;
  std::string dir_;
  std::vector<std::unique_ptr<ServeNode>> nodes_;
  std::unique_ptr<RedisStore> store_;
};

// Polls `done` every 100 ms until it holds or `limit` passes. Never a timing assertion: limits
// are generous deadlines for events that happen in a fraction of them.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit);

// True while process `pid` exists and has not exited (a zombie has exited).
bool ProcessAlive(pid_t pid);

// The wall clock in milliseconds, and RFC 3339 for job specs.
TimePoint WallNow();
std::string Rfc3339(TimePoint t);

// "<run id>: <state>, attempts [node1 lease_lost, node2 succeeded]" for failure messages.
std::string DescribeRun(const RunRecord& run);

// One run per occurrence and no lost occurrences, checked from the records: the runs' ids are
// exactly `expected` (one per occurrence, none missing, none extra) and every run succeeded.
void ExpectOneSucceededRunPerOccurrence(const std::vector<RunRecord>& runs,
                                        const std::set<std::string>& expected);

}  // namespace jobsched::chaos
