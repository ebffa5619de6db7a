// The client subcommands of `jobsched` (docs/api.md, docs/configuration.md): jobs, runs, events,
// nodes, keys, tenants. Each one resolves its connection (flag > environment > default), calls
// the REST API through cli::Client and prints a table (aligned columns under a header) or, with
// -o json, the server's JSON.
//
// Exit codes: kExitOk; kExitFailure when the server refused ("error: <server message>" on
// stderr) or could not be reached; kExitUsage for bad flags or an unreadable input file (CLI11
// prints those).
#include <strings.h>
#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli.h"
#include "cli/client.h"
#include "core/job_codec.h"
#include "core/time_util.h"

namespace jobsched::cli {
namespace {

// What makes a single --shell argument a shell line (run as sh -c ARG) instead of a program:
// blanks, and what the shell would expand, redirect, quote or chain.
constexpr std::string_view kShellCharacters = " \t\n;|&<>$`~*?[]{}()'\"\\#!";

// ---- Shared plumbing ----------------------------------------------------------------------

// The flags every client subcommand takes.
struct Common {
  ConnectionFlags flags;
  std::string output = "table";
};

// --tenant is left out on admin commands that are not about one tenant (and on `keys create`,
// whose --tenant names the key's tenant).
void AddCommonFlags(CLI::App* cmd, Common& c, bool tenant_flag = true) {
  cmd->add_option(
      "--server", c.flags.server,
      "API base URL http(s)://HOST[:PORT] (env JOBSCHED_URL; default http://127.0.0.1:8080)");
  cmd->add_option(
      "--key", c.flags.key,
      "API key (env JOBSCHED_KEY; else the file in JOBSCHED_KEY_FILE; else ./data/admin.key)");
  cmd->add_option("--key-file", c.flags.key_file,
                  "File holding the API key (env JOBSCHED_KEY_FILE)");
  if (tenant_flag) {
    cmd->add_option("--tenant", c.flags.tenant,
                    "Tenant (env JOBSCHED_TENANT; default \"default\")");
  }
  cmd->add_option(
      "--ca-cert", c.flags.ca_cert,
      "PEM CA bundle to verify an https server (env JOBSCHED_CA_CERT; default: system CAs)");
  cmd->add_option("-o,--output", c.output, "Output format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
}

// What a command body works with.
struct Session {
  Client& client;
  std::string tenant;
  bool json;
  std::ostream& out;
  std::ostream& err;

  // "/v1/tenants/<tenant><rest>"
  std::string TenantPath(const std::string& rest) const {
    return "/v1/tenants/" + Escape(tenant) + rest;
  }
};

// Resolves the connection and runs `body`; prints its error. Returns the exit code.
int Execute(const Common& common, const std::function<Status(Session&)>& body) {
  auto conn = ResolveConnection(common.flags);
  if (!conn.ok()) {
    std::cerr << "error: " << conn.status().message() << "\n";
    return kExitUsage;
  }
  auto client = Client::Create(conn->options);
  if (!client.ok()) {
    std::cerr << "error: " << client.status().message() << "\n";
    return kExitUsage;
  }
  Session session{**client, conn->tenant, common.output == "json", std::cout, std::cerr};
  Status status;
  try {
    status = body(session);
  } catch (const std::exception& e) {  // nlohmann::json type errors on an unexpected answer
    status = Internal(std::string("unexpected answer from the server: ") + e.what());
  }
  std::cout.flush();
  if (!status.ok()) {
    std::cerr << "error: " << status.message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

[[noreturn]] void Usage(const std::string& message) { throw CLI::ValidationError(message); }

void PrintJson(std::ostream& out, const Json& j) {
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

// A cell: "-" for null, strings as they are, lists joined with ",", other JSON dumped.
std::string Text(const Json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    for (const Json& e : v) out += (out.empty() ? "" : ",") + Text(e);
    return out.empty() ? "-" : out;
  }
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// j[key] as text, "-" when absent.
std::string Field(const Json& j, const char* key) {
  return j.is_object() && j.contains(key) ? Text(j[key]) : "-";
}

std::string Shorten(std::string s, size_t max) {
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

// Aligned columns under a header; two spaces between columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void Print(std::ostream& out) const {
    std::vector<size_t> width;
    for (const auto& row : rows_) {
      width.resize(std::max(width.size(), row.size()));
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "name   value" lines for one object.
void PrintFields(std::ostream& out,
                 const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& f : fields) width = std::max(width, f.first.size());
  for (const auto& [name, value] : fields) {
    out << name << std::string(width - name.size() + 2, ' ') << value << "\n";
  }
}

// Follows next_cursor until `limit` items (or the end). The answer is {"items", "next_cursor"}.
Result<Json> ListAll(Client& client, const std::string& path,
                     std::vector<std::pair<std::string, std::string>> params, int limit) {
  Json items = Json::array();
  Json cursor = nullptr;
  while (static_cast<int>(items.size()) < limit) {
    std::string query;
    auto add = [&query](const std::string& k, const std::string& v) {
      query += (query.empty() ? "?" : "&") + k + "=" + Escape(v);
    };
    for (const auto& [k, v] : params) add(k, v);
    add("limit", std::to_string(std::min(1000, limit - static_cast<int>(items.size()))));
    if (cursor.is_string()) add("cursor", cursor.get<std::string>());
    ASSIGN_OR_RETURN(Json page, client.Get(path + query));
    for (Json& item : page["items"]) items.push_back(std::move(item));
    cursor = page.value("next_cursor", Json(nullptr));
    if (!cursor.is_string() || cursor.get<std::string>().empty()) {
      cursor = nullptr;
      break;
    }
  }
  return Json{{"items", std::move(items)}, {"next_cursor", cursor}};
}

// ---- Jobs: views --------------------------------------------------------------------------

std::string ScheduleText(const Json& spec) {
  const Json schedule = spec.value("schedule", Json(nullptr));
  if (!schedule.is_object()) {
    const Json deps = spec.value("depends_on", Json::array());
    return deps.empty() ? "manual" : "after " + Text(deps);
  }
  if (schedule.contains("cron")) {
    std::string s = "cron " + Text(schedule["cron"]);
    const std::string tz = Field(schedule, "timezone");
    if (tz != "UTC" && tz != "-") s += " (" + tz + ")";
    return s;
  }
  if (schedule.contains("at")) return "at " + Text(schedule["at"]);
  if (schedule.contains("every_ms") && schedule["every_ms"].is_number_integer()) {
    return "every " + FormatDuration(Duration(schedule["every_ms"].get<int64_t>()));
  }
  return Text(schedule);
}

std::string HandlerText(const Json& spec) {
  const Json h = spec.value("handler", Json(nullptr));
  const std::string type = Field(h, "type");
  if (type == "shell") {
    std::string argv;
    for (const Json& a : h.value("command", Json::array())) {
      const std::string s = Text(a);
      argv += (argv.empty() ? "" : " ") + (s.find(' ') != std::string::npos ? "'" + s + "'" : s);
    }
    return "shell " + argv;
  }
  if (type == "http") return "http " + Field(h, "method") + " " + Field(h, "url");
  if (type == "builtin") return "builtin " + Field(h, "name");
  return Text(h);
}

void PrintJobList(std::ostream& out, const Json& items) {
  Table t({"ID", "STATE", "QUEUE", "SCHEDULE", "HANDLER", "NEXT_FIRE", "VERSION"});
  for (const Json& job : items) {
    const Json spec = job.value("spec", Json::object());
    t.Row({Field(job, "id"), Field(job, "state"), Field(spec, "queue"),
           Shorten(ScheduleText(spec), 40), Shorten(HandlerText(spec), 40), Field(job, "next_fire"),
           Field(job, "version")});
  }
  t.Print(out);
}

void PrintJobDetail(std::ostream& out, const Json& job) {
  const Json spec = job.value("spec", Json::object());
  const Json retry = spec.value("retry", Json::object());
  std::string labels;
  const Json label_map = spec.value("labels", Json::object());
  for (const auto& [k, v] : label_map.items()) {
    labels += (labels.empty() ? "" : ",") + k + "=" + Text(v);
  }
  std::string counts;
  const Json count_map = job.value("counts", Json::object());
  for (const auto& [state, n] : count_map.items()) {
    counts += (counts.empty() ? "" : " ") + state + "=" + Text(n);
  }
  const Json timeout = spec.value("timeout_ms", Json(0));
  const Json last = job.value("last_run", Json(nullptr));
  PrintFields(out,
              {
                  {"id", Field(job, "id")},
                  {"tenant", Field(job, "tenant")},
                  {"state", Field(job, "state")},
                  {"version", Field(job, "version")},
                  {"queue", Field(spec, "queue")},
                  {"schedule", ScheduleText(spec)},
                  {"handler", HandlerText(spec)},
                  {"priority", Field(spec, "priority")},
                  {"max_attempts", Field(retry, "max_attempts")},
                  {"timeout", timeout.is_number_integer() && timeout.get<int64_t>() > 0
                                  ? FormatDuration(Duration(timeout.get<int64_t>()))
                                  : "none"},
                  {"overlap", Field(spec, "overlap")},
                  {"depends_on", Field(spec, "depends_on")},
                  {"labels", labels.empty() ? "-" : labels},
                  {"paused", Field(spec, "paused")},
                  {"next_fire_times", Field(job, "next_fire_times")},
                  {"last_run",
                   last.is_object() ? Field(last, "id") + " (" + Field(last, "state") + ")" : "-"},
                  {"runs", counts.empty() ? "-" : counts},
                  {"created_at", Field(job, "created_at")},
                  {"updated_at", Field(job, "updated_at")},
              });
}

// ---- jobs add -----------------------------------------------------------------------------

struct AddArgs {
  std::string id;
  std::string cron, tz, at, every;
  bool shell = false;
  std::vector<std::string> command;  // everything after the first argument that is not a flag
  std::string shell_argv;
  std::string http, method, body;
  std::vector<std::string> headers;
  std::string builtin;
  int priority = 5;
  int retries = 0;
  std::string timeout;
  std::vector<std::string> depends_on;
  std::string queue;
  std::string payload;
  std::string overlap;
  std::vector<std::string> labels;
  bool paused = false;
  CLI::Option* priority_opt = nullptr;
  CLI::Option* retries_opt = nullptr;
  CLI::Option* method_opt = nullptr;
};

Json ParseJsonFlag(const std::string& flag, const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) Usage(flag + ": not valid JSON: " + text);
  return j;
}

std::pair<std::string, std::string> SplitPair(const std::string& flag, const std::string& text,
                                              const std::string& separators) {
  const size_t at = text.find_first_of(separators);
  if (at == std::string::npos || at == 0)
    Usage(flag + ": expected KEY" + separators.substr(0, 1) + "VALUE, got '" + text + "'");
  std::string value = text.substr(at + 1);
  if (!value.empty() && value.front() == ' ') value.erase(0, 1);
  return {text.substr(0, at), value};
}

// The spec JSON of `jobs add`; usage errors throw CLI::ValidationError.
Json BuildSpec(const AddArgs& a) {
  Json spec{{"id", a.id}};
  const int schedules = !a.cron.empty() + !a.at.empty() + !a.every.empty();
  if (schedules > 1) Usage("give at most one of --cron, --at, --every");
  if (!a.tz.empty() && a.cron.empty()) Usage("--tz: only with --cron");
  if (!a.cron.empty()) {
    spec["schedule"] = {{"cron", a.cron}};
    if (!a.tz.empty()) spec["schedule"]["timezone"] = a.tz;
  } else if (!a.at.empty()) {
    spec["schedule"] = {{"at", a.at}};
  } else if (!a.every.empty()) {
    auto every = ParseDuration(a.every);
    if (!every.ok()) Usage("--every: " + every.status().message());
    spec["schedule"] = {{"every_ms", every->count()}};
  }

  const bool shell = a.shell || !a.shell_argv.empty();
  const int handlers = shell + !a.http.empty() + !a.builtin.empty();
  if (handlers != 1) {
    Usage(
        "give exactly one handler: --shell CMD..., --shell-argv JSON, --http URL or --builtin "
        "NAME");
  }
  if (!a.command.empty() && a.command.front().starts_with("-")) {
    Usage("unknown option '" + a.command.front() + "'");
  }
  if (!a.command.empty() && !a.shell) {
    Usage("unexpected arguments '" + a.command.front() + "'...: a shell command follows --shell");
  }
  if ((a.method_opt->count() > 0 || !a.headers.empty() || !a.body.empty()) && a.http.empty()) {
    Usage("--method, --header and --body are for --http handlers");
  }
  if (shell) {
    if (a.shell && !a.shell_argv.empty()) Usage("give --shell or --shell-argv, not both");
    Json argv = Json::array();
    if (!a.shell_argv.empty()) {
      argv = ParseJsonFlag("--shell-argv", a.shell_argv);
      bool strings = argv.is_array() && !argv.empty();
      for (const Json& s : argv) strings = strings && s.is_string();
      if (!strings) Usage("--shell-argv: must be a non-empty JSON array of strings");
    } else if (a.command.empty()) {
      Usage(
          "--shell: the command is missing (--shell /path/to/program ARGS... or --shell 'a shell "
          "line')");
    } else if (a.command.size() == 1 &&
               a.command.front().find_first_of(kShellCharacters) != std::string::npos) {
      argv = {"sh", "-c", a.command.front()};
    } else {
      argv = a.command;
    }
    spec["handler"] = {{"type", "shell"}, {"command", argv}};
  } else if (!a.http.empty()) {
    spec["handler"] = {{"type", "http"}, {"url", a.http}};
    if (a.method_opt->count() > 0) spec["handler"]["method"] = a.method;
    for (const std::string& h : a.headers) {
      auto [k, v] = SplitPair("--header", h, ":");
      const Json given = spec["handler"].value("headers", Json::object());
      for (const auto& [name, value] : given.items()) {
        if (strcasecmp(name.c_str(), k.c_str()) == 0) Usage("--header: '" + k + "' given twice");
      }
      spec["handler"]["headers"][k] = v;
    }
    if (!a.body.empty()) spec["handler"]["body"] = a.body;
  } else {
    spec["handler"] = {{"type", "builtin"}, {"name", a.builtin}};
  }

  if (!a.queue.empty()) spec["queue"] = a.queue;
  if (!a.payload.empty()) spec["payload"] = ParseJsonFlag("--payload", a.payload);
  if (a.priority_opt->count() > 0) spec["priority"] = a.priority;
  if (a.retries_opt->count() > 0) {
    if (a.retries < 0) Usage("--retries: must be 0 or more");
    spec["retry"] = {{"max_attempts", a.retries + 1}};
  }
  if (!a.timeout.empty()) {
    auto timeout = ParseDuration(a.timeout);
    if (!timeout.ok()) Usage("--timeout: " + timeout.status().message());
    spec["timeout_ms"] = timeout->count();
  }
  if (!a.overlap.empty()) spec["overlap"] = a.overlap;
  for (const std::string& list : a.depends_on) {
    size_t start = 0;
    for (;;) {
      const size_t comma = std::min(list.find(',', start), list.size());
      const std::string id = list.substr(start, comma - start);
      if (id.empty()) Usage("--depends-on: empty job id in '" + list + "'");
      spec["depends_on"].push_back(id);
      if (comma == list.size()) break;
      start = comma + 1;
    }
  }
  for (const std::string& l : a.labels) {
    auto [k, v] = SplitPair("--label", l, ":=");
    if (spec.contains("labels") && spec["labels"].contains(k)) {
      Usage("--label: '" + k + "' given twice");
    }
    spec["labels"][k] = v;
  }
  if (a.paused) spec["paused"] = true;
  return spec;
}

void AddJobsAdd(CLI::App* jobs, int* exit_code) {
  CLI::App* cmd = jobs->add_subcommand(
      "add", "Create a job (fails if the id exists; see `jobs apply` to upsert)");
  cmd->footer(
      "Shell commands: ID comes first and the command last: everything after the program belongs "
      "to\n"
      "it, flags included. `--shell /bin/ls -l /tmp` runs the argv [\"/bin/ls\", \"-l\", "
      "\"/tmp\"]\n"
      "directly (no shell). A single argument with spaces or shell characters runs through the "
      "shell:\n"
      "`--shell 'echo hi > /tmp/x'` becomes [\"sh\", \"-c\", \"echo hi > /tmp/x\"]. --shell-argv "
      "takes\n"
      "the argv as a JSON array instead.\n"
      "Examples:\n"
      "  jobsched jobs add nightly --cron '0 2 * * *' --tz Europe/Berlin --shell /usr/bin/backup "
      "--full\n"
      "  jobsched jobs add ping --every 90s --http https://example.com/health --retries 2\n"
      "  jobsched jobs add once --at 2026-12-01T10:00:00Z --builtin noop");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<AddArgs>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("id", a->id, "Job id ([A-Za-z0-9._:-]{1,128})")->required();
  // The first argument after ID that is no flag starts the shell command; CLI11 hands it and
  // everything after it over as remaining().
  cmd->prefix_command();
  cmd->add_option("--cron", a->cron, "Cron schedule (quote it): '0 2 * * *'");
  cmd->add_option("--tz", a->tz, "IANA time zone of --cron (default UTC)");
  cmd->add_option("--at", a->at, "One run at this RFC 3339 instant");
  cmd->add_option("--every", a->every, "Run at this interval: 90s, 5m, 1h30m");
  cmd->add_flag("--shell", a->shell, "Shell handler: the command follows (see below)");
  cmd->add_option("--shell-argv", a->shell_argv,
                  "Shell handler argv as a JSON array: '[\"/bin/ls\",\"-l\"]'");
  cmd->add_option("--http", a->http, "HTTP handler: the URL to call (success = 2xx)");
  a->method_opt = cmd->add_option("--method", a->method, "HTTP method (default GET)");
  cmd->add_option("--header", a->headers, "HTTP header 'Name: value' (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--body", a->body, "HTTP request body");
  cmd->add_option("--builtin", a->builtin,
                  "Builtin handler: a function registered on the nodes (noop, sleep)");
  a->priority_opt = cmd->add_option("--priority", a->priority, "0-9, higher first (default 5)");
  a->retries_opt =
      cmd->add_option("--retries", a->retries, "Retries after a failure (max_attempts = N+1)");
  cmd->add_option("--timeout", a->timeout, "Attempt timeout: 30s, 10m (default none)");
  cmd->add_option("--depends-on", a->depends_on, "Run after these jobs succeed: ID,ID,...")
      ->allow_extra_args(false);
  cmd->add_option("--queue", a->queue, "Queue (default \"default\")")->check(kNotEmpty);
  cmd->add_option("--payload", a->payload, "JSON handed to the handler")->check(kNotEmpty);
  cmd->add_option("--overlap", a->overlap, "skip (default), allow, queue or replace");
  cmd->add_option("--label", a->labels, "Label KEY:VALUE (repeatable)")->allow_extra_args(false);
  cmd->add_flag("--paused", a->paused, "Create the job paused");
  cmd->callback([cmd, c, a, exit_code] {
    a->command = cmd->remaining();
    const Json spec = BuildSpec(*a);
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      ASSIGN_OR_RETURN(Json job, s.client.Post(s.TenantPath("/jobs"), spec));
      if (s.json) {
        PrintJson(s.out, job);
      } else {
        s.out << "created job " << Field(job, "id") << "\n";
        PrintJobDetail(s.out, job);
      }
      return Status::Ok();
    });
  });
}

// ---- jobs apply ---------------------------------------------------------------------------

// A TOML value as JSON: tables → objects, arrays → arrays, date-times → RFC 3339 strings.
Json TomlToJson(const toml::node& node) {
  if (const toml::table* t = node.as_table()) {
    Json out = Json::object();
    for (const auto& [key, value] : *t) out[std::string(key.str())] = TomlToJson(value);
    return out;
  }
  if (const toml::array* a = node.as_array()) {
    Json out = Json::array();
    for (const toml::node& value : *a) out.push_back(TomlToJson(value));
    return out;
  }
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) {
    if (!std::isfinite(f->get())) {
      const auto& where = node.source();
      Usage((where.path ? *where.path : std::string("<toml>")) + ":" +
            std::to_string(where.begin.line) + ": inf and nan have no place in a job spec");
    }
    return f->get();
  }
  if (const auto* b = node.as_boolean()) return b->get();
  std::ostringstream text;  // dates, times, date-times in their TOML (RFC 3339) form
  if (const auto* dt = node.as_date_time()) {
    text << dt->get();
  } else if (const auto* d = node.as_date()) {
    text << d->get();
  } else if (const auto* tm = node.as_time()) {
    text << tm->get();
  }
  return text.str();
}

struct LoadedSpecs {
  std::string name;  // for messages: the file, or "<stdin>"
  std::vector<Json> specs;
};

// The job specs of an apply file; errors are usage errors (exit 2).
LoadedSpecs LoadSpecFile(const std::string& file);

// ... and no job id twice in one file, where the later spec would replace the earlier one.
LoadedSpecs LoadSpecs(const std::string& file) {
  LoadedSpecs loaded = LoadSpecFile(file);
  std::map<std::string, size_t> first;
  for (size_t i = 0; i < loaded.specs.size(); ++i) {
    const Json& spec = loaded.specs[i];
    if (!spec.is_object() || !spec.contains("id") || !spec["id"].is_string()) continue;
    const auto [at, added] = first.emplace(spec["id"].get<std::string>(), i);
    if (!added) {
      Usage(loaded.name + ": jobs[" + std::to_string(i) + "].id: '" + at->first +
            "' is also the id of jobs[" + std::to_string(at->second) + "]");
    }
  }
  return loaded;
}

LoadedSpecs LoadSpecFile(const std::string& file) {
  LoadedSpecs loaded{.name = file == "-" ? "<stdin>" : file};
  std::string text;
  if (file == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    text = s.str();
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) Usage(file + ": cannot read the file");
    std::ostringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  auto ends_with = [&file](const char* ext) {
    std::string lower = file;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    return lower.ends_with(ext);
  };
  if (ends_with(".toml")) {
    toml::table root;
    try {
      root = toml::parse(text, file);
    } catch (const toml::parse_error& e) {
      Usage(file + ":" + std::to_string(e.source().begin.line) + ":" +
            std::to_string(e.source().begin.column) + ": " + std::string(e.description()));
    }
    for (const auto& [key, value] : root) {
      if (key.str() != "jobs")
        Usage(file + ": unknown top-level key '" + std::string(key.str()) +
              "' (expected [[jobs]] tables)");
    }
    const toml::array* jobs = root["jobs"].as_array();
    if (jobs == nullptr) Usage(file + ": no [[jobs]] tables");
    for (const toml::node& job : *jobs) loaded.specs.push_back(TomlToJson(job));
    return loaded;
  }
  if (file != "-" && !ends_with(".json")) {
    Usage(file + ": cannot tell the format: name it .json or .toml (or use - for JSON on stdin)");
  }
  if (JsonNestingDepth(text) > kMaxJsonNesting) Usage(loaded.name + ": JSON nested too deeply");
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::exception& e) {
    Usage(loaded.name + ": invalid JSON: " + JsonErrorText(e));
  }
  if (auto twice = FirstDuplicateKey(text)) Usage(loaded.name + ": " + *twice + ": given twice");
  if (root.is_array()) {
    for (Json& spec : root) loaded.specs.push_back(std::move(spec));
  } else if (root.is_object() && root.contains("jobs")) {
    if (root.size() != 1 || !root["jobs"].is_array()) {
      Usage(loaded.name + ": expected {\"jobs\": [spec, ...]} and nothing else at the top level");
    }
    for (Json& spec : root["jobs"]) loaded.specs.push_back(std::move(spec));
  } else if (root.is_object()) {
    loaded.specs.push_back(std::move(root));
  } else {
    Usage(loaded.name + ": expected a job spec object, an array of specs, or {\"jobs\": [...]}");
  }
  return loaded;
}

// The spec as the server would store it (a round trip through the codec), for comparison; none
// when the spec is invalid (the server then says why).
std::optional<nlohmann::json> Canonical(const Json& spec, const std::string& tenant) {
  auto parsed = ParseJobSpec(spec.dump(), tenant);
  if (!parsed.ok()) return std::nullopt;
  return nlohmann::json::parse(JobSpecToJson(*parsed));
}

// Upserts one spec: "created", "updated" or "unchanged".
Result<std::string> ApplyOne(Session& s, const Json& spec, const std::string& id) {
  const std::string path = s.TenantPath("/jobs/" + Escape(id));
  auto existing = s.client.Get(path);
  if (!existing.ok() && existing.status().code() != StatusCode::kNotFound) return existing.status();
  std::string if_match;
  if (existing.ok()) {
    const auto wanted = Canonical(spec, s.tenant);
    if (wanted && *wanted == nlohmann::json::parse((*existing)["spec"].dump()))
      return std::string("unchanged");
    if_match = Text((*existing)["version"]);
  }
  ASSIGN_OR_RETURN(Json stored, s.client.Put(path, spec, if_match));
  (void)stored;
  return std::string(existing.ok() ? "updated" : "created");
}

Status Apply(Session& s, const LoadedSpecs& loaded) {
  // Not an error (a generated file may have nothing in it), but not silence either.
  if (loaded.specs.empty()) s.err << loaded.name << ": no jobs in it: nothing applied\n";
  Json results = Json::array();
  int failed = 0;
  size_t unsent_from = loaded.specs.size();  // after the server could not be reached
  for (size_t i = 0; i < loaded.specs.size(); ++i) {
    const Json& spec = loaded.specs[i];
    const std::string where = loaded.name + ": jobs[" + std::to_string(i) + "]";
    std::string id;
    Result<std::string> result = InvalidArgument("");
    if (!spec.is_object()) {
      result = InvalidArgument("a job spec must be an object");
    } else if (!spec.contains("id") || !spec["id"].is_string() ||
               spec["id"].get<std::string>().empty()) {
      result = InvalidArgument("id: missing (every job in a file needs an id)");
    } else {
      id = spec["id"].get<std::string>();
      // Checked here too: an id with a '/' would otherwise reach the server as another path.
      Status valid = ValidateJobId(id, "id");
      result = valid.ok() ? ApplyOne(s, spec, id) : Result<std::string>(valid);
    }
    Json line{{"index", i}, {"id", id.empty() ? Json(nullptr) : Json(id)}};
    if (result.ok()) {
      line["result"] = *result;
      if (!s.json) s.out << id << ": " << *result << "\n";
    } else {
      ++failed;
      line["result"] = "error";
      line["message"] = result.status().message();
      s.err << where << " (" << (id.empty() ? "?" : id) << "): " << result.status().message()
            << "\n";
      if (result.status().code() == StatusCode::kUnavailable) unsent_from = i + 1;
    }
    results.push_back(std::move(line));
    if (unsent_from < loaded.specs.size()) break;  // the rest would fail alike: not sent
  }
  const size_t unsent = loaded.specs.size() - std::min(unsent_from, loaded.specs.size());
  for (size_t i = unsent_from; i < loaded.specs.size(); ++i) {
    const Json& spec = loaded.specs[i];
    const Json id = spec.is_object() && spec.contains("id") && spec["id"].is_string()
                        ? spec["id"]
                        : Json(nullptr);
    results.push_back({{"index", i},
                       {"id", id},
                       {"result", "not_sent"},
                       {"message", "not sent: the server could not be reached"}});
  }
  if (unsent > 0) {
    s.err << loaded.name << ": jobs[" << unsent_from << "] to jobs[" << loaded.specs.size() - 1
          << "] not sent: the server could not be reached\n";
  }
  if (s.json) PrintJson(s.out, Json{{"items", results}});
  if (failed > 0 || unsent > 0) {
    return InvalidArgument(std::to_string(failed + unsent) + " of " +
                           std::to_string(loaded.specs.size()) + " jobs in " + loaded.name +
                           " not applied");
  }
  return Status::Ok();
}

void AddJobsApply(CLI::App* jobs, int* exit_code) {
  CLI::App* cmd = jobs->add_subcommand("apply", "Create or update the jobs of a file (idempotent)");
  cmd->footer(
      "FILE is JSON (one spec, an array of specs, or {\"jobs\": [...]}) or TOML ([[jobs]] tables "
      "with the\n"
      "keys of the JSON spec; schedule, handler, retry, ... as nested tables), told apart by the "
      ".json or\n"
      ".toml extension; - reads JSON from stdin. Each job is compared with the server's copy and "
      "PUT only\n"
      "when it differs; one line per job says created, updated or unchanged. A job the server "
      "refuses is\n"
      "reported as FILE: jobs[i] (ID): MESSAGE and the others are still applied; the exit code is "
      "then 1.");
  auto c = std::make_shared<Common>();
  auto file = std::make_shared<std::string>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("-f,--file", *file, "Spec file (.json, .toml, or - for JSON on stdin)")
      ->required();
  cmd->callback([c, file, exit_code] {
    const LoadedSpecs loaded = LoadSpecs(*file);
    *exit_code = Execute(*c, [&](Session& s) { return Apply(s, loaded); });
  });
}

// ---- jobs list/get/pause/resume/trigger/rm ------------------------------------------------

void AddJobsList(CLI::App* jobs, int* exit_code) {
  struct Args {
    std::string queue, state, label;
    int limit = 100;
  };
  CLI::App* cmd = jobs->add_subcommand("list", "List jobs");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<Args>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("--queue", a->queue, "Only this queue");
  cmd->add_option("--state", a->state, "Only this state: active, paused, completed");
  cmd->add_option("--label", a->label, "Only jobs with this label KEY:VALUE (or KEY=VALUE)");
  cmd->add_option("--limit", a->limit, "At most this many jobs")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->callback([c, a, exit_code] {
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      std::vector<std::pair<std::string, std::string>> params;
      if (!a->queue.empty()) params.emplace_back("queue", a->queue);
      if (!a->state.empty()) params.emplace_back("state", a->state);
      if (!a->label.empty()) {
        const auto [key, value] = SplitPair("--label", a->label, ":=");  // as jobs add takes it
        params.emplace_back("label", key + ":" + value);
      }
      ASSIGN_OR_RETURN(Json list, ListAll(s.client, s.TenantPath("/jobs"), params, a->limit));
      if (s.json) {
        PrintJson(s.out, list);
      } else {
        PrintJobList(s.out, list["items"]);
      }
      return Status::Ok();
    });
  });
}

