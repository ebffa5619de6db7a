#include "store/redis_store.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <system_error>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "core/job_codec.h"
#include "store/redis_scripts.h"
#include "store/store_common.h"

namespace jobsched {
namespace {

using Json = nlohmann::json;
using Command = std::vector<std::string>;

constexpr int kMaxPageSize = 1000;
// Entries a list page examines at most, so that a selective filter over a long history cannot
// hold the (single-threaded) server for long; a page may then be short, with a cursor.
constexpr int kScanBudget = 10000;
// (Tenant, job) histories pruned per pipeline.
constexpr size_t kPruneBatch = 200;
// Runs of one job's history one prune_job call looks at, at most.
constexpr int64_t kPruneLook = 500;
constexpr int64_t kBand = int64_t{1} << 44;  // the ready score's band per priority (scripts)
constexpr char kStaleToken[] = "stale_token";

int Clamp(int v, int lo, int hi) { return std::max(lo, std::min(v, hi)); }

// ---- Replies ------------------------------------------------------------------------------

// A reply, copied out of hiredis so that nothing else in this file sees hiredis types.
struct Reply {
  enum Type { kNil, kString, kStatus, kError, kInteger, kArray };
  Type type = kNil;
  std::string str;  // kString, kStatus, kError
  long long integer = 0;
  std::vector<Reply> elements;  // kArray

  bool is_error() const { return type == kError; }
  bool is_array() const { return type == kArray; }
};

Reply FromHiredis(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(FromHiredis(r->element[i]));
      break;
    default:
      break;
  }
  return out;
}

// Errors that mean "the store cannot take this now" rather than a bug: out of memory, a busy
// script, loading, a replica, a master without quorum, missing or wrong credentials.
bool IsUnavailableError(std::string_view message) {
  for (std::string_view code :
       {"OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN",
        "MISCONF", "NOAUTH", "WRONGPASS", "NOPERM"}) {
    if (message.starts_with(code) &&
        (message.size() == code.size() || message[code.size()] == ' ')) {
      return true;
    }
  }
  return false;
}

timeval ToTimeval(Duration d) {
  const int64_t ms = std::max<int64_t>(d.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

// ---- Connections --------------------------------------------------------------------------

// One hiredis connection, used by one caller at a time (the pool hands it out).
class RedisConnection {
 public:
  // Connects, sets the command timeout, AUTHs and SELECTs. `where` is "redis host:port".
  static Result<std::unique_ptr<RedisConnection>> Connect(const RedisOptions& options,
                                                          const std::string& where) {
    redisContext* ctx = redisConnectWithTimeout(options.host.c_str(), options.port,
                                                ToTimeval(options.connect_timeout));
    if (ctx == nullptr) return Unavailable(where + " unreachable: out of memory");
    std::unique_ptr<RedisConnection> conn(new RedisConnection(ctx, where));
    if (ctx->err != 0) return Unavailable(where + " unreachable: " + ctx->errstr);
    if (redisSetTimeout(ctx, ToTimeval(options.command_timeout)) != REDIS_OK) {
      return Unavailable(where + " unreachable: cannot set the command timeout");
    }
    redisEnableKeepAlive(ctx);
    std::vector<Command> setup;
    if (!options.password.empty()) {
      setup.push_back(options.user.empty() ? Command{"AUTH", options.password}
                                           : Command{"AUTH", options.user, options.password});
    }
    if (options.db != 0) setup.push_back({"SELECT", std::to_string(options.db)});
    if (!setup.empty()) {
      ASSIGN_OR_RETURN(std::vector<Reply> replies, conn->Run(setup));
      for (size_t i = 0; i < replies.size(); ++i) {
        if (replies[i].is_error()) {
          return Unavailable(where + ": " + setup[i][0] + " failed: " + replies[i].str);
        }
      }
    }
    return conn;
  }

  ~RedisConnection() { redisFree(ctx_); }

  // For a subscription: reads block until a message arrives (or another thread shuts the
  // socket down through fd()).
  Status BlockForever() {
    if (redisSetTimeout(ctx_, timeval{}) != REDIS_OK) return IoError();
    return Status::Ok();
  }
  int fd() const { return ctx_->fd; }
  // Sends one command without waiting for its reply.
  Status Send(const Command& c) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : c) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(c.size()), argv.data(), lens.data()) !=
        REDIS_OK) {
      return IoError();
    }
    return Status::Ok();
  }
  // The next reply (flushing what Send buffered first).
  Result<Reply> Read() {
    void* raw = nullptr;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) return IoError();
    std::unique_ptr<redisReply, void (*)(void*)> reply(static_cast<redisReply*>(raw),
                                                       freeReplyObject);
    return FromHiredis(reply.get());
  }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends every command, then reads one reply per command, in order (a pipeline: one round
  // trip). Error replies are replies. An I/O error or a timeout is kUnavailable, after which the
  // connection must be dropped: where its stream stands is unknown.
  Result<std::vector<Reply>> Run(std::span<const Command> commands) {
    for (const Command& c : commands) RETURN_IF_ERROR(Send(c));
    std::vector<Reply> replies;
    replies.reserve(commands.size());
    for (size_t i = 0; i < commands.size(); ++i) {
      ASSIGN_OR_RETURN(Reply reply, Read());
      replies.push_back(std::move(reply));
    }
    return replies;
  }

 private:
  RedisConnection(redisContext* ctx, std::string where) : ctx_(ctx), where_(std::move(where)) {}

  Status IoError() {
    std::string why = ctx_->errstr[0] != '\0' ? ctx_->errstr : "connection lost";
    if (ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      why = "timed out";
      timed_out_ = true;
    }
    return Unavailable(where_ + " unreachable: " + why + " (the outcome of the call is unknown)");
  }

 public:
  // Whether a call on it timed out: the server (or the path to it) does not answer.
  bool timed_out() const { return timed_out_; }

 private:
  redisContext* const ctx_;
  const std::string where_;
  bool timed_out_ = false;
};

// At most pool_size connections, created on demand; a caller that finds all of them in use
// waits for one up to command_timeout.
//
// A server that does not answer (a call timed out: the server is stopped or overloaded, or the
// path to it is silent) must not make every call wait command_timeout: after a timeout, one
// call at a time, at most one per backoff period (100 ms doubling to 2 s), probes the server
// on a new connection, and the others fail at once with the timeout's message; the first call
// that succeeds ends this. A failed connection attempt backs off the same way.
class RedisPool {
 public:
  RedisPool(const RedisOptions& options, std::string where)
      : options_(options), where_(std::move(where)) {}

  Result<std::unique_ptr<RedisConnection>> Acquire() {
    std::unique_lock lock(mu_);
    if (hung_) {
      if (Status fast = FailFast(); !fast.ok()) return fast;
    }
    if (!cv_.wait_for(lock, options_.command_timeout,
                      [&] { return !idle_.empty() || open_ < options_.pool_size; })) {
      return Unavailable(where_ + ": all " + std::to_string(options_.pool_size) +
                         " connections stayed busy for " +
                         std::to_string(options_.command_timeout.count()) + " ms");
    }
    if (!idle_.empty()) {
      std::unique_ptr<RedisConnection> conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
    // Reconnecting after a failure: at most one attempt per backoff period, others fail fast.
    if (Status fast = FailFast(); !fast.ok()) return fast;
    if (hung_) probing_ = true;
    ++open_;
    lock.unlock();
    auto conn = RedisConnection::Connect(options_, where_);
    lock.lock();
    if (!conn.ok()) {
      --open_;
      probing_ = false;
      BackOff(conn.status().message());
      cv_.notify_one();
    } else if (!hung_) {
      backoff_ = Duration(0);
      retry_after_ = {};
    }
    return conn;
  }

  // Gives a connection back: `healthy`, or it broke and is dropped, and so are the idle ones
  // (after a restart or a cut they are broken too; each would fail one more call).
  void Release(std::unique_ptr<RedisConnection> conn, bool healthy) {
    std::lock_guard lock(mu_);
    if (healthy) {
      idle_.push_back(std::move(conn));
      if (hung_) spdlog::info("{}: answering again", where_);
      hung_ = probing_ = false;
      backoff_ = Duration(0);
      retry_after_ = {};
    } else {
      open_ -= 1 + static_cast<int>(idle_.size());
      idle_.clear();
      probing_ = false;
      if (conn->timed_out()) {
        if (!hung_) {
          spdlog::warn("{}: a call timed out; until one succeeds, other calls fail at once",
                       where_);
        }
        hung_ = true;
        BackOff(where_ + " unreachable: a call timed out after " +
                std::to_string(options_.command_timeout.count()) + " ms");
      } else if (hung_) {
        BackOff(last_error_);  // the probe failed otherwise: the next one after the backoff
      }
    }
    cv_.notify_all();
  }

 private:
  const RedisOptions options_;
  const std::string where_;
  std::mutex mu_;
  std::condition_variable cv_;
  static constexpr Duration kMinBackoff{100};
  static constexpr Duration kMaxBackoff{2000};

  std::vector<std::unique_ptr<RedisConnection>> idle_;  // guarded by mu_
  int open_ = 0;  // connections idle or in use; guarded by mu_
  // After a failed connection attempt or a timeout: no new attempt before retry_after_
  // (backoff_ doubles from kMinBackoff to kMaxBackoff); calls fail fast with last_error_.
  // hung_: the last failure was a timeout, and no call has succeeded since; probing_: a call
  // is finding out whether the server answers again. Guarded by mu_.
  Duration backoff_{0};
  std::chrono::steady_clock::time_point retry_after_{};
  std::string last_error_;
  bool hung_ = false;
  bool probing_ = false;

  // The error a call gets at once, without a connection, or OK. Requires mu_.
  Status FailFast() const {
    const auto now = std::chrono::steady_clock::now();
    if (now < retry_after_) {
      return Unavailable(last_error_ + " (next attempt in " +
                         std::to_string(std::chrono::ceil<Duration>(retry_after_ - now).count()) +
                         " ms)");
    }
    if (hung_ && probing_) return Unavailable(last_error_ + " (another call is trying it)");
    return Status::Ok();
  }
  // Requires mu_.
  void BackOff(std::string why) {
    backoff_ = std::clamp(backoff_ * 2, kMinBackoff, kMaxBackoff);
    retry_after_ = std::chrono::steady_clock::now() + backoff_;
    last_error_ = std::move(why);
  }
};

// A connection for the length of one call: dropped unless Keep() says it is healthy.
class PooledConnection {
 public:
  PooledConnection(RedisPool& pool, std::unique_ptr<RedisConnection> conn)
      : pool_(pool), conn_(std::move(conn)) {}
  ~PooledConnection() { pool_.Release(std::move(conn_), keep_); }
  PooledConnection(const PooledConnection&) = delete;
  PooledConnection& operator=(const PooledConnection&) = delete;

  RedisConnection* operator->() { return conn_.get(); }
  void Keep() { keep_ = true; }

 private:
  RedisPool& pool_;
  std::unique_ptr<RedisConnection> conn_;
  bool keep_ = false;
};

enum class Script {
  kPutJob,
  kDeleteJob,
  kFire,
  kEnqueue,
  kClaim,
  kRenew,
  kComplete,
  kCancelRun,
  kSyncIndexes,
  kRecover,
  kPruneJob,
  kListJobs,
  kListRuns,
  kReadIndex,
  kDue,
  kAppendEvent,
  kPutTenant,
  kMigrateJobs,
  kPutApiKey,
  kDeleteApiKey,
  kAcquireLeader,
  kReleaseLeader,
  kPutAssignment,
};

struct ScriptSource {
  Script id;
  const char* body;
  bool tenant;  // prepended with the prelude; called with the four tenant KEYS
};

constexpr ScriptSource kScripts[] = {
    {Script::kPutJob, redis_scripts::kPutJob, true},
    {Script::kDeleteJob, redis_scripts::kDeleteJob, true},
    {Script::kFire, redis_scripts::kFire, true},
    {Script::kEnqueue, redis_scripts::kEnqueue, true},
    {Script::kClaim, redis_scripts::kClaim, true},
    {Script::kRenew, redis_scripts::kRenew, true},
    {Script::kComplete, redis_scripts::kComplete, true},
    {Script::kCancelRun, redis_scripts::kCancelRun, true},
    {Script::kSyncIndexes, redis_scripts::kSyncIndexes, true},
    {Script::kRecover, redis_scripts::kRecover, true},
    {Script::kPruneJob, redis_scripts::kPruneJob, true},
    {Script::kListJobs, redis_scripts::kListJobs, true},
    {Script::kListRuns, redis_scripts::kListRuns, true},
    {Script::kReadIndex, redis_scripts::kReadIndex, true},
    {Script::kDue, redis_scripts::kDue, true},
    {Script::kAppendEvent, redis_scripts::kAppendEvent, true},
    {Script::kPutTenant, redis_scripts::kPutTenant, true},
    {Script::kMigrateJobs, redis_scripts::kMigrateJobs, true},
    {Script::kPutApiKey, redis_scripts::kPutApiKey, false},
    {Script::kDeleteApiKey, redis_scripts::kDeleteApiKey, false},
    {Script::kAcquireLeader, redis_scripts::kAcquireLeader, false},
    {Script::kReleaseLeader, redis_scripts::kReleaseLeader, false},
    {Script::kPutAssignment, redis_scripts::kPutAssignment, false},
};
constexpr size_t kScriptCount = std::size(kScripts);

}  // namespace

