// Time zones for the cron engine: the system tz database, continued past its zone files' last
// listed transition by the rule each file ends with.
//
// A zone file lists transitions up to some year (Debian's, up to 2037) and ends with a POSIX TZ
// string for every instant after the last one (RFC 8536 §3.3), e.g. "EST5EDT,M3.2.0,M11.1.0".
// date::time_zone, the reader of the system database, keeps the last listed offset forever (New
// York would stay on standard time from November 2037); the C library follows the rule, and so
// does cron. A Zone answers from the listed transitions, and after the last one from the rule.
#pragma once

#include <date/tz.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace jobsched {

class Zone {
 public:
  // The zone named `name` (an IANA name: "America/New_York"), or nullptr when the database has
  // none of that name. Zones are made once per name and live as long as the process, as the
  // database's own do; Locate is thread-safe.
  static const Zone* Locate(std::string_view name);

  // The offset period that holds `t`: its first instant, its end (exclusive) and its offset from
  // UTC. Thread-safe.
  date::sys_info Info(date::sys_seconds t) const;

  // The POSIX TZ rule of the zone's file ("" when the file has none: a version 1 file, or one
  // that could not be read), as used after `listed_until()`.
  const std::string& rule() const { return rule_; }
  // The start of the last offset period the file lists; the rule applies from there on.
  date::sys_seconds listed_until() const { return listed_until_; }

  // The POSIX TZ string at the end of the zone file `bytes` (RFC 8536: a "TZif" file of version
  // 2 or later ends with it between two newlines), or "" when there is none.
  static std::string FooterRule(std::string_view bytes);

 private:
  struct Rule;
  Zone(const date::time_zone* listed, std::string rule);

  const date::time_zone* listed_;
  std::string rule_;
  std::shared_ptr<const Rule> parsed_;  // nullptr: the last listed offset continues
  date::sys_seconds listed_until_;
};

}  // namespace jobsched
