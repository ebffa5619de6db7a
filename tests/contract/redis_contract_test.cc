// The Store contract suite on RedisStore, against a redis-server this test process starts
// (tests/support/redis_server.h), plus what only Redis shows: URLs, an unreachable or
// out-of-memory server, the key layout's hash tags, lost scripts, several stores on one server.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <jobsched/store.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "contract/store_contract_test.h"
#include "core/job_codec.h"
#include "store/redis_store.h"
#include "support/redis_server.h"
#include "support/tcp_proxy.h"

namespace jobsched::contract {
namespace {

using ::jobsched::testing::RedisServer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

RedisServer* const kRedis = RedisServer::AddEnvironment();

// A store on the test server; `flush`: on an empty database first.
std::unique_ptr<RedisStore> MustOpen(bool flush = true, RedisOptions options = {}) {
  if (!kRedis->ok()) {
    ADD_FAILURE() << "no redis-server for the test: " << kRedis->error();
    return nullptr;
  }
  if (flush && !kRedis->FlushAll()) return nullptr;
  options.host = "127.0.0.1";
  options.port = kRedis->port();
  auto store = RedisStore::Open(options);
  if (!store.ok()) {
    ADD_FAILURE() << "RedisStore::Open(" << kRedis->address() << "): " << store.status().ToString();
    return nullptr;
  }
  return std::move(store).value();
}

INSTANTIATE_TEST_SUITE_P(Redis, StoreContractTest, ::testing::Values(StoreFactory([] {
                           return std::unique_ptr<Store>(MustOpen());
                         })),
                         [](const ::testing::TestParamInfo<StoreFactory>&) {
                           return std::string("Server");
                         });

const TimePoint kT0 = FromUnixMillis(1'700'000'000'000);

JobRecord Job(const std::string& tenant, const std::string& id) {
  JobRecord job;
  job.spec.id = id;
  job.spec.tenant = tenant;
  job.spec.handler.name = "noop";
  job.next_fire = kT0;
  job.created_at = kT0;
  job.updated_at = kT0;
  return job;
}

RunRecord NewRun(const std::string& tenant, const std::string& job_id, const std::string& id,
                 int priority = 5) {
  RunRecord run;
  run.id = id;
  run.job_id = job_id;
  run.tenant = tenant;
  run.priority = priority;
  run.scheduled_at = run.available_at = run.created_at = kT0;
  return run;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// ---- URLs and Open --------------------------------------------------------------------------

TEST(RedisStoreUrl, ParsesEveryPart) {
  auto plain = RedisStore::ParseUrl("redis://10.0.0.5:6380");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->host, "10.0.0.5");
  EXPECT_EQ(plain->port, 6380);
  EXPECT_EQ(plain->db, 0);
  EXPECT_EQ(plain->user, "");
  EXPECT_EQ(plain->password, "");

  auto full = RedisStore::ParseUrl("redis://ops:s%40cret@cache.internal:7000/3");
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->host, "cache.internal");
  EXPECT_EQ(full->port, 7000);
  EXPECT_EQ(full->db, 3);
  EXPECT_EQ(full->user, "ops");
  EXPECT_EQ(full->password, "s@cret");

  auto password_only = RedisStore::ParseUrl("redis://:pw@h");
  ASSERT_TRUE(password_only.ok());
  EXPECT_EQ(password_only->user, "");
  EXPECT_EQ(password_only->password, "pw");
  EXPECT_EQ(password_only->port, 6379) << "the default port";

  auto v6 = RedisStore::ParseUrl("redis://[::1]:6390/");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 6390);
}

TEST(RedisStoreUrl, MalformedUrlsAreInvalidArgumentsNamingTheUrl) {
  for (const std::string url :
       {"redis://", "redis://:6379", "redis://host:", "redis://host:0", "redis://host:70000",
        "redis://host:port", "redis://host:6379/x", "redis://host:6379/-1", "redis://[::1:6379",
        "redis://host:6379?db=1", "redis://u:%zz@host:6379"}) {
    SCOPED_TRACE(url);
    auto store = OpenStore(url);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(store.status().message(), HasSubstr("store url '"));
    EXPECT_THAT(store.status().message(), HasSubstr("redis://[user:password@]host:port[/db]"));
  }
  // The url is named, its password is not.
  auto bad = OpenStore("redis://admin:hunter2@host:notaport");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'redis://admin:***@host:notaport'"));
  EXPECT_THAT(bad.status().message(), ::testing::Not(HasSubstr("hunter2")));
}

TEST(RedisStoreOpen, UnreachableServerIsUnavailableNamingIt) {
  const std::string address = "127.0.0.1:" + std::to_string(RedisServer::FreePort());
  auto store = OpenStore("redis://" + address);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(store.status().message(), HasSubstr("redis " + address + " unreachable: "));
}

// A server that stops answering (stopped, or a silent network: here a proxy that forwards
// nothing) makes one call wait its command timeout; until a call succeeds again the others fail
// at once with that reason, while one call at a time, once per backoff period, tries it. When
// the server answers again, calls work again, also after probes that failed otherwise (a cut).
TEST(RedisStoreServer, AServerThatStopsAnsweringFailsCallsAtOnceAfterOneTimeout) {
  ASSERT_TRUE(kRedis->ok()) << kRedis->error();
  ::jobsched::testing::TcpProxy proxy(kRedis->port());
  ASSERT_TRUE(proxy.ok()) << proxy.error();
  auto store = RedisStore::Open({.host = "127.0.0.1",
                                 .port = proxy.port(),
                                 .key_prefix = "hung",
                                 .command_timeout = Duration(300)});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->GetTenant("default").ok());

  proxy.Stall();
  auto first = (*store)->GetTenant("default");
  ASSERT_EQ(first.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(first.status().message(), HasSubstr("timed out"));
  // Made one after the other right away, each would wait 300 ms for its own timeout: at most
  // one of them (a probe, if a backoff period ends meanwhile) is an attempt.
  int attempts = 0;
  for (int i = 0; i < 5; ++i) {
    auto again = (*store)->GetTenant("default");
    ASSERT_EQ(again.status().code(), StatusCode::kUnavailable);
    EXPECT_THAT(again.status().message(), HasSubstr("timed out"));
    if (again.status().message().find("the outcome of the call is unknown") != std::string::npos)
      ++attempts;
  }
  EXPECT_LE(attempts, 2) << "calls waited for a server known not to answer";

  // Then cut (connections closed as they are made): the probes fail otherwise than by a
  // timeout, for about 3 s (one probe per backoff period of at most 2 s).
  proxy.Cut();
  for (int i = 0; i < 60; ++i) {
    EXPECT_FALSE((*store)->GetTenant("default").ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  proxy.Restore();
  Status back = Unavailable("not tried");
  for (int i = 0; i < 200 && !back.ok(); ++i) {  // bounded: a probe per backoff period (<= 2 s)
    back = (*store)->GetTenant("default").status();
    if (!back.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(back.ok()) << back.ToString();
}

TEST(RedisStoreOpen, OpenStoreWithAUrlSelectsTheDatabase) {
  ASSERT_TRUE(kRedis->ok()) << kRedis->error();
  ASSERT_TRUE(kRedis->FlushAll());
  auto store = OpenStore("redis://" + kRedis->address() + "/5");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->CreateJob(Job("default", "j")).ok());
  EXPECT_EQ(kRedis->Command({"DBSIZE"}), "0") << "nothing in database 0";
  EXPECT_EQ(kRedis->Commands({{"SELECT", "5"}, {"EXISTS", "js:{t:default}:job:j"}}), "1");
}

TEST(RedisStoreOpen, PasswordsAreSentAndCheckedAtOpen) {
  ASSERT_TRUE(kRedis->ok()) << kRedis->error();
  ASSERT_TRUE(kRedis->FlushAll());
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "requirepass", "s3cret"}), "OK");
  auto without = OpenStore("redis://" + kRedis->address());
  auto wrong = OpenStore("redis://default:nope@" + kRedis->address());
  auto with = OpenStore("redis://:s3cret@" + kRedis->address());
  Status created = with.ok() ? (*with)->CreateJob(Job("default", "j")).status() : with.status();
  ASSERT_EQ(kRedis->Commands({{"AUTH", "s3cret"}, {"CONFIG", "SET", "requirepass", ""}}), "OK");

  EXPECT_EQ(without.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(without.status().message(), HasSubstr("NOAUTH"));
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(wrong.status().message(), ::testing::Not(HasSubstr("nope")));
  EXPECT_TRUE(created.ok()) << created.ToString();
}

// A server configured to lose data without an error is reported at open: a maxmemory-policy
// that evicts keys, and no append-only file (the test server runs without one).
TEST(RedisStoreOpen, AConfigurationThatLosesDataIsReported) {
  ASSERT_TRUE(kRedis->ok()) << kRedis->error();
  auto plain = MustOpen();
  ASSERT_NE(plain, nullptr);
  ASSERT_THAT(plain->config_warnings(), ::testing::SizeIs(1));
  EXPECT_THAT(plain->config_warnings()[0], HasSubstr("appendonly is off"));

  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"}), "OK");
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "appendonly", "yes"}), "OK");
  auto evicting = MustOpen();
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}), "OK");
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "appendonly", "no"}), "OK");
  ASSERT_NE(evicting, nullptr);
  ASSERT_THAT(evicting->config_warnings(), ::testing::SizeIs(1));
  EXPECT_THAT(evicting->config_warnings()[0], HasSubstr("maxmemory-policy is allkeys-lru"));
}