// ---- Backend: pool, scripts, keys, the tenant set -------------------------------------------

class RedisBackend {
 public:
  explicit RedisBackend(const RedisOptions& options)
      : options_(options),
        where_("redis " + options.host + ":" + std::to_string(options.port)),
        pool_(options_, where_) {
    std::string prelude = redis_scripts::kPrelude;
    const std::string token = "@EVENT_CAP@";
    prelude.replace(prelude.find(token), token.size(),
                    std::to_string(options.max_events_per_tenant));
    for (size_t i = 0; i < kScriptCount; ++i) {
      // kScripts is in enum order: the index is the Script value.
      texts_[i] = kScripts[i].tenant ? prelude + kScripts[i].body : kScripts[i].body;
    }
  }

  ~RedisBackend() {
    {
      std::lock_guard lock(sub_mu_);
      sub_stopping_ = true;
      if (sub_fd_ >= 0) ::shutdown(sub_fd_, SHUT_RDWR);
    }
    sub_cv_.notify_all();
    if (sub_thread_.joinable()) sub_thread_.join();
  }

  const RedisOptions& options() const { return options_; }

  // Sets the handler of the messages on `channel` (an empty one removes it, after a call in
  // progress) and starts the subscriber thread the first time; `resync`: the messages handed
  // over when the subscription comes back after a failure.
  void Subscribe(std::string channel, std::function<void(const std::string&)> handler,
                 std::vector<std::string> resync = {}) {
    const bool set = static_cast<bool>(handler);
    {
      std::lock_guard lock(handler_mu_);
      handler_ = std::move(handler);
    }
    std::lock_guard lock(sub_mu_);
    if (!set || sub_thread_.joinable() || sub_stopping_) return;
    sub_thread_ = std::thread([this, channel = std::move(channel), resync = std::move(resync)] {
      SubscribeLoop(channel, resync);
    });
  }

  // Connects once, checks the server's version and configuration and loads the scripts.
  Status Start() {
    ASSIGN_OR_RETURN(std::vector<Reply> info,
                     RunAll({{"INFO", "server"}, {"INFO", "memory"}, {"INFO", "persistence"}}));
    const std::string version = InfoField(info[0].str, "redis_version");
    if (!version.empty()) {
      int major = 0, minor = 0;
      const char* end = version.data() + version.size();
      auto [q, ec] = std::from_chars(version.data(), end, major);
      if (ec == std::errc() && q < end && *q == '.') std::from_chars(q + 1, end, minor);
      if (major < 6 || (major == 6 && minor < 2)) {
        return FailedPrecondition(where_ + " runs Redis " + std::to_string(major) + "." +
                                  std::to_string(minor) + "; jobsched needs 6.2 or newer");
      }
    }
    // What would lose data without an error (docs/redis-store.md).
    const std::string policy = InfoField(info[1].str, "maxmemory_policy");
    if (!policy.empty() && policy != "noeviction") {
      config_warnings_.push_back(
          where_ + ": maxmemory-policy is " + policy +
          ": once maxmemory is reached Redis deletes keys, and jobs, runs or leases vanish; set "
          "maxmemory-policy noeviction (a full Redis then refuses writes, answered with 503)");
    }
    if (InfoField(info[2].str, "aof_enabled") == "0") {
      config_warnings_.push_back(
          where_ +
          ": appendonly is off: a restart of Redis loses what was written since its last "
          "snapshot (jobs, runs, results); set appendonly yes with appendfsync everysec");
    }
    for (const std::string& w : config_warnings_) spdlog::warn("{}", w);
    std::vector<Command> load;
    for (const std::string& text_i : texts_) load.push_back({"SCRIPT", "LOAD", text_i});
    ASSIGN_OR_RETURN(std::vector<Reply> shas, RunAll(std::move(load)));
    for (size_t i = 0; i < kScriptCount; ++i) shas_[i] = shas[i].str;
    return CheckLayout();
  }

  const std::vector<std::string>& config_warnings() const { return config_warnings_; }

  // The value of `name` in an INFO reply ("" if absent).
  static std::string InfoField(std::string_view text, std::string_view name) {
    for (size_t at = 0; at < text.size();) {
      size_t end = text.find('\n', at);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(at, end - at);
      if (line.ends_with('\r')) line.remove_suffix(1);
      if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':')
        return std::string(line.substr(name.size() + 1));
      at = end + 1;
    }
    return "";
  }

  // The version of the key layout (redis_scripts.h) the data under the prefix was written
  // with. An empty store gets this one; data of layout 1 (from before the layout had a
  // version), of layout 2 (before the ready index), 3 (before the due index) and 4 (before the
  // leases index) is moved to this one; data of another layout is refused, not misread. Nodes of
  // an older version must be stopped first.
  Status CheckLayout() {
    static constexpr char kLayout[] = "5";
    ASSIGN_OR_RETURN(std::vector<Reply> r,
                     RunAll({{"GET", SysKey("layout")}, {"EXISTS", SysKey("tenants")}}));
    std::string found = r[0].str;
    if (r[0].type == Reply::kNil) {
      if (r[1].integer == 0) {
        // NX: of nodes starting together on an empty store, one sets it (all read it back).
        ASSIGN_OR_RETURN(std::vector<Reply> set, RunAll({{"SET", SysKey("layout"), kLayout, "NX"},
                                                         {"GET", SysKey("layout")}}));
        found = set[1].str;
      } else {
        RETURN_IF_ERROR(MigrateFromLayout1());
        found = "2";
      }
    }
    if (found == "2" || found == "3" || found == "4") {
      RETURN_IF_ERROR(BuildIndexes());
      RETURN_IF_ERROR(Call({"SET", SysKey("layout"), kLayout}).status());
      found = kLayout;
    }
    if (found == kLayout) return Status::Ok();
    return FailedPrecondition(where_ + " holds jobsched data of key layout " + found +
                              " under the prefix '" + options_.key_prefix +
                              "'; this version reads layout " + kLayout +
                              ": run the version that wrote it, or use another key prefix");
  }

  // Layouts 2, 3 and 4 -> 5: the store-wide ready, due and leases indexes, from every tenant's
  // own (one script per tenant, each atomic with the tenant's own changes; running it again
  // changes nothing).
  Status BuildIndexes() {
    ASSIGN_OR_RETURN(Reply tenants, Call({"SMEMBERS", SysKey("tenants")}));
    spdlog::info(
        "{}: indexing the claimable runs, due jobs and leases of {} tenant(s) under the "
        "prefix '{}'",
        where_, tenants.elements.size(), options_.key_prefix);
    std::vector<Command> commands;
    for (const Reply& t : tenants.elements)
      commands.push_back(Eval(Script::kSyncIndexes, t.str, {}));
    return RunAll(std::move(commands)).status();
  }

  // Layout 1 -> 2: every tenant's jobs, in batches (one script call each; a call that did not
  // happen is done by the next start). Nodes of the older version must be stopped first.
  Status MigrateFromLayout1() {
    ASSIGN_OR_RETURN(Reply tenants, Call({"SMEMBERS", SysKey("tenants")}));
    spdlog::warn("{}: moving the jobs of {} tenant(s) under the prefix '{}' to key layout 2",
                 where_, tenants.elements.size(), options_.key_prefix);
    for (const Reply& t : tenants.elements) {
      for (;;) {
        ASSIGN_OR_RETURN(Reply left, Call(Eval(Script::kMigrateJobs, t.str, {"500"})));
        if (left.type != Reply::kInteger)
          return Internal("redis: unexpected reply to migrate_jobs");
        if (left.integer == 0) break;
      }
    }
    spdlog::info("{}: jobs moved to key layout 2", where_);
    return Status::Ok();
  }

  // "<prefix>:{t:<tenant>}:" + suffix; "<prefix>:{sys}:" + name.
  std::string TenantKey(const std::string& tenant, std::string_view suffix = {}) const {
    std::string key = options_.key_prefix + ":{t:" + tenant + "}:";
    key += suffix;
    return key;
  }
  std::string SysKey(std::string_view name) const {
    std::string key = options_.key_prefix + ":{sys}:";
    key += name;
    return key;
  }

  // EVALSHA of a tenant script: KEYS are the tenant prefix, the two store-wide counters and the
  // index of tenants with claimable runs.
  Command Eval(Script script, const std::string& tenant, std::vector<std::string> args) const {
    Command c;
    c.reserve(args.size() + 9);
    c.push_back("EVALSHA");
    c.push_back(shas_[static_cast<size_t>(script)]);
    c.push_back("6");
    c.push_back(TenantKey(tenant));
    c.push_back(SysKey("event_seq"));
    c.push_back(SysKey("fence"));
    c.push_back(SysKey("ready"));
    c.push_back(SysKey("due"));
    c.push_back(SysKey("leases"));
    for (std::string& a : args) c.push_back(std::move(a));
    return c;
  }
  Command EvalSys(Script script, std::vector<std::string> keys,
                  std::vector<std::string> args) const {
    Command c = {"EVALSHA", shas_[static_cast<size_t>(script)], std::to_string(keys.size())};
    for (std::string& k : keys) c.push_back(std::move(k));
    for (std::string& a : args) c.push_back(std::move(a));
    return c;
  }

  // An error reply as a Status.
  Status ErrorStatus(const Reply& reply) const {
    if (IsUnavailableError(reply.str)) return Unavailable(where_ + ": " + reply.str);
    return Internal(where_ + ": " + reply.str);
  }

  // Sends the commands in one pipeline and returns one reply per command (error replies
  // included). Commands refused with NOSCRIPT (a restarted or failed-over server) are sent
  // again after loading the scripts. With `tenant`, the tenant is first added to the set of
  // tenants (once per process): a tenant's data is never written before it is in the set.
  Result<std::vector<Reply>> Run(std::vector<Command> commands,
                                 const std::string* tenant = nullptr) {
    if (commands.empty()) return std::vector<Reply>{};
    const bool add_tenant = tenant != nullptr && !Registered(*tenant);
    if (add_tenant) commands.insert(commands.begin(), Command{"SADD", SysKey("tenants"), *tenant});
    ASSIGN_OR_RETURN(std::unique_ptr<RedisConnection> raw, pool_.Acquire());
    PooledConnection conn(pool_, std::move(raw));
    ASSIGN_OR_RETURN(std::vector<Reply> replies, conn->Run(commands));
    std::vector<size_t> again;
    for (size_t i = 0; i < replies.size(); ++i) {
      if (replies[i].is_error() && replies[i].str.starts_with("NOSCRIPT")) again.push_back(i);
    }
    if (!again.empty()) {
      std::vector<Command> retry;
      for (const std::string& text : texts_) retry.push_back({"SCRIPT", "LOAD", text});
      for (size_t i : again) retry.push_back(commands[i]);
      ASSIGN_OR_RETURN(std::vector<Reply> second, conn->Run(retry));
      for (size_t i = 0; i < kScriptCount; ++i) {
        if (second[i].is_error()) {
          conn.Keep();
          return ErrorStatus(second[i]);
        }
      }
      for (size_t k = 0; k < again.size(); ++k) {
        replies[again[k]] = std::move(second[kScriptCount + k]);
      }
    }
    conn.Keep();
    if (add_tenant) {
      if (!replies.front().is_error()) MarkRegistered(*tenant);
      replies.erase(replies.begin());
    }
    return replies;
  }

  // Run, with any error reply turned into the call's Status.
  Result<std::vector<Reply>> RunAll(std::vector<Command> commands,
                                    const std::string* tenant = nullptr) {
    ASSIGN_OR_RETURN(std::vector<Reply> replies, Run(std::move(commands), tenant));
    for (const Reply& r : replies) {
      if (r.is_error()) return ErrorStatus(r);
    }
    return replies;
  }

  // One command; an error reply is the Status.
  Result<Reply> Call(Command command, const std::string* tenant = nullptr) {
    std::vector<Command> one;
    one.push_back(std::move(command));
    ASSIGN_OR_RETURN(std::vector<Reply> replies, RunAll(std::move(one), tenant));
    return std::move(replies.front());
  }

  // The tenants that hold data, sorted and shared (every claim reads the list: with 10,000
  // tenants a copy per claim cost the node as much as the rest of its work). `fresh`: read from
  // Redis now; else a copy at most tenant_list_ttl old. Either way with every tenant this
  // process added.
  using TenantList = std::shared_ptr<const std::vector<std::string>>;
  Result<TenantList> SharedTenants(bool fresh) {
    const auto now = std::chrono::steady_clock::now();
    if (!fresh) {
      std::lock_guard lock(tenants_mu_);
      if (list_ && now - cached_at_ < options_.tenant_list_ttl) return list_;
    }
    ASSIGN_OR_RETURN(Reply members, Call({"SMEMBERS", SysKey("tenants")}));
    std::set<std::string> set;
    for (const Reply& m : members.elements) set.insert(m.str);
    std::lock_guard lock(tenants_mu_);
    read_ = std::move(set);
    cached_at_ = now;
    list_ = Merged();
    return list_;
  }
  Result<std::vector<std::string>> Tenants(bool fresh) {
    ASSIGN_OR_RETURN(TenantList list, SharedTenants(fresh));
    return *list;
  }

 private:
  bool Registered(const std::string& tenant) {
    std::lock_guard lock(tenants_mu_);
    return registered_.contains(tenant);
  }
  void MarkRegistered(const std::string& tenant) {
    std::lock_guard lock(tenants_mu_);
    if (registered_.insert(tenant).second && list_ &&
        !std::binary_search(list_->begin(), list_->end(), tenant)) {
      list_ = Merged();
    }
  }
  // The tenants read from Redis and those this process added. Requires tenants_mu_ held.
  TenantList Merged() const {
    std::set<std::string> all = read_;
    all.insert(registered_.begin(), registered_.end());
    return std::make_shared<const std::vector<std::string>>(all.begin(), all.end());
  }

  // Subscribes on its own connection and hands each message to `handler` until stopped;
  // reconnects with backoff (100 ms doubling to 2 s) when the connection fails. Subscribed again,
  // it hands over each of `resync` first: what was published meanwhile is lost.
  void SubscribeLoop(const std::string& channel, const std::vector<std::string>& resync) {
    Duration backoff(100);
    bool failing = false;
    bool subscribed_before = false;
    while (true) {
      {
        std::lock_guard lock(sub_mu_);
        if (sub_stopping_) return;
      }
      Status why = Status::Ok();
      auto conn = RedisConnection::Connect(options_, where_);
      if (conn.ok()) {
        {
          std::lock_guard lock(sub_mu_);
          if (sub_stopping_) return;
          sub_fd_ = (*conn)->fd();
        }
        why = (*conn)->BlockForever();
        if (why.ok()) why = (*conn)->Send({"SUBSCRIBE", channel});
        while (why.ok()) {
          auto reply = (*conn)->Read();
          if (!reply.ok()) {
            why = reply.status();
            break;
          }
          if (failing) {
            spdlog::info("{}: wake-up subscription restored", where_);
            failing = false;
          }
          backoff = Duration(100);
          if (reply->elements.size() == 3 && reply->elements[0].str == "subscribe") {
            if (subscribed_before) {
              std::lock_guard handler_lock(handler_mu_);
              for (const std::string& text : resync) {
                if (handler_) handler_(text);
              }
            }
            subscribed_before = true;
          }
          if (reply->elements.size() == 3 && reply->elements[0].str == "message") {
            std::lock_guard handler_lock(handler_mu_);
            if (handler_) handler_(reply->elements[2].str);
          }
        }
        std::lock_guard lock(sub_mu_);
        sub_fd_ = -1;
      } else {
        why = conn.status();
      }
      std::unique_lock lock(sub_mu_);
      if (sub_stopping_) return;
      if (!failing) {
        spdlog::warn("wake-up subscription lost: {}; retrying with backoff", why.message());
        failing = true;
      }
      sub_cv_.wait_for(lock, backoff, [&] { return sub_stopping_; });
      backoff = std::min(backoff * 2, Duration(2000));
    }
  }

  // Immutable after Start().
  const RedisOptions options_;
  const std::string where_;
  std::string texts_[kScriptCount];
  std::string shas_[kScriptCount];
  std::vector<std::string> config_warnings_;

  RedisPool pool_;  // thread-safe

  std::mutex tenants_mu_;
  std::set<std::string> registered_;                 // guarded by tenants_mu_: SADDed by us
  std::set<std::string> read_;                       // guarded by tenants_mu_: as last read
  TenantList list_;                                  // guarded by tenants_mu_: read_ + registered_
  std::chrono::steady_clock::time_point cached_at_;  // guarded by tenants_mu_

  std::mutex sub_mu_;
  std::condition_variable sub_cv_;
  bool sub_stopping_ = false;  // guarded by sub_mu_
  int sub_fd_ = -1;            // the subscription's socket; guarded by sub_mu_
  std::thread sub_thread_;     // started under sub_mu_, joined by the destructor
  std::mutex handler_mu_;      // held while the handler runs
  std::function<void(const std::string&)> handler_;  // guarded by handler_mu_
};