// A subcommand NAME ID with the common flags; `run` does the work.
void AddIdCommand(CLI::App* parent, const char* name, const char* help, const char* id_help,
                  int* exit_code, std::function<Status(Session&, const std::string&)> run) {
  CLI::App* cmd = parent->add_subcommand(name, help);
  auto c = std::make_shared<Common>();
  auto id = std::make_shared<std::string>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("id", *id, id_help)->required();
  cmd->callback([c, id, exit_code, run] {
    *exit_code = Execute(*c, [&](Session& s) { return run(s, *id); });
  });
}

Status PauseOrResume(Session& s, const std::string& id, bool pause) {
  ASSIGN_OR_RETURN(
      Json job, s.client.Post(s.TenantPath("/jobs/" + Escape(id) + (pause ? "/pause" : "/resume")),
                              Json(nullptr)));
  if (s.json) {
    PrintJson(s.out, job);
  } else if (job.value("changed", true)) {
    s.out << "job " << id << (pause ? " paused" : " resumed") << "\n";
  } else if (job.value("state", "") == "completed") {
    s.out << "job " << id << " is completed (it has nothing more to fire): not "
          << (pause ? "paused" : "resumed") << "\n";
  } else {
    s.out << "job " << id << (pause ? " was already paused" : " was not paused") << "\n";
  }
  return Status::Ok();
}

