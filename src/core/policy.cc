#include "core/policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace jobsched {

Result<Occurrences> Occurrences::For(const Schedule& schedule, TimePoint anchor) {
  Occurrences o;
  o.schedule_ = schedule;
  o.anchor_ = anchor;
  if (schedule.kind == Schedule::Kind::kCron) {
    ASSIGN_OR_RETURN(CronSchedule cron, CronSchedule::Parse(schedule.cron, schedule.timezone));
    o.cron_ = std::move(cron);
  }
  if (schedule.kind == Schedule::Kind::kEvery && schedule.every.count() <= 0) {
    return InvalidArgument("schedule.every_ms: must be positive", "schedule.every_ms");
  }
  return o;
}

TimePoint OccurrenceAnchor(const Schedule& schedule, TimePoint created_at,
                           std::optional<TimePoint> next_fire) {
  if (schedule.kind != Schedule::Kind::kEvery || schedule.start_at || !next_fire) return created_at;
  return *next_fire - schedule.every;
}

std::optional<TimePoint> Occurrences::Bounded(std::optional<TimePoint> t) const {
  if (t && schedule_.end_at && *t > *schedule_.end_at) return std::nullopt;
  return t;
}

std::optional<TimePoint> Occurrences::After(TimePoint t) const {
  if (schedule_.start_at && t < *schedule_.start_at - Duration(1))
    t = *schedule_.start_at - Duration(1);
  switch (schedule_.kind) {
    case Schedule::Kind::kNone:
      return std::nullopt;
    case Schedule::Kind::kAt:
      return Bounded(schedule_.at > t ? std::optional<TimePoint>(schedule_.at) : std::nullopt);
    case Schedule::Kind::kCron:
      return Bounded(cron_->Next(t));
    case Schedule::Kind::kEvery: {
      // Occurrences are base + k * every: k >= 0 from start_at, k >= 1 from the anchor.
      const TimePoint base = schedule_.start_at.value_or(anchor_);
      const int64_t step = schedule_.every.count();
      const int64_t min_k = schedule_.start_at ? 0 : 1;
      int64_t k = t < base ? 0 : (t - base).count() / step + 1;
      k = std::max(k, min_k);
      return Bounded(base + Duration(k * step));
    }
  }
  return std::nullopt;
}

std::optional<TimePoint> Occurrences::First() const {
  if (schedule_.kind == Schedule::Kind::kAt) {
    if (schedule_.start_at && schedule_.at < *schedule_.start_at) return std::nullopt;
    return Bounded(schedule_.at);
  }
  return After(anchor_);
}

FirePlan PlanFiring(const Occurrences& occurrences, const MisfirePolicy& misfire, TimePoint due,
                    TimePoint now) {
  FirePlan plan;
  const TimePoint oldest_on_time = now - misfire.grace;  // t < this: a misfire
  if (due >= oldest_on_time) {
    plan.runs.push_back({.scheduled_at = due, .reason = RunReason::kSchedule});
    plan.next_fire = occurrences.After(due);
  } else {
    switch (misfire.policy) {
      case Misfire::kFireOnce:
        plan.runs.push_back({.scheduled_at = due, .reason = RunReason::kMisfireCatchup});
        break;
      case Misfire::kSkip:
      case Misfire::kFireAll: {
        std::optional<TimePoint> t = due;
        for (int i = 0; t && *t < oldest_on_time && i < kMaxMisfireRuns;
             ++i, t = occurrences.After(*t)) {
          if (misfire.policy == Misfire::kSkip) {
            plan.runs.push_back({.scheduled_at = *t,
                                 .reason = RunReason::kSchedule,
                                 .skipped = true,
                                 .error = "misfire: missed by more than the grace period"});
          } else {
            plan.runs.push_back({.scheduled_at = *t, .reason = RunReason::kMisfireCatchup});
          }
        }
        break;
      }
    }
    // Continue with the first occurrence that is not a misfire (it may already be due).
    plan.next_fire = occurrences.AtOrAfter(std::max(oldest_on_time, due + Duration(1)));
  }
  plan.complete = !plan.next_fire.has_value();
  return plan;
}

OverlapDecision DecideOverlap(Overlap policy, const std::vector<RunRecord>& active_runs) {
  OverlapDecision d;
  if (active_runs.empty()) return d;
  switch (policy) {
    case Overlap::kSkip:
      d.skip = true;
      break;
    case Overlap::kAllow:
      break;
    case Overlap::kQueue:
      d.exclusive = true;
      break;
    case Overlap::kReplace:
      for (const RunRecord& r : active_runs) d.cancel_run_ids.push_back(r.id);
      break;
  }
  return d;
}

Duration RetryDelay(const RetryPolicy& retry, int failed_attempts, double random01) {
  double delay = static_cast<double>(retry.initial_delay.count());
  const double cap = static_cast<double>(retry.max_delay.count());
  if (retry.backoff == Backoff::kExponential) {
    delay *= std::pow(2.0, std::clamp(failed_attempts - 1, 0, 62));
  }
  delay = std::min(delay, cap);
  delay *= 1.0 + retry.jitter * (2.0 * random01 - 1.0);
  delay = std::clamp(delay, 0.0, cap);
  return Duration(static_cast<int64_t>(delay));
}

std::string ScheduledRunId(const std::string& job_id, TimePoint scheduled_at) {
  return job_id + "@" + std::to_string(ToUnixMillis(scheduled_at));
}

std::string ManualRunId(const std::string& job_id, TimePoint now, uint64_t random) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(random));
  return job_id + "@m" + std::to_string(ToUnixMillis(now)) + "-" + hex;
}

std::string DependencyRunId(const std::string& job_id,
                            const std::vector<std::string>& parent_run_ids) {
  // FNV-1a 64 over the sorted ids: deterministic across nodes and versions.
  std::vector<std::string> ids = parent_run_ids;
  std::sort(ids.begin(), ids.end());
  uint64_t h = 1469598103934665603ull;
  for (const std::string& id : ids) {
    for (unsigned char c : id) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return job_id + "@d" + hex;
}

std::map<std::string, std::string> AssignTenants(const std::map<std::string, std::string>& previous,
                                                 const std::vector<std::string>& tenants,
                                                 const std::vector<std::string>& nodes) {
  std::map<std::string, std::string> out;
  if (nodes.empty()) return out;
  std::vector<std::string> sorted_tenants = tenants;
  std::sort(sorted_tenants.begin(), sorted_tenants.end());
  sorted_tenants.erase(std::unique(sorted_tenants.begin(), sorted_tenants.end()),
                       sorted_tenants.end());
  const size_t cap = (sorted_tenants.size() + nodes.size() - 1) / nodes.size();
  std::map<std::string, size_t> load;
  for (const std::string& n : nodes) load[n] = 0;
  std::vector<std::string> moving;
  for (const std::string& t : sorted_tenants) {
    auto prev = previous.find(t);
    if (prev != previous.end() && load.contains(prev->second) && load[prev->second] < cap) {
      out[t] = prev->second;
      ++load[prev->second];
    } else {
      moving.push_back(t);
    }
  }
  for (const std::string& t : moving) {
    auto least = std::min_element(load.begin(), load.end(), [](const auto& a, const auto& b) {
      return a.second < b.second;  // std::map order breaks ties by node id
    });
    out[t] = least->first;
    ++least->second;
  }
  return out;
}

}  // namespace jobsched