namespace {

// ---- Encoding -----------------------------------------------------------------------------

std::string Ms(TimePoint t) { return std::to_string(ToUnixMillis(t)); }
std::string OptMs(const std::optional<TimePoint>& t) { return t ? Ms(*t) : std::string(); }
std::string OptInt(const std::optional<int>& v) { return v ? std::to_string(*v) : std::string(); }

std::string TimeText(const std::optional<TimePoint>& t) {
  return t ? std::to_string(ToUnixMillis(*t)) : "none";
}

std::string Netstring(std::string_view s) {
  return std::to_string(s.size()) + ":" + std::string(s);
}

std::string EncodeAttempts(const std::vector<AttemptRecord>& attempts) {
  std::string out;
  for (const AttemptRecord& a : attempts) {
    out += Netstring(std::to_string(a.number));
    out += Netstring(a.node);
    out += Netstring(std::to_string(a.fence));
    out += Netstring(Ms(a.started_at));
    out += Netstring(OptMs(a.finished_at));
    out += Netstring(a.outcome);
    out += Netstring(a.error);
  }
  return out;
}

bool ParseInt(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// A sorted-set score (integral in every index here).
bool ParseScore(std::string_view s, int64_t& out) {
  if (ParseInt(s, out)) return true;
  double d = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size()) return false;
  out = static_cast<int64_t>(d);
  return true;
}

// A hash read back (HGETALL's flat field, value list), with typed getters that remember the
// first malformed field.
class Fields {
 public:
  explicit Fields(const Reply& flat) {
    for (size_t i = 0; i + 1 < flat.elements.size(); i += 2) {
      map_.emplace(flat.elements[i].str, flat.elements[i + 1].str);
    }
  }

  bool empty() const { return map_.empty(); }
  const Status& status() const { return status_; }

  const std::string& Str(const char* key) const {
    static const std::string kEmpty;
    auto it = map_.find(key);
    return it == map_.end() ? kEmpty : it->second;
  }
  std::optional<int64_t> OptInt(const char* key) {
    const std::string& s = Str(key);
    if (s.empty()) return std::nullopt;
    int64_t v = 0;
    if (!ParseInt(s, v)) {
      Fail(key, s);
      return std::nullopt;
    }
    return v;
  }
  int64_t Int(const char* key) { return OptInt(key).value_or(0); }
  std::optional<TimePoint> OptTime(const char* key) {
    std::optional<int64_t> v = OptInt(key);
    if (!v) return std::nullopt;
    return FromUnixMillis(*v);
  }
  TimePoint Time(const char* key) { return FromUnixMillis(Int(key)); }

  void Fail(std::string_view key, std::string_view why) {
    if (status_.ok()) {
      status_ = Internal("corrupt field '" + std::string(key) + "': '" + std::string(why) + "'");
    }
  }

 private:
  std::unordered_map<std::string, std::string> map_;
  Status status_;
};

// Attempts as stored: 7 netstrings each (number node fence start end outcome error).
Status DecodeAttempts(std::string_view s, std::vector<AttemptRecord>& out) {
  while (!s.empty()) {
    std::string_view part[7];
    for (std::string_view& p : part) {
      const size_t colon = s.find(':');
      int64_t len = 0;
      if (colon == std::string_view::npos || !ParseInt(s.substr(0, colon), len) || len < 0 ||
          static_cast<size_t>(len) > s.size() - colon - 1) {
        return Internal("corrupt attempts record");
      }
      p = s.substr(colon + 1, static_cast<size_t>(len));
      s.remove_prefix(colon + 1 + static_cast<size_t>(len));
    }
    int64_t number = 0, fence = 0, start = 0, end = 0;
    if (!ParseInt(part[0], number) || !ParseInt(part[2], fence) || !ParseInt(part[3], start) ||
        (!part[4].empty() && !ParseInt(part[4], end))) {
      return Internal("corrupt attempts record");
    }
    AttemptRecord a;
    a.number = static_cast<int>(number);
    a.node = part[1];
    a.fence = fence;
    a.started_at = FromUnixMillis(start);
    if (!part[4].empty()) a.finished_at = FromUnixMillis(end);
    a.outcome = part[5];
    a.error = part[6];
    out.push_back(std::move(a));
  }
  return Status::Ok();
}

// The fields of a new run, as a record argument of the scripts: a count, then field, value
// pairs. The names are the run hash's fields (redis_scripts.h).
void AppendRunRecord(const RunRecord& r, std::vector<std::string>& args) {
  const std::pair<const char*, std::string> fields[] = {
      {"id", r.id},
      {"job", r.job_id},
      {"queue", r.queue},
      {"prio", std::to_string(r.priority)},
      {"sched", Ms(r.scheduled_at)},
      {"avail", Ms(r.available_at)},
      {"created", Ms(r.created_at)},
      {"reason", RunReasonName(r.reason)},
      {"state", RunStateName(r.state)},
      {"attempt", std::to_string(r.attempt)},
      {"max_att", std::to_string(r.max_attempts)},
      {"excl", r.exclusive ? "1" : "0"},
      {"node", r.node},
      {"fence", std::to_string(r.fence)},
      {"lease", OptMs(r.lease_deadline)},
      {"started", OptMs(r.started_at)},
      {"finished", OptMs(r.finished_at)},
      {"exit", OptInt(r.exit_code)},
      {"http", OptInt(r.http_status)},
      {"output", r.output},
      {"error", r.error},
      {"payload", r.payload},
      {"cancel", r.cancel_requested ? "1" : "0"},
      {"lost", std::to_string(r.leases_lost)},
      {"attempts", EncodeAttempts(r.attempts)},
  };
  args.push_back(std::to_string(std::size(fields)));
  for (const auto& [name, value] : fields) {
    args.push_back(name);
    args.push_back(value);
  }
}

Result<RunRecord> RunFromHash(const Reply& flat, const std::string& tenant) {
  Fields f(flat);
  RunRecord r;
  r.id = f.Str("id");
  r.job_id = f.Str("job");
  r.tenant = tenant;
  r.queue = f.Str("queue");
  r.priority = static_cast<int>(f.Int("prio"));
  r.scheduled_at = f.Time("sched");
  r.available_at = f.Time("avail");
  r.created_at = f.Time("created");
  auto reason = ParseRunReason(f.Str("reason"));
  if (reason.ok()) {
    r.reason = *reason;
  } else {
    f.Fail("reason", f.Str("reason"));
  }
  auto state = ParseRunState(f.Str("state"));
  if (state.ok()) {
    r.state = *state;
  } else {
    f.Fail("state", f.Str("state"));
  }
  r.attempt = static_cast<int>(f.Int("attempt"));
  r.max_attempts = static_cast<int>(f.Int("max_att"));
  r.exclusive = f.Str("excl") == "1";
  r.node = f.Str("node");
  r.fence = f.Int("fence");
  r.lease_deadline = f.OptTime("lease");
  r.started_at = f.OptTime("started");
  r.finished_at = f.OptTime("finished");
  if (auto v = f.OptInt("exit")) r.exit_code = static_cast<int>(*v);
  if (auto v = f.OptInt("http")) r.http_status = static_cast<int>(*v);
  r.output = f.Str("output");
  r.output_bytes = f.OptInt("output_bytes");
  r.error = f.Str("error");
  r.payload = f.Str("payload");
  r.cancel_requested = f.Str("cancel") == "1";
  r.leases_lost = static_cast<int>(f.Int("lost"));
  if (Status s = DecodeAttempts(f.Str("attempts"), r.attempts); !s.ok()) f.Fail("attempts", "");
  if (!f.Str("a_num").empty()) {
    AttemptRecord a;
    a.number = static_cast<int>(f.Int("a_num"));
    a.node = f.Str("a_node");
    a.fence = f.Int("a_fence");
    a.started_at = f.Time("a_start");
    a.finished_at = f.OptTime("a_end");
    a.outcome = f.Str("a_outcome");
    a.error = f.Str("a_error");
    r.attempts.push_back(std::move(a));
  }
  if (!f.status().ok()) {
    return Internal("run '" + r.id + "' in tenant '" + tenant + "': " + f.status().message());
  }
  return r;
}

// A job hash (see the key layout in redis_scripts.h) with the id of its key; the scripts
// return it with an "id" field added (job_reply).
Result<JobRecord> JobFromHash(const Reply& flat, const std::string& tenant, const std::string& id) {
  Fields f(flat);
  // The spec is cut in pieces: "j", then "j2", "j3", ... (see put_job); its id is the key's.
  std::string text = f.Str("j");
  for (int i = 2;; ++i) {
    const std::string& piece = f.Str(("j" + std::to_string(i)).c_str());
    if (piece.empty()) break;
    text += piece;
  }
  auto spec = ParseStoredJobSpec(text, tenant);
  if (!spec.ok()) {
    return Internal("stored spec of job '" + id + "' in tenant '" + tenant +
                    "' is unreadable: " + spec.status().ToString());
  }
  JobRecord job;
  job.spec = std::move(spec).value();
  job.spec.id = id;
  job.version = f.Int("v");
  auto state = ParseJobState(f.Str("s"));
  if (state.ok()) {
    job.state = *state;
  } else {
    f.Fail("s", f.Str("s"));
  }
  job.next_fire = f.OptTime("nf");
  // Fields left out hold their default: the creation time.
  job.created_at = f.Time("c");
  job.dependency_since = f.OptTime("ds").value_or(job.created_at);
  job.updated_at = f.OptTime("u").value_or(job.created_at);
  if (!f.status().ok()) {
    return Internal("job '" + id + "' in tenant '" + tenant + "': " + f.status().message());
  }
  return job;
}

// A job as a script returns it: the hash with its "id" appended (job_reply).
Result<JobRecord> JobFromHash(const Reply& flat, const std::string& tenant) {
  const size_t n = flat.elements.size();
  if (n < 2 || flat.elements[n - 2].str != "id") {
    return Internal("redis: a job reply without its id");
  }
  return JobFromHash(flat, tenant, flat.elements[n - 1].str);
}

Status Unexpected(std::string_view what) {
  return Internal("redis: unexpected reply to " + std::string(what));
}

// The status word of a script's reply ({"ok", ...}), or "" when the reply is not one.
const std::string& Word(const Reply& r) {
  static const std::string kNone;
  return r.is_array() && !r.elements.empty() ? r.elements[0].str : kNone;
}

// ListRuns cursors: "<created_at ms>:<id>" of the last item returned (as SqliteStore's).
std::string RunCursor(int64_t created_ms, std::string_view id) {
  return std::to_string(created_ms) + ":" + std::string(id);
}

Status ParseRunCursor(const std::string& cursor, int64_t& created_ms, std::string& id) {
  const size_t colon = cursor.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == cursor.size() ||
      !ParseInt(std::string_view(cursor).substr(0, colon), created_ms)) {
    return InvalidArgument("invalid cursor '" + cursor + "'", "cursor");
  }
  id = cursor.substr(colon + 1);
  return Status::Ok();
}