void AddJobsTrigger(CLI::App* jobs, int* exit_code) {
  CLI::App* cmd = jobs->add_subcommand(
      "trigger", "Run a job now (once per --payload; none: once with the job's payload)");
  auto c = std::make_shared<Common>();
  auto id = std::make_shared<std::string>();
  auto payloads = std::make_shared<std::vector<std::string>>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("id", *id, "Job id")->required();
  cmd->add_option("--payload", *payloads, "JSON payload of one run (repeatable: one run each)")
      ->allow_extra_args(false);
  cmd->callback([c, id, payloads, exit_code] {
    Json body = nullptr;
    if (payloads->size() == 1) {
      body = {{"payload", ParseJsonFlag("--payload", payloads->front())}};
    } else if (payloads->size() > 1) {
      body = {{"payloads", Json::array()}};
      for (const std::string& p : *payloads)
        body["payloads"].push_back(ParseJsonFlag("--payload", p));
    }
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      ASSIGN_OR_RETURN(Json out,
                       s.client.Post(s.TenantPath("/jobs/" + Escape(*id) + "/trigger"), body));
      if (s.json) {
        PrintJson(s.out, out);
        return Status::Ok();
      }
      Table t({"RUN_ID"});
      for (const Json& run : out.value("run_ids", Json::array())) t.Row({Text(run)});
      t.Print(s.out);
      return Status::Ok();
    });
  });
}

