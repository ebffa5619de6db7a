#include "core/job_codec.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/cron.h"
#include "core/http_url.h"
#include "core/time_util.h"

namespace jobsched {
namespace {

using Json = nlohmann::json;

constexpr int kMaxAttempts = 100;
constexpr int64_t kMaxDurationMs = int64_t{365} * 24 * 3600 * 1000;
constexpr int64_t kMaxOutputBytes = int64_t{16} << 20;
constexpr int kMaxCpuCores = 1024;
constexpr int64_t kMaxCpuSeconds = 7 * 24 * 3600;
constexpr int64_t kMaxMemoryMb = int64_t{1} << 20;
constexpr size_t kMaxDependencies = 256;
constexpr size_t kMaxLabels = 64;

Status FieldError(const std::string& field, const std::string& problem) {
  return InvalidArgument(field + ": " + problem, field);
}

std::string Join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

}  // namespace

int JsonNestingDepth(std::string_view text) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonNesting) break;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

namespace {

// SAX events of a JSON text -> the first member name repeated in one object.
class DuplicateKeyFinder {
 public:
  bool null() { return Value(); }
  bool boolean(bool) { return Value(); }
  bool number_integer(Json::number_integer_t) { return Value(); }
  bool number_unsigned(Json::number_unsigned_t) { return Value(); }
  bool number_float(Json::number_float_t, const std::string&) { return Value(); }
  bool string(std::string&) { return Value(); }
  bool binary(Json::binary_t&) { return Value(); }
  bool start_object(std::size_t) {
    Value();
    frames_.push_back({.object = true});
    return true;
  }
  bool key(std::string& name) {
    Frame& f = frames_.back();
    f.key = name;
    if (!f.keys.insert(name).second) {
      duplicate_ = Path();
      return false;
    }
    return true;
  }
  bool end_object() {
    frames_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    Value();
    frames_.push_back({.object = false});
    return true;
  }
  bool end_array() {
    frames_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }
  std::optional<std::string> duplicate() const { return duplicate_; }

 private:
  struct Frame {
    bool object = false;
    int64_t index = -1;  // arrays: of the current element
    std::string key;     // objects: of the current member
    std::set<std::string> keys;
  };
  // A value starts: in an array, it is the next element.
  bool Value() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
    return true;
  }
  std::string Path() const {
    std::string path;
    for (const Frame& f : frames_) {
      if (f.object) {
        path += (path.empty() ? "" : ".") + f.key;
      } else {
        path += "[" + std::to_string(f.index) + "]";
      }
    }
    return path;
  }
  std::vector<Frame> frames_;
  std::optional<std::string> duplicate_;
};

}  // namespace