// ---- Server behaviour -----------------------------------------------------------------------

TEST(RedisStoreServer, ServerTimeIsTheServersClock) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  auto t = store->ServerTime();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(t->has_value()) << "Redis has a clock";
  const auto skew = **t - std::chrono::system_clock::now();
  EXPECT_LT(std::chrono::abs(skew), std::chrono::seconds(5)) << "same machine, same clock";
  // To the microsecond: of a few reads, not all fall on a whole millisecond.
  bool sub_ms = false;
  for (int i = 0; i < 5 && !sub_ms; ++i) {
    auto again = store->ServerTime();
    ASSERT_TRUE(again.ok() && again->has_value());
    sub_ms = (*again)->time_since_epoch().count() % 1000 != 0;
  }
  EXPECT_TRUE(sub_ms);
}

// Two stores on the test server, one subscribed to the wake-ups the other publishes: `got`
// records what arrives (under `mu`, notifying `cv`).
struct WakePair {
  std::unique_ptr<RedisStore> publisher = MustOpen();
  std::unique_ptr<RedisStore> subscriber = MustOpen(/*flush=*/false);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<WakeMessage> got;

  // Subscribes, and publishes until the first wake-up arrives (the subscription starts on its
  // own thread). True once one has; `got` is then cleared.
  bool Start() {
    if (!publisher || !subscriber) return false;
    subscriber->Subscribe([this](const WakeMessage& m) {
      std::lock_guard lock(mu);
      got.push_back(m);
      cv.notify_all();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::unique_lock lock(mu);
    while (got.empty() && std::chrono::steady_clock::now() < deadline) {
      lock.unlock();
      EXPECT_TRUE(publisher->Publish({.topic = WakeTopic::kRunsReady, .origin = "n1"}).ok());
      lock.lock();
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !got.empty(); });
    }
    if (got.empty()) return false;
    EXPECT_EQ(got.front().topic, WakeTopic::kRunsReady);
    EXPECT_EQ(got.front().origin, "n1");
    got.clear();
    return true;
  }
};

TEST(RedisStoreServer, WakeUpsPublishedByOneStoreReachAnotherStoresSubscriber) {
  WakePair pair;
  ASSERT_TRUE(pair.Start()) << "no wake-up arrived";
  auto& [publisher, subscriber, mu, cv, got] = pair;
  ASSERT_TRUE(publisher
                  ->Publish({.topic = WakeTopic::kCancelRun,
                             .origin = "n2",
                             .tenant = "acme",
                             .run_id = "job@123"})
                  .ok());
  ASSERT_TRUE(publisher->Publish({.topic = WakeTopic::kJobsChanged, .origin = "n3"}).ok());
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] {
    return std::any_of(got.begin(), got.end(),
                       [](const WakeMessage& m) { return m.topic == WakeTopic::kJobsChanged; });
  }));
  auto cancel = std::find_if(got.begin(), got.end(),
                             [](const WakeMessage& m) { return m.topic == WakeTopic::kCancelRun; });
  ASSERT_NE(cancel, got.end());
  EXPECT_EQ(cancel->origin, "n2");
  EXPECT_EQ(cancel->tenant, "acme");
  EXPECT_EQ(cancel->run_id, "job@123");
  lock.unlock();
  // Removing the handler: nothing is delivered after Subscribe({}) returns.
  subscriber->Subscribe({});
  {
    std::lock_guard relock(mu);
    got.clear();
  }
  ASSERT_TRUE(publisher->Publish({.topic = WakeTopic::kRunsReady, .origin = "n1"}).ok());
  ASSERT_TRUE(publisher->ServerTime().ok());  // a round trip after the publish
  std::lock_guard relock(mu);
  EXPECT_TRUE(got.empty());
}

TEST(RedisStoreServer, ASubscriptionBackAfterAFailureReportsTheWakeUpsItMayHaveLost) {
  WakePair pair;
  ASSERT_TRUE(pair.Start()) << "the subscription did not start";
  auto& [publisher, subscriber, mu, cv, got] = pair;
  // The subscriber's connection is cut; a job changes while it is down (the message is lost).
  kRedis->Command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(publisher->Publish({.topic = WakeTopic::kJobsChanged, .origin = "n1"}).ok());
  std::unique_lock lock(mu);
  const auto from_nowhere = [&](WakeTopic topic) {
    return std::any_of(got.begin(), got.end(),
                       [&](const WakeMessage& m) { return m.topic == topic && m.origin.empty(); });
  };
  ASSERT_TRUE(cv.wait_for(
      lock, std::chrono::seconds(10),
      [&] { return from_nowhere(WakeTopic::kJobsChanged) && from_nowhere(WakeTopic::kRunsReady); }))
      << "back, the subscription reported no lost wake-ups (" << got.size() << " messages)";
  lock.unlock();
  subscriber->Subscribe({});
}

TEST(RedisStoreServer, OutOfMemoryIsUnavailableAndWritesNothing) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(Job("default", "before")).ok());
  ASSERT_TRUE(
      store->EnqueueRuns("default", "before", std::vector{NewRun("default", "before", "r")}).ok());
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "maxmemory", "1"}), "OK");
  auto created = store->CreateJob(Job("default", "after"));
  auto claimed = store->ClaimRuns({.node = "n", .now = kT0});
  Status event = store->AppendEvent({.tenant = "default", .time = kT0, .type = "audit"});
  ASSERT_EQ(kRedis->Command({"CONFIG", "SET", "maxmemory", "0"}), "OK");

  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(created.status().message(), HasSubstr("OOM"));
  EXPECT_EQ(claimed.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(event.code(), StatusCode::kUnavailable);
  EXPECT_EQ(store->GetJob("default", "after").status().code(), StatusCode::kNotFound);
  auto run = store->GetRun("default", "r");
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, RunState::kQueued) << "a refused claim claims nothing";
  auto claimed_now = store->ClaimRuns({.node = "n", .now = kT0});
  ASSERT_TRUE(claimed_now.ok());
  EXPECT_EQ(claimed_now->size(), 1u);
  EXPECT_EQ((*claimed_now)[0].attempt, 1);
}

TEST(RedisStoreServer, LostScriptsAreLoadedAgain) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(kRedis->Command({"SCRIPT", "FLUSH"}), "OK");  // as after a restart or a failover
  auto created = store->CreateJob(Job("default", "j"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(kRedis->Command({"SCRIPT", "FLUSH"}), "OK");
  std::vector<FireRequest> fires = {{.tenant = "default",
                                     .job_id = "j",
                                     .expected_version = 1,
                                     .expected_next_fire = kT0,
                                     .next_fire = kT0 + Duration(60000),
                                     .runs = {NewRun("default", "j", "j@1")}}};
  auto results = store->FireMany(fires);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[0]->created, 1);
}

// A Redis that lost its data under a running node (restarted without persistence, flushed) is
// reported by the node's next heartbeat, which /readyz shows: not taken for an empty store.
TEST(RedisStoreServer, AHeartbeatReportsAStoreWhoseDataIsGone) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  NodeInfo node{.id = "n1", .host = "h", .pid = 1, .heartbeat_at = kT0};
  ASSERT_TRUE(store->Heartbeat(node).ok());
  ASSERT_TRUE(kRedis->FlushAll());
  const Status lost = store->Heartbeat(node);
  EXPECT_EQ(lost.code(), StatusCode::kFailedPrecondition) << lost.ToString();
  EXPECT_THAT(lost.message(), HasSubstr("data is gone"));
  auto reopened = MustOpen(/*flush=*/false);
  ASSERT_NE(reopened, nullptr);
  EXPECT_TRUE(reopened->Heartbeat(node).ok()) << "a node started afresh";
}