// The member of the history indexes for (created_at, id): 16 digits, ':', id.
std::string HistoryMember(int64_t created_ms, std::string_view id) {
  char digits[32];
  std::snprintf(digits, sizeof digits, "%016lld",
                static_cast<long long>(std::max<int64_t>(created_ms, 0)));
  return std::string(digits) + ":" + std::string(id);
}

// The milliseconds of a "<ms, 16 digits>:<id>" member (history and due indexes), or none.
std::optional<int64_t> MemberMs(std::string_view member) {
  int64_t ms = 0;
  if (member.size() < 17 || member[16] != ':' || !ParseInt(member.substr(0, 16), ms)) return {};
  return ms;
}

// The claim order key of a run, as the ready index scores it.
int64_t ReadyScore(const RunRecord& r) {
  const int64_t p = std::clamp(r.priority, 0, 9);
  const int64_t a = std::clamp<int64_t>(ToUnixMillis(r.available_at), 0, kBand - 1);
  return (9 - p) * kBand + a;
}

// Stream entries (XRANGE's reply) as events of `tenant`.
Status AppendEvents(const Reply& entries, const std::string& tenant, std::vector<Event>& out) {
  for (const Reply& entry : entries.elements) {
    if (entry.elements.size() != 2) return Unexpected("XRANGE");
    Event e;
    e.tenant = tenant;
    const std::string& id = entry.elements[0].str;
    if (!ParseInt(std::string_view(id).substr(0, id.find('-')), e.seq)) return Unexpected("XRANGE");
    Fields f(entry.elements[1]);
    e.time = f.Time("time");
    e.type = f.Str("type");
    e.job_id = f.Str("job");
    e.run_id = f.Str("run");
    e.data = f.Str("data");
    if (!f.status().ok()) return Internal("event " + id + ": " + f.status().message());
    out.push_back(std::move(e));
  }
  return Status::Ok();
}

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "0";
}

// ---- URLs ---------------------------------------------------------------------------------

}  // namespace

std::string RedactStoreUrl(const std::string& url) {
  const size_t start = url.find("://");
  const size_t at = url.rfind('@');
  if (start == std::string::npos || at == std::string::npos || at < start) return url;
  const size_t colon = url.find(':', start + 3);
  const size_t from = colon != std::string::npos && colon < at ? colon + 1 : start + 3;
  return url.substr(0, from) + "***" + url.substr(at);
}

namespace {

bool PercentDecode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int v = 0;
    auto [end, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (ec != std::errc() || end != in.data() + i + 3) return false;
    out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

}  // namespace

// ---- Open -----------------------------------------------------------------------------------

RedisStore::RedisStore(std::unique_ptr<RedisBackend> backend) : backend_(std::move(backend)) {}

RedisStore::~RedisStore() = default;

const std::vector<std::string>& RedisStore::config_warnings() const {
  return backend_->config_warnings();
}

Result<std::unique_ptr<RedisStore>> RedisStore::Open(const RedisOptions& options) {
  if (options.host.empty()) return InvalidArgument("redis: empty host", "host");
  if (options.port < 1 || options.port > 65535) {
    return InvalidArgument("redis: port " + std::to_string(options.port) + " not in 1-65535",
                           "port");
  }
  if (options.db < 0) return InvalidArgument("redis: negative database number", "db");
  if (options.key_prefix.empty() || options.key_prefix.find_first_of("{}") != std::string::npos) {
    return InvalidArgument(
        "redis: key prefix '" + options.key_prefix + "' must be non-empty, without '{' or '}'",
        "key_prefix");
  }
  if (options.pool_size < 1) return InvalidArgument("redis: pool_size must be >= 1", "pool_size");
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    return InvalidArgument("redis: timeouts must be positive", "command_timeout");
  }
  if (options.max_events_per_tenant < 1) {
    return InvalidArgument("redis: max_events_per_tenant must be >= 1", "max_events_per_tenant");
  }
  auto backend = std::make_unique<RedisBackend>(options);
  RETURN_IF_ERROR(backend->Start());
  return std::unique_ptr<RedisStore>(new RedisStore(std::move(backend)));
}

Result<RedisOptions> RedisStore::ParseUrl(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("store url '" + RedactStoreUrl(url) + "': " + why +
                               "; expected redis://[user:password@]host:port[/db]",
                           "store");
  };
  constexpr std::string_view kScheme = "redis://";
  if (!url.starts_with(kScheme)) return bad("not a redis:// url");
  std::string_view rest = std::string_view(url).substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("query strings and fragments are not supported");
  }
  RedisOptions options;
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    int64_t n = 0;
    if (!db.empty()) {
      if (!ParseInt(db, n) || n < 0 || n > 1'000'000) {
        return bad("database '" + std::string(db) + "' is not a number");
      }
      options.db = static_cast<int>(n);
    }
  }
  const size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const size_t colon = userinfo.find(':');
    const std::string_view user = colon == std::string_view::npos ? "" : userinfo.substr(0, colon);
    const std::string_view password =
        colon == std::string_view::npos ? userinfo : userinfo.substr(colon + 1);
    if (!PercentDecode(user, options.user) || !PercentDecode(password, options.password)) {
      return bad("bad percent-encoding in the credentials");
    }
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    options.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) return bad("junk after the host");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    const size_t colon = authority.rfind(':');
    options.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
  }
  if (options.host.empty()) return bad("no host");
  if (options.host.find_first_of(":/@") != std::string::npos && !authority.starts_with('[')) {
    return bad("bad host '" + options.host + "'");
  }
  if (!port.empty()) {
    int64_t n = 0;
    if (!ParseInt(port, n) || n < 1 || n > 65535) {
      return bad("port '" + std::string(port) + "' is not in 1-65535");
    }
    options.port = static_cast<int>(n);
  }
  return options;
}

Result<std::optional<Store::ServerTimePoint>> RedisStore::ServerTime() {
  ASSIGN_OR_RETURN(Reply r, backend_->Call({"TIME"}));
  int64_t seconds = 0, micros = 0;
  if (r.elements.size() != 2 || !ParseInt(r.elements[0].str, seconds) ||
      !ParseInt(r.elements[1].str, micros)) {
    return Unexpected("TIME");
  }
  return std::optional<ServerTimePoint>(ServerTimePoint(std::chrono::seconds(seconds)) +
                                        std::chrono::microseconds(micros));
}

// ---- Jobs -----------------------------------------------------------------------------------

namespace {

// put_job's arguments for `job` (mode "create" or "put").
std::vector<std::string> PutJobArgs(const JobRecord& job, const char* mode,
                                    std::optional<int64_t> expected_version) {
  const JobSpec& spec = job.spec;
  std::string deps;
  for (const std::string& d : spec.depends_on) {
    if (!deps.empty()) deps += ' ';
    deps += d;
  }
  // The spec without its id: the key holds it.
  JobSpec stored = spec;
  stored.id.clear();
  std::vector<std::string> args = {mode,
                                   expected_version ? std::to_string(*expected_version) : "",
                                   spec.id,
                                   JobSpecToCompactJson(stored),
                                   spec.queue,
                                   spec.paused ? "1" : "0",
                                   JobStateName(job.state),
                                   OptMs(job.next_fire),
                                   Ms(job.dependency_since),
                                   Ms(job.created_at),
                                   Ms(job.updated_at),
                                   deps,
                                   std::to_string(spec.labels.size())};
  for (const auto& [k, v] : spec.labels) {
    args.push_back(k);
    args.push_back(v);
  }
  return args;
}

}  // namespace

Result<JobRecord> RedisStore::CreateJob(const JobRecord& job) {
  return WriteJob(job, std::nullopt, /*create=*/true);
}

Result<JobRecord> RedisStore::PutJob(const JobRecord& job,
                                     std::optional<int64_t> expected_version) {
  return WriteJob(job, expected_version, /*create=*/false);
}

Result<JobRecord> RedisStore::WriteJob(const JobRecord& job,
                                       std::optional<int64_t> expected_version, bool create) {
  RETURN_IF_ERROR(ValidateJobSpec(job.spec));
  const std::string& tenant = job.spec.tenant;
  const std::string& id = job.spec.id;
  ASSIGN_OR_RETURN(
      Reply r,
      backend_->Call(backend_->Eval(Script::kPutJob, tenant,
                                    PutJobArgs(job, create ? "create" : "put", expected_version)),
                     &tenant));
  const std::string& word = Word(r);
  if (word == "ok" && r.elements.size() == 2) return JobFromHash(r.elements[1], tenant);
  if (word == "exists") {
    return AlreadyExists("job '" + id + "' already exists in tenant '" + tenant + "'");
  }
  if (word == "not_found") return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
  if (word == "precondition" && r.elements.size() == 2) {
    return FailedPrecondition("version mismatch: job '" + id + "' is at version " +
                              r.elements[1].str + ", expected " +
                              std::to_string(expected_version.value_or(0)));
  }
  if (word == "exhausted" && r.elements.size() == 2) {
    return ResourceExhausted("tenant '" + tenant + "' has reached its quota of " +
                             r.elements[1].str + " jobs");
  }
  return Unexpected("put_job");
}

namespace {

// A job hash as read by HGETALL; kNotFound when it was absent.
Result<JobRecord> JobOrNotFound(const Reply& r, const std::string& tenant, const std::string& id) {
  if (r.elements.empty()) return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
  return JobFromHash(r, tenant, id);
}

}  // namespace

Result<JobRecord> RedisStore::GetJob(const std::string& tenant, const std::string& id) {
  ASSIGN_OR_RETURN(Reply r, backend_->Call({"HGETALL", backend_->TenantKey(tenant, "job:" + id)}));
  return JobOrNotFound(r, tenant, id);
}

Result<Page<JobRecord>> RedisStore::ListJobs(const std::string& tenant, const JobFilter& filter) {
  const int limit = Clamp(filter.limit, 1, kMaxPageSize);
  ASSIGN_OR_RETURN(Reply r, backend_->Call(backend_->Eval(
                                Script::kListJobs, tenant,
                                {filter.cursor, std::to_string(limit), filter.queue,
                                 filter.state ? JobStateName(*filter.state) : "", filter.label_key,
                                 filter.label_value, std::to_string(kScanBudget)})));
  if (!r.is_array() || r.elements.size() != 2) return Unexpected("list_jobs");
  Page<JobRecord> page;
  for (const Reply& h : r.elements[0].elements) {
    ASSIGN_OR_RETURN(JobRecord job, JobFromHash(h, tenant));
    page.items.push_back(std::move(job));
  }
  if (static_cast<int>(page.items.size()) > limit) {
    page.items.resize(limit);
    page.next_cursor = page.items.back().spec.id;
  } else if (!r.elements[1].str.empty()) {
    page.next_cursor = r.elements[1].str;
  }
  return page;
}

Status RedisStore::DeleteJob(const std::string& tenant, const std::string& id, TimePoint now,
                             bool kill_running) {
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call(backend_->Eval(Script::kDeleteJob, tenant,
                                                 {id, Ms(now), kill_running ? "1" : "0"})));
  const std::string& word = Word(r);
  if (word == "ok") return Status::Ok();
  if (word == "not_found") return NotFound("job '" + id + "' not found in tenant '" + tenant + "'");
  return Unexpected("delete_job");
}