std::optional<std::string> FirstDuplicateKey(std::string_view json) {
  DuplicateKeyFinder finder;
  try {
    Json::sax_parse(json, &finder);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return finder.duplicate();
}

std::string JsonErrorText(const std::exception& e) {
  std::string_view what = e.what();
  if (what.starts_with("[json.exception.")) {
    const size_t end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  return std::string(what);
}

namespace {

// Reads fields of one JSON object, remembering which were seen, so that unknown ones can be
// reported with their path.
class ObjectReader {
 public:
  ObjectReader(const Json& object, std::string path) : object_(object), path_(std::move(path)) {}

  const Json* Get(const std::string& key) {
    seen_.insert(key);
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(const std::string& key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }
  std::string Path(const std::string& key) const { return Join(path_, key); }
  const std::string& path() const { return path_; }

  Status String(const std::string& key, std::string& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_string()) return FieldError(Path(key), "must be a string");
    out = v->get<std::string>();
    return Status::Ok();
  }
  Status Bool(const std::string& key, bool& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_boolean()) return FieldError(Path(key), "must be true or false");
    out = v->get<bool>();
    return Status::Ok();
  }
  Status Int(const std::string& key, int64_t min, int64_t max, int64_t& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    const auto out_of_range = [&] {
      return FieldError(Path(key),
                        "must be between " + std::to_string(min) + " and " + std::to_string(max));
    };
    if (!v->is_number_integer()) {
      // A whole number too large for an integer (1e30, 99999999999999999999) is out of range.
      const double d = v->is_number_float() ? v->get<double>() : 0.5;
      if (d == std::floor(d) && (d < static_cast<double>(min) || d > static_cast<double>(max))) {
        return out_of_range();
      }
      return FieldError(Path(key), "must be an integer");
    }
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max)) {
      return out_of_range();
    }
    const int64_t n = v->get<int64_t>();
    if (n < min || n > max) return out_of_range();
    out = n;
    return Status::Ok();
  }
  Status Millis(const std::string& key, int64_t min, Duration& out) {
    int64_t n = out.count();
    RETURN_IF_ERROR(Int(key, min, kMaxDurationMs, n));
    out = Duration(n);
    return Status::Ok();
  }
  Status Number(const std::string& key, double min, double max, double& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_number()) return FieldError(Path(key), "must be a number");
    const double d = v->get<double>();
    if (!(d >= min && d <= max)) {
      // Whole bounds read as integers ("between 0 and 1", not "0.0 and 1.0").
      auto text = [](double x) {
        return x == std::trunc(x) ? std::to_string(static_cast<int64_t>(x)) : Json(x).dump();
      };
      return FieldError(Path(key), "must be between " + text(min) + " and " + text(max));
    }
    out = d;
    return Status::Ok();
  }
  Status Time(const std::string& key, std::optional<TimePoint>& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_string()) return FieldError(Path(key), "must be an RFC 3339 time string");
    auto t = ParseRfc3339(v->get<std::string>());
    if (!t.ok()) return FieldError(Path(key), t.status().message());
    out = *t;
    return Status::Ok();
  }
  Status StringMap(const std::string& key, std::map<std::string, std::string>& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_object()) return FieldError(Path(key), "must be an object of strings");
    for (const auto& [k, value] : v->items()) {
      if (!value.is_string()) return FieldError(Path(key) + "." + k, "must be a string");
      out[k] = value.get<std::string>();
    }
    return Status::Ok();
  }
  Status StringList(const std::string& key, std::vector<std::string>& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_array()) return FieldError(Path(key), "must be an array of strings");
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) {
        return FieldError(Path(key) + "[" + std::to_string(i) + "]", "must be a string");
      }
      out.push_back((*v)[i].get<std::string>());
    }
    return Status::Ok();
  }
  template <typename E, size_t N>
  Status Enum(const std::string& key, const std::pair<const char*, E> (&names)[N], E& out) {
    const Json* v = Get(key);
    if (v == nullptr) return Status::Ok();
    std::string expected;
    for (const auto& [name, value] : names) {
      if (v->is_string() && v->get<std::string>() == name) {
        out = value;
        return Status::Ok();
      }
      expected += expected.empty() ? "" : ", ";
      expected += name;
    }
    return FieldError(Path(key), "must be one of " + expected);
  }
  // An object member: returns the reader of a nested object (nullptr when absent).
  Result<std::optional<ObjectReader>> Object(const std::string& key) {
    const Json* v = Get(key);
    if (v == nullptr) return std::optional<ObjectReader>();
    if (!v->is_object()) return FieldError(Path(key), "must be an object");
    return std::optional<ObjectReader>(ObjectReader(*v, Path(key)));
  }

  // kInvalidArgument for the first member not read.
  Status NoUnknownFields() const {
    for (const auto& [key, value] : object_.items()) {
      if (!seen_.count(key)) return FieldError(Path(key), "unknown field");
    }
    return Status::Ok();
  }

 private:
  const Json& object_;
  std::string path_;
  std::set<std::string> seen_;
};

constexpr std::pair<const char*, Backoff> kBackoffs[] = {{"fixed", Backoff::kFixed},
                                                         {"exponential", Backoff::kExponential}};
constexpr std::pair<const char*, Overlap> kOverlaps[] = {{"skip", Overlap::kSkip},
                                                         {"allow", Overlap::kAllow},
                                                         {"queue", Overlap::kQueue},
                                                         {"replace", Overlap::kReplace}};
constexpr std::pair<const char*, Misfire> kMisfires[] = {
    {"fire_once", Misfire::kFireOnce}, {"skip", Misfire::kSkip}, {"fire_all", Misfire::kFireAll}};
constexpr std::pair<const char*, HandlerSpec::Type> kHandlerTypes[] = {
    {"builtin", HandlerSpec::Type::kBuiltin},
    {"shell", HandlerSpec::Type::kShell},
    {"http", HandlerSpec::Type::kHttp}};
constexpr std::pair<const char*, RunState> kRunStates[] = {
    {"queued", RunState::kQueued},        {"running", RunState::kRunning},
    {"retry_wait", RunState::kRetryWait}, {"succeeded", RunState::kSucceeded},
    {"failed", RunState::kFailed},        {"timed_out", RunState::kTimedOut},
    {"cancelled", RunState::kCancelled},  {"skipped", RunState::kSkipped}};
constexpr std::pair<const char*, JobState> kJobStates[] = {{"active", JobState::kActive},
                                                           {"paused", JobState::kPaused},
                                                           {"completed", JobState::kCompleted}};
constexpr std::pair<const char*, RunReason> kRunReasons[] = {
    {"schedule", RunReason::kSchedule},
    {"manual", RunReason::kManual},
    {"dependency", RunReason::kDependency},
    {"misfire_catchup", RunReason::kMisfireCatchup}};