TEST(RedisStoreServer, EveryKeyCarriesATenantOrSystemHashTag) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (const char* tenant : {"default", "team-a"}) {
    JobRecord job = Job(tenant, "j");
    job.spec.labels = {{"k", "v"}};
    ASSERT_TRUE(store->CreateJob(job).ok());
    ASSERT_TRUE(store
                    ->EnqueueRuns(tenant, "j",
                                  std::vector{NewRun(tenant, "j", "r1"), NewRun(tenant, "j", "r2")})
                    .ok());
  }
  std::vector<RunRecord> claimed =
      store->ClaimRuns({.node = "n", .now = kT0, .max_runs = 3}).value();
  ASSERT_EQ(claimed.size(), 3u);
  ASSERT_TRUE(store
                  ->Complete({.tenant = claimed[0].tenant,
                              .run_id = claimed[0].id,
                              .fence = claimed[0].fence,
                              .now = kT0})
                  .ok());
  ASSERT_TRUE(store->Heartbeat({.id = "n", .heartbeat_at = kT0}).ok());
  ASSERT_TRUE(store->PutApiKey({.id = "k", .secret_hash = "abc", .role = "admin"}).ok());
  ASSERT_TRUE(store->PutTenant({.id = "team-a", .max_jobs = 5}).ok());

  std::vector<std::string> keys = Lines(kRedis->Command({"KEYS", "*"}));
  ASSERT_GT(keys.size(), 20u);
  for (const std::string& key : keys) {
    const bool tenant = key.starts_with("js:{t:default}:") || key.starts_with("js:{t:team-a}:");
    const bool sys = key.starts_with("js:{sys}:");
    EXPECT_TRUE(tenant || sys) << key;
  }
}

TEST(RedisStoreServer, JobsAddedInOrderFillTheirChunks) {
  // Ids (and next fires) that only grow, the common case of generated ids and one-time jobs,
  // leave full chunks behind rather than half-full ones: 300 jobs take 4 chunks of <= 96.
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 300; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "seq-%04d", i);
    JobRecord job = Job("default", id);
    job.next_fire = kT0 + Duration(i);
    ASSERT_TRUE(store->CreateJob(job).ok()) << id;
  }
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{t:default}:jobs"}), "4");
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{t:default}:due"}), "4");
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{t:default}:jobs:"}), "96");
  auto due = store->DueJobs(kT0 + Duration(299), 1000, {});
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 300u);
  EXPECT_EQ(due->back().spec.id, "seq-0299");
}

// A job as key layout 1 stored it (before the layout had a version): a hash of long field
// names with the spec, id included, in 60-byte pieces; `jobs` and `due` plain sorted sets.
std::vector<std::vector<std::string>> Layout1Job(const JobRecord& job) {
  const std::string p = "js:{t:" + job.spec.tenant + "}:";
  std::string deps;
  for (const std::string& d : job.spec.depends_on) deps += (deps.empty() ? "" : " ") + d;
  const auto ms = [](TimePoint t) { return std::to_string(ToUnixMillis(t)); };
  std::vector<std::string> hset = {"HSET",      p + "job:" + job.spec.id,
                                   "id",        job.spec.id,
                                   "queue",     job.spec.queue,
                                   "paused",    job.spec.paused ? "1" : "0",
                                   "version",   std::to_string(job.version),
                                   "state",     std::string(JobStateName(job.state)),
                                   "next_fire", job.next_fire ? ms(*job.next_fire) : "",
                                   "dep_since", ms(job.dependency_since),
                                   "created",   ms(job.created_at),
                                   "updated",   ms(job.updated_at),
                                   "deps",      deps};
  const std::string spec = JobSpecToCompactJson(job.spec);
  for (size_t i = 0; i * 60 < spec.size(); ++i) {
    hset.push_back(i == 0 ? "spec" : "spec" + std::to_string(i + 1));
    hset.push_back(spec.substr(i * 60, 60));
  }
  for (const auto& [k, v] : job.spec.labels) {
    hset.push_back("l:" + k);
    hset.push_back(v);
  }
  std::vector<std::vector<std::string>> out = {
      hset, {"ZADD", p + "jobs", "0", job.spec.id}, {"SADD", "js:{sys}:tenants", job.spec.tenant}};
  if (job.next_fire && !job.spec.paused) {
    out.push_back({"ZADD", p + "due", ms(*job.next_fire), job.spec.id});
  }
  for (const std::string& d : job.spec.depends_on) {
    out.push_back({"SADD", p + "deps:" + d, job.spec.id});
  }
  return out;
}

TEST(RedisStoreServer, JobsOfKeyLayout1AreMovedToThisLayoutAtOpen) {
  ASSERT_TRUE(kRedis->FlushAll());
  std::vector<std::vector<std::string>> commands;
  std::vector<std::string> ids;
  for (int i = 0; i < 1200; ++i) {  // three batches of the move
    JobRecord job = Job("default", "j" + std::to_string(i));
    job.next_fire = kT0 + Duration(i % 7);
    job.version = 3;
    job.updated_at = kT0 + Duration(5);
    for (auto& c : Layout1Job(job)) commands.push_back(std::move(c));
    ids.push_back(job.spec.id);
  }
  JobRecord rich = Job("team-a", "report");
  rich.spec.queue = "reports";
  rich.spec.paused = true;
  rich.spec.labels = {{"team", "finance"}};
  rich.spec.depends_on = {"extract"};
  rich.spec.payload = "{\"text\":\"" + std::string(150, 'x') + "\"}";  // a spec of 4 pieces
  rich.dependency_since = kT0 + Duration(2);
  for (auto& c : Layout1Job(rich)) commands.push_back(std::move(c));
  for (auto& c : Layout1Job(Job("team-a", "extract"))) commands.push_back(std::move(c));
  kRedis->Commands(commands);

  auto store = MustOpen(/*flush=*/false);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(kRedis->Command({"GET", "js:{sys}:layout"}), "5");

  auto got = store->GetJob("team-a", "report");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->spec.id, "report");
  EXPECT_EQ(got->spec.queue, "reports");
  EXPECT_TRUE(got->spec.paused);
  EXPECT_EQ(got->spec.labels, rich.spec.labels);
  EXPECT_EQ(got->spec.depends_on, rich.spec.depends_on);
  EXPECT_EQ(got->spec.payload, rich.spec.payload);
  EXPECT_EQ(got->dependency_since, rich.dependency_since);
  EXPECT_EQ(got->next_fire, rich.next_fire);
  EXPECT_EQ(store->Dependents("team-a", "extract").value().size(), 1u);
  EXPECT_EQ(store->ListJobs("team-a", {.label_key = "team", .label_value = "finance"})
                .value()
                .items.size(),
            1u);

  // Every job in id order, each with its version and times.
  const auto all_ids = [](Store& st) {
    std::vector<std::string> out;
    JobFilter filter{.limit = 500};
    for (;;) {
      auto page = st.ListJobs("default", filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) return out;
      for (const JobRecord& job : page->items) {
        out.push_back(job.spec.id);
        if (job.spec.id != "new") {
          EXPECT_EQ(job.version, 3);
          EXPECT_EQ(job.updated_at, kT0 + Duration(5));
        }
      }
      if (!page->next_cursor) return out;
      filter.cursor = *page->next_cursor;
    }
  };
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(all_ids(*store), ids);
  // Due at kT0: the 172 jobs j<7k> and team-a's extract; not the paused report.
  auto due = store->DueJobs(kT0, 1000, {});
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(due->size(), 173u);
  for (const JobRecord& job : *due) EXPECT_EQ(job.next_fire, kT0) << job.spec.id;
  EXPECT_EQ(store->NextFireTime({}).value(), kT0);
  for (const std::string key : {"js:{t:default}:jobs.v1", "js:{t:team-a}:jobs.v1"}) {
    EXPECT_EQ(kRedis->Command({"EXISTS", key}), "0");
  }

  // A job written after the move is read like the moved ones; a second open moves nothing.
  ASSERT_TRUE(store->CreateJob(Job("default", "new")).ok());
  auto again = MustOpen(/*flush=*/false);
  ASSERT_NE(again, nullptr);
  ids.push_back("new");
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(all_ids(*again), ids);
}

