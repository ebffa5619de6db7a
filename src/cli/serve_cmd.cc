#include "cli/serve_cmd.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "api/auth.h"
#include "api/server.h"
#include "cli/cli.h"
#include "core/job_codec.h"
#include "core/log_fields.h"
#include "engine/node.h"

namespace jobsched::cli {
namespace {

// ---- Settings -----------------------------------------------------------------------------

// One setting: its name in TOML (and, upper-cased with JOBSCHED_, in the environment) and how to
// store a string or a TOML value into ServeConfig.
struct Setting {
  const char* key;
  enum Kind { kString, kInt, kBool, kList } kind;
  std::string ServeConfig::*str = nullptr;
  int64_t ServeConfig::*num = nullptr;
  bool ServeConfig::*flag = nullptr;
  std::vector<std::string> ServeConfig::*list = nullptr;
};

const Setting kSettings[] = {
    {"store", Setting::kString, &ServeConfig::store},
    {"listen", Setting::kString, &ServeConfig::listen},
    {"data_dir", Setting::kString, &ServeConfig::data_dir},
    {"node_id", Setting::kString, &ServeConfig::node_id},
    {"concurrency", Setting::kInt, nullptr, &ServeConfig::concurrency},
    {"queues", Setting::kList, nullptr, nullptr, nullptr, &ServeConfig::queues},
    {"log_format", Setting::kString, &ServeConfig::log_format},
    {"log_level", Setting::kString, &ServeConfig::log_level},
    {"tls_cert", Setting::kString, &ServeConfig::tls_cert},
    {"tls_key", Setting::kString, &ServeConfig::tls_key},
    {"insecure_listen", Setting::kBool, nullptr, nullptr, &ServeConfig::insecure_listen},
    {"lease_ms", Setting::kInt, nullptr, &ServeConfig::lease_ms},
    {"renew_ms", Setting::kInt, nullptr, &ServeConfig::renew_ms},
    {"reaper_ms", Setting::kInt, nullptr, &ServeConfig::reaper_ms},
    {"heartbeat_ms", Setting::kInt, nullptr, &ServeConfig::heartbeat_ms},
    {"node_dead_ms", Setting::kInt, nullptr, &ServeConfig::node_dead_ms},
    {"leader_ttl_ms", Setting::kInt, nullptr, &ServeConfig::leader_ttl_ms},
    {"leader_renew_ms", Setting::kInt, nullptr, &ServeConfig::leader_renew_ms},
    {"fire_ahead_ms", Setting::kInt, nullptr, &ServeConfig::fire_ahead_ms},
    {"claim_ahead_ms", Setting::kInt, nullptr, &ServeConfig::claim_ahead_ms},
    {"shutdown_grace_ms", Setting::kInt, nullptr, &ServeConfig::shutdown_grace_ms},
    {"keep_runs_per_job", Setting::kInt, nullptr, &ServeConfig::keep_runs_per_job},
    {"keep_runs_days", Setting::kInt, nullptr, &ServeConfig::keep_runs_days},
    {"sample_job", Setting::kBool, nullptr, nullptr, &ServeConfig::sample_job},
    {"cgroup_parent", Setting::kString, &ServeConfig::cgroup_parent},
    {"http_threads", Setting::kInt, nullptr, &ServeConfig::http_threads},
};

std::string EnvName(const char* key) {
  std::string name = "JOBSCHED_";
  for (const char* p = key; *p; ++p)
    name += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
  return name;
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

// Stores `text` (from the environment or a flag) into the setting; `origin` names it in errors.
Status SetFromText(const Setting& s, const std::string& text, const std::string& origin,
                   ServeConfig& c) {
  switch (s.kind) {
    case Setting::kString:
      c.*s.str = text;
      return Status::Ok();
    case Setting::kList:
      c.*s.list = SplitList(text);
      return Status::Ok();
    case Setting::kBool:
      if (text == "true" || text == "1") {
        c.*s.flag = true;
      } else if (text == "false" || text == "0") {
        c.*s.flag = false;
      } else {
        return InvalidArgument(origin + ": must be true or false, got '" + text + "'", s.key);
      }
      return Status::Ok();
    case Setting::kInt: {
      int64_t n = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec != std::errc() || end != text.data() + text.size()) {
        return InvalidArgument(origin + ": must be an integer, got '" + text + "'", s.key);
      }
      c.*s.num = n;
      return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace

Status LoadServeConfigFile(const std::string& path, ServeConfig& c) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgument("config " + path + ": is a directory, not a TOML file");
  }
  std::ifstream in(path, std::ios::binary);
  std::string text;
  try {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    return InvalidArgument("config " + path + ": cannot read the file: " + e.what());
  }
  if (!in && !in.eof()) {
    return InvalidArgument("config " + path + ": cannot read the file: " + std::strerror(errno));
  }
  return ParseServeConfig(text, path, c);
}

Status ParseServeConfig(std::string_view text, const std::string& path, ServeConfig& c) {
  toml::table table;
  try {
    table = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return InvalidArgument("config " + path + ": line " + std::to_string(e.source().begin.line) +
                           ": " + std::string(e.description()));
  } catch (const std::exception& e) {
    return InvalidArgument("config " + path + ": " + e.what());
  }
  for (const auto& [key, node] : table) {
    const Setting* s = nullptr;
    for (const Setting& candidate : kSettings) {
      if (key.str() == candidate.key) s = &candidate;
    }
    const std::string where =
        "config " + path + ": line " + std::to_string(node.source().begin.line) + ": ";
    if (s == nullptr)
      return InvalidArgument(where + "unknown key '" + std::string(key.str()) + "'",
                             std::string(key.str()));
    switch (s->kind) {
      case Setting::kString:
        if (!node.is_string())
          return InvalidArgument(where + s->key + ": must be a string", s->key);
        c.*s->str = *node.value<std::string>();
        break;
      case Setting::kInt:
        if (!node.is_integer())
          return InvalidArgument(where + s->key + ": must be an integer", s->key);
        c.*s->num = *node.value<int64_t>();
        break;
      case Setting::kBool:
        if (!node.is_boolean())
          return InvalidArgument(where + s->key + ": must be true or false", s->key);
        c.*s->flag = *node.value<bool>();
        break;
      case Setting::kList: {
        const toml::array* arr = node.as_array();
        if (arr == nullptr)
          return InvalidArgument(where + s->key + ": must be an array of strings", s->key);
        std::vector<std::string> items;
        for (const auto& item : *arr) {
          if (!item.is_string())
            return InvalidArgument(where + s->key + ": must be an array of strings", s->key);
          items.push_back(*item.value<std::string>());
        }
        c.*s->list = std::move(items);
        break;
      }
    }
  }
  return Status::Ok();
}

Status ApplyServeEnv(ServeConfig& c) {
  // Inside a job (JOBSCHED_RUN_ID is set), JOBSCHED_NODE_ID names the node executing the job:
  // a node started by the job does not take its id (--node-id and the config file still do).
  const bool in_a_job = std::getenv("JOBSCHED_RUN_ID") != nullptr;
  for (const Setting& s : kSettings) {
    const std::string name = EnvName(s.key);
    if (in_a_job && name == "JOBSCHED_NODE_ID") continue;
    if (const char* v = std::getenv(name.c_str())) RETURN_IF_ERROR(SetFromText(s, v, name, c));
  }
  return Status::Ok();
}

std::vector<std::string> UnknownJobschedVariables(char** environment) {
  // Besides the settings: serve's admin key and config file, the client's, and what a job's
  // process gets (a node may run inside a job of another).
  static const std::set<std::string> kOthers = {
      "JOBSCHED_CONFIG",  "JOBSCHED_ADMIN_KEY", "JOBSCHED_URL",      "JOBSCHED_TENANT",
      "JOBSCHED_CA_CERT", "JOBSCHED_KEY",       "JOBSCHED_KEY_FILE", "JOBSCHED_RUN_ID",
      "JOBSCHED_JOB_ID",  "JOBSCHED_ATTEMPT",   "JOBSCHED_FENCE"};
  std::vector<std::string> unknown;
  for (char** e = environment; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry = *e;
    if (!entry.starts_with("JOBSCHED_")) continue;
    const std::string name(entry.substr(0, entry.find('=')));
    bool known = kOthers.contains(name);
    for (const Setting& s : kSettings) known = known || EnvName(s.key) == name;
    if (!known) unknown.push_back(name);
  }
  return unknown;
}

// The largest period, lease or grace a setting takes (a day), the most runs kept per job, and the
// longest run history kept (100 years): beyond them a setting is a mistake, and its conversion
// to milliseconds could overflow.
constexpr int64_t kMaxPeriodMs = int64_t{24} * 3600 * 1000;
constexpr int64_t kMaxKeepRunsPerJob = 1'000'000;
constexpr int64_t kMaxKeepRunsDays = 36'500;

Status ValidateServeConfig(const ServeConfig& c) {
  if (c.log_format != "text" && c.log_format != "json") {
    return InvalidArgument("log_format: must be text or json, got '" + c.log_format + "'",
                           "log_format");
  }
  if (spdlog::level::from_str(c.log_level) == spdlog::level::off && c.log_level != "off") {
    return InvalidArgument("log_level: must be trace, debug, info, warn, error, critical or off",
                           "log_level");
  }
  if (c.concurrency < 1 || c.concurrency > 4096)
    return InvalidArgument("concurrency: must be 1-4096", "concurrency");
  if (c.http_threads < 8 || c.http_threads > 4096)
    return InvalidArgument("http_threads: must be 8-4096", "http_threads");
  if (!c.node_id.empty()) RETURN_IF_ERROR(ValidateJobId(c.node_id, "node_id"));
  for (size_t i = 0; i < c.queues.size(); ++i) {
    RETURN_IF_ERROR(ValidateQueueName(c.queues[i], "queues[" + std::to_string(i) + "]"));
  }
  for (auto [value, name] : {std::pair{c.lease_ms, "lease_ms"},
                             {c.renew_ms, "renew_ms"},
                             {c.reaper_ms, "reaper_ms"},
                             {c.heartbeat_ms, "heartbeat_ms"},
                             {c.node_dead_ms, "node_dead_ms"},
                             {c.leader_ttl_ms, "leader_ttl_ms"},
                             {c.leader_renew_ms, "leader_renew_ms"}}) {
    if (value < 10 || value > kMaxPeriodMs) {
      return InvalidArgument(
          std::string(name) + ": must be between 10 and " + std::to_string(kMaxPeriodMs), name);
    }
  }
  if (c.renew_ms >= c.lease_ms)
    return InvalidArgument("renew_ms: must be shorter than lease_ms", "renew_ms");
  if (c.heartbeat_ms >= c.node_dead_ms)
    return InvalidArgument("heartbeat_ms: must be shorter than node_dead_ms", "heartbeat_ms");
  if (c.leader_renew_ms >= c.leader_ttl_ms)
    return InvalidArgument("leader_renew_ms: must be shorter than leader_ttl_ms",
                           "leader_renew_ms");
  for (auto [value, name] :
       {std::pair{c.fire_ahead_ms, "fire_ahead_ms"}, {c.claim_ahead_ms, "claim_ahead_ms"}}) {
    if (value < 0) return InvalidArgument(std::string(name) + ": must not be negative", name);
    if (value >= c.lease_ms) {
      return InvalidArgument(std::string(name) + ": must be shorter than lease_ms", name);
    }
  }
  if (c.shutdown_grace_ms < 0 || c.shutdown_grace_ms > kMaxPeriodMs) {
    return InvalidArgument(
        "shutdown_grace_ms: must be between 0 and " + std::to_string(kMaxPeriodMs),
        "shutdown_grace_ms");
  }
  if (c.keep_runs_per_job < 1 || c.keep_runs_per_job > kMaxKeepRunsPerJob) {
    return InvalidArgument(
        "keep_runs_per_job: must be between 1 and " + std::to_string(kMaxKeepRunsPerJob),
        "keep_runs_per_job");
  }
  if (c.keep_runs_days < 0 || c.keep_runs_days > kMaxKeepRunsDays) {
    return InvalidArgument(
        "keep_runs_days: must be between 0 and " + std::to_string(kMaxKeepRunsDays),
        "keep_runs_days");
  }
  return Status::Ok();
}

namespace {

// ---- Logging ------------------------------------------------------------------------------

// %j: the message as JSON: "msg" plus its key=value fields (LogFields), each its own field.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    nlohmann::ordered_json fields = nlohmann::ordered_json::object();
    fields["msg"] = text;
    for (auto& [key, value] : LogFields(text)) {
      if (key == "time" || key == "level" || key == "msg") continue;  // the record's own
      fields[key] = std::move(value);
    }
    // Not valid UTF-8 (a handler's output, say) is replaced, not an exception.
    const std::string out =
        fields.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    dest.append(out.data() + 1, out.data() + out.size() - 1);  // inside the braces
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

// %V: the message with its control characters escaped: a record is one line whatever it holds.
class EscapedMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string out = EscapeControl({msg.payload.data(), msg.payload.size()});
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessageFlag>();
  }
};

void SetUpLogging(const ServeConfig& c) {
  auto logger = spdlog::stderr_color_mt("jobsched");
  if (c.log_format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonMessageFlag>('j').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%j})");
    logger->set_formatter(std::move(formatter));
  } else {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<EscapedMessageFlag>('V').set_pattern(
        "[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %V");
    logger->set_formatter(std::move(formatter));
  }
  logger->set_level(spdlog::level::from_str(c.log_level));
  spdlog::set_default_logger(logger);
}

}  // namespace

