#include "core/log_fields.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace jobsched {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;
using ::testing::ElementsAre;
using ::testing::Pair;

TEST(LogValueTest, APlainTokenIsLeftAsItIs) {
  EXPECT_EQ(LogValue("cron@1704067260000"), "cron@1704067260000");
  EXPECT_EQ(LogValue("n1"), "n1");
}

TEST(LogValueTest, AnythingElseIsQuotedWithItsQuotesAndControlCharactersEscaped) {
  EXPECT_EQ(LogValue(""), R"("")");
  EXPECT_EQ(LogValue("exited with code 3"), R"("exited with code 3")");
  EXPECT_EQ(LogValue("a=b"), R"("a=b")");
  EXPECT_EQ(LogValue("ends:"), R"("ends:")");
  EXPECT_EQ(LogValue(R"(say "hi" \ bye)"), R"("say \"hi\" \\ bye")");
  EXPECT_EQ(LogValue("two\nlines\r\tand\x01"), R"("two\nlines\r\tand\u0001")");
}

TEST(LogFieldsTest, ReadsTheFieldsAfterTheFirstWords) {
  EXPECT_THAT(LogFields("run failed run_id=j@1 job_id=j tenant=acme attempt=2 error=" +
                        LogValue("exited with code 3")),
              ElementsAre(Pair("run_id", "j@1"), Pair("job_id", "j"), Pair("tenant", "acme"),
                          Pair("attempt", "2"), Pair("error", "exited with code 3")));
  EXPECT_THAT(
      LogFields("audit who=k1 what=" + LogValue("PUT /v1/tenants/a/jobs/x") + " status=201"),
      ElementsAre(Pair("who", "k1"), Pair("what", "PUT /v1/tenants/a/jobs/x"),
                  Pair("status", "201")));
  EXPECT_TRUE(LogFields("jobsched serve ready: node n1 store sqlite:x").empty());
}

TEST(LogFieldsTest, AColonOrAWordAfterTheFieldsEndsThem) {
  EXPECT_THAT(LogFields("lease lost run_id=r node=n1: stopping tenant=evil"),
              ElementsAre(Pair("run_id", "r"), Pair("node", "n1")));
  EXPECT_THAT(LogFields("run skipped run_id=r free text level=critical"),
              ElementsAre(Pair("run_id", "r")));
  EXPECT_TRUE(LogFields("cannot read: tenant=evil").empty());
}

// What a job's author controls (a handler name in an error, a path) cannot add fields, change
// one, or end the record.
TEST(LogFieldsTest, AQuotedValueCannotAddOrChangeFields) {
  const std::string error = "builtin 'x\" level=critical tenant=other \\' not registered";
  const Fields fields =
      LogFields("run failed run_id=r tenant=default error=" + LogValue(error) + " attempt=1");
  EXPECT_THAT(fields, ElementsAre(Pair("run_id", "r"), Pair("tenant", "default"),
                                  Pair("error", error), Pair("attempt", "1")));
  EXPECT_THAT(LogFields("x tenant=a tenant=b"), ElementsAre(Pair("tenant", "a"))) << "first wins";
  EXPECT_THAT(LogFields("x a=1 b=\"never closed c=3"), ElementsAre(Pair("a", "1")));
}

TEST(LogFieldsTest, ReadsBackEveryValueLogValueWrites) {
  for (const std::string& value :
       {std::string("plain"), std::string(""), std::string("a b"), std::string("\"q\""),
        std::string("back\\slash"), std::string("nl\nx"), std::string("\x01\x7f"),
        std::string("colon:"), std::string("k=v")}) {
    EXPECT_THAT(LogFields("w k=" + LogValue(value) + " z=1"),
                ElementsAre(Pair("k", value), Pair("z", "1")))
        << value;
  }
}

TEST(EscapeControlTest, KeepsARecordOnOneLine) {
  EXPECT_EQ(EscapeControl("a\nb\r\tc\x1b[31m"), R"(a\nb\r\tc\u001b[31m)");
  EXPECT_EQ(EscapeControl("caf\xc3\xa9 ok"), "caf\xc3\xa9 ok");
}

}  // namespace
}  // namespace jobsched