namespace {

// The tenants of `scope` with due jobs, with the first due ms of each, in that order (ties by
// tenant id): up to `want` of those with a job due at `until_ms` at the latest. From the
// store-wide due index (redis_scripts.h), kept by the tenant scripts, in pages: the tenants
// excluded from the scope (assigned to other nodes) are passed over, and of many tenants, most
// have nothing due soon. (Reading each tenant's own index cost one read per tenant per wake-up
// of a scheduler.)
Result<std::vector<std::pair<std::string, int64_t>>> DueTenants(RedisBackend& backend,
                                                                const TenantScope& scope,
                                                                const std::string& until_ms,
                                                                size_t want) {
  std::vector<std::pair<std::string, int64_t>> out;
  const size_t page = std::max<size_t>(want, 128);
  for (size_t offset = 0;; offset += page) {
    ASSIGN_OR_RETURN(Reply r, backend.Call({"ZRANGEBYSCORE", backend.SysKey("due"), "-inf",
                                            until_ms, "WITHSCORES", "LIMIT", std::to_string(offset),
                                            std::to_string(page)}));
    const std::vector<Reply>& flat = r.elements;
    for (size_t i = 0; i + 1 < flat.size(); i += 2) {
      if (!scope.Covers(flat[i].str)) continue;
      int64_t ms = 0;
      if (!ParseScore(flat[i + 1].str, ms)) return Unexpected("due index");
      out.emplace_back(flat[i].str, ms);
      if (out.size() == want) return out;
    }
    if (flat.size() < 2 * page) return out;
  }
}

}  // namespace

Result<std::vector<JobRecord>> RedisStore::DueJobs(TimePoint now, int limit,
                                                   const TenantScope& scope) {
  const int n = Clamp(limit, 1, kMaxPageSize);
  // The first n tenants by first due time hold the n jobs due first: each tenant before
  // another holds a job due before (or with, and before it in tenant order) all of the other's.
  ASSIGN_OR_RETURN(auto tenants, DueTenants(*backend_, scope, Ms(now), static_cast<size_t>(n)));
  std::vector<Command> commands;
  for (const auto& [tenant, first_ms] : tenants) {
    commands.push_back(backend_->Eval(Script::kDue, tenant, {Ms(now), std::to_string(n)}));
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  std::vector<JobRecord> due;
  for (size_t i = 0; i < replies.size(); ++i) {
    for (const Reply& h : replies[i].elements) {
      ASSIGN_OR_RETURN(JobRecord job, JobFromHash(h, tenants[i].first));
      due.push_back(std::move(job));
    }
  }
  std::sort(due.begin(), due.end(), [](const JobRecord& a, const JobRecord& b) {
    return std::tie(a.next_fire, a.spec.tenant, a.spec.id) <
           std::tie(b.next_fire, b.spec.tenant, b.spec.id);
  });
  if (static_cast<int>(due.size()) > n) due.resize(n);
  return due;
}

Result<std::optional<TimePoint>> RedisStore::NextFireTime(const TenantScope& scope) {
  ASSIGN_OR_RETURN(auto first, DueTenants(*backend_, scope, "+inf", 1));
  if (first.empty()) return std::optional<TimePoint>();
  return std::optional<TimePoint>(FromUnixMillis(first[0].second));
}

namespace {

Result<Command> FireCommand(const RedisBackend& backend, const FireRequest& request) {
  RETURN_IF_ERROR(CheckNewRuns(request.tenant, request.job_id, request.runs));
  const TimePoint fire_time = FireTime(request);
  std::vector<std::string> args = {request.job_id,
                                   std::to_string(request.expected_version),
                                   OptMs(request.expected_next_fire),
                                   OptMs(request.next_fire),
                                   request.new_state ? JobStateName(*request.new_state) : "",
                                   OptMs(request.dependency_since),
                                   Ms(fire_time),
                                   std::to_string(request.runs.size())};
  for (const RunRecord& run : request.runs) AppendRunRecord(run, args);
  args.push_back(std::to_string(request.cancel_run_ids.size()));
  for (const std::string& id : request.cancel_run_ids) args.push_back(id);
  return backend.Eval(Script::kFire, request.tenant, std::move(args));
}

Result<FireResult> FireOutcome(const RedisBackend& backend, const Reply& r,
                               const FireRequest& request) {
  if (r.is_error()) return backend.ErrorStatus(r);
  const std::string& word = Word(r);
  if (word == "ok" && r.elements.size() == 3) {
    return FireResult{.created = static_cast<int>(r.elements[1].integer),
                      .existed = static_cast<int>(r.elements[2].integer)};
  }
  if (word == "not_found") {
    return NotFound("job '" + request.job_id + "' not found in tenant '" + request.tenant + "'");
  }
  if (word == "precondition" && r.elements.size() == 3) {
    int64_t next = 0;
    std::optional<TimePoint> next_fire;
    if (ParseInt(r.elements[2].str, next)) next_fire = FromUnixMillis(next);
    return FailedPrecondition("job '" + request.job_id + "' changed: version " + r.elements[1].str +
                              ", next_fire " + TimeText(next_fire) + "; expected version " +
                              std::to_string(request.expected_version) + ", next_fire " +
                              TimeText(request.expected_next_fire));
  }
  return Unexpected("fire");
}

}  // namespace

Result<FireResult> RedisStore::Fire(const FireRequest& request) {
  ASSIGN_OR_RETURN(Command command, FireCommand(*backend_, request));
  std::vector<Command> one;
  one.push_back(std::move(command));
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->Run(std::move(one)));
  return FireOutcome(*backend_, replies.front(), request);
}

// Pipelines one script call per item in a single round trip: `make` builds an item's command
// (an error is that item's result and sends nothing), `outcome` reads its reply; a failed round
// trip is every sent item's result.
template <typename Out, typename In, typename Make, typename Outcome>
std::vector<Out> RunBatch(RedisBackend& backend, std::span<const In> items, Make make,
                          Outcome outcome) {
  std::vector<Out> out(items.size(), Out(Status::Ok()));
  std::vector<Command> commands;
  std::vector<size_t> sent;  // the item of each command
  for (size_t i = 0; i < items.size(); ++i) {
    auto command = make(items[i]);
    if (!command.ok()) {
      out[i] = command.status();
      continue;
    }
    commands.push_back(std::move(command).value());
    sent.push_back(i);
  }
  auto replies = backend.Run(std::move(commands));
  for (size_t k = 0; k < sent.size(); ++k) {
    out[sent[k]] =
        replies.ok() ? Out(outcome((*replies)[k], items[sent[k]])) : Out(replies.status());
  }
  return out;
}

std::vector<Result<FireResult>> RedisStore::FireMany(std::span<const FireRequest> requests) {
  RedisBackend& b = *backend_;
  return RunBatch<Result<FireResult>>(
      b, requests, [&b](const FireRequest& r) { return FireCommand(b, r); },
      [&b](const Reply& reply, const FireRequest& r) { return FireOutcome(b, reply, r); });
}

// ---- Runs -----------------------------------------------------------------------------------

Status RedisStore::EnqueueRuns(const std::string& tenant, const std::string& job_id,
                               std::span<const RunRecord> runs) {
  RETURN_IF_ERROR(CheckNewRuns(tenant, job_id, runs));
  std::vector<std::string> args = {job_id, std::to_string(runs.size())};
  for (const RunRecord& run : runs) AppendRunRecord(run, args);
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call(backend_->Eval(Script::kEnqueue, tenant, std::move(args))));
  const std::string& word = Word(r);
  if (word == "ok") return Status::Ok();
  if (word == "not_found") {
    return NotFound("job '" + job_id + "' not found in tenant '" + tenant + "'");
  }
  if (word == "exists" && r.elements.size() == 2) {
    return AlreadyExists("run '" + r.elements[1].str + "' already exists");
  }
  return Unexpected("enqueue");
}

Result<RunRecord> RedisStore::GetRun(const std::string& tenant, const std::string& run_id) {
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call({"HGETALL", backend_->TenantKey(tenant, "run:" + run_id)}));
  if (r.elements.empty()) {
    return NotFound("run '" + run_id + "' not found in tenant '" + tenant + "'");
  }
  return RunFromHash(r, tenant);
}

Result<Page<RunRecord>> RedisStore::ListRuns(const std::string& tenant, const RunFilter& filter) {
  const int limit = Clamp(filter.limit, 1, kMaxPageSize);
  std::string cursor_member;
  if (!filter.cursor.empty()) {
    int64_t created_ms = 0;
    std::string id;
    RETURN_IF_ERROR(ParseRunCursor(filter.cursor, created_ms, id));
    cursor_member = HistoryMember(created_ms, id);
  }
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call(backend_->Eval(
                       Script::kListRuns, tenant,
                       {filter.job_id.empty() ? "runs" : "runs:" + filter.job_id, cursor_member,
                        std::to_string(limit), filter.state ? RunStateName(*filter.state) : "",
                        std::to_string(kScanBudget), std::to_string(filter.output_tail)})));
  if (!r.is_array() || r.elements.size() != 2) return Unexpected("list_runs");
  Page<RunRecord> page;
  for (const Reply& h : r.elements[0].elements) {
    ASSIGN_OR_RETURN(RunRecord run, RunFromHash(h, tenant));
    page.items.push_back(std::move(run));
  }
  if (static_cast<int>(page.items.size()) > limit) {
    page.items.resize(limit);
    const RunRecord& last = page.items.back();
    page.next_cursor = RunCursor(ToUnixMillis(last.created_at), last.id);
  } else if (const std::string& resume = r.elements[1].str; !resume.empty()) {
    const std::optional<int64_t> created_ms = MemberMs(resume);
    if (!created_ms || resume.size() < 18) return Unexpected("list_runs");
    page.next_cursor = RunCursor(*created_ms, std::string_view(resume).substr(17));
  }
  return page;
}

namespace {

// read_index over one tenant's index: the runs (or jobs) it names.
Result<std::vector<RunRecord>> RunsFromReply(const Reply& r, const std::string& tenant) {
  std::vector<RunRecord> runs;
  for (const Reply& h : r.elements) {
    ASSIGN_OR_RETURN(RunRecord run, RunFromHash(h, tenant));
    runs.push_back(std::move(run));
  }
  return runs;
}

Result<std::vector<RunRecord>> IndexedRuns(RedisBackend& backend, const std::string& tenant,
                                           std::vector<std::string> args) {
  ASSIGN_OR_RETURN(Reply r,
                   backend.Call(backend.Eval(Script::kReadIndex, tenant, std::move(args))));
  return RunsFromReply(r, tenant);
}

void SortByCreation(std::vector<RunRecord>& runs) {
  std::sort(runs.begin(), runs.end(), [](const RunRecord& a, const RunRecord& b) {
    return std::tie(a.created_at, a.id) < std::tie(b.created_at, b.id);
  });
}

}  // namespace

Result<std::vector<RunRecord>> RedisStore::ActiveRuns(const std::string& tenant,
                                                      const std::string& job_id) {
  ASSIGN_OR_RETURN(std::vector<RunRecord> runs,
                   IndexedRuns(*backend_, tenant, {"set", "active:" + job_id, "run:"}));
  SortByCreation(runs);
  return runs;
}

std::vector<Result<std::vector<RunRecord>>> RedisStore::ActiveRunsMany(
    std::span<const JobRef> jobs) {
  RedisBackend& b = *backend_;
  return RunBatch<Result<std::vector<RunRecord>>>(
      b, jobs,
      [&b](const JobRef& j) -> Result<Command> {
        return b.Eval(Script::kReadIndex, j.tenant, {"set", "active:" + j.job_id, "run:"});
      },
      [&b](const Reply& reply, const JobRef& j) -> Result<std::vector<RunRecord>> {
        if (reply.is_error()) return b.ErrorStatus(reply);
        ASSIGN_OR_RETURN(std::vector<RunRecord> runs, RunsFromReply(reply, j.tenant));
        SortByCreation(runs);
        return runs;
      });
}

std::vector<Result<JobRecord>> RedisStore::GetJobs(std::span<const JobRef> jobs) {
  RedisBackend& b = *backend_;
  return RunBatch<Result<JobRecord>>(
      b, jobs,
      [&b](const JobRef& j) -> Result<Command> {
        return Command{"HGETALL", b.TenantKey(j.tenant, "job:" + j.job_id)};
      },
      [&b](const Reply& reply, const JobRef& j) -> Result<JobRecord> {
        if (reply.is_error()) return b.ErrorStatus(reply);
        return JobOrNotFound(reply, j.tenant, j.job_id);
      });
}

Result<std::vector<RunRecord>> RedisStore::FinishedRunsSince(const std::string& tenant,
                                                             const std::string& job_id,
                                                             TimePoint since) {
  // The index is ordered by (finished_at, id), as the contract asks.
  return IndexedRuns(*backend_, tenant,
                     {"zrange", "finished:" + job_id, "run:", "(" + Ms(since), "+inf", "-1"});
}

Result<std::vector<JobRecord>> RedisStore::Dependents(const std::string& tenant,
                                                      const std::string& job_id) {
  ASSIGN_OR_RETURN(Reply r, backend_->Call(backend_->Eval(Script::kReadIndex, tenant,
                                                          {"set", "deps:" + job_id, "job:"})));
  std::vector<JobRecord> jobs;
  for (const Reply& h : r.elements) {
    ASSIGN_OR_RETURN(JobRecord job, JobFromHash(h, tenant));
    jobs.push_back(std::move(job));
  }
  std::sort(jobs.begin(), jobs.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.spec.id < b.spec.id; });
  return jobs;
}

