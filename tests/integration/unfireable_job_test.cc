// Regression: a stored job whose schedule stopped validating (here: its time zone is gone from
// the tz database, simulated by a store that returns it so) must not stall firing. The
// scheduler pauses it and goes on firing the other jobs.
#include <gtest/gtest.h>

#include "core/job_codec.h"
#include "core/time_util.h"
#include "engine/node.h"
#include "store/sqlite_store.h"
#include "store/store_wrapper.h"

namespace jobsched {
namespace {

// Returns due jobs with job "broken"'s time zone replaced by one that does not exist.
class VanishedZoneStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Result<std::vector<JobRecord>> DueJobs(TimePoint now, int limit,
                                         const TenantScope& scope) override {
    ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, target_.DueJobs(now, limit, scope));
    for (JobRecord& j : jobs) {
      if (j.spec.id == "broken") j.spec.schedule.timezone = "Atlantis/Capital";
    }
    return jobs;
  }
};

TEST(UnfireableJobTest, AJobWhoseScheduleNoLongerParsesIsPausedAndOthersStillFire) {
  FakeClock clock(*ParseRfc3339("2024-01-01T00:00:00Z"));
  auto sqlite = SqliteStore::Open({.path = ":memory:"});
  ASSERT_TRUE(sqlite.ok());
  auto store = std::make_shared<VanishedZoneStore>(**sqlite);
  auto node = Node::Create({.store = store, .node_id = "n1", .clock = &clock});
  ASSERT_TRUE(node.ok());
  for (const char* id : {"broken", "fine"}) {
    JobSpec spec{.id = id};
    spec.schedule = {
        .kind = Schedule::Kind::kCron, .cron = "* * * * *", .timezone = "Europe/Berlin"};
    spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = "noop"};
    ASSERT_TRUE((*node)->jobs().Create(spec).ok());
  }
  clock.Advance(std::chrono::minutes(1));
  auto fired = (*node)->scheduler().Tick();
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  EXPECT_EQ(*fired, 1);
  auto broken = (*node)->store().GetJob("default", "broken");
  ASSERT_TRUE(broken.ok());
  EXPECT_EQ(broken->state, JobState::kPaused);
  auto runs = (*node)->store().ListRuns("default", {.job_id = "fine"});
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ(runs->items.size(), 1u);
  // Nothing is due any more: the next pass does not see the broken job again.
  auto due = store->DueJobs(clock.Now(), 10, TenantScope{});
  ASSERT_TRUE(due.ok());
  EXPECT_TRUE(due->empty());
}

TEST(UnfireableJobTest, StoredSpecsAreReadWithoutTheValidationRules) {
  JobSpec spec{.id = "j"};
  spec.schedule = {
      .kind = Schedule::Kind::kCron, .cron = "* * * * *", .timezone = "Atlantis/Capital"};
  spec.handler = {.type = HandlerSpec::Type::kBuiltin, .name = "noop"};
  const std::string json = JobSpecToJson(spec);
  EXPECT_EQ(ParseJobSpec(json).status().code(), StatusCode::kInvalidArgument);
  auto stored = ParseStoredJobSpec(json, "default");
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(stored->schedule.timezone, "Atlantis/Capital");
}

}  // namespace
}  // namespace jobsched