// ---- Admin key bootstrap ------------------------------------------------------------------

Status BootstrapAdminKey(Store& store, const ServeConfig& c, TimePoint now) {
  if (const char* given = std::getenv("JOBSCHED_ADMIN_KEY"); given != nullptr && *given != '\0') {
    ASSIGN_OR_RETURN(ApiKeyRecord record,
                     api::RecordForKey(given, api::Role::kAdmin, "JOBSCHED_ADMIN_KEY", now));
    auto existing = store.GetApiKeyByHash(record.secret_hash);
    if (existing.ok()) return Status::Ok();
    if (existing.status().code() != StatusCode::kNotFound) return existing.status();
    Status put = store.PutApiKey(record);
    // Nodes started together with the same key race to register it: one does, the others
    // find it registered.
    if (put.code() == StatusCode::kAlreadyExists &&
        store.GetApiKeyByHash(record.secret_hash).ok()) {
      return Status::Ok();
    }
    RETURN_IF_ERROR(put);
    spdlog::info("admin key from JOBSCHED_ADMIN_KEY registered (id {})", record.id);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::vector<ApiKeyRecord> keys, store.ListApiKeys());
  if (!keys.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(api::NewKey key,
                   api::GenerateKey(api::Role::kAdmin, "", true, "bootstrap admin", now));
  std::error_code ec;
  std::filesystem::create_directories(c.data_dir, ec);
  const std::string path = (std::filesystem::path(c.data_dir) / "admin.key").string();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    // The key of another store (this data dir served another, or --store changed): it may be
    // the only admin key of that store, so it is kept aside, not overwritten.
    const std::string kept = path + "." + std::to_string(ToUnixMillis(now)) + ".old";
    if (::rename(path.c_str(), kept.c_str()) != 0) {
      return Internal("cannot move " + path + " aside to " + kept + ": " + std::strerror(errno));
    }
    spdlog::warn("{} held a key this store does not know (another store's?); kept as {}", path,
                 kept);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
  if (fd < 0) return Internal("cannot write " + path + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  const std::string line = key.key + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!written) return Internal("cannot write " + path);
  RETURN_IF_ERROR(store.PutApiKey(key.record));
  spdlog::warn("created the first admin key; it is in {} (mode 0600)", path);
  return Status::Ok();
}

namespace {

Status UpsertSampleJob(Node& node) {
  JobSpec spec{.id = "sample"};
  spec.schedule = {.kind = Schedule::Kind::kCron, .cron = "*/10 * * * * *"};
  spec.handler = {
      .type = HandlerSpec::Type::kShell,
      .command = {"/bin/sh", "-c",
                  "echo \"hello from jobsched: run $JOBSCHED_RUN_ID, attempt $JOBSCHED_ATTEMPT\""}};
  spec.labels = {{"example", "true"}};
  auto existing = node.store().GetJob("default", "sample");
  if (existing.ok()) return Status::Ok();
  return node.jobs().Put(spec, std::nullopt).status();
}

}  // namespace

int RunServe(const ServeConfig& c) {
  if (Status s = ValidateServeConfig(c); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return kExitUsage;
  }
  SetUpLogging(c);
  for (const std::string& name : UnknownJobschedVariables(environ)) {
    spdlog::warn("ignoring the environment variable {}: no setting has that name", name);
  }
  // Signals are taken by sigwait below; every thread started from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SchedulerOptions options{
      .store_url = c.store.empty()
                       ? "sqlite:" + (std::filesystem::path(c.data_dir) / "jobsched.db").string()
                       : c.store,
      .node_id = c.node_id,
      .concurrency = static_cast<int>(c.concurrency),
      .queues = c.queues,
      .lease = Duration(c.lease_ms),
      .renew_interval = Duration(c.renew_ms),
      .reaper_interval = Duration(c.reaper_ms),
      .heartbeat_interval = Duration(c.heartbeat_ms),
      .node_dead_after = Duration(c.node_dead_ms),
      .leader_ttl = Duration(c.leader_ttl_ms),
      .leader_renew = Duration(c.leader_renew_ms),
      .fire_ahead = Duration(c.fire_ahead_ms),
      .claim_ahead = Duration(c.claim_ahead_ms),
      .shutdown_grace = Duration(c.shutdown_grace_ms),
      .cgroup_parent = c.cgroup_parent,
      .keep_runs_per_job = static_cast<int>(c.keep_runs_per_job),
      .keep_runs_for = std::chrono::days(c.keep_runs_days)};
  auto fail = [](const std::string& what, const Status& s) {
    spdlog::error("{}: {}", what, s.message());
    return s.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  };
  auto node = Node::Create(options);
  if (!node.ok()) {
    return fail(node.status().code() == StatusCode::kInvalidArgument
                    ? "cannot start the node"
                    : "cannot open the store " + RedactStoreUrl(options.store_url),
                node.status());
  }
  auto server = api::ApiServer::Create(**node, {.listen = c.listen,
                                                .tls_cert = c.tls_cert,
                                                .tls_key = c.tls_key,
                                                .insecure_listen = c.insecure_listen,
                                                .threads = static_cast<int>(c.http_threads)});
  if (!server.ok()) return fail("cannot serve", server.status());
  // The address first: a node that cannot serve must not join the cluster and run jobs (nor
  // create, and print, the first admin key).
  if (Status s = (*server)->Bind(); !s.ok()) {
    return fail("cannot serve", s);  // "cannot listen on <address>: <why>"
  }
  if (Status s = BootstrapAdminKey((*node)->store(), c, (*node)->clock().Now()); !s.ok()) {
    return fail("cannot create the admin key", s);
  }
  if (Status s = (*node)->Start(); !s.ok()) return fail("cannot start the node", s);
  // Before the API answers: a client that connects finds the sample job.
  if (c.sample_job) {
    if (Status s = UpsertSampleJob(**node); !s.ok())
      spdlog::warn("sample job not created: {}", s.message());
  }
  (*server)->Serve();
  // The address with the port listened on (the one the system chose for port 0).
  std::string listening = c.listen;
  if (const size_t colon = listening.rfind(':'); colon != std::string::npos) {
    listening = listening.substr(0, colon + 1) + std::to_string((*server)->port());
  }
  spdlog::info("jobsched serve ready: node {} store {} listen {}", (*node)->options().node_id,
               RedactStoreUrl(options.store_url), listening);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Stop();
  (*node)->Stop();
  spdlog::info("stopped");
  return kExitOk;
}