void AddJobsRm(CLI::App* jobs, int* exit_code) {
  CLI::App* cmd =
      jobs->add_subcommand("rm", "Delete a job: its schedule goes, its queued runs are cancelled");
  auto c = std::make_shared<Common>();
  auto id = std::make_shared<std::string>();
  auto kill = std::make_shared<bool>(false);
  AddCommonFlags(cmd, *c);
  cmd->add_option("id", *id, "Job id")->required();
  cmd->add_flag("--kill-running", *kill, "Also cancel its running runs");
  cmd->callback([c, id, kill, exit_code] {
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      const std::string query = *kill ? "?kill_running=true" : "";
      ASSIGN_OR_RETURN(Json out, s.client.Delete(s.TenantPath("/jobs/" + Escape(*id) + query)));
      (void)out;
      if (s.json) {
        PrintJson(s.out, Json{{"id", *id}, {"deleted", true}});
      } else {
        s.out << "deleted job " << *id << "\n";
      }
      return Status::Ok();
    });
  });
}

void AddJobsCommands(CLI::App& app, int* exit_code) {
  CLI::App* jobs = app.add_subcommand("jobs", "Create, change and inspect jobs (REST API)");
  jobs->require_subcommand(1);
  AddJobsAdd(jobs, exit_code);
  AddJobsApply(jobs, exit_code);
  AddJobsList(jobs, exit_code);
  AddIdCommand(jobs, "get", "Show a job: spec, state, next fire times, last run", "Job id",
               exit_code, [](Session& s, const std::string& id) -> Status {
                 ASSIGN_OR_RETURN(Json job, s.client.Get(s.TenantPath("/jobs/" + Escape(id))));
                 if (s.json) {
                   PrintJson(s.out, job);
                 } else {
                   PrintJobDetail(s.out, job);
                 }
                 return Status::Ok();
               });
  AddIdCommand(jobs, "pause", "Pause a job (nothing fires until resume)", "Job id", exit_code,
               [](Session& s, const std::string& id) { return PauseOrResume(s, id, true); });
  AddIdCommand(jobs, "resume", "Resume a paused job", "Job id", exit_code,
               [](Session& s, const std::string& id) { return PauseOrResume(s, id, false); });
  AddJobsTrigger(jobs, exit_code);
  AddJobsRm(jobs, exit_code);
}