TEST(RedisStoreServer, DataOfAnUnknownKeyLayoutIsRefusedNotMisread) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(Job("default", "j")).ok());
  kRedis->Command({"SET", "js:{sys}:layout", "6"});
  auto reopened = RedisStore::Open({.host = "127.0.0.1", .port = kRedis->port()});
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(reopened.status().message(), HasSubstr("key layout 6"));
  EXPECT_THAT(reopened.status().message(), HasSubstr("prefix 'js'"));
  // Another prefix on the same server is a store of its own.
  EXPECT_NE(MustOpen(false, {.key_prefix = "other"}), nullptr);
}

TEST(RedisStoreServer, KeyPrefixesSeparateStoresOnOneServer) {
  auto a = MustOpen(true, {.key_prefix = "blue"});
  auto b = MustOpen(false, {.key_prefix = "green"});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateJob(Job("default", "j")).ok());
  EXPECT_EQ(b->GetJob("default", "j").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(b->CreateJob(Job("default", "j")).ok());
  for (const std::string& key : Lines(kRedis->Command({"KEYS", "*"}))) {
    EXPECT_TRUE(key.starts_with("blue:") || key.starts_with("green:")) << key;
  }
}

// Runs j@0 .. j@<n-1> of job "j" of tenant "default" in `state`, created (scheduled, available)
// at kT0 + i ms.
std::vector<RunRecord> RunsOneMsApart(int n, RunState state) {
  std::vector<RunRecord> runs;
  for (int i = 0; i < n; ++i) {
    RunRecord r = NewRun("default", "j", "j@" + std::to_string(i));
    r.state = state;
    r.created_at = r.scheduled_at = r.available_at = kT0 + Duration(i);
    runs.push_back(std::move(r));
  }
  return runs;
}

TEST(RedisStoreServer, SelectiveListsPageThroughLongHistories) {
  // A page examines at most 10000 runs: past that it ends short, with a cursor to go on from.
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(Job("default", "j")).ok());
  ASSERT_TRUE(store->EnqueueRuns("default", "j", RunsOneMsApart(12000, RunState::kQueued)).ok());
  // The oldest run runs; 11999 newer ones are queued.
  auto claimed = store->ClaimRuns({.node = "n", .now = kT0 + Duration(100000)});
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  ASSERT_EQ((*claimed)[0].id, "j@0");
  for (const std::string job_id : {"j", ""}) {
    SCOPED_TRACE(job_id);
    RunFilter filter{.job_id = job_id, .state = RunState::kRunning, .limit = 10};
    std::vector<std::string> found;
    int pages = 0;
    for (; pages < 5; ++pages) {
      auto page = store->ListRuns("default", filter);
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      for (const RunRecord& r : page->items) found.push_back(r.id);
      if (!page->next_cursor) break;
      filter.cursor = *page->next_cursor;
    }
    EXPECT_THAT(found, ElementsAre("j@0"));
    EXPECT_EQ(pages, 1) << "a short first page, then the page with the match";
  }
}

// Calls of `command` the server has counted (INFO commandstats), inner calls of scripts too.
int64_t CommandCalls(const std::string& command) {
  const std::string text = kRedis->Command({"INFO", "commandstats"});
  const std::string key = "cmdstat_" + command + ":calls=";
  const size_t at = text.find(key);
  return at == std::string::npos ? 0 : std::stoll(text.substr(at + key.size()));
}

TEST(RedisStoreServer, PruningReadsOnlyTheOldPartOfAHistory) {
  // 3,000 terminal runs created (and finished) 1 ms apart, and one queued run among the old.
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateJob(Job("default", "j")).ok());
  std::vector<RunRecord> runs = RunsOneMsApart(3000, RunState::kSkipped);
  RunRecord queued = NewRun("default", "j", "q");
  queued.created_at = queued.available_at = kT0 + Duration(600);
  runs.push_back(queued);
  ASSERT_TRUE(store->EnqueueRuns("default", "j", runs).ok());
  const auto reads = [] { return CommandCalls("hgetall") + CommandCalls("hmget"); };

  // All of it is younger than the cut: nothing is deleted, and no run is read.
  const int64_t before = reads();
  auto none = store->PruneRuns(kT0 - std::chrono::hours(1), 100);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, 0);
  EXPECT_EQ(reads() - before, 0) << "young runs were read";

  // Runs finished before kT0 + 1250 ms go, over several calls (each looks at 500 runs at most),
  // past the queued run, which stays; the walk ends at the first young run.
  const int64_t start = reads();
  auto pruned = store->PruneRuns(kT0 + Duration(1250), 100);
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(*pruned, 1250);
  EXPECT_LE(reads() - start, 1252) << "runs read beyond the old part";
  EXPECT_EQ(store->GetRun("default", "j@1249").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->GetRun("default", "j@1250").ok());
  EXPECT_TRUE(store->GetRun("default", "q").ok());
  auto counts = store->CountRuns("default", "j");
  ASSERT_TRUE(counts.ok());
  int64_t counted = 0;
  for (const RunCount& c : *counts) counted += c.count;
  EXPECT_EQ(counted, 3001 - 1250) << "the counters follow the deletions";
}

// A pass of the janitor runs a script only for the histories with something to prune: of 200
// jobs, those with a short history (no more runs than are kept) or a young one (every run
// created after the cut) cost two plain reads each.
TEST(RedisStoreServer, PruningRunsScriptsOnlyForHistoriesWithOldRuns) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (int j = 0; j < 200; ++j) {
    const std::string id = "j" + std::to_string(j);
    ASSERT_TRUE(store->CreateJob(Job("default", id)).ok());
    std::vector<RunRecord> runs;
    for (int k = 0; k < 3; ++k) {
      RunRecord run = NewRun("default", id, id + "@" + std::to_string(k));
      run.state = RunState::kSkipped;
      // j0 and j1: old runs; the others: runs created at the cut and later.
      run.created_at = run.scheduled_at = run.available_at = kT0 + Duration(j < 2 ? k : 1000 + k);
      run.finished_at = run.created_at;
      runs.push_back(run);
    }
    ASSERT_TRUE(store->EnqueueRuns("default", id, runs).ok());
  }
  const TimePoint cut = kT0 + Duration(1000);
  // Keeping 3 a job: nothing to prune anywhere, no script.
  int64_t scripts = CommandCalls("evalsha");
  auto kept = store->PruneRuns(cut, 3);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(*kept, 0);
  EXPECT_EQ(CommandCalls("evalsha") - scripts, 0);
  // Keeping 1: j0 and j1 lose their 2 older runs; the young histories are not touched.
  scripts = CommandCalls("evalsha");
  auto pruned = store->PruneRuns(cut, 1);
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(*pruned, 4);
  EXPECT_EQ(CommandCalls("evalsha") - scripts, 2);
  EXPECT_EQ(store->GetRun("default", "j0@1").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->GetRun("default", "j0@2").ok());
  EXPECT_TRUE(store->GetRun("default", "j7@0").ok());
}

// The ids of tenant "default"'s jobs, listed page by page (`limit` a page).
std::vector<std::string> ListedJobIds(Store& store, int limit) {
  std::vector<std::string> listed;
  JobFilter filter{.limit = limit};
  while (true) {
    auto page = store.ListJobs("default", filter);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) return listed;
    for (const JobRecord& job : page->items) listed.push_back(job.spec.id);
    if (!page->next_cursor) return listed;
    filter.cursor = *page->next_cursor;
  }
}