template <typename E, size_t N>
const char* NameOf(const std::pair<const char*, E> (&names)[N], E value) {
  for (const auto& [name, v] : names) {
    if (v == value) return name;
  }
  return "unknown";
}

template <typename E, size_t N>
Result<E> ValueOf(const std::pair<const char*, E> (&names)[N], std::string_view name,
                  const char* what) {
  for (const auto& [n, v] : names) {
    if (name == n) return v;
  }
  return InvalidArgument("unknown " + std::string(what) + " '" + std::string(name) + "'");
}

Status ParseSchedule(ObjectReader& r, Schedule& s) {
  const bool cron = r.Has("cron");
  const bool at = r.Has("at");
  const bool every = r.Has("every_ms");
  if (cron + at + every > 1) {
    return FieldError(r.path(), "give exactly one of cron, at, every_ms");
  }

  if (cron) {
    s.kind = Schedule::Kind::kCron;
    RETURN_IF_ERROR(r.String("cron", s.cron));
  } else if (at) {
    s.kind = Schedule::Kind::kAt;
    std::optional<TimePoint> t;
    RETURN_IF_ERROR(r.Time("at", t));
    s.at = *t;
  } else if (every) {
    s.kind = Schedule::Kind::kEvery;
    RETURN_IF_ERROR(r.Millis("every_ms", 1, s.every));
  }
  if (r.Has("timezone") && !cron) return FieldError(r.Path("timezone"), "only allowed with cron");
  RETURN_IF_ERROR(r.String("timezone", s.timezone));  // "": refused by ValidateJobSpec
  RETURN_IF_ERROR(r.Millis("jitter_ms", 0, s.jitter));
  RETURN_IF_ERROR(r.Time("start_at", s.start_at));
  RETURN_IF_ERROR(r.Time("end_at", s.end_at));
  RETURN_IF_ERROR(r.NoUnknownFields());
  if (s.kind == Schedule::Kind::kNone && (s.start_at || s.end_at || s.jitter.count() != 0)) {
    return FieldError(r.path(), "start_at, end_at and jitter_ms need one of cron, at, every_ms");
  }
  // "@every 90s" is sugar for every_ms.
  if (s.kind == Schedule::Kind::kCron && s.cron.starts_with("@every")) {
    auto parsed = CronSchedule::Parse(s.cron, s.timezone);
    if (!parsed.ok()) {
      const std::string& m = parsed.status().message();
      if (m.starts_with("timezone: ")) return FieldError(r.Path("timezone"), m.substr(10));
      return FieldError(r.Path("cron"), m);
    }
    s.kind = Schedule::Kind::kEvery;
    s.every = *parsed->every();
    if (s.every.count() > kMaxDurationMs) {
      return FieldError(r.Path("cron"), "@every: an interval of at most 365 days");
    }
    s.cron.clear();
    s.timezone = "UTC";
  }
  return Status::Ok();
}

Status ParseHandler(ObjectReader& r, HandlerSpec& h) {
  if (!r.Has("type")) return FieldError(r.Path("type"), "missing (builtin, shell or http)");
  RETURN_IF_ERROR(r.Enum("type", kHandlerTypes, h.type));
  switch (h.type) {
    case HandlerSpec::Type::kBuiltin:
      RETURN_IF_ERROR(r.String("name", h.name));
      break;
    case HandlerSpec::Type::kShell:
      RETURN_IF_ERROR(r.StringList("command", h.command));
      RETURN_IF_ERROR(r.StringMap("env", h.env));
      RETURN_IF_ERROR(r.String("cwd", h.cwd));
      break;
    case HandlerSpec::Type::kHttp:
      RETURN_IF_ERROR(r.String("method", h.method));
      RETURN_IF_ERROR(r.String("url", h.url));
      RETURN_IF_ERROR(r.StringMap("headers", h.headers));
      RETURN_IF_ERROR(r.String("body", h.body));
      break;
  }
  if (Status s = r.NoUnknownFields(); !s.ok()) {
    return FieldError(s.field(), "unknown field for a " +
                                     std::string(NameOf(kHandlerTypes, h.type)) + " handler");
  }
  return Status::Ok();
}