// ---- runs ---------------------------------------------------------------------------------

// "2/3", and "2/1 (1 lost)" when attempts were lost with their node's lease: those do not count
// against max_attempts.
std::string AttemptText(const Json& r) {
  std::string text = Field(r, "attempt") + "/" + Field(r, "max_attempts");
  if (r.value("leases_lost", 0) > 0) text += " (" + Field(r, "leases_lost") + " lost)";
  return text;
}

void PrintRunList(std::ostream& out, const Json& items) {
  Table t({"ID", "JOB", "STATE", "REASON", "ATTEMPT", "SCHEDULED_AT", "STARTED_AT", "DURATION_MS",
           "NODE"});
  for (const Json& r : items) {
    t.Row({Field(r, "id"), Field(r, "job_id"), Field(r, "state"), Field(r, "reason"),
           AttemptText(r), Field(r, "scheduled_at"), Field(r, "started_at"),
           Field(r, "duration_ms"), Field(r, "node")});
  }
  t.Print(out);
}

void PrintRunDetail(std::ostream& out, const Json& r) {
  const Json payload = r.value("payload", Json(nullptr));
  PrintFields(out, {
                       {"id", Field(r, "id")},
                       {"job", Field(r, "job_id")},
                       {"state", Field(r, "state")},
                       {"reason", Field(r, "reason")},
                       {"attempt", AttemptText(r)},
                       {"queue", Field(r, "queue")},
                       {"priority", Field(r, "priority")},
                       {"node", Field(r, "node")},
                       {"scheduled_at", Field(r, "scheduled_at")},
                       {"created_at", Field(r, "created_at")},
                       {"started_at", Field(r, "started_at")},
                       {"finished_at", Field(r, "finished_at")},
                       {"duration_ms", Field(r, "duration_ms")},
                       {"exit_code", Field(r, "exit_code")},
                       {"http_status", Field(r, "http_status")},
                       {"error", Field(r, "error").empty() ? "-" : Field(r, "error")},
                       {"payload", payload.is_null() ? "-" : payload.dump()},
                       {"cancel_requested", Field(r, "cancel_requested")},
                   });
  const Json attempts = r.value("attempts", Json::array());
  if (!attempts.empty()) {
    out << "\nattempts:\n";
    Table t({"NUMBER", "NODE", "STARTED_AT", "FINISHED_AT", "OUTCOME", "ERROR"});
    for (const Json& a : attempts) {
      const std::string error = Field(a, "error");
      t.Row({Field(a, "number"), Field(a, "node"), Field(a, "started_at"), Field(a, "finished_at"),
             Field(a, "outcome"), error.empty() ? "-" : error});
    }
    t.Print(out);
  }
  // The job's output, with its control characters shown (^[ for ESC) instead of sent to the
  // terminal, where an escape sequence could rewrite the screen or the window title.
  std::string output;
  for (const char c : r.value("output", std::string())) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
      output += '^';
      output += static_cast<char>(u ^ 0x40);
    } else {
      output += c;
    }
  }
  if (!output.empty()) {
    if (r.value("output_truncated", false)) {
      out << "\noutput (the end of " << r.value("output_bytes", int64_t{0}) << " bytes):\n"
          << output;
    } else {
      out << "\noutput:\n" << output;
    }
    if (output.back() != '\n') out << "\n";
  }
}