TEST(RedisStoreServer, ManyJobsStayPackedAndListAndFireInOrder) {
  // The job indexes are kept in chunks small enough for Redis to store packed; through splits
  // (1,000 jobs), updates and deletions they must list every job in id order and give the due
  // jobs by (next fire, id), as one sorted set would.
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(7);
  std::map<std::string, JobRecord> jobs;  // the model
  std::vector<std::string> ids;
  for (int i = 0; i < 1000; ++i)
    ids.push_back("job-" + std::to_string(rng() % 1000000) + "-" + std::to_string(i));
  for (const std::string& id : ids) {
    JobRecord job = Job("default", id);
    job.next_fire = kT0 + Duration(static_cast<int64_t>(rng() % 50));  // many share an instant
    ASSERT_TRUE(store->CreateJob(job).ok()) << id;
    jobs[id] = job;
  }
  std::shuffle(ids.begin(), ids.end(), rng);
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& id = ids[i];
    if (i % 3 == 0) {
      ASSERT_TRUE(store->DeleteJob("default", id, kT0, false).ok()) << id;
      jobs.erase(id);
    } else if (i % 5 == 0) {
      JobRecord job = jobs[id];
      job.spec.paused = i % 2 == 0;
      job.next_fire = i % 7 == 0 ? std::nullopt : std::optional(kT0 + Duration(100 + i));
      ASSERT_TRUE(store->PutJob(job, std::nullopt).ok()) << id;
      jobs[id] = job;
    }
  }

  std::vector<std::string> listed = ListedJobIds(*store, 37);
  std::vector<std::string> expected_ids;
  std::vector<std::pair<TimePoint, std::string>> due;
  for (const auto& [id, job] : jobs) {
    expected_ids.push_back(id);
    if (!job.spec.paused && job.next_fire) due.emplace_back(*job.next_fire, id);
  }
  EXPECT_EQ(listed, expected_ids);

  std::sort(due.begin(), due.end());
  ASSERT_GT(due.size(), 300u);
  auto fired = store->DueJobs(kT0 + Duration(40), 1000, {});
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  std::vector<std::string> got, want;
  for (const JobRecord& job : *fired) got.push_back(job.spec.id);
  for (const auto& [at, id] : due) {
    if (at <= kT0 + Duration(40)) want.push_back(id);
  }
  EXPECT_EQ(got, want);
  auto first = store->DueJobs(kT0 + Duration(10000), 5, {});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*first)[i].spec.id, due[i].second);
  EXPECT_EQ(store->NextFireTime({}).value(), due.front().first);

  for (const std::string& key : Lines(kRedis->Command({"KEYS", "js:{t:default}:*"}))) {
    if (key.ends_with(":events") || key.ends_with(":job_counts")) continue;
    EXPECT_EQ(kRedis->Command({"OBJECT", "ENCODING", key}), "listpack") << key;
  }

  for (const auto& [id, job] : jobs) ASSERT_TRUE(store->DeleteJob("default", id, kT0, false).ok());
  EXPECT_TRUE(store->ListJobs("default", {}).value().items.empty());
  EXPECT_TRUE(store->DueJobs(kT0 + Duration(100000), 10, {}).value().empty());
  EXPECT_EQ(store->NextFireTime({}).value(), std::nullopt);
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{t:default}:jobs"}), "1") << "only the first chunk";
}

TEST(RedisStoreServer, AnIndexThatShrinksKeepsFewFullChunks) {
  // 1,000 jobs fill 11 chunks of each index; with 9 of every 10 deleted, the chunks left with a
  // quarter or less merge with their neighbours.
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  std::vector<std::string> kept;
  for (int i = 0; i < 1000; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "job-%04d", i);
    ASSERT_TRUE(store->CreateJob(Job("default", id)).ok()) << id;
    if (i % 10 == 0) kept.push_back(id);
  }
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{t:default}:jobs"}), "11");
  for (int i = 0; i < 1000; ++i) {
    if (i % 10 == 0) continue;
    char id[16];
    std::snprintf(id, sizeof id, "job-%04d", i);
    ASSERT_TRUE(store->DeleteJob("default", id, kT0, false).ok()) << id;
  }
  for (const char* index : {"jobs", "due"}) {
    const std::string dir = std::string("js:{t:default}:") + index;
    EXPECT_LE(std::stoi(kRedis->Command({"ZCARD", dir})), 4) << index << ": 100 entries";
    int members = 0;
    for (const std::string& bound : Lines(kRedis->Command({"ZRANGE", dir, "0", "-1"}))) {
      members += std::stoi(kRedis->Command({"ZCARD", dir + ":" + bound}));
    }
    EXPECT_EQ(members, 100) << index;
  }
  EXPECT_EQ(ListedJobIds(*store, 30), kept);
  auto due = store->DueJobs(kT0, 1000, {});
  ASSERT_TRUE(due.ok());
  std::vector<std::string> fired;
  for (const JobRecord& job : *due) fired.push_back(job.spec.id);
  EXPECT_EQ(fired, kept);
}

// ---- Several stores (as several nodes) ------------------------------------------------------

TEST(RedisStoreNodes, TwoStoresClaimEachRunOnceAcrossTenants) {
  auto a = MustOpen();
  auto b = MustOpen(/*flush=*/false, {.pool_size = 2, .tenant_list_ttl = Duration(0)});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kPerTenant = 150;
  for (const char* tenant : {"t1", "t2", "t3"}) {
    ASSERT_TRUE(a->CreateJob(Job(tenant, "bulk")).ok());
    std::vector<RunRecord> runs;
    for (int i = 0; i < kPerTenant; ++i) {
      runs.push_back(NewRun(tenant, "bulk", "bulk@" + std::to_string(i), i % 10));
    }
    ASSERT_TRUE(a->EnqueueRuns(tenant, "bulk", runs).ok());
  }
  std::vector<std::string> claimed[4];
  std::atomic<int> errors{0};
  auto worker = [&](Store* store, int index) {
    for (;;) {
      auto got = store->ClaimRuns(
          {.node = "n" + std::to_string(index), .now = kT0, .max_runs = 1 + index});
      if (!got.ok()) {
        ADD_FAILURE() << got.status().ToString();
        errors.fetch_add(1);
        return;
      }
      if (got->empty()) return;
      for (const RunRecord& r : *got) claimed[index].push_back(r.tenant + "/" + r.id);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(worker, i % 2 == 0 ? a.get() : b.get(), i);
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  std::set<std::string> all;
  size_t total = 0;
  for (const auto& list : claimed) {
    total += list.size();
    all.insert(list.begin(), list.end());
  }
  EXPECT_EQ(total, 3u * kPerTenant);
  EXPECT_EQ(all.size(), 3u * kPerTenant);
}

TEST(RedisStoreNodes, ClaimsAcrossTenantsFollowPriorityThenTime) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (const char* tenant : {"a", "b", "c"}) ASSERT_TRUE(store->CreateJob(Job(tenant, "j")).ok());
  auto run = [](const char* tenant, const char* id, int priority, int64_t at_s) {
    RunRecord r = NewRun(tenant, "j", id, priority);
    r.available_at = r.created_at = kT0 + std::chrono::seconds(at_s);
    return r;
  };
  ASSERT_TRUE(
      store->EnqueueRuns("a", "j", std::vector{run("a", "a-low", 1, 1), run("a", "a-mid", 5, 5)})
          .ok());
  ASSERT_TRUE(
      store->EnqueueRuns("b", "j", std::vector{run("b", "b-high", 9, 9), run("b", "b-mid", 5, 2)})
          .ok());
  ASSERT_TRUE(store->EnqueueRuns("c", "j", std::vector{run("c", "c-mid", 5, 3)}).ok());
  auto first = store->ClaimRuns({.node = "n", .now = kT0 + Duration(60000), .max_runs = 3});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  std::vector<std::string> ids;
  for (const RunRecord& r : *first) ids.push_back(r.id);
  EXPECT_THAT(ids, ElementsAre("b-high", "b-mid", "c-mid"));
  auto rest = store->ClaimRuns({.node = "n", .now = kT0 + Duration(60000), .max_runs = 3});
  ASSERT_TRUE(rest.ok());
  ids.clear();
  for (const RunRecord& r : *rest) ids.push_back(r.id);
  EXPECT_THAT(ids, ElementsAre("a-mid", "a-low"));
}

// Of many tenants, a claim runs its scripts only in those with a run available in its window:
// tenants that had work and have none now (a run queued, then cancelled), and one whose run is
// available only later, are left out by the ready index, not peeked by a script each.
TEST(RedisStoreNodes, ClaimsRunScriptsOnlyInTenantsWithAvailableRuns) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (int t = 0; t < 30; ++t) {
    const std::string tenant = "idle" + std::to_string(t);
    ASSERT_TRUE(store->CreateJob(Job(tenant, "j")).ok());
    ASSERT_TRUE(store->EnqueueRuns(tenant, "j", std::vector{NewRun(tenant, "j", "old")}).ok());
    ASSERT_TRUE(store->CancelRun(tenant, "old", kT0).ok());
  }
  for (const char* tenant : {"a", "b", "later"})
    ASSERT_TRUE(store->CreateJob(Job(tenant, "j")).ok());
  RunRecord later = NewRun("later", "j", "later-1");
  later.available_at = kT0 + std::chrono::hours(1);
  ASSERT_TRUE(store->EnqueueRuns("later", "j", std::vector{later}).ok());
  ASSERT_TRUE(store->EnqueueRuns("a", "j", std::vector{NewRun("a", "j", "a-1")}).ok());
  ASSERT_TRUE(store->EnqueueRuns("b", "j", std::vector{NewRun("b", "j", "b-1")}).ok());

  const int64_t scripts = CommandCalls("evalsha");
  auto claimed = store->ClaimRuns({.node = "n", .now = kT0 + Duration(1000), .max_runs = 10});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  std::vector<std::string> ids;
  for (const RunRecord& r : *claimed) ids.push_back(r.tenant + "/" + r.id);
  EXPECT_THAT(ids, ElementsAre("a/a-1", "b/b-1"));
  // A peek and a claim in each of a and b (33 tenants: at least 33 peeks before).
  EXPECT_LE(CommandCalls("evalsha") - scripts, 4);

  // With `after`, a run available before the bound does not count: nothing to claim, no script.
  ASSERT_TRUE(store->EnqueueRuns("a", "j", std::vector{NewRun("a", "j", "a-2")}).ok());
  const int64_t again = CommandCalls("evalsha");
  auto none = store->ClaimRuns({.node = "n",
                                .now = kT0 + Duration(1000),
                                .max_runs = 10,
                                .horizon = kT0 + Duration(5000),
                                .after = kT0 + Duration(1000)});
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(CommandCalls("evalsha") - again, 0);
  // The run an hour ahead is claimed once the window reaches it.
  auto ahead = store->ClaimRuns({.node = "n",
                                 .now = kT0 + Duration(1000),
                                 .max_runs = 10,
                                 .horizon = kT0 + std::chrono::hours(1),
                                 .after = kT0 + Duration(1000)});
  ASSERT_TRUE(ahead.ok()) << ahead.status().ToString();
  ids.clear();
  for (const RunRecord& r : *ahead) ids.push_back(r.tenant + "/" + r.id);
  EXPECT_THAT(ids, ElementsAre("later/later-1"));
}

