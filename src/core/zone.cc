#include "core/zone.h"

// date/ptz.h (Posix::time_zone, the POSIX TZ rule) names hh_mm_ss unqualified where both
// date:: and std::chrono:: are in scope, which C++20 finds ambiguous; it is spelled through an
// alias in namespace date while the header is read.
namespace date {
template <class Duration>
using jobsched_hh_mm_ss = hh_mm_ss<Duration>;
}
#define hh_mm_ss jobsched_hh_mm_ss
#include <date/ptz.h>
#undef hh_mm_ss

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>

namespace jobsched {

struct Zone::Rule {
  Posix::time_zone zone;
};

namespace {

// Where the system's zone files are: $TZDIR, as for the C library, else Debian's place.
std::string ZoneFile(std::string_view name) {
  const char* dir = std::getenv("TZDIR");
  std::string path = dir != nullptr && *dir != '\0' ? dir : "/usr/share/zoneinfo";
  path += '/';
  path += name;
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const date::sys_seconds kFarFuture{date::sys_days{date::year{9999} / 1 / 1}};
const date::sys_seconds kLongAgo{date::sys_days{date::year{1800} / 1 / 1}};

}  // namespace

std::string Zone::FooterRule(std::string_view bytes) {
  // "TZif", then the version: '\0' for version 1 (no footer), '2', '3', ...
  if (bytes.size() < 6 || bytes.substr(0, 4) != "TZif" || bytes[4] == '\0') return "";
  if (bytes.back() != '\n') return "";
  const size_t open = bytes.rfind('\n', bytes.size() - 2);
  if (open == std::string_view::npos) return "";
  std::string_view rule = bytes.substr(open + 1, bytes.size() - open - 2);
  for (char c : rule) {
    if (c < 0x20 || c > 0x7e) return "";  // the rule is printable ASCII
  }
  return std::string(rule);
}

Zone::Zone(const date::time_zone* listed, std::string rule)
    : listed_(listed), rule_(std::move(rule)), listed_until_(listed->get_info(kFarFuture).begin) {
  // A file that lists no transition at all has one offset, which its rule repeats.
  if (rule_.empty() || listed_until_ < kLongAgo) return;
  try {
    auto parsed = std::make_shared<Rule>(Rule{Posix::time_zone(rule_)});
    // The rule continues the listed transitions: at the start of the last listed period both
    // must give the same offset, or the rule is not this file's (and is not used).
    if (parsed->zone.get_info(listed_until_).offset == listed->get_info(listed_until_).offset) {
      parsed_ = std::move(parsed);
    }
  } catch (const std::exception&) {
    // An unreadable rule: the last listed offset continues.
  }
}

const Zone* Zone::Locate(std::string_view name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Zone>, std::less<>> zones;
  std::lock_guard lock(mu);
  if (auto it = zones.find(name); it != zones.end()) return it->second.get();
  // Files of the zone directory that are no zone: the host's own zone (each node's may differ),
  // and the POSIX-TZ template.
  if (name == "localtime" || name == "posixrules") return nullptr;
  const date::time_zone* listed = nullptr;
  try {
    listed = date::locate_zone(name);
  } catch (const std::exception&) {
    return nullptr;
  }
  // The file is read only for a name the database knows (never an arbitrary path).
  std::unique_ptr<Zone> zone(new Zone(listed, FooterRule(ReadFile(ZoneFile(listed->name())))));
  return zones.emplace(std::string(name), std::move(zone)).first->second.get();
}

date::sys_info Zone::Info(date::sys_seconds t) const {
  if (parsed_ == nullptr || t < listed_until_) return listed_->get_info(t);
  date::sys_info info = parsed_->zone.get_info(t);
  if (info.begin < listed_until_) info.begin = listed_until_;
  if (info.end >= kFarFuture) info.save = std::chrono::minutes{0};  // a rule without daylight time
  return info;
}

}  // namespace jobsched