void AddRunsCommands(CLI::App& app, int* exit_code) {
  CLI::App* runs = app.add_subcommand("runs", "Inspect and cancel runs (REST API)");
  runs->require_subcommand(1);

  struct ListArgs {
    std::string job, state;
    int limit = 100;
  };
  CLI::App* list = runs->add_subcommand("list", "List runs, newest first");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<ListArgs>();
  AddCommonFlags(list, *c);
  list->add_option("--job", a->job, "Only runs of this job");
  list->add_option("--state", a->state,
                   "Only this state: queued, running, retry_wait, succeeded, failed, timed_out, "
                   "cancelled, skipped");
  list->add_option("--limit", a->limit, "At most this many runs")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  list->callback([c, a, exit_code] {
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      std::vector<std::pair<std::string, std::string>> params;
      if (!a->state.empty()) params.emplace_back("state", a->state);
      const std::string path = a->job.empty() ? s.TenantPath("/runs")
                                              : s.TenantPath("/jobs/" + Escape(a->job) + "/runs");
      ASSIGN_OR_RETURN(Json out, ListAll(s.client, path, params, a->limit));
      if (s.json) {
        PrintJson(s.out, out);
      } else {
        PrintRunList(s.out, out["items"]);
      }
      return Status::Ok();
    });
  });

  AddIdCommand(runs, "get", "Show a run: state, attempts, output", "Run id", exit_code,
               [](Session& s, const std::string& id) -> Status {
                 ASSIGN_OR_RETURN(Json run, s.client.Get(s.TenantPath("/runs/" + Escape(id))));
                 if (s.json) {
                   PrintJson(s.out, run);
                 } else {
                   PrintRunDetail(s.out, run);
                 }
                 return Status::Ok();
               });
  AddIdCommand(
      runs, "cancel", "Cancel a queued or running run", "Run id", exit_code,
      [](Session& s, const std::string& id) -> Status {
        ASSIGN_OR_RETURN(Json run, s.client.Post(s.TenantPath("/runs/" + Escape(id) + "/cancel"),
                                                 Json(nullptr)));
        if (s.json) {
          PrintJson(s.out, run);
        } else {
          s.out << "run " << id << ": cancel requested (state " << Field(run, "state") << ")\n";
        }
        return Status::Ok();
      });
}