// Tenants whose running runs fill their max_concurrent_runs are not claimed from (no script
// runs there) until one of their runs ends; meanwhile the next available time is another's.
TEST(RedisStoreNodes, TenantsAtTheirQuotaAreLeftOutOfClaims) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  std::vector<RunRecord> held;
  for (int t = 0; t < 30; ++t) {
    const std::string tenant = "full-" + std::to_string(t);
    ASSERT_TRUE(store->PutTenant({.id = tenant, .max_concurrent_runs = 1}).ok());
    ASSERT_TRUE(store->CreateJob(Job(tenant, "j")).ok());
    ASSERT_TRUE(store
                    ->EnqueueRuns(tenant, "j",
                                  std::vector{NewRun(tenant, "j", "a"), NewRun(tenant, "j", "b")})
                    .ok());
    auto one = store->ClaimRuns({.node = "n", .now = kT0, .max_runs = 1});
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    ASSERT_EQ(one->size(), 1u);
    held.push_back((*one)[0]);
  }
  ASSERT_TRUE(store->CreateJob(Job("free", "j")).ok());
  RunRecord later = NewRun("free", "j", "f");
  later.available_at = kT0 + Duration(50);
  ASSERT_TRUE(store->EnqueueRuns("free", "j", std::vector{later}).ok());
  EXPECT_EQ(Lines(kRedis->Command({"ZRANGE", "js:{sys}:ready", "0", "-1"})),
            (std::vector<std::string>{"free"}));
  EXPECT_EQ(store->NextAvailableTime().value(), kT0 + Duration(50));

  const int64_t scripts = CommandCalls("evalsha");
  auto claimed = store->ClaimRuns({.node = "n", .now = kT0 + Duration(60), .max_runs = 10});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].tenant, "free");
  EXPECT_EQ(CommandCalls("evalsha") - scripts, 1);  // 31 before: a peek in every tenant

  // A run of full-7 ends: its next run is claimable.
  const RunRecord& r = held[7];
  ASSERT_TRUE(store
                  ->Complete({.tenant = r.tenant,
                              .run_id = r.id,
                              .fence = r.fence,
                              .now = kT0 + Duration(70),
                              .attempt_outcome = "succeeded"})
                  .ok());
  EXPECT_EQ(store->NextAvailableTime().value(), kT0);
  claimed = store->ClaimRuns({.node = "n", .now = kT0 + Duration(80), .max_runs = 10});
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].tenant + "/" + (*claimed)[0].id, "full-7/b");
  EXPECT_EQ(kRedis->Command({"ZCARD", "js:{sys}:ready"}), "0");
}

// The reaper reads the leases index ({sys}:leases: tenant -> its earliest lease deadline), not
// each tenant: a pass over 30 tenants with running runs, one of them with an expired lease, runs
// one script and no per-tenant read; recovering a dead node's runs looks only at tenants with
// running runs.
TEST(RedisStoreNodes, TheReaperLooksOnlyAtTenantsWithExpiredLeases) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  for (int t = 0; t < 30; ++t) {
    const std::string tenant = "t" + std::to_string(t);
    ASSERT_TRUE(store->CreateJob(Job(tenant, "j")).ok());
    ASSERT_TRUE(store->EnqueueRuns(tenant, "j", std::vector{NewRun(tenant, "j", "r")}).ok());
    auto one = store->ClaimRuns({.node = t == 7 ? "gone" : "n",
                                 .now = kT0,
                                 .lease = Duration(t == 7 ? 1000 : 60000),
                                 .max_runs = 1});
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    ASSERT_EQ(one->size(), 1u);
  }
  for (int t = 0; t < 10; ++t) {
    ASSERT_TRUE(store->CreateJob(Job("idle" + std::to_string(t), "j")).ok());
  }
  const auto per_tenant_reads = [] {
    return CommandCalls("zcount") + CommandCalls("zcard") + CommandCalls("evalsha");
  };
  int64_t before = per_tenant_reads();
  auto lost = store->RecoverLostRuns(kT0 + Duration(2000), "", 5, 100);
  ASSERT_TRUE(lost.ok()) << lost.status().ToString();
  ASSERT_EQ(lost->size(), 1u);
  EXPECT_EQ((*lost)[0].tenant, "t7");
  // The one script, in t7 (its claim-side reads: none of ZCOUNT or ZCARD).
  EXPECT_EQ(per_tenant_reads() - before, 1);
  // Nothing else expired: no script at all.
  before = per_tenant_reads();
  ASSERT_TRUE(store->RecoverLostRuns(kT0 + Duration(3000), "", 5, 100).value().empty());
  EXPECT_EQ(per_tenant_reads() - before, 0);
  // By node: the 29 tenants with running runs are asked, the 11 without are not.
  before = CommandCalls("evalsha");
  ASSERT_EQ(store->RecoverLostRuns(kT0 + Duration(3000), "n", 5, 100).value().size(), 29u);
  EXPECT_EQ(CommandCalls("evalsha") - before, 29);
}