void AddServeCommand(CLI::App& app, int* exit_code) {
  CLI::App* serve =
      app.add_subcommand("serve", "Run a node: scheduler, workers, REST API and dashboard");
  auto config_path = std::make_shared<std::string>();
  auto flags = std::make_shared<ServeConfig>();
  auto given = std::make_shared<std::vector<std::pair<const Setting*, CLI::Option*>>>();
  auto print_routes = std::make_shared<bool>(false);
  serve->add_option("--config", *config_path, "TOML config file (env JOBSCHED_CONFIG)");
  auto add = [&](const char* flag, const Setting& s, const char* help) {
    CLI::Option* opt = nullptr;
    switch (s.kind) {
      case Setting::kString:
        opt = serve->add_option(flag, (*flags).*s.str, help);
        break;
      case Setting::kInt:
        opt = serve->add_option(flag, (*flags).*s.num, help)->check(kWholeNumber);
        break;
      case Setting::kBool:
        opt = serve->add_flag(flag, (*flags).*s.flag, help);
        break;
      case Setting::kList:
        opt = serve->add_option(flag, (*flags).*s.list, help)->delimiter(',');
        break;
    }
    given->push_back({&s, opt});
  };
  // clang-format off
  const char* kFlags[] = {
      "--store",             "--listen",            "--data-dir",        "--node-id",
      "--concurrency",       "--queues",            "--log-format",      "--log-level",
      "--tls-cert",          "--tls-key",           "--insecure-listen", "--lease-ms",
      "--renew-ms",          "--reaper-ms",         "--heartbeat-ms",    "--node-dead-ms",
      "--leader-ttl-ms",     "--leader-renew-ms",   "--fire-ahead-ms",   "--claim-ahead-ms",
      "--shutdown-grace-ms", "--keep-runs-per-job", "--keep-runs-days",  "--sample-job",
      "--cgroup-parent",     "--http-threads"};
  // clang-format on
  const char* kHelp[] = {
      "Store URL: sqlite:PATH, sqlite::memory:, redis://[user:pass@]host:port[/db] (default "
      "sqlite:<data-dir>/jobsched.db)",
      "HOST:PORT to serve the API on (default 127.0.0.1:8080)",
      "Directory for admin.key and the default database (default ./data)",
      "Node id, unique among live nodes (default: host name)",
      "Worker threads (default 4)",
      "Queues to execute, comma-separated (default all)",
      "text or json (default text)",
      "trace, debug, info, warn, error, critical or off (default info)",
      "TLS certificate (PEM)",
      "TLS private key (PEM)",
      "Allow a non-loopback --listen without TLS",
      "Lease of a running attempt in ms (default 15000)",
      "Lease renewal period in ms (default 5000)",
      "Expired-lease check period in ms (default 1000)",
      "Heartbeat period in ms (default 2000)",
      "A node without a heartbeat for this long is dead, ms (default 10000)",
      "Leader lease TTL in ms (default 10000)",
      "Leader lease renewal period in ms (default 3000)",
      "Fire occurrences up to this many ms before their time; 0 = at their time (default 500)",
      "Claim runs up to this many ms before their time and start them at it; 0 = off "
      "(default 250)",
      "On SIGTERM, how long running attempts may finish, ms (default 30000)",
      "Runs kept per job (default 100)",
      "Runs younger than this many days are kept (default 7)",
      "Create the 'sample' shell job (every 10 s) if it does not exist",
      "cgroup v2 directory under which each shell run gets its own cgroup (memory.max, and a "
      "kill that reaches all it started); default none: rlimits only",
      "API request threads; event streams may hold all but a quarter of them (at least 4) "
      "(default 32)"};
  for (size_t i = 0; i < std::size(kSettings); ++i) add(kFlags[i], kSettings[i], kHelp[i]);
  serve->add_flag("--print-routes", *print_routes,
                  "Print the REST API route table (Markdown) and exit");

  serve->callback([config_path, flags, given, print_routes, exit_code] {
    if (*print_routes) {
      std::cout << api::RoutesMarkdown();
      *exit_code = kExitOk;
      return;
    }
    ServeConfig c;
    std::string path = *config_path;
    if (path.empty()) {
      if (const char* env = std::getenv("JOBSCHED_CONFIG")) path = env;
    }
    Status s = path.empty() ? Status::Ok() : LoadServeConfigFile(path, c);
    if (s.ok()) s = ApplyServeEnv(c);
    if (!s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      *exit_code = kExitUsage;
      return;
    }
    // Flags given on the command line win.
    for (const auto& [setting, opt] : *given) {
      if (opt->count() == 0) continue;
      switch (setting->kind) {
        case Setting::kString:
          c.*setting->str = (*flags).*setting->str;
          break;
        case Setting::kInt:
          c.*setting->num = (*flags).*setting->num;
          break;
        case Setting::kBool:
          c.*setting->flag = (*flags).*setting->flag;
          break;
        case Setting::kList:
          c.*setting->list = (*flags).*setting->list;
          break;
      }
    }
    *exit_code = RunServe(c);
  });
}

}  // namespace jobsched::cli