// ---- events -------------------------------------------------------------------------------

struct EventsArgs {
  std::string job;
  int64_t count = 0;  // 0 = until interrupted
  int64_t after = -1;
};

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

Status FollowEvents(Session& s, const EventsArgs& a) {
  std::string path = s.TenantPath("/events");
  std::string query;
  if (!a.job.empty()) query += "job=" + Escape(a.job);
  if (a.after >= 0)
    query += std::string(query.empty() ? "" : "&") + "after=" + std::to_string(a.after);
  if (!query.empty()) path += "?" + query;

  int64_t printed = 0;
  bool header = false;
  bool connected_once = false;
  std::string last_id;
  auto backoff = std::chrono::milliseconds(250);
  auto on_open = [&] {
    connected_once = true;
    backoff = std::chrono::milliseconds(250);
    if (!s.json && !header) {
      s.out << Pad("TIME", 24) << "  " << Pad("TYPE", 20) << "  " << Pad("JOB", 24) << "  RUN"
            << std::endl;
      header = true;
    }
  };
  auto on_event = [&](const SseEvent& e) {
    if (s.json) {
      s.out << e.data << std::endl;
    } else {
      const Json data = Json::parse(e.data, nullptr, /*allow_exceptions=*/false);
      const Json d = data.is_object() ? data : Json::object();
      s.out << Pad(Field(d, "time"), 24) << "  "
            << Pad(d.contains("type") ? Field(d, "type") : e.type, 20) << "  "
            << Pad(Field(d, "job_id").empty() ? "-" : Field(d, "job_id"), 24) << "  "
            << Field(d, "run_id") << std::endl;
    }
    ++printed;
    return a.count <= 0 || printed < a.count;
  };
  for (;;) {
    Status status = s.client.Stream(path, last_id, on_open, on_event);
    if (status.ok()) return status;  // --count reached
    // Refusals (bad key, unknown tenant, bad parameter) do not get better by retrying; a server
    // never reached is reported at once.
    if (status.code() != StatusCode::kUnavailable || !connected_once) return status;
    s.err << "events: " << status.message() << "; reconnecting"
          << (last_id.empty() ? "" : " after event " + last_id) << std::endl;
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(10));
  }
}

void AddEventsCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd =
      app.add_subcommand("events", "Follow run and job changes live (Server-Sent Events)");
  cmd->footer(
      "Prints one line per event (TIME TYPE JOB RUN), or with -o json the event's JSON, one per "
      "line.\n"
      "A dropped connection is resumed where it left off (Last-Event-ID). Ends on Ctrl-C or "
      "--count.");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<EventsArgs>();
  AddCommonFlags(cmd, *c);
  cmd->add_option("--job", a->job, "Only events of this job");
  cmd->add_option("--count", a->count, "Stop after this many events (default: never)")
      ->check(kWholeNumber & CLI::NonNegativeNumber);
  cmd->add_option(
         "--after", a->after,
         "Start after this event sequence number (0: all retained events; default: only new ones)")
      ->check(kWholeNumber & CLI::NonNegativeNumber);
  cmd->callback([c, a, exit_code] {
    *exit_code = Execute(*c, [&](Session& s) { return FollowEvents(s, *a); });
  });
}

// ---- nodes, keys, tenants -----------------------------------------------------------------

// A command without a tenant: `run` does the work.
CLI::App* AddAdminCommand(CLI::App* parent, const char* name, const char* help, int* exit_code,
                          std::function<Status(Session&)> run) {
  CLI::App* cmd = parent->add_subcommand(name, help);
  auto c = std::make_shared<Common>();
  AddCommonFlags(cmd, *c, /*tenant_flag=*/false);
  cmd->callback([c, exit_code, run] { *exit_code = Execute(*c, run); });
  return cmd;
}

void PrintKeys(std::ostream& out, const Json& items) {
  Table t({"ID", "NAME", "ROLE", "TENANT", "ALLOW_SHELL", "CREATED_AT"});
  for (const Json& k : items) {
    const std::string name = Field(k, "name");
    t.Row({Field(k, "id"), name.empty() ? "-" : name, Field(k, "role"), Field(k, "tenant"),
           Field(k, "allow_shell"), Field(k, "created_at")});
  }
  t.Print(out);
}

void PrintTenants(std::ostream& out, const Json& items) {
  Table t({"ID", "MAX_JOBS", "MAX_CONCURRENT_RUNS", "QUEUE_LIMITS", "CREATED_AT", "UPDATED_AT"});
  for (const Json& x : items) {
    std::string limits;
    const Json queue_limits = x.value("queue_limits", Json::object());
    for (const auto& [queue, limit] : queue_limits.items()) {
      limits += (limits.empty() ? "" : ",") + queue + "=" + Text(limit);
    }
    t.Row({Field(x, "id"), Field(x, "max_jobs"), Field(x, "max_concurrent_runs"),
           limits.empty() ? "-" : limits, Field(x, "created_at"), Field(x, "updated_at")});
  }
  t.Print(out);
}

void AddNodesCommand(CLI::App& app, int* exit_code) {
  AddAdminCommand(
      &app, "nodes", "The cluster: nodes, leader, epoch and tenant assignment (admin)", exit_code,
      [](Session& s) -> Status {
        ASSIGN_OR_RETURN(Json out, s.client.Get("/v1/cluster"));
        if (s.json) {
          PrintJson(s.out, out);
          return Status::Ok();
        }
        Table t({"ID", "ROLE", "ALIVE", "TENANTS", "HOST", "PID", "VERSION", "QUEUES",
                 "CONCURRENCY", "HEARTBEAT_AT"});
        for (const Json& n : out.value("nodes", Json::array())) {
          const Json queues = n.value("queues", Json::array());
          const Json tenants = n.value("tenants", Json::array());
          t.Row({Field(n, "id"), n.value("leader", false) ? "leader" : "-", Field(n, "alive"),
                 tenants.empty() ? "-" : Text(tenants), Field(n, "host"), Field(n, "pid"),
                 Field(n, "version"), queues.empty() ? "*" : Text(queues), Field(n, "concurrency"),
                 Field(n, "heartbeat_at")});
        }
        t.Print(s.out);
        const Json& leader = out["leader"];
        s.out << "\nleader: "
              << (leader.is_object() ? Field(leader, "node") + " (epoch " + Field(leader, "epoch") +
                                           ", lease until " + Field(leader, "expires_at") + ")"
                                     : std::string("none"))
              << "\n";
        return Status::Ok();
      });
}