// The ready index ({sys}:ready: tenant -> the first score of its pending index) agrees with
// every tenant's pending index after every kind of change, made at random: runs queued by hand
// and by fires, claimed, completed (succeeded, failed, waiting to retry), cancelled, recovered
// from lost leases, and the jobs deleted (their waiting runs cancelled) and created again; a
// tenant whose running runs fill its max_concurrent_runs, set and changed at random too, is left
// out. So does the due index ({sys}:due) with every tenant's due jobs, as they are fired, deleted
// and created, and the leases index ({sys}:leases) with every tenant's running runs, as they are
// claimed, renewed, completed and recovered.
TEST(RedisStoreNodes, TheReadyIndexFollowsEveryChangeOfTheClaimableRuns) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  const std::vector<std::string> tenants = {"t0", "t1", "t2", "t3"};
  const std::vector<std::string> jobs = {"j0", "j1"};
  for (const std::string& t : tenants)
    for (const std::string& j : jobs) ASSERT_TRUE(store->CreateJob(Job(t, j)).ok());
  std::mt19937 rng(20261128);
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  TimePoint now = kT0;
  std::vector<RunRecord> running;                         // as claimed (tenant, id, fence)
  std::vector<std::pair<std::string, std::string>> made;  // (tenant, run id)
  int next_id = 0;
  const auto new_run = [&](const std::string& t, const std::string& j) {
    RunRecord run = NewRun(t, j, "r" + std::to_string(next_id++), pick(10));
    run.scheduled_at = run.created_at = now;
    run.available_at = now + Duration(pick(4) * 500);
    made.emplace_back(t, run.id);
    return run;
  };
  std::map<std::string, int> ops;
  std::map<std::string, int64_t> quota;  // tenant -> max_concurrent_runs (0: unlimited)
  for (int step = 0; step < 800; ++step) {
    const std::string& t = tenants[pick(4)];
    const std::string& j = jobs[pick(2)];
    std::string op;
    switch (pick(10)) {
      case 0: {
        op = "enqueue";
        std::vector<RunRecord> runs;
        for (int k = pick(3) + 1; k > 0; --k) runs.push_back(new_run(t, j));
        ASSERT_TRUE(store->EnqueueRuns(t, j, runs).ok());
        break;
      }
      case 1: {
        op = "fire";
        auto job = store->GetJob(t, j);
        ASSERT_TRUE(job.ok()) << job.status().ToString();
        auto fired = store->Fire({.tenant = t,
                                  .job_id = j,
                                  .expected_version = job->version,
                                  .expected_next_fire = job->next_fire,
                                  .next_fire = now + Duration(1000),
                                  .runs = {new_run(t, j)},
                                  .now = now});
        ASSERT_TRUE(fired.ok()) << fired.status().ToString();
        break;
      }
      case 2:
      case 3: {
        op = "claim";
        auto claimed = store->ClaimRuns({.node = "n",
                                         .now = now,
                                         .lease = Duration(3000),
                                         .max_runs = pick(4) + 1,
                                         .horizon = now + Duration(pick(2) * 1000)});
        ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
        running.insert(running.end(), claimed->begin(), claimed->end());
        break;
      }
      case 4: {
        if (running.empty()) continue;
        op = "complete";
        const size_t k = pick(static_cast<int>(running.size()));
        const RunRecord run = running[k];
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
        Completion c{.tenant = run.tenant, .run_id = run.id, .fence = run.fence, .now = now};
        switch (pick(3)) {
          case 0:
            c.state = RunState::kRetryWait;
            c.retry_at = now + Duration(pick(4) * 500);
            c.attempt_outcome = "failed";
            break;
          case 1:
            c.state = RunState::kFailed;
            c.attempt_outcome = "failed";
            break;
          default:
            c.attempt_outcome = "succeeded";
        }
        // Stale once the lease was lost and the run recovered: refused, and changes nothing.
        (void)store->Complete(c);
        break;
      }
      case 5: {
        if (made.empty()) continue;
        op = "cancel";
        const auto& [tenant, id] = made[pick(static_cast<int>(made.size()))];
        (void)store->CancelRun(tenant, id, now);  // may be terminal already
        break;
      }
      case 6: {
        op = "recover";
        now += Duration(pick(3) * 1000);
        ASSERT_TRUE(store->RecoverLostRuns(now, "", 2, 100).ok());
        break;
      }
      case 8: {
        if (running.empty()) continue;
        op = "renew";
        std::vector<LeaseRef> leases;
        for (const RunRecord& r : running) {
          if (pick(2) == 0) leases.push_back({r.tenant, r.id, r.fence});
        }
        // Stale leases (recovered runs) are refused and change nothing.
        ASSERT_TRUE(store->RenewLeases(leases, now, Duration(pick(4) * 1000)).ok());
        break;
      }
      case 7: {
        op = "delete";
        ASSERT_TRUE(store->DeleteJob(t, j, now, /*kill_running=*/false).ok());
        ASSERT_TRUE(store->CreateJob(Job(t, j)).ok());
        break;
      }
      default: {
        op = "quota";
        quota[t] = pick(4);
        ASSERT_TRUE(store->PutTenant({.id = t, .max_concurrent_runs = quota[t]}).ok());
        break;
      }
    }
    ++ops[op];
    now += Duration(pick(200));
    std::optional<int64_t> earliest;
    for (const std::string& tenant : tenants) {
      const std::vector<std::string> first = Lines(
          kRedis->Command({"ZRANGE", "js:{t:" + tenant + "}:pending", "0", "0", "WITHSCORES"}));
      const std::string indexed = kRedis->Command({"ZSCORE", "js:{sys}:ready", tenant});
      const int64_t leases = std::stoll(kRedis->Command({"ZCARD", "js:{t:" + tenant + "}:leases"}));
      if (first.empty() || (quota[tenant] > 0 && leases >= quota[tenant])) {
        ASSERT_EQ(indexed, "(nil)") << "step " << step << " (" << op << "), tenant " << tenant;
      } else {
        ASSERT_EQ(first.size(), 2u);
        ASSERT_EQ(indexed, first[1]) << "step " << step << " (" << op << "), tenant " << tenant;
        const int64_t score = std::stoll(first[1]);
        if (!earliest || score < *earliest) earliest = score;
      }
    }
    auto next = store->NextAvailableTime();
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(*next, earliest ? std::optional(FromUnixMillis(*earliest)) : std::nullopt)
        << "step " << step;
    // The due index likewise: each tenant's first due job ({sys}:due, NextFireTime).
    std::optional<int64_t> first_due;
    for (const std::string& tenant : tenants) {
      const std::vector<std::string> first =
          Lines(kRedis->Command({"ZRANGE", "js:{t:" + tenant + "}:due:", "0", "0"}));
      const std::string indexed = kRedis->Command({"ZSCORE", "js:{sys}:due", tenant});
      if (first.empty()) {
        ASSERT_EQ(indexed, "(nil)") << "step " << step << " (" << op << "), tenant " << tenant;
      } else {
        const int64_t ms = std::stoll(first[0].substr(0, 16));
        ASSERT_EQ(indexed, std::to_string(ms))
            << "step " << step << " (" << op << "), tenant " << tenant;
        if (!first_due || ms < *first_due) first_due = ms;
      }
    }
    auto next_fire = store->NextFireTime({});
    ASSERT_TRUE(next_fire.ok());
    EXPECT_EQ(*next_fire, first_due ? std::optional(FromUnixMillis(*first_due)) : std::nullopt)
        << "step " << step;
    // And the leases index: each tenant's earliest lease deadline ({sys}:leases, the reaper).
    for (const std::string& tenant : tenants) {
      const std::vector<std::string> first = Lines(
          kRedis->Command({"ZRANGE", "js:{t:" + tenant + "}:leases", "0", "0", "WITHSCORES"}));
      const std::string indexed = kRedis->Command({"ZSCORE", "js:{sys}:leases", tenant});
      if (first.empty()) {
        ASSERT_EQ(indexed, "(nil)") << "step " << step << " (" << op << "), tenant " << tenant;
      } else {
        ASSERT_EQ(first.size(), 2u);
        ASSERT_EQ(indexed, first[1]) << "step " << step << " (" << op << "), tenant " << tenant;
      }
    }
  }
  // Every kind of change happened, many times.
  for (const char* op :
       {"enqueue", "fire", "claim", "complete", "cancel", "recover", "delete", "quota", "renew"})
    EXPECT_GE(ops[op], 20) << op;
}

