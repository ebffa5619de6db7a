#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <jobsched/status.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace jobsched {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.field(), "");
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(s, Status::Ok());
}

TEST(StatusTest, ErrorCarriesCodeMessageAndField) {
  Status s = InvalidArgument("hour: value 25 out of range 0-23", "schedule.cron");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "hour: value 25 out of range 0-23");
  EXPECT_EQ(s.field(), "schedule.cron");
}

TEST(StatusTest, ToStringIsCodeNameAndMessage) {
  EXPECT_EQ(InvalidArgument("hour: value 25 out of range 0-23").ToString(),
            "invalid_argument: hour: value 25 out of range 0-23");
  // The field path is not part of the text form.
  EXPECT_EQ(InvalidArgument("bad", "schedule.cron").ToString(), "invalid_argument: bad");
  EXPECT_EQ(Status().ToString(), "ok");
}

struct FactoryCase {
  Status status;
  StatusCode code;
  std::string_view name;
};

TEST(StatusTest, FactoriesAndCodeNames) {
  const FactoryCase cases[] = {
      {InvalidArgument("m"), StatusCode::kInvalidArgument, "invalid_argument"},
      {NotFound("m"), StatusCode::kNotFound, "not_found"},
      {AlreadyExists("m"), StatusCode::kAlreadyExists, "already_exists"},
      {FailedPrecondition("m"), StatusCode::kFailedPrecondition, "failed_precondition"},
      {ResourceExhausted("m"), StatusCode::kResourceExhausted, "resource_exhausted"},
      {Unavailable("m"), StatusCode::kUnavailable, "unavailable"},
      {Internal("m"), StatusCode::kInternal, "internal"},
  };
  for (const FactoryCase& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(c.status.ok());
    EXPECT_EQ(c.status.code(), c.code);
    EXPECT_EQ(c.status.message(), "m");
    EXPECT_EQ(StatusCodeName(c.code), c.name);
    EXPECT_EQ(c.status.ToString(), std::string(c.name) + ": m");
  }
  EXPECT_EQ(StatusCodeName(StatusCode::kOk), "ok");
}

TEST(StatusTest, Equality) {
  EXPECT_EQ(NotFound("job x"), NotFound("job x"));
  EXPECT_FALSE(NotFound("job x") == NotFound("job y"));
  EXPECT_FALSE(NotFound("job x") == Internal("job x"));
  EXPECT_FALSE(InvalidArgument("m", "a") == InvalidArgument("m", "b"));
  EXPECT_FALSE(Status() == Internal(""));
}

TEST(ResultTest, HoldsValue) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  EXPECT_TRUE(r.status().ok());
  *r = 7;
  EXPECT_EQ(r.value(), 7);
}

TEST(ResultTest, HoldsError) {
  Result<int> r = NotFound("no such job");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "no such job");
  Status moved = std::move(r).status();
  EXPECT_EQ(moved, NotFound("no such job"));
}

TEST(ResultTest, OkStatusBecomesInternal) {
  Result<int> r = Status::Ok();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(ResultTest, ArrowAndMoveOnlyValue) {
  Result<std::string> s = std::string("abc");
  EXPECT_EQ(s->size(), 3u);

  Result<std::unique_ptr<int>> p = std::make_unique<int>(5);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> taken = std::move(p).value();
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(*taken, 5);
}

TEST(ResultTest, StatusOfMovedOkResultIsOk) {
  Result<int> r = 1;
  Status s = std::move(r).status();
  EXPECT_TRUE(s.ok());
}

// --- RETURN_IF_ERROR / ASSIGN_OR_RETURN -------------------------------------------------------

Status Check(bool fail, int* calls) {
  ++*calls;
  return fail ? FailedPrecondition("stale token") : Status::Ok();
}

Status TwoChecks(bool fail_first, bool fail_second, int* calls, bool* reached_end) {
  RETURN_IF_ERROR(Check(fail_first, calls));
  RETURN_IF_ERROR(Check(fail_second, calls));
  *reached_end = true;
  return Status::Ok();
}

TEST(MacroTest, ReturnIfErrorPassesOk) {
  int calls = 0;
  bool reached_end = false;
  EXPECT_TRUE(TwoChecks(false, false, &calls, &reached_end).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(reached_end);
}

TEST(MacroTest, ReturnIfErrorPropagatesFirstError) {
  int calls = 0;
  bool reached_end = false;
  Status s = TwoChecks(true, false, &calls, &reached_end);
  EXPECT_EQ(s, FailedPrecondition("stale token"));
  EXPECT_EQ(calls, 1);  // the second check never ran
  EXPECT_FALSE(reached_end);
}

TEST(MacroTest, ReturnIfErrorPropagatesLaterError) {
  int calls = 0;
  bool reached_end = false;
  Status s = TwoChecks(false, true, &calls, &reached_end);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(reached_end);
}

Result<int> Parse(std::string_view text, int* calls) {
  ++*calls;
  if (text.empty()) return InvalidArgument("empty", "value");
  return static_cast<int>(text.size());
}

Result<int> SumOfLengths(std::string_view a, std::string_view b, int* calls) {
  ASSIGN_OR_RETURN(int x, Parse(a, calls));
  int y = 0;
  ASSIGN_OR_RETURN(y, Parse(b, calls));  // assigns to an existing variable
  return x + y;
}

Result<std::unique_ptr<int>> MakeBox(bool fail) {
  if (fail) return Unavailable("store down");
  return std::make_unique<int>(9);
}

Status UseBox(bool fail, int* seen) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> box, MakeBox(fail));
  *seen = *box;
  return Status::Ok();
}

TEST(MacroTest, AssignOrReturnAssigns) {
  int calls = 0;
  Result<int> r = SumOfLengths("ab", "cde", &calls);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 5);
  EXPECT_EQ(calls, 2);  // each expression evaluated exactly once
}

TEST(MacroTest, AssignOrReturnPropagatesError) {
  int calls = 0;
  Result<int> r = SumOfLengths("", "cde", &calls);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status(), InvalidArgument("empty", "value"));
  EXPECT_EQ(calls, 1);

  calls = 0;
  r = SumOfLengths("ab", "", &calls);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().field(), "value");
  EXPECT_EQ(calls, 2);
}

TEST(MacroTest, AssignOrReturnMoveOnlyIntoStatusFunction) {
  int seen = 0;
  EXPECT_TRUE(UseBox(false, &seen).ok());
  EXPECT_EQ(seen, 9);

  seen = 0;
  EXPECT_EQ(UseBox(true, &seen), Unavailable("store down"));
  EXPECT_EQ(seen, 0);
}

}  // namespace
}  // namespace jobsched
