// Zone: the rule at the end of a zone file, and the zones of the system database.
#include "core/zone.h"

#include <gtest/gtest.h>

#include <string>

namespace jobsched {
namespace {

using namespace std::string_literals;

TEST(ZoneFooterRule, IsTheLastLineOfAVersion2OrLaterFile) {
  EXPECT_EQ(Zone::FooterRule("TZif2"s + std::string(40, '\0') + "\nEST5EDT,M3.2.0,M11.1.0\n"),
            "EST5EDT,M3.2.0,M11.1.0");
  EXPECT_EQ(Zone::FooterRule("TZif3"s + std::string(40, '\x0a') + "\n<+0330>-3:30\n"),
            "<+0330>-3:30");
  // A file that ends with an empty rule: no rule.
  EXPECT_EQ(Zone::FooterRule("TZif2"s + std::string(40, '\0') + "\n\n"), "");
}

TEST(ZoneFooterRule, IsNoneWhereTheFileHasNone) {
  EXPECT_EQ(Zone::FooterRule(""), "");
  EXPECT_EQ(Zone::FooterRule("TZif"), "");
  // Version 1 files have no footer, whatever they end with.
  EXPECT_EQ(Zone::FooterRule("TZif\0"s + std::string(40, '\0') + "\nEST5\n"), "");
  EXPECT_EQ(Zone::FooterRule("NotTZif2\nEST5\n"), "");
  // No final newline, no opening newline, or bytes that are not a rule.
  EXPECT_EQ(Zone::FooterRule("TZif2"s + std::string(40, '\0') + "\nEST5"), "");
  EXPECT_EQ(Zone::FooterRule("TZif2EST5\n"), "");
  EXPECT_EQ(Zone::FooterRule("TZif2"s + std::string(40, '\0') +
                             "\nEST\x01"
                             "5\n"),
            "");
}

TEST(ZoneLocate, GivesEachKnownZoneOnceAndNoneForUnknownNames) {
  const Zone* ny = Zone::Locate("America/New_York");
  ASSERT_NE(ny, nullptr);
  EXPECT_EQ(Zone::Locate("America/New_York"), ny);
  EXPECT_EQ(Zone::Locate("Mars/Olympus"), nullptr);
  EXPECT_EQ(Zone::Locate("../../etc/passwd"), nullptr);
  EXPECT_EQ(Zone::Locate(""), nullptr);
}

TEST(ZoneInfo, FollowsTheFilesRuleAfterItsLastListedTransition) {
  const Zone* ny = Zone::Locate("America/New_York");
  ASSERT_NE(ny, nullptr);
  ASSERT_FALSE(ny->rule().empty()) << "the system's zone file has no rule at its end";
  const date::sys_days summer_2040 = date::year{2040} / 7 / 1;
  ASSERT_GT(date::sys_seconds(summer_2040), ny->listed_until());
  const date::sys_info info = ny->Info(summer_2040);
  EXPECT_EQ(info.offset, std::chrono::hours(-4));  // EDT
  // The period is that summer's: 2040-03-11 07:00Z to 2040-11-04 06:00Z.
  EXPECT_EQ(info.begin, date::sys_days(date::year{2040} / 3 / 11) + std::chrono::hours(7));
  EXPECT_EQ(info.end, date::sys_days(date::year{2040} / 11 / 4) + std::chrono::hours(6));
  // The rule's first period starts at the file's last transition, not before.
  const date::sys_info first = ny->Info(ny->listed_until());
  EXPECT_EQ(first.begin, ny->listed_until());
  EXPECT_EQ(first.offset, std::chrono::hours(-5));  // EST
}

}  // namespace
}  // namespace jobsched
