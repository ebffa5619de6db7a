// `jobsched serve`: a node with the REST API and the dashboard. Settings come from, in order of
// precedence: flags, JOBSCHED_* environment variables, the TOML file of --config, defaults.
#pragma once

#include <jobsched/clock.h>
#include <jobsched/status.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
}

namespace jobsched {
class Store;
}

namespace jobsched::cli {

struct ServeConfig {
  std::string store;                      // Default: "sqlite:<data_dir>/jobsched.db"
  std::string listen = "127.0.0.1:8080";  // Default: loopback, port 8080
  std::string data_dir = "./data";        // admin.key and the default database live here
  std::string node_id;                    // Default: the host name
  int64_t concurrency = 4;
  int64_t http_threads = 32;        // API request threads (each open event stream holds one)
  std::vector<std::string> queues;  // Default: all
  std::string log_format = "text";  // text | json
  std::string log_level = "info";   // trace | debug | info | warn | error
  std::string tls_cert;
  std::string tls_key;
  bool insecure_listen = false;
  int64_t lease_ms = 15000;
  int64_t renew_ms = 5000;
  int64_t reaper_ms = 1000;
  int64_t heartbeat_ms = 2000;
  int64_t node_dead_ms = 10000;
  int64_t leader_ttl_ms = 10000;
  int64_t leader_renew_ms = 3000;
  int64_t fire_ahead_ms = 500;
  int64_t claim_ahead_ms = 250;
  int64_t shutdown_grace_ms = 30000;
  int64_t keep_runs_per_job = 100;
  int64_t keep_runs_days = 7;
  bool sample_job = false;    // upsert the "sample" shell job (every 10 s) at start
  std::string cgroup_parent;  // a cgroup v2 directory for per-run cgroups. Default: none
};

// Reads a TOML config file: the keys of ServeConfig (no unknown keys; types checked). Errors are
// kInvalidArgument naming the file, the key and the line.
Status LoadServeConfigFile(const std::string& path, ServeConfig& config);
// The same, for the text of a config file; `path` names it in errors.
Status ParseServeConfig(std::string_view text, const std::string& path, ServeConfig& config);
// Applies JOBSCHED_STORE, JOBSCHED_LISTEN, ... (every key, upper case). Errors name the variable.
Status ApplyServeEnv(ServeConfig& config);
// The JOBSCHED_* variables of `environment` (NAME=VALUE entries, as environ) that neither serve
// nor the client nor a job's environment knows: most likely misspelt settings (logged at start).
std::vector<std::string> UnknownJobschedVariables(char** environment);
// Checks values (log format and level, concurrency, durations, node id and queue names).
Status ValidateServeConfig(const ServeConfig& config);

// The first admin key: JOBSCHED_ADMIN_KEY, registered by whichever node comes first (nodes
// started together race for it, and the others find it), or, on a store without keys, a new key
// written to <data_dir>/admin.key (mode 0600).
Status BootstrapAdminKey(Store& store, const ServeConfig& config, TimePoint now);

// Runs until SIGINT or SIGTERM. Returns the exit code.
int RunServe(const ServeConfig& config);

void AddServeCommand(CLI::App& app, int* exit_code);

}  // namespace jobsched::cli