Result<std::vector<RunRecord>> RedisStore::ClaimRuns(const ClaimRequest& request) {
  std::vector<RunRecord> claimed;
  if (request.max_runs <= 0) return claimed;
  const int max_runs = std::min(request.max_runs, kMaxPageSize);
  ASSIGN_OR_RETURN(RedisBackend::TenantList known, backend_->SharedTenants(/*fresh=*/false));
  std::vector<std::string> tenants;
  auto claim_args = [&](const char* mode, int n) {
    std::vector<std::string> args = {mode,
                                     request.node,
                                     Ms(request.now),
                                     Ms(request.now + request.lease),
                                     std::to_string(n),
                                     Ms(request.until()),
                                     request.after ? Ms(*request.after) : "",
                                     std::to_string(request.queues.size())};
    args.insert(args.end(), request.queues.begin(), request.queues.end());
    return args;
  };
  // Claims: one script per tenant with a share, in one pipeline. Returns how many were claimed.
  // A tenant's refusal (e.g. out of memory) is the result only when nothing was claimed: runs
  // claimed by the other scripts are running now and must reach the caller.
  auto claim = [&](const std::vector<std::pair<size_t, int>>& shares) -> Result<int> {
    std::vector<Command> commands;
    for (const auto& [t, n] : shares) {
      commands.push_back(backend_->Eval(Script::kClaim, tenants[t], claim_args("claim", n)));
    }
    ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->Run(std::move(commands)));
    int got = 0;
    Status refused;
    for (size_t k = 0; k < replies.size(); ++k) {
      if (replies[k].is_error()) {
        refused = backend_->ErrorStatus(replies[k]);
        continue;
      }
      for (const Reply& h : replies[k].elements) {
        ASSIGN_OR_RETURN(RunRecord run, RunFromHash(h, tenants[shares[k].first]));
        claimed.push_back(std::move(run));
        ++got;
      }
    }
    if (!refused.ok() && claimed.empty()) return refused;
    return got;
  };
  if (known->size() == 1) {
    tenants = *known;
  } else {
    // Only tenants with a run available by `until` are claimed from, as the ready index lists
    // them: of many tenants, most have nothing to run at any moment, and a claim script in each
    // (a peek) costs 10-40 µs of the server. (With a peek in each, 1,000 tenants without work
    // took a busy one from ~30k to ~5.6k runs/s: `jobsched-bench throughput --idle-tenants
    // 1000`.) With `after`, of those the ones with a run in (after, until].
    const std::string hi = Ms(request.until());
    ASSIGN_OR_RETURN(Reply ready,
                     backend_->Call({"ZRANGEBYSCORE", backend_->SysKey("ready"), "-inf", hi}));
    for (const Reply& t : ready.elements) tenants.push_back(t.str);
    if (request.after && !tenants.empty()) {
      std::vector<Command> reads;
      for (const std::string& t : tenants) {
        reads.push_back({"ZRANGEBYSCORE", backend_->TenantKey(t, "pending"),
                         "(" + Ms(*request.after), hi, "LIMIT", "0", "1"});
      }
      ASSIGN_OR_RETURN(std::vector<Reply> available, backend_->RunAll(std::move(reads)));
      std::vector<std::string> busy;
      for (size_t t = 0; t < tenants.size(); ++t) {
        if (!available[t].elements.empty()) busy.push_back(std::move(tenants[t]));
      }
      tenants = std::move(busy);
    }
  }
  if (tenants.empty()) return claimed;
  if (tenants.size() == 1) {
    RETURN_IF_ERROR(claim({{0, max_runs}}).status());
    return claimed;
  }
  // Several tenants: read every tenant's best candidates, merge them in claim order, and let each
  // tenant claim its share. Another node may win some of them meanwhile (the tenant then claims
  // its next ones, or fewer): a few rounds fill the request.
  for (int round = 0; round < 4; ++round) {
    const int need = max_runs - static_cast<int>(claimed.size());
    if (need <= 0) break;
    std::vector<Command> peeks;
    for (const std::string& t : tenants) {
      peeks.push_back(backend_->Eval(Script::kClaim, t, claim_args("peek", need)));
    }
    ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(peeks)));
    struct Candidate {
      int64_t score;
      std::string id;
      size_t tenant;
    };
    std::vector<Candidate> candidates;
    for (size_t t = 0; t < replies.size(); ++t) {
      const std::vector<Reply>& flat = replies[t].elements;
      for (size_t j = 0; j + 1 < flat.size(); j += 2) {
        Candidate c{0, flat[j].str, t};
        if (!ParseInt(flat[j + 1].str, c.score)) return Unexpected("claim (peek)");
        candidates.push_back(std::move(c));
      }
    }
    if (candidates.empty()) break;
    // Fewer candidates than asked for: the tenants have no more (another round would peek again
    // for nothing).
    const bool all = static_cast<int>(candidates.size()) < need;
    std::sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
      return std::tie(a.score, a.id, tenants[a.tenant]) <
             std::tie(b.score, b.id, tenants[b.tenant]);
    });
    if (static_cast<int>(candidates.size()) > need) candidates.resize(need);
    std::map<size_t, int> share;
    for (const Candidate& c : candidates) ++share[c.tenant];
    ASSIGN_OR_RETURN(int got, claim({share.begin(), share.end()}));
    if (got == 0 || all) break;
  }
  std::sort(claimed.begin(), claimed.end(), [](const RunRecord& a, const RunRecord& b) {
    const int64_t sa = ReadyScore(a), sb = ReadyScore(b);
    return std::tie(sa, a.id, a.tenant) < std::tie(sb, b.id, b.tenant);
  });
  return claimed;
}

Result<std::optional<TimePoint>> RedisStore::NextAvailableTime() {
  ASSIGN_OR_RETURN(Reply first,
                   backend_->Call({"ZRANGE", backend_->SysKey("ready"), "0", "0", "WITHSCORES"}));
  if (first.elements.size() != 2) return std::optional<TimePoint>();
  int64_t score = 0;
  if (!ParseScore(first.elements[1].str, score)) return Unexpected("ZRANGE");
  return std::optional<TimePoint>(FromUnixMillis(score));
}

Result<std::vector<LeaseStatus>> RedisStore::RenewLeases(std::span<const LeaseRef> leases,
                                                         TimePoint now, Duration lease) {
  std::vector<LeaseStatus> statuses(leases.size(), LeaseStatus::kStale);
  if (leases.empty()) return statuses;
  std::map<std::string, std::vector<size_t>> by_tenant;
  for (size_t i = 0; i < leases.size(); ++i) by_tenant[leases[i].tenant].push_back(i);
  std::vector<Command> commands;
  for (const auto& [tenant, refs] : by_tenant) {
    std::vector<std::string> args = {Ms(now + lease)};
    for (size_t i : refs) {
      args.push_back(leases[i].run_id);
      args.push_back(std::to_string(leases[i].fence));
    }
    commands.push_back(backend_->Eval(Script::kRenew, tenant, std::move(args)));
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  size_t k = 0;
  for (const auto& [tenant, refs] : by_tenant) {
    const Reply& r = replies[k++];
    if (r.elements.size() != refs.size()) return Unexpected("renew");
    for (size_t j = 0; j < refs.size(); ++j) {
      const long long v = r.elements[j].integer;
      statuses[refs[j]] = v == 1   ? LeaseStatus::kRenewed
                          : v == 2 ? LeaseStatus::kCancelRequested
                                   : LeaseStatus::kStale;
    }
  }
  return statuses;
}

namespace {

// Appends the 12 arguments of one completion to `args` (see the complete script).
Status AppendCompletion(const Completion& c, std::vector<std::string>& args) {
  RETURN_IF_ERROR(CheckCompletion(c));
  std::string outcome = c.attempt_outcome;
  if (outcome.empty()) {
    outcome = c.state == RunState::kRetryWait ? "failed" : RunStateName(c.state);
  }
  args.insert(args.end(), {c.run_id, std::to_string(c.fence), Ms(c.now), RunStateName(c.state),
                           c.state == RunState::kRetryWait ? Ms(*c.retry_at) : "", outcome,
                           OptInt(c.exit_code), OptInt(c.http_status), c.output, c.error,
                           !c.began       ? "-"
                           : c.started_at ? Ms(*c.started_at)
                                          : "",
                           c.output_bytes ? std::to_string(*c.output_bytes) : ""});
  return Status::Ok();
}

}  // namespace

Status RedisStore::Complete(const Completion& completion) {
  return CompleteMany({&completion, 1}).front();
}

std::vector<Status> RedisStore::CompleteMany(std::span<const Completion> completions) {
  // One script call per tenant and batch of up to 256 completions, all in one pipeline.
  constexpr size_t kBatch = 256;
  std::vector<Status> out(completions.size(), Status::Ok());
  std::map<std::string, std::vector<size_t>> by_tenant;
  for (size_t i = 0; i < completions.size(); ++i) {
    by_tenant[completions[i].tenant].push_back(i);
  }
  std::vector<Command> commands;
  std::vector<std::vector<size_t>> sent;  // the completions of each command
  for (const auto& [tenant, items] : by_tenant) {
    for (size_t from = 0; from < items.size(); from += kBatch) {
      std::vector<std::string> args = {""};
      std::vector<size_t> batch;
      for (size_t k = from; k < std::min(items.size(), from + kBatch); ++k) {
        Status appended = AppendCompletion(completions[items[k]], args);
        if (!appended.ok()) {
          out[items[k]] = appended;
          continue;
        }
        batch.push_back(items[k]);
      }
      if (batch.empty()) continue;
      args[0] = std::to_string(batch.size());
      commands.push_back(backend_->Eval(Script::kComplete, tenant, std::move(args)));
      sent.push_back(std::move(batch));
    }
  }
  if (commands.empty()) return out;
  auto replies = backend_->Run(std::move(commands));
  for (size_t k = 0; k < sent.size(); ++k) {
    const Reply* r = replies.ok() ? &(*replies)[k] : nullptr;
    for (size_t j = 0; j < sent[k].size(); ++j) {
      Status& s = out[sent[k][j]];
      if (!replies.ok()) {
        s = replies.status();
      } else if (r->is_error()) {
        s = backend_->ErrorStatus(*r);
      } else if (r->elements.size() != sent[k].size()) {
        s = Unexpected("complete");
      } else if (r->elements[j].str == "ok") {
        s = Status::Ok();
      } else if (r->elements[j].str == "stale") {
        s = FailedPrecondition(kStaleToken);
      } else if (r->elements[j].str == kCancelWithdrawn) {
        s = FailedPrecondition(kCancelWithdrawn);
      } else {
        s = Unexpected("complete");
      }
    }
  }
  return out;
}

Status RedisStore::CancelRun(const std::string& tenant, const std::string& run_id, TimePoint now) {
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call(backend_->Eval(Script::kCancelRun, tenant, {run_id, Ms(now)})));
  const std::string& word = Word(r);
  if (word == "ok") return Status::Ok();
  if (word == "not_found") {
    return NotFound("run '" + run_id + "' not found in tenant '" + tenant + "'");
  }
  if (word == "ended" && r.elements.size() == 2) {
    return FailedPrecondition("run '" + run_id + "' already ended: " + r.elements[1].str);
  }
  return Unexpected("cancel_run");
}

Result<std::vector<RunRecord>> RedisStore::RecoverLostRuns(TimePoint now, const std::string& node,
                                                           int max_leases_lost, int limit) {
  int remaining = Clamp(limit, 1, kMaxPageSize);
  std::vector<RunRecord> recovered;
  // The tenants with candidates, from the leases index (tenant -> its earliest lease deadline):
  // by deadline, those with a lease expired before now; by node, those with running runs. The
  // reaper runs every second on every node: one read, not one per tenant.
  ASSIGN_OR_RETURN(Reply found, backend_->Call({"ZRANGEBYSCORE", backend_->SysKey("leases"), "-inf",
                                                node.empty() ? "(" + Ms(now) : "+inf"}));
  for (const Reply& t : found.elements) {
    if (remaining <= 0) break;
    auto r = backend_->Call(backend_->Eval(
        Script::kRecover, t.str,
        {Ms(now), node, std::to_string(max_leases_lost), std::to_string(remaining)}));
    if (!r.ok()) {
      // The runs recovered so far are queued again already: report them; the rest waits for
      // the next pass.
      if (recovered.empty()) return r.status();
      break;
    }
    for (const Reply& h : r->elements) {
      ASSIGN_OR_RETURN(RunRecord run, RunFromHash(h, t.str));
      recovered.push_back(std::move(run));
      --remaining;
    }
  }
  return recovered;
}

