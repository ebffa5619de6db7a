// StoreWrapper forwards every call to another Store, after asking Before(op) — the hook that
// fault injection overrides (leveldb's EnvWrapper pattern):
//
//   class Unreachable : public StoreWrapper {
//     Status Before(std::string_view op) override { return Unavailable("injected"); }
//   };
//
// Thread-safe if the wrapped store is and Before() is.
#pragma once

#include <jobsched/store.h>

#include <string_view>

namespace jobsched {

class StoreWrapper : public Store {
 public:
  explicit StoreWrapper(Store& target) : target_(target) {}

  // Called before every operation with its method name; a non-OK status is returned instead of
  // calling the wrapped store. Default: OK.
  virtual Status Before(std::string_view /*op*/) { return Status::Ok(); }

#define JOBSCHED_FORWARD(Ret, Name, Params, Args)    \
  Ret Name Params override {                         \
    if (Status s = Before(#Name); !s.ok()) return s; \
    return target_.Name Args;                        \
  }

  JOBSCHED_FORWARD(Result<JobRecord>, CreateJob, (const JobRecord& job), (job))
  JOBSCHED_FORWARD(Result<JobRecord>, PutJob, (const JobRecord& job, std::optional<int64_t> v),
                   (job, v))
  JOBSCHED_FORWARD(Result<JobRecord>, GetJob, (const std::string& t, const std::string& id),
                   (t, id))
  JOBSCHED_FORWARD(Result<Page<JobRecord>>, ListJobs, (const std::string& t, const JobFilter& f),
                   (t, f))
  JOBSCHED_FORWARD(Status, DeleteJob,
                   (const std::string& t, const std::string& id, TimePoint now, bool kill),
                   (t, id, now, kill))
  JOBSCHED_FORWARD(Result<std::vector<JobRecord>>, DueJobs,
                   (TimePoint now, int limit, const TenantScope& scope), (now, limit, scope))
  JOBSCHED_FORWARD(Result<std::optional<TimePoint>>, NextFireTime, (const TenantScope& scope),
                   (scope))
  JOBSCHED_FORWARD(Result<FireResult>, Fire, (const FireRequest& r), (r))
  JOBSCHED_FORWARD(Status, EnqueueRuns,
                   (const std::string& t, const std::string& j, std::span<const RunRecord> r),
                   (t, j, r))
  JOBSCHED_FORWARD(Result<RunRecord>, GetRun, (const std::string& t, const std::string& id),
                   (t, id))
  JOBSCHED_FORWARD(Result<Page<RunRecord>>, ListRuns, (const std::string& t, const RunFilter& f),
                   (t, f))
  JOBSCHED_FORWARD(Result<std::vector<RunRecord>>, ActiveRuns,
                   (const std::string& t, const std::string& j), (t, j))
  JOBSCHED_FORWARD(Result<std::vector<RunRecord>>, FinishedRunsSince,
                   (const std::string& t, const std::string& j, TimePoint since), (t, j, since))
  JOBSCHED_FORWARD(Result<std::vector<JobRecord>>, Dependents,
                   (const std::string& t, const std::string& j), (t, j))
  JOBSCHED_FORWARD(Result<std::vector<RunRecord>>, ClaimRuns, (const ClaimRequest& r), (r))
  JOBSCHED_FORWARD(Result<std::optional<TimePoint>>, NextAvailableTime, (), ())
  JOBSCHED_FORWARD(Result<std::vector<LeaseStatus>>, RenewLeases,
                   (std::span<const LeaseRef> l, TimePoint now, Duration lease), (l, now, lease))
  JOBSCHED_FORWARD(Status, Complete, (const Completion& c), (c))
  JOBSCHED_FORWARD(Status, CancelRun, (const std::string& t, const std::string& id, TimePoint now),
                   (t, id, now))
  JOBSCHED_FORWARD(Result<std::vector<RunRecord>>, RecoverLostRuns,
                   (TimePoint now, const std::string& node, int max_lost, int limit),
                   (now, node, max_lost, limit))
  JOBSCHED_FORWARD(Result<int64_t>, PruneRuns, (TimePoint older_than, int keep), (older_than, keep))
  JOBSCHED_FORWARD(Result<std::vector<RunCount>>, CountRuns,
                   (const std::string& t, const std::string& j), (t, j))
  JOBSCHED_FORWARD(Result<std::vector<JobCount>>, CountJobs, (), ())
  JOBSCHED_FORWARD(Status, AppendEvent, (const Event& e), (e))
  JOBSCHED_FORWARD(Result<std::vector<Event>>, ReadEvents,
                   (const std::string& t, int64_t after, int limit), (t, after, limit))
  JOBSCHED_FORWARD(Status, PruneEvents, (int64_t keep), (keep))
  JOBSCHED_FORWARD(Result<int64_t>, LastEventSeq, (), ())
  JOBSCHED_FORWARD(Status, PutTenant, (const TenantRecord& t), (t))
  JOBSCHED_FORWARD(Result<TenantRecord>, GetTenant, (const std::string& id), (id))
  JOBSCHED_FORWARD(Result<std::vector<TenantRecord>>, ListTenants, (), ())
  JOBSCHED_FORWARD(Status, Heartbeat, (const NodeInfo& n), (n))
  JOBSCHED_FORWARD(Result<std::vector<NodeInfo>>, ListNodes, (), ())
  JOBSCHED_FORWARD(Status, RemoveNode, (const std::string& id), (id))
  JOBSCHED_FORWARD(Status, PutApiKey, (const ApiKeyRecord& k), (k))
  JOBSCHED_FORWARD(Result<ApiKeyRecord>, GetApiKeyByHash, (const std::string& h), (h))
  JOBSCHED_FORWARD(Result<std::vector<ApiKeyRecord>>, ListApiKeys, (), ())
  JOBSCHED_FORWARD(Status, DeleteApiKey, (const std::string& id), (id))
  JOBSCHED_FORWARD(Result<LeaderLease>, AcquireLeadership,
                   (const std::string& n, TimePoint now, Duration ttl), (n, now, ttl))
  JOBSCHED_FORWARD(Result<std::optional<LeaderLease>>, GetLeader, (TimePoint now), (now))
  JOBSCHED_FORWARD(Status, ReleaseLeadership, (const std::string& n, int64_t epoch), (n, epoch))
  JOBSCHED_FORWARD(Status, PutAssignment,
                   (const std::string& n, int64_t epoch, TimePoint now, const TenantOwners& o),
                   (n, epoch, now, o))
  JOBSCHED_FORWARD(Result<Assignment>, GetAssignment, (), ())
  JOBSCHED_FORWARD(Result<std::optional<ServerTimePoint>>, ServerTime, (), ())
  JOBSCHED_FORWARD(Status, Publish, (const WakeMessage& m), (m))
#undef JOBSCHED_FORWARD

  // The batch calls keep the wrapped store's batching.
  std::vector<Result<FireResult>> FireMany(std::span<const FireRequest> requests) override {
    if (Status s = Before("FireMany"); !s.ok())
      return std::vector<Result<FireResult>>(requests.size(), s);
    return target_.FireMany(requests);
  }
  std::vector<Status> CompleteMany(std::span<const Completion> completions) override {
    if (Status s = Before("CompleteMany"); !s.ok())
      return std::vector<Status>(completions.size(), s);
    return target_.CompleteMany(completions);
  }
  std::vector<Result<JobRecord>> GetJobs(std::span<const JobRef> jobs) override {
    if (Status s = Before("GetJobs"); !s.ok())
      return std::vector<Result<JobRecord>>(jobs.size(), s);
    return target_.GetJobs(jobs);
  }
  std::vector<Result<std::vector<RunRecord>>> ActiveRunsMany(
      std::span<const JobRef> jobs) override {
    if (Status s = Before("ActiveRunsMany"); !s.ok())
      return std::vector<Result<std::vector<RunRecord>>>(jobs.size(), s);
    return target_.ActiveRunsMany(jobs);
  }
  void Subscribe(std::function<void(const WakeMessage&)> handler) override {
    target_.Subscribe(std::move(handler));
  }

 protected:
  Store& target_;
};

}  // namespace jobsched