// The retry defaults of docs/job-spec.md, which matter once retries are asked for, are the
// struct's.
Status ParseSpecObject(const Json& j, JobSpec& spec) {
  if (!j.is_object()) return InvalidArgument("a job spec must be a JSON object");
  ObjectReader r(j, "");
  RETURN_IF_ERROR(r.String("id", spec.id));
  RETURN_IF_ERROR(r.String("queue", spec.queue));
  ASSIGN_OR_RETURN(auto schedule, r.Object("schedule"));
  if (schedule) RETURN_IF_ERROR(ParseSchedule(*schedule, spec.schedule));
  ASSIGN_OR_RETURN(auto handler, r.Object("handler"));
  // A missing handler is said after unknown fields: a misspelt one ("Handler") says more.
  if (handler) RETURN_IF_ERROR(ParseHandler(*handler, spec.handler));
  if (const Json* payload = r.Get("payload")) spec.payload = payload->dump();
  int64_t priority = spec.priority;
  RETURN_IF_ERROR(r.Int("priority", 0, 9, priority));
  spec.priority = static_cast<int>(priority);
  ASSIGN_OR_RETURN(auto retry, r.Object("retry"));
  if (retry) {
    int64_t max_attempts = spec.retry.max_attempts;
    RETURN_IF_ERROR(retry->Int("max_attempts", 1, kMaxAttempts, max_attempts));
    spec.retry.max_attempts = static_cast<int>(max_attempts);
    RETURN_IF_ERROR(retry->Enum("backoff", kBackoffs, spec.retry.backoff));
    RETURN_IF_ERROR(retry->Millis("initial_delay_ms", 0, spec.retry.initial_delay));
    RETURN_IF_ERROR(retry->Millis("max_delay_ms", 0, spec.retry.max_delay));
    RETURN_IF_ERROR(retry->Number("jitter", 0, 1, spec.retry.jitter));
    RETURN_IF_ERROR(retry->NoUnknownFields());
  }
  RETURN_IF_ERROR(r.Millis("timeout_ms", 0, spec.timeout));
  RETURN_IF_ERROR(r.Enum("overlap", kOverlaps, spec.overlap));
  ASSIGN_OR_RETURN(auto misfire, r.Object("misfire"));
  if (misfire) {
    RETURN_IF_ERROR(misfire->Enum("policy", kMisfires, spec.misfire.policy));
    RETURN_IF_ERROR(misfire->Millis("grace_ms", 0, spec.misfire.grace));
    RETURN_IF_ERROR(misfire->NoUnknownFields());
  }
  ASSIGN_OR_RETURN(auto limits, r.Object("limits"));
  if (limits) {
    RETURN_IF_ERROR(limits->Int("cpu_seconds", 0, kMaxCpuSeconds, spec.limits.cpu_seconds));
    RETURN_IF_ERROR(limits->Int("memory_mb", 0, kMaxMemoryMb, spec.limits.memory_mb));
    RETURN_IF_ERROR(
        limits->Int("max_output_bytes", 0, kMaxOutputBytes, spec.limits.max_output_bytes));
    RETURN_IF_ERROR(limits->Number("cpu_cores", 0, kMaxCpuCores, spec.limits.cpu_cores));
    RETURN_IF_ERROR(limits->NoUnknownFields());
  }
  RETURN_IF_ERROR(r.StringList("depends_on", spec.depends_on));
  RETURN_IF_ERROR(r.StringMap("labels", spec.labels));
  RETURN_IF_ERROR(r.Bool("paused", spec.paused));
  RETURN_IF_ERROR(r.NoUnknownFields());
  if (!handler) return FieldError("handler", "missing");
  return Status::Ok();
}

bool AllCharsIn(std::string_view s, bool (*ok)(char)) {
  return std::all_of(s.begin(), s.end(), ok);
}
bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

Json OptionalTime(const std::optional<TimePoint>& t) {
  return t ? Json(FormatRfc3339(*t)) : Json(nullptr);
}

}  // namespace

Status ValidateJobId(std::string_view id, const std::string& field) {
  if (id.empty()) return FieldError(field, "missing");
  if (id.size() > 128) return FieldError(field, "longer than 128 characters");
  if (!AllCharsIn(
          id, [](char c) { return IsAlnum(c) || c == '.' || c == '_' || c == ':' || c == '-'; })) {
    return FieldError(field, "'" + std::string(id) + "' may only contain A-Z a-z 0-9 . _ : -");
  }
  // In a URL path, these mean "this" and "the parent": the job could not be addressed.
  if (id == "." || id == "..") return FieldError(field, "'" + std::string(id) + "' is reserved");
  return Status::Ok();
}

Status ValidateTenantId(std::string_view id, const std::string& field) {
  auto lower = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (id.empty() || id.size() > 63 || !lower(id[0]) || !AllCharsIn(id, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      })) {
    return FieldError(field, "'" + std::string(id) + "' must match [a-z0-9][a-z0-9_-]{0,62}");
  }
  return Status::Ok();
}

Status ValidateQueueName(std::string_view name, const std::string& field) {
  if (name.empty() || name.size() > 64 ||
      !AllCharsIn(name, [](char c) { return IsAlnum(c) || c == '.' || c == '_' || c == '-'; })) {
    return FieldError(field, "'" + std::string(name) + "' must match [A-Za-z0-9._-]{1,64}");
  }
  return Status::Ok();
}