// NextFireTime reads the store-wide due index ({sys}:due: tenant -> its first due time) with one
// command and no script, whatever the number of tenants, and DueJobs runs the due script only in
// tenants with a job due; both stay right while a tenant's due index grows past a chunk and its
// first members go (fired later, paused, deleted) or come (created earlier) in random order.
TEST(RedisStoreNodes, DueTimesAreReadWithoutScriptsAndFollowEveryChange) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  const TimePoint later = kT0 + std::chrono::hours(1);
  for (int t = 0; t < 20; ++t) {
    JobRecord job = Job("idle" + std::to_string(t), "j");
    job.next_fire = later;
    ASSERT_TRUE(store->CreateJob(job).ok());
  }
  std::mt19937 rng(1128);
  std::map<std::string, TimePoint> due;  // big's due jobs -> next fire
  std::vector<int> order(300);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const auto id_of = [](int i) {
    std::string digits = std::to_string(i);
    return "j" + std::string(digits.size() < 3 ? 3 - digits.size() : 0, '0') + digits;
  };
  for (int i : order) {
    JobRecord job = Job("big", id_of(i));
    job.next_fire = kT0 + Duration(10 * i);
    ASSERT_TRUE(store->CreateJob(job).ok());
    due[job.spec.id] = *job.next_fire;
  }
  int created = 300;
  const auto check = [&](const std::string& step) {
    std::vector<std::pair<TimePoint, std::string>> by_time;
    for (const auto& [id, t] : due) by_time.emplace_back(t, id);
    std::sort(by_time.begin(), by_time.end());
    const int64_t scripts = CommandCalls("evalsha");
    const int64_t reads = CommandCalls("zrange") + CommandCalls("zrangebyscore");
    auto next = store->NextFireTime({});
    ASSERT_TRUE(next.ok()) << step;
    EXPECT_EQ(*next, by_time.empty() ? later : std::min(later, by_time[0].first)) << step;
    auto without_big = store->NextFireTime({.excluded = {"big"}});
    ASSERT_TRUE(without_big.ok()) << step;
    EXPECT_EQ(*without_big, later) << step;
    EXPECT_EQ(CommandCalls("evalsha"), scripts) << step;
    // One read each, not one per tenant (21 here).
    EXPECT_EQ(CommandCalls("zrange") + CommandCalls("zrangebyscore") - reads, 2) << step;

    const TimePoint now = kT0 + Duration(static_cast<int64_t>(rng() % 4000));
    auto got = store->DueJobs(now, 1000, {});
    ASSERT_TRUE(got.ok()) << step;
    std::vector<std::string> ids, want;
    for (const JobRecord& job : *got) ids.push_back(job.spec.tenant + "/" + job.spec.id);
    for (const auto& [t, id] : by_time)
      if (t <= now) want.push_back("big/" + id);
    EXPECT_EQ(ids, want) << step;
    // The due script ran in big alone, and only when it had a job due.
    EXPECT_EQ(CommandCalls("evalsha") - scripts, want.empty() ? 0 : 1) << step;
  };
  check("created");
  for (int step = 0; step < 300 && !due.empty(); ++step) {
    // One of the first few jobs, which live in the first chunk.
    std::vector<std::pair<TimePoint, std::string>> by_time;
    for (const auto& [id, t] : due) by_time.emplace_back(t, id);
    std::sort(by_time.begin(), by_time.end());
    const std::string id = by_time[rng() % std::min<size_t>(5, by_time.size())].second;
    auto job = store->GetJob("big", id);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    std::string op;
    switch (rng() % 4) {
      case 0: {
        op = "fire " + id;
        const TimePoint next = *job->next_fire + Duration(static_cast<int64_t>(rng() % 3000));
        ASSERT_TRUE(store
                        ->Fire({.tenant = "big",
                                .job_id = id,
                                .expected_version = job->version,
                                .expected_next_fire = job->next_fire,
                                .next_fire = next,
                                .now = kT0})
                        .ok());
        due[id] = next;
        break;
      }
      case 1: {
        op = "pause " + id;
        job->spec.paused = true;
        ASSERT_TRUE(store->PutJob(*job, job->version).ok());
        due.erase(id);
        break;
      }
      case 2: {
        op = "delete " + id;
        ASSERT_TRUE(store->DeleteJob("big", id, kT0, /*kill_running=*/false).ok());
        due.erase(id);
        break;
      }
      default: {
        JobRecord fresh = Job("big", id_of(created++));
        fresh.next_fire = by_time[0].first - Duration(static_cast<int64_t>(rng() % 20));
        op = "create " + fresh.spec.id;
        ASSERT_TRUE(store->CreateJob(fresh).ok());
        due[fresh.spec.id] = *fresh.next_fire;
      }
    }
    check("step " + std::to_string(step) + ": " + op);
    if (::testing::Test::HasFailure()) break;
  }
}

// A store of key layout 2 (before the ready index), 3 (before the due index) or 4 (before the
// leases index) gets its store-wide indexes built at the next open, and its waiting runs are
// claimed, its jobs fired and its expired leases recovered as before.
TEST(RedisStoreServer, AStoreOfAnOlderKeyLayoutGetsItsStoreWideIndexes) {
  for (const char* layout : {"2", "3", "4"}) {
    SCOPED_TRACE(std::string("layout ") + layout);
    {
      auto store = MustOpen();
      ASSERT_NE(store, nullptr);
      for (const char* t : {"a", "b", "c", "e"}) {
        JobRecord job = Job(t, "j");
        job.next_fire = kT0 + Duration(100 - t[0]);  // e first
        ASSERT_TRUE(store->CreateJob(job).ok());
        RunRecord run = NewRun(t, "j", std::string(t) + "-1");
        run.available_at = kT0 + Duration(t[0] - 'a');
        ASSERT_TRUE(store->EnqueueRuns(t, "j", std::vector{run}).ok());
      }
      ASSERT_TRUE(store->CancelRun("c", "c-1", kT0).ok());
      // a's run is running, with a lease to kT0 + 1 s.
      auto running = store->ClaimRuns(
          {.node = "old", .now = kT0 + Duration(10), .lease = Duration(990), .max_runs = 1});
      ASSERT_TRUE(running.ok()) << running.status().ToString();
      ASSERT_EQ(running->size(), 1u);
      ASSERT_EQ((*running)[0].id, "a-1");
      JobRecord paused = Job("d", "j");
      paused.spec.paused = true;
      ASSERT_TRUE(store->CreateJob(paused).ok());
    }
    kRedis->Command({"DEL", "js:{sys}:ready", "js:{sys}:due", "js:{sys}:leases"});
    kRedis->Command({"SET", "js:{sys}:layout", layout});

    auto store = MustOpen(/*flush=*/false);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(kRedis->Command({"GET", "js:{sys}:layout"}), "5");
    EXPECT_EQ(Lines(kRedis->Command({"ZRANGE", "js:{sys}:ready", "0", "-1"})),
              (std::vector<std::string>{"b", "e"}));
    EXPECT_EQ(Lines(kRedis->Command({"ZRANGE", "js:{sys}:due", "0", "-1"})),
              (std::vector<std::string>{"e", "c", "b", "a"}));
    EXPECT_EQ(Lines(kRedis->Command({"ZRANGE", "js:{sys}:leases", "0", "-1"})),
              (std::vector<std::string>{"a"}));
    EXPECT_EQ(store->NextAvailableTime().value(), kT0 + Duration(1));
    EXPECT_EQ(store->NextFireTime({}).value(), kT0 + Duration(100 - 'e'));
    auto due = store->DueJobs(kT0 + Duration(100 - 'c'), 10, {});
    ASSERT_TRUE(due.ok()) << due.status().ToString();
    std::vector<std::string> ids;
    for (const JobRecord& j : *due) ids.push_back(j.spec.tenant);
    EXPECT_THAT(ids, ElementsAre("e", "c"));
    auto lost = store->RecoverLostRuns(kT0 + Duration(1001), "", 5, 100);
    ASSERT_TRUE(lost.ok()) << lost.status().ToString();
    ids.clear();
    for (const RunRecord& r : *lost) ids.push_back(r.id);
    EXPECT_THAT(ids, ElementsAre("a-1"));
    auto claimed = store->ClaimRuns({.node = "n", .now = kT0 + Duration(1010), .max_runs = 10});
    ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
    ids.clear();
    for (const RunRecord& r : *claimed) ids.push_back(r.id);
    EXPECT_THAT(ids, ElementsAre("b-1", "e-1", "a-1"));
    EXPECT_EQ(kRedis->Command({"ZCARD", "js:{sys}:ready"}), "0");
    EXPECT_EQ(Lines(kRedis->Command({"ZRANGE", "js:{sys}:leases", "0", "-1"})),
              (std::vector<std::string>{"a", "b", "e"}));
  }
}

// A tenant created by the node itself is claimed from at once, though the node's tenant list
// is cached; one created by another node: its due job is seen at once (the due index), its runs
// are claimed once the cached list has expired.
TEST(RedisStoreNodes, ATenantCreatedHereOrElsewhereIsSeen) {
  auto a = MustOpen(true, {.tenant_list_ttl = Duration(200)});
  auto b = MustOpen(false);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateJob(Job("old", "j")).ok());
  // a reads, and caches, the tenant list {old}.
  ASSERT_TRUE(a->ClaimRuns({.node = "a", .now = kT0, .max_runs = 1}).ok());
  ASSERT_TRUE(a->CreateJob(Job("mine", "j")).ok());
  ASSERT_TRUE(a->EnqueueRuns("mine", "j", std::vector{NewRun("mine", "j", "r")}).ok());
  auto mine = a->ClaimRuns({.node = "a", .now = kT0, .max_runs = 1});
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ((*mine)[0].tenant, "mine");

  JobRecord fresh = Job("fresh", "j");
  fresh.next_fire = kT0 - Duration(5);
  ASSERT_TRUE(b->CreateJob(fresh).ok());
  EXPECT_EQ(a->NextFireTime(TenantScope{}).value(), kT0 - Duration(5));
  ASSERT_TRUE(b->EnqueueRuns("fresh", "j", std::vector{NewRun("fresh", "j", "r")}).ok());
  std::vector<RunRecord> claimed;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (claimed.empty() && std::chrono::steady_clock::now() < deadline) {
    auto got = a->ClaimRuns({.node = "a", .now = kT0, .max_runs = 1});
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    claimed = *got;
    if (claimed.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].tenant, "fresh");
}

}  // namespace
}  // namespace jobsched::contract