Result<int64_t> RedisStore::PruneRuns(TimePoint older_than, int keep_per_job) {
  ASSIGN_OR_RETURN(std::vector<std::string> tenants, backend_->Tenants(/*fresh=*/true));
  std::vector<Command> lists;
  for (const std::string& t : tenants)
    lists.push_back({"SMEMBERS", backend_->TenantKey(t, "runjobs")});
  ASSIGN_OR_RETURN(std::vector<Reply> jobs, backend_->RunAll(std::move(lists)));
  // Each job's history is pruned oldest first, kPruneLook runs per script call (a call holds
  // Redis for its duration), in rounds of up to kPruneBatch pipelined calls; a job whose call
  // says there is more comes back in the next round, past the runs it kept.
  struct Pass {
    size_t tenant;
    std::string job;
    int64_t skip = 0;
  };
  std::vector<Pass> candidates;
  for (size_t t = 0; t < tenants.size(); ++t) {
    for (const Reply& job : jobs[t].elements) candidates.push_back({t, job.str});
  }
  // A script only for the jobs with something to prune: a history longer than the runs kept
  // whose oldest run was created before the cut (a run finishes after it is created). Two plain
  // reads cost the server ~1 µs where a script costs 10-20, and most jobs of a large store have
  // nothing old at any given pass.
  std::vector<Pass> passes;
  for (size_t from = 0; from < candidates.size(); from += kPruneBatch) {
    const size_t to = std::min(candidates.size(), from + kPruneBatch);
    std::vector<Command> reads;
    for (size_t i = from; i < to; ++i) {
      const std::string history =
          backend_->TenantKey(tenants[candidates[i].tenant], "runs:" + candidates[i].job);
      reads.push_back({"ZCARD", history});
      reads.push_back({"ZRANGE", history, "0", "0"});
    }
    ASSIGN_OR_RETURN(std::vector<Reply> found, backend_->RunAll(std::move(reads)));
    for (size_t i = from; i < to; ++i) {
      const Reply& count = found[2 * (i - from)];
      const Reply& oldest = found[2 * (i - from) + 1];
      if (count.integer <= std::max(keep_per_job, 0) || oldest.elements.empty()) continue;
      const std::optional<int64_t> created = MemberMs(oldest.elements[0].str);
      if (created && FromUnixMillis(*created) >= older_than) continue;
      passes.push_back(std::move(candidates[i]));
    }
  }
  int64_t deleted = 0;
  while (!passes.empty()) {
    std::vector<Pass> again;
    for (size_t from = 0; from < passes.size(); from += kPruneBatch) {
      const size_t to = std::min(passes.size(), from + kPruneBatch);
      std::vector<Command> batch;
      for (size_t i = from; i < to; ++i) {
        batch.push_back(backend_->Eval(
            Script::kPruneJob, tenants[passes[i].tenant],
            {passes[i].job, Ms(older_than), std::to_string(std::max(keep_per_job, 0)),
             std::to_string(passes[i].skip), std::to_string(kPruneLook)}));
      }
      ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(batch)));
      for (size_t i = from; i < to; ++i) {
        const Reply& r = replies[i - from];
        if (r.elements.size() != 3) return Internal("prune_job: unexpected reply");
        deleted += r.elements[0].integer;
        if (r.elements[2].integer == 1) {
          Pass next = passes[i];
          next.skip += r.elements[1].integer;
          again.push_back(std::move(next));
        }
      }
    }
    passes = std::move(again);
  }
  return deleted;
}

Result<std::vector<RunCount>> RedisStore::CountRuns(const std::string& tenant,
                                                    const std::string& job_id) {
  std::vector<std::string> tenants = {tenant};
  if (tenant.empty()) {
    ASSIGN_OR_RETURN(tenants, backend_->Tenants(/*fresh=*/true));
  }
  const std::string key = job_id.empty() ? "counts" : "jcounts:" + job_id;
  std::vector<Command> commands;
  for (const std::string& t : tenants) commands.push_back({"HGETALL", backend_->TenantKey(t, key)});
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  // (tenant, queue, state name) -> count; fields "<queue>|<state>" and "<queue>|<state>|d".
  std::map<std::tuple<std::string, std::string, std::string>, RunCount> groups;
  for (size_t t = 0; t < tenants.size(); ++t) {
    const std::vector<Reply>& flat = replies[t].elements;
    for (size_t j = 0; j + 1 < flat.size(); j += 2) {
      const std::string& field = flat[j].str;
      const size_t bar = field.find('|');
      if (bar == std::string::npos) return Unexpected("HGETALL counts");
      const size_t bar2 = field.find('|', bar + 1);
      const std::string queue = field.substr(0, bar);
      const std::string state_name =
          field.substr(bar + 1, bar2 == std::string::npos ? std::string::npos : bar2 - bar - 1);
      ASSIGN_OR_RETURN(RunState state, ParseRunState(state_name));
      int64_t v = 0;
      if (!ParseInt(flat[j + 1].str, v)) return Unexpected("HGETALL counts");
      RunCount& g = groups[{tenants[t], queue, state_name}];
      g.tenant = tenants[t];
      g.queue = queue;
      g.state = state;
      (bar2 == std::string::npos ? g.count : g.total_duration_ms) += v;
    }
  }
  std::vector<RunCount> out;
  for (auto& [key_, g] : groups) {
    if (g.count > 0) out.push_back(std::move(g));
  }
  return out;
}