void AddKeysCommands(CLI::App& app, int* exit_code) {
  CLI::App* keys = app.add_subcommand("keys", "Manage API keys (admin)");
  keys->require_subcommand(1);

  struct CreateArgs {
    std::string role, tenant, name;
    bool allow_shell = false;
  };
  CLI::App* create = keys->add_subcommand("create", "Create an API key; it is printed once");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<CreateArgs>();
  AddCommonFlags(create, *c, /*tenant_flag=*/false);
  create->add_option("--role", a->role, "admin, operator or viewer")
      ->required()
      ->check(CLI::IsMember({"admin", "operator", "viewer"}));
  create->add_option(
      "--tenant", a->tenant,
      "Tenant of an operator or viewer key (env JOBSCHED_TENANT; default \"default\")");
  create->add_flag("--allow-shell", a->allow_shell, "The key may create shell jobs");
  create->add_option("--name", a->name, "A name to recognise the key by");
  create->callback([c, a, exit_code] {
    Json body{{"role", a->role}};
    if (a->role != "admin") {
      c->flags.tenant = a->tenant;  // resolved like the connection's tenant: flag > env > default
    } else if (!a->tenant.empty()) {
      body["tenant"] = a->tenant;  // the server explains that admin keys have none
    }
    if (a->allow_shell) body["allow_shell"] = true;
    if (!a->name.empty()) body["name"] = a->name;
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      if (a->role != "admin") body["tenant"] = s.tenant;
      ASSIGN_OR_RETURN(Json key, s.client.Post("/v1/keys", body));
      if (s.json) {
        PrintJson(s.out, key);
      } else {
        PrintFields(s.out, {{"id", Field(key, "id")},
                            {"name", Field(key, "name").empty() ? "-" : Field(key, "name")},
                            {"role", Field(key, "role")},
                            {"tenant", Field(key, "tenant")},
                            {"allow_shell", Field(key, "allow_shell")},
                            {"key", Field(key, "key")}});
      }
      s.err
          << "warning: store the key now: it is not shown again (the server keeps only its hash)\n";
      return Status::Ok();
    });
  });

  AddAdminCommand(keys, "list", "List API keys (without secrets)", exit_code,
                  [](Session& s) -> Status {
                    ASSIGN_OR_RETURN(Json out, s.client.Get("/v1/keys"));
                    if (s.json) {
                      PrintJson(s.out, out);
                    } else {
                      PrintKeys(s.out, out["items"]);
                    }
                    return Status::Ok();
                  });

  CLI::App* revoke = keys->add_subcommand("revoke", "Revoke an API key");
  auto rc = std::make_shared<Common>();
  auto id = std::make_shared<std::string>();
  AddCommonFlags(revoke, *rc, /*tenant_flag=*/false);
  revoke->add_option("id", *id, "Key id (the part after js_ and before the next _)")->required();
  revoke->callback([rc, id, exit_code] {
    *exit_code = Execute(*rc, [&](Session& s) -> Status {
      ASSIGN_OR_RETURN(Json out, s.client.Delete("/v1/keys/" + Escape(*id)));
      (void)out;
      if (s.json) {
        PrintJson(s.out, Json{{"id", *id}, {"revoked", true}});
      } else {
        s.out << "revoked key " << *id << "\n";
      }
      return Status::Ok();
    });
  });
}

void AddTenantsCommands(CLI::App& app, int* exit_code) {
  CLI::App* tenants = app.add_subcommand("tenants", "Manage tenants and their quotas (admin)");
  tenants->require_subcommand(1);
  AddAdminCommand(tenants, "list", "List tenants", exit_code, [](Session& s) -> Status {
    ASSIGN_OR_RETURN(Json out, s.client.Get("/v1/tenants"));
    if (s.json) {
      PrintJson(s.out, out);
    } else {
      PrintTenants(s.out, out["items"]);
    }
    return Status::Ok();
  });

  struct SetArgs {
    std::string tenant;
    int64_t max_jobs = 0;
    int64_t max_runs = 0;
    std::vector<std::string> queue_limits;
    bool no_queue_limits = false;
    CLI::Option* max_jobs_opt = nullptr;
    CLI::Option* max_runs_opt = nullptr;
  };
  CLI::App* set = tenants->add_subcommand("set", "Create a tenant or change its quotas");
  auto c = std::make_shared<Common>();
  auto a = std::make_shared<SetArgs>();
  AddCommonFlags(set, *c, /*tenant_flag=*/false);
  set->add_option("tenant", a->tenant, "Tenant id ([a-z0-9][a-z0-9_-]{0,62})")->required();
  a->max_jobs_opt =
      set->add_option("--max-jobs", a->max_jobs, "Most jobs the tenant may have (0 = unlimited)")
          ->check(kWholeNumber);
  a->max_runs_opt = set->add_option("--max-concurrent-runs", a->max_runs,
                                    "Most runs running at once (0 = unlimited)")
                        ->check(kWholeNumber);
  CLI::Option* limit_opt =
      set->add_option("--queue-limit", a->queue_limits,
                      "Most runs of a queue running at once, QUEUE=N (repeatable; replaces the "
                      "tenant's queue limits)")
          ->allow_extra_args(false);
  set->add_flag("--no-queue-limits", a->no_queue_limits, "Remove every queue limit of the tenant")
      ->excludes(limit_opt);
  set->callback([c, a, exit_code] {
    Json body = Json::object();
    if (a->max_jobs_opt->count() > 0) body["max_jobs"] = a->max_jobs;
    if (a->max_runs_opt->count() > 0) body["max_concurrent_runs"] = a->max_runs;
    if (a->no_queue_limits) body["queue_limits"] = Json::object();
    for (const std::string& text : a->queue_limits) {
      auto [queue, value] = SplitPair("--queue-limit", text, "=");
      int64_t limit = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size()) {
        Usage("--queue-limit: the limit of queue '" + queue + "' must be a whole number, got '" +
              value + "'");
      }
      body["queue_limits"][queue] = limit;
    }
    *exit_code = Execute(*c, [&](Session& s) -> Status {
      ASSIGN_OR_RETURN(Json out, s.client.Put("/v1/tenants/" + Escape(a->tenant), body));
      if (s.json) {
        PrintJson(s.out, out);
      } else {
        PrintTenants(s.out, Json::array({out}));
      }
      return Status::Ok();
    });
  });
}

}  // namespace

void AddClientCommands(CLI::App& app, int* exit_code) {
  AddJobsCommands(app, exit_code);
  AddRunsCommands(app, exit_code);
  AddEventsCommand(app, exit_code);
  AddNodesCommand(app, exit_code);
  AddKeysCommands(app, exit_code);
  AddTenantsCommands(app, exit_code);
}

}  // namespace jobsched::cli