namespace {

// The bounds the JSON reader applies as it reads (ParseSpecObject), for specs built in C++.
Status CheckBounds(const JobSpec& spec) {
  const auto millis = [](const char* field, Duration d) {
    return d.count() > kMaxDurationMs ? FieldError(field, "must be at most 365 days (" +
                                                              std::to_string(kMaxDurationMs) + ")")
                                      : Status::Ok();
  };
  const auto instant = [](const char* field, const std::optional<TimePoint>& t) {
    return t && !InRfc3339Range(*t) ? FieldError(field, "outside the years 0000-9999 in UTC")
                                    : Status::Ok();
  };
  const Schedule& s = spec.schedule;
  if (s.kind == Schedule::Kind::kAt) RETURN_IF_ERROR(instant("schedule.at", s.at));
  RETURN_IF_ERROR(instant("schedule.start_at", s.start_at));
  RETURN_IF_ERROR(instant("schedule.end_at", s.end_at));
  RETURN_IF_ERROR(millis("schedule.jitter_ms", s.jitter));
  RETURN_IF_ERROR(millis("retry.initial_delay_ms", spec.retry.initial_delay));
  RETURN_IF_ERROR(millis("retry.max_delay_ms", spec.retry.max_delay));
  RETURN_IF_ERROR(millis("timeout_ms", spec.timeout));
  RETURN_IF_ERROR(millis("misfire.grace_ms", spec.misfire.grace));
  if (spec.limits.cpu_seconds > kMaxCpuSeconds) {
    return FieldError("limits.cpu_seconds", "must be at most " + std::to_string(kMaxCpuSeconds));
  }
  if (spec.limits.memory_mb > kMaxMemoryMb) {
    return FieldError("limits.memory_mb", "must be at most " + std::to_string(kMaxMemoryMb));
  }
  return Status::Ok();
}

// The fields of the other handler types are left empty (a spec built in code: JSON cannot set
// them).
Status CheckHandlerFields(const HandlerSpec& h) {
  using Type = HandlerSpec::Type;
  struct Field {
    const char* name;
    bool set;
    Type type;
  };
  const Field fields[] = {{"handler.name", !h.name.empty(), Type::kBuiltin},
                          {"handler.command", !h.command.empty(), Type::kShell},
                          {"handler.env", !h.env.empty(), Type::kShell},
                          {"handler.cwd", !h.cwd.empty(), Type::kShell},
                          {"handler.method", h.method != "GET", Type::kHttp},
                          {"handler.url", !h.url.empty(), Type::kHttp},
                          {"handler.headers", !h.headers.empty(), Type::kHttp},
                          {"handler.body", !h.body.empty(), Type::kHttp}};
  static constexpr const char* kTypeNames[] = {"builtin", "shell", "http"};
  for (const Field& f : fields) {
    if (f.set && f.type != h.type) {
      return FieldError(
          f.name, std::string("only with a ") + kTypeNames[static_cast<int>(f.type)] + " handler");
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateJobSpec(const JobSpec& spec) {
  RETURN_IF_ERROR(ValidateJobId(spec.id));
  RETURN_IF_ERROR(ValidateTenantId(spec.tenant));
  RETURN_IF_ERROR(ValidateQueueName(spec.queue));
  const Schedule& s = spec.schedule;
  switch (s.kind) {
    case Schedule::Kind::kCron: {
      if (s.cron.empty()) return FieldError("schedule.cron", "missing");
      if (s.timezone.empty()) {
        return FieldError("schedule.timezone", "empty (leave it out, or give \"UTC\", for UTC)");
      }
      auto parsed = CronSchedule::Parse(s.cron, s.timezone);
      if (!parsed.ok()) {
        const std::string& m = parsed.status().message();
        if (m.starts_with("timezone: ")) return FieldError("schedule.timezone", m.substr(10));
        return FieldError("schedule.cron", m);
      }
      if (parsed->every())
        return FieldError("schedule.cron", "@every is an interval: use every_ms");
      break;
    }
    case Schedule::Kind::kEvery:
      if (s.every.count() <= 0) return FieldError("schedule.every_ms", "must be positive");
      if (s.every.count() > kMaxDurationMs) {
        return FieldError("schedule.every_ms", "must be at most 365 days (31536000000)");
      }
      break;
    case Schedule::Kind::kAt:
    case Schedule::Kind::kNone:
      break;
  }
  // What only another kind reads is not silently ignored (a spec built in code).
  if (s.kind != Schedule::Kind::kCron) {
    if (!s.cron.empty()) return FieldError("schedule.cron", "only with a cron schedule");
    if (s.timezone != "UTC") return FieldError("schedule.timezone", "only allowed with cron");
  }
  if (s.kind != Schedule::Kind::kEvery && s.every.count() != 0) {
    return FieldError("schedule.every_ms", "only with an every_ms schedule");
  }
  if (s.kind != Schedule::Kind::kAt && s.at != TimePoint{}) {
    return FieldError("schedule.at", "only with an at schedule");
  }
  if (s.jitter.count() < 0) return FieldError("schedule.jitter_ms", "must not be negative");
  if (s.kind == Schedule::Kind::kNone && (s.start_at || s.end_at || s.jitter.count() != 0)) {
    return FieldError("schedule", "start_at, end_at and jitter_ms need one of cron, at, every_ms");
  }
  if (s.start_at && s.end_at && *s.end_at <= *s.start_at) {
    return FieldError("schedule.end_at", "must be after schedule.start_at");
  }
  const HandlerSpec& h = spec.handler;
  RETURN_IF_ERROR(CheckHandlerFields(h));
  switch (h.type) {
    case HandlerSpec::Type::kBuiltin:
      if (h.name.empty())
        return FieldError("handler.name", "missing (the registered function's name)");
      break;
    case HandlerSpec::Type::kShell:
      if (h.command.empty())
        return FieldError("handler.command",
                          "missing (an argv array, e.g. [\"/bin/echo\", \"hi\"])");
      if (h.command[0].empty()) return FieldError("handler.command[0]", "must not be empty");
      for (const auto& [name, value] : h.env) {
        if (name.empty() || name.find('=') != std::string::npos ||
            name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) {
          return FieldError("handler.env." + name,
                            "a variable name must be non-empty without '=', and neither name "
                            "nor value may contain NUL");
        }
      }
      break;
    case HandlerSpec::Type::kHttp: {
      static const std::set<std::string> kMethods = {"GET",   "POST",   "PUT",
                                                     "PATCH", "DELETE", "HEAD"};
      if (!kMethods.count(h.method))
        return FieldError("handler.method", "must be one of GET, POST, PUT, PATCH, DELETE, HEAD");
      if (Result<Url> url = ParseUrl(h.url); !url.ok()) {
        return FieldError("handler.url", url.status().message());
      }
      RETURN_IF_ERROR(CheckHttpHeaders(h.headers));
      for (const auto& [name, value] : h.headers) {
        if (EqualsIgnoreCase(name, "Content-Length") ||
            EqualsIgnoreCase(name, "Transfer-Encoding")) {
          return FieldError("handler.headers." + name,
                            "the node frames the request itself (Content-Length from body)");
        }
        if (StartsWithIgnoreCase(name, "X-Jobsched-")) {
          return FieldError("handler.headers." + name,
                            "X-Jobsched-* headers are set by the node for each attempt");
        }
      }
      break;
    }
  }
  if (spec.priority < 0 || spec.priority > 9)
    return FieldError("priority", "must be between 0 and 9");
  const RetryPolicy& retry = spec.retry;
  if (retry.max_attempts < 1 || retry.max_attempts > kMaxAttempts) {
    return FieldError("retry.max_attempts",
                      "must be between 1 and " + std::to_string(kMaxAttempts));
  }
  if (retry.initial_delay.count() < 0)
    return FieldError("retry.initial_delay_ms", "must not be negative");
  if (retry.max_delay < retry.initial_delay)
    return FieldError("retry.max_delay_ms", "must be at least retry.initial_delay_ms");
  if (!(retry.jitter >= 0 && retry.jitter <= 1))
    return FieldError("retry.jitter", "must be between 0 and 1");
  if (spec.timeout.count() < 0) return FieldError("timeout_ms", "must not be negative");
  if (spec.misfire.grace.count() < 0) return FieldError("misfire.grace_ms", "must not be negative");
  if (spec.limits.cpu_seconds < 0) return FieldError("limits.cpu_seconds", "must not be negative");
  if (spec.limits.memory_mb < 0) return FieldError("limits.memory_mb", "must not be negative");
  if (spec.limits.max_output_bytes < 0 || spec.limits.max_output_bytes > kMaxOutputBytes) {
    return FieldError("limits.max_output_bytes",
                      "must be between 0 and " + std::to_string(kMaxOutputBytes));
  }
  if (!(spec.limits.cpu_cores >= 0 && spec.limits.cpu_cores <= kMaxCpuCores)) {
    return FieldError("limits.cpu_cores", "must be between 0 and " + std::to_string(kMaxCpuCores));
  }
  std::set<std::string> deps;
  if (spec.depends_on.size() > kMaxDependencies) {
    return FieldError("depends_on",
                      "more than " + std::to_string(kMaxDependencies) + " jobs listed");
  }
  if (spec.labels.size() > kMaxLabels) {
    return FieldError("labels", "more than " + std::to_string(kMaxLabels) + " labels");
  }
  for (size_t i = 0; i < spec.depends_on.size(); ++i) {
    const std::string field = "depends_on[" + std::to_string(i) + "]";
    RETURN_IF_ERROR(ValidateJobId(spec.depends_on[i], field));
    if (spec.depends_on[i] == spec.id) return FieldError(field, "a job cannot depend on itself");
    if (!deps.insert(spec.depends_on[i]).second)
      return FieldError(field, "'" + spec.depends_on[i] + "' is listed twice");
  }
  if (!spec.depends_on.empty() && s.kind != Schedule::Kind::kNone) {
    return FieldError("depends_on", "a job with depends_on must have no time schedule");
  }
  for (const auto& [key, value] : spec.labels) {
    if (key.empty() || key.size() > 63 || !AllCharsIn(key, [](char c) {
          return IsAlnum(c) || c == '.' || c == '_' || c == '-' || c == '/';
        })) {
      return FieldError("labels." + key, "label keys must match [A-Za-z0-9._/-]{1,63}");
    }
    if (value.size() > 256) return FieldError("labels." + key, "longer than 256 bytes");
    if (std::any_of(value.begin(), value.end(),
                    [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
      return FieldError("labels." + key, "must not contain control characters");
    }
  }
  if (!Json::accept(spec.payload)) return FieldError("payload", "must be valid JSON");
  return CheckBounds(spec);
}

namespace {

// The JSON text into a spec: shape, types and enum values, without the rules of ValidateJobSpec.
Result<JobSpec> ParseSpecShape(std::string_view json, const std::string& tenant) {
  if (JsonNestingDepth(json) > kMaxJsonNesting) {
    return InvalidArgument("JSON nesting deeper than " + std::to_string(kMaxJsonNesting) +
                           " levels");
  }
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return InvalidArgument("a job spec must be a JSON object; the body is empty");
  }
  Json j;
  try {
    j = Json::parse(json);
  } catch (const Json::exception& e) {
    return InvalidArgument("invalid JSON: " + JsonErrorText(e));
  }
  if (auto twice = FirstDuplicateKey(json)) return FieldError(*twice, "given twice");
  JobSpec spec;
  spec.tenant = tenant;
  RETURN_IF_ERROR(ParseSpecObject(j, spec));
  return spec;
}

}  // namespace

Result<JobSpec> ParseJobSpec(std::string_view json, const std::string& tenant) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseSpecShape(json, tenant));
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  return spec;
}

Result<JobSpec> ParseStoredJobSpec(std::string_view json, const std::string& tenant) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseSpecShape(json, tenant));
  // Stored by a version that took an empty zone for UTC (one given in C++ was kept as "").
  if (spec.schedule.kind == Schedule::Kind::kCron && spec.schedule.timezone.empty()) {
    spec.schedule.timezone = "UTC";
  }
  return spec;
}

namespace {

// The spec as a JSON value, every field written (JobSpecToJson).
Json SpecJson(const JobSpec& spec) {
  Json schedule = Json::object();
  const Schedule& s = spec.schedule;
  switch (s.kind) {
    case Schedule::Kind::kCron:
      schedule["cron"] = s.cron;
      schedule["timezone"] = s.timezone;
      break;
    case Schedule::Kind::kAt:
      schedule["at"] = FormatRfc3339(s.at);
      break;
    case Schedule::Kind::kEvery:
      schedule["every_ms"] = s.every.count();
      break;
    case Schedule::Kind::kNone:
      break;
  }
  if (s.kind != Schedule::Kind::kNone) {
    schedule["jitter_ms"] = s.jitter.count();
    schedule["start_at"] = OptionalTime(s.start_at);
    schedule["end_at"] = OptionalTime(s.end_at);
  }
  const HandlerSpec& h = spec.handler;
  Json handler = {{"type", NameOf(kHandlerTypes, h.type)}};
  switch (h.type) {
    case HandlerSpec::Type::kBuiltin:
      handler["name"] = h.name;
      break;
    case HandlerSpec::Type::kShell:
      handler["command"] = h.command;
      handler["env"] = h.env;
      handler["cwd"] = h.cwd.empty() ? Json(nullptr) : Json(h.cwd);
      break;
    case HandlerSpec::Type::kHttp:
      handler["method"] = h.method;
      handler["url"] = h.url;
      handler["headers"] = h.headers;
      handler["body"] = h.body;
      break;
  }
  Json payload = Json::parse(spec.payload, nullptr, /*allow_exceptions=*/false);
  Json j = {
      {"id", spec.id},
      {"queue", spec.queue},
      {"schedule", s.kind == Schedule::Kind::kNone ? Json(nullptr) : schedule},
      {"handler", handler},
      {"payload", payload.is_discarded() ? Json(nullptr) : payload},
      {"priority", spec.priority},
      {"retry",
       {{"max_attempts", spec.retry.max_attempts},
        {"backoff", NameOf(kBackoffs, spec.retry.backoff)},
        {"initial_delay_ms", spec.retry.initial_delay.count()},
        {"max_delay_ms", spec.retry.max_delay.count()},
        {"jitter", spec.retry.jitter}}},
      {"timeout_ms", spec.timeout.count()},
      {"overlap", NameOf(kOverlaps, spec.overlap)},
      {"misfire",
       {{"policy", NameOf(kMisfires, spec.misfire.policy)},
        {"grace_ms", spec.misfire.grace.count()}}},
      {"limits",
       {{"cpu_seconds", spec.limits.cpu_seconds},
        {"memory_mb", spec.limits.memory_mb},
        {"max_output_bytes", spec.limits.max_output_bytes},
        {"cpu_cores", spec.limits.cpu_cores}}},
      {"depends_on", spec.depends_on},
      {"labels", spec.labels},
      {"paused", spec.paused},
  };
  return j;
}

// Removes from `j` the members equal to those of `defaults`, recursively, except the ones that
// say what a schedule or handler is.
void PruneDefaults(Json& j, const Json& defaults) {
  static constexpr std::string_view kKeep[] = {"type", "cron",    "at", "every_ms",
                                               "name", "command", "url"};
  for (auto it = j.begin(); it != j.end();) {
    const auto d = defaults.find(it.key());
    const bool keep = std::find(std::begin(kKeep), std::end(kKeep), it.key()) != std::end(kKeep);
    if (!keep && d != defaults.end()) {
      if (*it == *d) {
        it = j.erase(it);
        continue;
      }
      if (it->is_object() && d->is_object()) PruneDefaults(*it, *d);
    }
    ++it;
  }
}

}  // namespace

std::string JobSpecToJson(const JobSpec& spec) {
  return SpecJson(spec).dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string JobSpecToCompactJson(const JobSpec& spec) {
  JobSpec defaults;
  defaults.schedule.kind = spec.schedule.kind;
  defaults.handler.type = spec.handler.type;
  Json j = SpecJson(spec);
  PruneDefaults(j, SpecJson(defaults));
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string AttemptsToJson(const std::vector<AttemptRecord>& attempts) {
  Json list = Json::array();
  for (const AttemptRecord& a : attempts) {
    list.push_back({{"number", a.number},
                    {"node", a.node},
                    {"fence", a.fence},
                    {"started_at", FormatRfc3339(a.started_at)},
                    {"finished_at", OptionalTime(a.finished_at)},
                    {"outcome", a.outcome},
                    {"error", a.error}});
  }
  return list.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<std::vector<AttemptRecord>> AttemptsFromJson(std::string_view json) {
  std::vector<AttemptRecord> out;
  try {
    const Json list = Json::parse(json);
    for (const Json& a : list) {
      AttemptRecord r;
      r.number = a.at("number").get<int>();
      r.node = a.at("node").get<std::string>();
      r.fence = a.at("fence").get<int64_t>();
      ASSIGN_OR_RETURN(r.started_at, ParseRfc3339(a.at("started_at").get<std::string>()));
      if (!a.at("finished_at").is_null()) {
        ASSIGN_OR_RETURN(TimePoint finished, ParseRfc3339(a.at("finished_at").get<std::string>()));
        r.finished_at = finished;
      }
      r.outcome = a.at("outcome").get<std::string>();
      r.error = a.at("error").get<std::string>();
      out.push_back(std::move(r));
    }
  } catch (const Json::exception& e) {
    return Internal(std::string("corrupt attempts record: ") + e.what());
  }
  return out;
}

Result<RunState> ParseRunState(std::string_view name) {
  return ValueOf(kRunStates, name, "run state");
}
Result<JobState> ParseJobState(std::string_view name) {
  return ValueOf(kJobStates, name, "job state");
}
Result<RunReason> ParseRunReason(std::string_view name) {
  return ValueOf(kRunReasons, name, "run reason");
}

bool IsTerminal(RunState state) {
  switch (state) {
    case RunState::kSucceeded:
    case RunState::kFailed:
    case RunState::kTimedOut:
    case RunState::kCancelled:
    case RunState::kSkipped:
      return true;
    default:
      return false;
  }
}
const char* RunStateName(RunState state) { return NameOf(kRunStates, state); }
const char* RunReasonName(RunReason reason) { return NameOf(kRunReasons, reason); }
const char* JobStateName(JobState state) { return NameOf(kJobStates, state); }
const char* OverlapName(Overlap overlap) { return NameOf(kOverlaps, overlap); }
const char* MisfireName(Misfire misfire) { return NameOf(kMisfires, misfire); }

}  // namespace jobsched