Result<std::vector<JobCount>> RedisStore::CountJobs() {
  ASSIGN_OR_RETURN(std::vector<std::string> tenants, backend_->Tenants(/*fresh=*/true));
  std::vector<Command> commands;
  for (const std::string& t : tenants) {
    commands.push_back({"HGETALL", backend_->TenantKey(t, "job_counts")});
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  std::vector<JobCount> out;
  for (size_t t = 0; t < tenants.size(); ++t) {  // tenants are sorted
    std::map<std::string, int64_t> by_state;     // by name, as SqliteStore orders them
    const std::vector<Reply>& flat = replies[t].elements;
    for (size_t j = 0; j + 1 < flat.size(); j += 2) {
      int64_t v = 0;
      if (!ParseInt(flat[j + 1].str, v)) return Unexpected("HGETALL job_counts");
      by_state[flat[j].str] += v;
    }
    for (const auto& [name, count] : by_state) {
      if (count <= 0) continue;
      ASSIGN_OR_RETURN(JobState state, ParseJobState(name));
      out.push_back({.tenant = tenants[t], .state = state, .count = count});
    }
  }
  return out;
}

// ---- Events ---------------------------------------------------------------------------------

Status RedisStore::AppendEvent(const Event& event) {
  return backend_
      ->Call(backend_->Eval(Script::kAppendEvent, event.tenant,
                            {Ms(event.time), event.type, event.job_id, event.run_id, event.data}),
             &event.tenant)
      .status();
}

Result<std::vector<Event>> RedisStore::ReadEvents(const std::string& tenant, int64_t after_seq,
                                                  int limit) {
  const int n = Clamp(limit, 1, kMaxPageSize);
  std::vector<Event> events;
  if (after_seq == std::numeric_limits<int64_t>::max()) return events;
  const std::string start = std::to_string(std::max<int64_t>(after_seq, 0) + 1) + "-0";
  if (!tenant.empty()) {
    ASSIGN_OR_RETURN(Reply r, backend_->Call({"XRANGE", backend_->TenantKey(tenant, "events"),
                                              start, "+", "COUNT", std::to_string(n)}));
    RETURN_IF_ERROR(AppendEvents(r, tenant, events));
    return events;
  }
  ASSIGN_OR_RETURN(RedisBackend::TenantList list, backend_->SharedTenants(/*fresh=*/false));
  const std::vector<std::string>& tenants = *list;
  if (tenants.empty()) return events;
  // One MULTI: a consistent cut of every stream. Read one at a time, an event committed to a
  // tenant already read could have a smaller seq than one read later, and be skipped forever.
  std::vector<Command> commands = {{"MULTI"}};
  for (const std::string& t : tenants) {
    commands.push_back(
        {"XRANGE", backend_->TenantKey(t, "events"), start, "+", "COUNT", std::to_string(n)});
  }
  commands.push_back({"EXEC"});
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  const Reply& results = replies.back();
  if (results.elements.size() != tenants.size()) return Unexpected("EXEC");
  for (size_t t = 0; t < tenants.size(); ++t) {
    if (results.elements[t].is_error()) return backend_->ErrorStatus(results.elements[t]);
    RETURN_IF_ERROR(AppendEvents(results.elements[t], tenants[t], events));
  }
  std::sort(events.begin(), events.end(),
            [](const Event& a, const Event& b) { return a.seq < b.seq; });
  if (static_cast<int>(events.size()) > n) events.resize(n);
  return events;
}

namespace {

// The seq of the entry an "XREVRANGE <stream> + - COUNT 1" returned (0: the stream is empty).
Result<int64_t> LastSeqOf(const Reply& reply) {
  if (reply.elements.empty() || reply.elements[0].elements.empty()) return int64_t{0};
  const std::string& id = reply.elements[0].elements[0].str;
  int64_t seq = 0;
  if (!ParseInt(std::string_view(id).substr(0, id.find('-')), seq)) return Unexpected("XREVRANGE");
  return seq;
}

}  // namespace

Status RedisStore::PruneEvents(int64_t keep) {
  ASSIGN_OR_RETURN(std::vector<std::string> tenants, backend_->Tenants(/*fresh=*/true));
  if (tenants.empty()) return Status::Ok();
  std::vector<Command> commands;
  if (keep <= 0) {
    for (const std::string& t : tenants)
      commands.push_back({"DEL", backend_->TenantKey(t, "events")});
    return backend_->RunAll(std::move(commands)).status();
  }
  // Sequence numbers are store-wide and given in order, so the newest `keep` events are those
  // numbered above last - keep: each stream drops what is numbered at or below it (events
  // appended meanwhile are newer: kept). Only the streams' lengths and last entries are read,
  // never the events. (Events a tenant's own cap trimmed still count: the store may then keep
  // fewer than `keep`.)
  for (const std::string& t : tenants) {
    commands.push_back({"XLEN", backend_->TenantKey(t, "events")});
    commands.push_back({"XREVRANGE", backend_->TenantKey(t, "events"), "+", "-", "COUNT", "1"});
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  int64_t total = 0, last = 0;
  for (size_t i = 0; i + 1 < replies.size(); i += 2) {
    total += replies[i].integer;
    ASSIGN_OR_RETURN(int64_t seq, LastSeqOf(replies[i + 1]));
    last = std::max(last, seq);
  }
  if (total <= keep) return Status::Ok();
  const std::string min_id = std::to_string(last - keep + 1) + "-0";
  commands.clear();
  for (const std::string& t : tenants) {
    commands.push_back({"XTRIM", backend_->TenantKey(t, "events"), "MINID", min_id});
  }
  return backend_->RunAll(std::move(commands)).status();
}

Result<int64_t> RedisStore::LastEventSeq() {
  ASSIGN_OR_RETURN(RedisBackend::TenantList list, backend_->SharedTenants(/*fresh=*/false));
  const std::vector<std::string>& tenants = *list;
  std::vector<Command> commands;
  for (const std::string& t : tenants) {
    commands.push_back({"XREVRANGE", backend_->TenantKey(t, "events"), "+", "-", "COUNT", "1"});
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  int64_t last = 0;
  for (const Reply& r : replies) {
    ASSIGN_OR_RETURN(int64_t seq, LastSeqOf(r));
    last = std::max(last, seq);
  }
  return last;
}

// ---- Tenants --------------------------------------------------------------------------------

namespace {

Result<TenantRecord> TenantFromHash(const Reply& flat) {
  Fields f(flat);
  TenantRecord t{.id = f.Str("id"),
                 .max_jobs = f.Int("max_jobs"),
                 .max_concurrent_runs = f.Int("max_concurrent_runs"),
                 .created_at = f.Time("created"),
                 .updated_at = f.Time("updated")};
  for (size_t j = 0; j + 1 < flat.elements.size(); j += 2) {
    const std::string& field = flat.elements[j].str;
    if (!field.starts_with("ql:")) continue;
    int64_t limit = 0;
    if (!ParseInt(flat.elements[j + 1].str, limit)) f.Fail(field, flat.elements[j + 1].str);
    t.queue_limits[field.substr(3)] = limit;
  }
  if (!f.status().ok()) return Internal("tenant '" + t.id + "': " + f.status().message());
  return t;
}

constexpr char kDefaultTenant[] = "default";

}  // namespace

Status RedisStore::PutTenant(const TenantRecord& tenant) {
  RETURN_IF_ERROR(ValidateTenantId(tenant.id, "id"));
  if (tenant.max_jobs < 0) return InvalidArgument("max_jobs: must not be negative", "max_jobs");
  if (tenant.max_concurrent_runs < 0) {
    return InvalidArgument("max_concurrent_runs: must not be negative", "max_concurrent_runs");
  }
  std::vector<std::string> args = {tenant.id, std::to_string(tenant.max_jobs),
                                   std::to_string(tenant.max_concurrent_runs),
                                   Ms(tenant.created_at), Ms(tenant.updated_at)};
  for (const auto& [queue, limit] : tenant.queue_limits) {
    RETURN_IF_ERROR(ValidateQueueName(queue, "queue_limits." + queue));
    if (limit < 1) {
      return InvalidArgument("queue_limits." + queue + ": must be at least 1",
                             "queue_limits." + queue);
    }
    args.push_back(queue);
    args.push_back(std::to_string(limit));
  }
  return backend_->Call(backend_->Eval(Script::kPutTenant, tenant.id, std::move(args)), &tenant.id)
      .status();
}

Result<TenantRecord> RedisStore::GetTenant(const std::string& id) {
  ASSIGN_OR_RETURN(Reply r, backend_->Call({"HGETALL", backend_->TenantKey(id, "tenant")}));
  if (r.elements.empty()) {
    if (id == kDefaultTenant) return TenantRecord{.id = kDefaultTenant};
    return NotFound("tenant '" + id + "' not found");
  }
  return TenantFromHash(r);
}

Result<std::vector<TenantRecord>> RedisStore::ListTenants() {
  ASSIGN_OR_RETURN(std::vector<std::string> tenants, backend_->Tenants(/*fresh=*/true));
  std::vector<Command> commands;
  for (const std::string& t : tenants)
    commands.push_back({"HGETALL", backend_->TenantKey(t, "tenant")});
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  std::vector<TenantRecord> out;
  bool has_default = false;
  for (const Reply& r : replies) {
    if (r.elements.empty()) continue;
    ASSIGN_OR_RETURN(TenantRecord t, TenantFromHash(r));
    has_default = has_default || t.id == kDefaultTenant;
    out.push_back(std::move(t));
  }
  if (!has_default) out.push_back(TenantRecord{.id = kDefaultTenant});
  std::sort(out.begin(), out.end(),
            [](const TenantRecord& a, const TenantRecord& b) { return a.id < b.id; });
  return out;
}

// ---- Nodes and keys -------------------------------------------------------------------------

Status RedisStore::Heartbeat(const NodeInfo& node) {
  const std::string key = backend_->SysKey("node:" + node.id);
  std::vector<Command> commands = {
      {"MULTI"},
      // Written by Open, never deleted: without it the data is gone (below).
      {"EXISTS", backend_->SysKey("layout")},
      {"DEL", key},
      {"HSET",        key,
       "id",          node.id,
       "host",        node.host,
       "pid",         std::to_string(node.pid),
       "version",     node.version,
       "queues",      Json(node.queues).dump(-1, ' ', false, Json::error_handler_t::replace),
       "concurrency", std::to_string(node.concurrency),
       "cpu",         FormatDouble(node.cpu_seconds),
       "rss",         std::to_string(node.rss_bytes),
       "started",     Ms(node.started_at),
       "heartbeat",   Ms(node.heartbeat_at)},
      {"ZADD", backend_->SysKey("nodes"), Ms(node.heartbeat_at), node.id},
      {"EXEC"}};
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  for (const Reply& r : replies.back().elements) {
    if (r.is_error()) return backend_->ErrorStatus(r);
  }
  if (!replies.back().elements.empty() && replies.back().elements[0].integer == 0) {
    return FailedPrecondition(
        "the store's data is gone (its key layout marker is missing): Redis was restarted "
        "without persistence, or flushed, and the jobs, runs and API keys it held are lost; "
        "restart the nodes to begin afresh");
  }
  return Status::Ok();
}

Result<std::vector<NodeInfo>> RedisStore::ListNodes() {
  ASSIGN_OR_RETURN(Reply ids, backend_->Call({"ZRANGE", backend_->SysKey("nodes"), "0", "-1"}));
  std::vector<Command> commands;
  for (const Reply& id : ids.elements) {
    commands.push_back({"HGETALL", backend_->SysKey("node:" + id.str)});
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  std::vector<NodeInfo> nodes;
  for (const Reply& r : replies) {
    if (r.elements.empty()) continue;
    Fields f(r);
    NodeInfo n;
    n.id = f.Str("id");
    n.host = f.Str("host");
    n.pid = static_cast<int>(f.Int("pid"));
    n.version = f.Str("version");
    try {
      n.queues = Json::parse(f.Str("queues")).get<std::vector<std::string>>();
    } catch (const Json::exception& e) {
      return Internal("node '" + n.id + "': corrupt queues: " + e.what());
    }
    n.concurrency = static_cast<int>(f.Int("concurrency"));
    const std::string& cpu = f.Str("cpu");
    if (auto [end, ec] = std::from_chars(cpu.data(), cpu.data() + cpu.size(), n.cpu_seconds);
        ec != std::errc()) {
      f.Fail("cpu", cpu);
    }
    n.rss_bytes = f.Int("rss");
    n.started_at = f.Time("started");
    n.heartbeat_at = f.Time("heartbeat");
    if (!f.status().ok()) return Internal("node '" + n.id + "': " + f.status().message());
    nodes.push_back(std::move(n));
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  return nodes;
}

Status RedisStore::RemoveNode(const std::string& id) {
  return backend_
      ->RunAll({{"MULTI"},
                {"DEL", backend_->SysKey("node:" + id)},
                {"ZREM", backend_->SysKey("nodes"), id},
                {"EXEC"}})
      .status();
}

// ---- Cluster --------------------------------------------------------------------------------

Result<LeaderLease> RedisStore::AcquireLeadership(const std::string& node, TimePoint now,
                                                  Duration ttl) {
  ASSIGN_OR_RETURN(Reply r, backend_->Call(backend_->EvalSys(
                                Script::kAcquireLeader, {backend_->SysKey("leader")},
                                {node, Ms(now), std::to_string(ttl.count())})));
  LeaderLease lease;
  if (r.elements.size() != 3 || r.elements[1].type != Reply::kInteger ||
      r.elements[2].type != Reply::kInteger) {
    return Unexpected("acquire_leader");
  }
  lease.epoch = r.elements[1].integer;
  const int64_t expires = r.elements[2].integer;
  lease.node = r.elements[0].str;
  lease.expires_at = FromUnixMillis(expires);
  return lease;
}

Result<std::optional<LeaderLease>> RedisStore::GetLeader(TimePoint now) {
  ASSIGN_OR_RETURN(
      Reply r, backend_->Call({"HMGET", backend_->SysKey("leader"), "node", "epoch", "expires"}));
  if (r.elements.size() != 3 || r.elements[0].type == Reply::kNil) {
    return std::optional<LeaderLease>();
  }
  LeaderLease lease{.node = r.elements[0].str};
  int64_t expires = 0;
  if (!ParseInt(r.elements[1].str, lease.epoch) || !ParseInt(r.elements[2].str, expires)) {
    return Unexpected("the leader lease");
  }
  lease.expires_at = FromUnixMillis(expires);
  if (lease.expires_at <= now) return std::optional<LeaderLease>();
  return std::optional<LeaderLease>(std::move(lease));
}

Status RedisStore::ReleaseLeadership(const std::string& node, int64_t epoch) {
  return backend_
      ->Call(backend_->EvalSys(Script::kReleaseLeader, {backend_->SysKey("leader")},
                               {node, std::to_string(epoch)}))
      .status();
}

Status RedisStore::PutAssignment(const std::string& node, int64_t epoch, TimePoint now,
                                 const TenantOwners& owners) {
  ASSIGN_OR_RETURN(
      Reply r, backend_->Call(backend_->EvalSys(
                   Script::kPutAssignment, {backend_->SysKey("leader"), backend_->SysKey("assign")},
                   {node, std::to_string(epoch), Ms(now),
                    Json(owners).dump(-1, ' ', false, Json::error_handler_t::replace)})));
  if (r.integer != 1) {
    return FailedPrecondition("node '" + node + "' does not hold the leader lease of epoch " +
                              std::to_string(epoch));
  }
  return Status::Ok();
}

Result<Assignment> RedisStore::GetAssignment() {
  ASSIGN_OR_RETURN(Reply r, backend_->Call({"HGETALL", backend_->SysKey("assign")}));
  Assignment a;
  if (r.elements.empty()) return a;
  Fields f(r);
  a.epoch = f.Int("epoch");
  a.updated_at = f.Time("updated");
  if (!f.status().ok()) return Internal("tenant assignment: " + f.status().message());
  const Json owners = Json::parse(f.Str("owners"), nullptr, /*allow_exceptions=*/false);
  if (!owners.is_object()) return Internal("corrupt tenant assignment");
  for (const auto& [tenant, owner] : owners.items()) {
    if (!owner.is_string()) return Internal("corrupt tenant assignment of '" + tenant + "'");
    a.owners[tenant] = owner.get<std::string>();
  }
  return a;
}

namespace {

constexpr char kWakeTopics[] = {'r', 'j', 'c'};  // WakeTopic order

// Message: topic letter, origin, [tenant, run id], separated by '\n' (ids never hold one).
std::string WakeText(const WakeMessage& message) {
  std::string text(1, kWakeTopics[static_cast<size_t>(message.topic)]);
  text += '\n' + message.origin;
  if (message.topic == WakeTopic::kCancelRun) text += '\n' + message.tenant + '\n' + message.run_id;
  return text;
}

}  // namespace

Status RedisStore::Publish(const WakeMessage& message) {
  return backend_->Call({"PUBLISH", backend_->SysKey("wake"), WakeText(message)}).status();
}

void RedisStore::Subscribe(std::function<void(const WakeMessage&)> handler) {
  if (!handler) {
    backend_->Subscribe(backend_->SysKey("wake"), {});
    return;
  }
  backend_->Subscribe(
      backend_->SysKey("wake"),
      [handler = std::move(handler)](const std::string& text) {
        std::vector<std::string> parts;
        size_t start = 0;
        while (start <= text.size()) {
          size_t end = text.find('\n', start);
          if (end == std::string::npos) end = text.size();
          parts.push_back(text.substr(start, end - start));
          start = end + 1;
        }
        if (parts.size() < 2 || parts[0].size() != 1) return;
        WakeMessage m{.origin = parts[1]};
        switch (parts[0][0]) {
          case 'r':
            m.topic = WakeTopic::kRunsReady;
            break;
          case 'j':
            m.topic = WakeTopic::kJobsChanged;
            break;
          case 'c':
            if (parts.size() != 4) return;
            m.topic = WakeTopic::kCancelRun;
            m.tenant = parts[2];
            m.run_id = parts[3];
            break;
          default:
            return;  // a newer version's topic
        }
        handler(m);
      },
      // Wake-ups lost while the subscription was down: as if every job had
      // changed and runs were ready (from no node: "" is no node's id).
      {WakeText({.topic = WakeTopic::kJobsChanged}), WakeText({.topic = WakeTopic::kRunsReady})});
}

namespace {

Result<ApiKeyRecord> ApiKeyFromHash(const Reply& flat, const std::string& secret_hash) {
  Fields f(flat);
  ApiKeyRecord key{.id = f.Str("id"),
                   .secret_hash = secret_hash,
                   .tenant = f.Str("tenant"),
                   .role = f.Str("role"),
                   .allow_shell = f.Str("shell") == "1",
                   .name = f.Str("name"),
                   .created_at = f.Time("created")};
  if (!f.status().ok()) return Internal("api key '" + key.id + "': " + f.status().message());
  return key;
}

}  // namespace

Status RedisStore::PutApiKey(const ApiKeyRecord& key) {
  ASSIGN_OR_RETURN(Reply r,
                   backend_->Call(backend_->EvalSys(
                       Script::kPutApiKey,
                       {backend_->SysKey("keys"), backend_->SysKey("key:" + key.secret_hash)},
                       {key.id, key.secret_hash, key.tenant, key.role, key.allow_shell ? "1" : "0",
                        key.name, Ms(key.created_at)})));
  if (r.integer == 0) return AlreadyExists("api key '" + key.id + "' already exists");
  return Status::Ok();
}

Result<ApiKeyRecord> RedisStore::GetApiKeyByHash(const std::string& secret_hash) {
  ASSIGN_OR_RETURN(Reply r, backend_->Call({"HGETALL", backend_->SysKey("key:" + secret_hash)}));
  // The message does not echo the hash: it is a credential's fingerprint.
  if (r.elements.empty()) return NotFound("no api key has that hash");
  return ApiKeyFromHash(r, secret_hash);
}

Result<std::vector<ApiKeyRecord>> RedisStore::ListApiKeys() {
  ASSIGN_OR_RETURN(Reply index, backend_->Call({"HGETALL", backend_->SysKey("keys")}));
  std::vector<Command> commands;
  std::vector<std::string> hashes;
  for (size_t j = 0; j + 1 < index.elements.size(); j += 2) {
    hashes.push_back(index.elements[j + 1].str);
    commands.push_back({"HGETALL", backend_->SysKey("key:" + hashes.back())});
  }
  ASSIGN_OR_RETURN(std::vector<Reply> replies, backend_->RunAll(std::move(commands)));
  std::vector<ApiKeyRecord> keys;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].elements.empty()) continue;
    ASSIGN_OR_RETURN(ApiKeyRecord key, ApiKeyFromHash(replies[i], hashes[i]));
    keys.push_back(std::move(key));
  }
  std::sort(keys.begin(), keys.end(),
            [](const ApiKeyRecord& a, const ApiKeyRecord& b) { return a.id < b.id; });
  return keys;
}

Status RedisStore::DeleteApiKey(const std::string& id) {
  ASSIGN_OR_RETURN(
      Reply r, backend_->Call(backend_->EvalSys(Script::kDeleteApiKey, {backend_->SysKey("keys")},
                                                {id, backend_->SysKey("key:")})));
  if (r.integer == 0) return NotFound("api key '" + id + "' not found");
  if (r.integer < 0) return LastAdminKey(id);
  return Status::Ok();
}

}  // namespace jobsched
