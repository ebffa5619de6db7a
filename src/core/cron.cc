#include "core/cron.h"

#include <date/tz.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>

#include "core/time_util.h"
#include "core/zone.h"

namespace jobsched {
namespace {

constexpr int64_t kSecondsPerDay = 86400;

// Howard Hinnant's civil calendar algorithms, on days since 1970-01-01.
struct Civil {
  int year;
  unsigned month;  // 1-12
  unsigned day;    // 1-31
};

constexpr int64_t DaysFromCivil(int y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

constexpr Civil CivilFromDays(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return Civil{static_cast<int>(y + (m <= 2)), m, d};
}

constexpr bool IsLeap(int y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

constexpr unsigned DaysInMonth(int y, unsigned m) {
  constexpr unsigned kDays[] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m];
}

constexpr int64_t FloorDiv(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// Weekday (Sunday = 0) of a day counted from 1970-01-01, a Thursday.
constexpr unsigned WeekdayOfDays(int64_t days) {
  return static_cast<unsigned>(((days % 7) + 7 + 4) % 7);
}

// The first set bit at or above `from`, or -1.
template <typename T>
int NextBit(T mask, int from) {
  if (from >= static_cast<int>(sizeof(T) * 8)) return -1;
  const T rest = static_cast<T>(mask >> from);
  if (rest == 0) return -1;
  return from + std::countr_zero(rest);
}

// The nearest weekday (Mon-Fri) to day n of the month, without leaving the month (Quartz nW).
unsigned NearestWeekday(unsigned n, unsigned weekday_of_n, unsigned days_in_month) {
  if (weekday_of_n == 6) return n == 1 ? 3 : n - 1;                  // Saturday
  if (weekday_of_n == 0) return n == days_in_month ? n - 2 : n + 1;  // Sunday
  return n;
}

// Year 10000-01-01: nothing fires at or after it (RFC 3339 has four-digit years).
constexpr int64_t kEndOfTime = DaysFromCivil(10000, 1, 1) * kSecondsPerDay;
// Any day pattern that can occur occurs within one 400-year Gregorian cycle.
constexpr int64_t kSearchSpan = int64_t{146097} * kSecondsPerDay;

// ---- Parsing -------------------------------------------------------------------------------

enum FieldIndex { kSecond, kMinute, kHour, kDayOfMonth, kMonth, kDayOfWeek, kFieldCount };

struct FieldDef {
  const char* name;
  int min;
  int max;                   // the largest value written (7 for day-of-week, an alias of 0)
  int size;                  // largest allowed step
  const char* const* names;  // 3-letter names for min.. (or nullptr)
  int name_count;
};

constexpr const char* kMonthNames[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                       "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kDayNames[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

constexpr FieldDef kFields[kFieldCount] = {
    {"second", 0, 59, 60, nullptr, 0},     {"minute", 0, 59, 60, nullptr, 0},
    {"hour", 0, 23, 24, nullptr, 0},       {"day-of-month", 1, 31, 31, nullptr, 0},
    {"month", 1, 12, 12, kMonthNames, 12}, {"day-of-week", 0, 7, 7, kDayNames, 7},
};

class FieldParser {
 public:
  FieldParser(FieldIndex index, CronSchedule::Fields& out)
      : def_(kFields[index]), index_(index), out_(out) {}

  Status Parse(std::string_view text) {
    if (text == "?") {
      if (index_ != kDayOfMonth && index_ != kDayOfWeek) {
        return Error("'?' is only allowed as the whole day-of-month or day-of-week field");
      }
      SetRange(def_.min, index_ == kDayOfWeek ? 6 : def_.max, 1);
      return Status::Ok();
    }
    size_t start = 0;
    while (true) {
      const size_t comma = text.find(',', start);
      const std::string_view item = text.substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      if (item.empty()) return Error("empty item in list '" + std::string(text) + "'");
      RETURN_IF_ERROR(ParseItem(item));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return Status::Ok();
  }

 private:
  Status Error(std::string what) const {
    return InvalidArgument(std::string(def_.name) + ": " + what);
  }
  Status TokenError(std::string_view token, std::string_view what) const {
    return Error("'" + std::string(token) + "' — " + std::string(what));
  }

  // A number or (month, day-of-week) a name. `token` is the item, for messages.
  Status ParseValue(std::string_view text, std::string_view token, int& value,
                    bool& is_name) const {
    is_name = false;
    if (text.empty()) return TokenError(token, "missing value");
    if (text[0] >= '0' && text[0] <= '9') {
      if (text.size() > 4)
        return Error("value " + std::string(text) + " out of range " + RangeText());
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec != std::errc() || ptr != text.data() + text.size()) {
        return TokenError(token, "'" + std::string(text) + "' is not a number");
      }
      if (value < def_.min || value > def_.max) {
        return Error("value " + std::to_string(value) + " out of range " + RangeText());
      }
      return Status::Ok();
    }
    if (def_.names != nullptr && text.size() == 3) {
      for (int i = 0; i < def_.name_count; ++i) {
        const char* name = def_.names[i];
        bool same = true;
        for (int c = 0; c < 3; ++c) {
          if ((text[c] & ~0x20) != name[c]) same = false;
        }
        if (same) {
          value = def_.min + i;
          is_name = true;
          return Status::Ok();
        }
      }
      return TokenError(token,
                        "unknown " + std::string(def_.name) + " name '" + std::string(text) + "'");
    }
    if (def_.names != nullptr) {
      return TokenError(token,
                        "'" + std::string(text) + "' is not a number or a " + def_.name + " name");
    }
    return TokenError(token, "'" + std::string(text) + "' is not a number");
  }

  std::string RangeText() const {
    return std::to_string(def_.min) + "-" + std::to_string(def_.max);
  }

  void SetRange(int lo, int hi, int step) {
    for (int v = lo; v <= hi; v += step) {
      switch (index_) {
        case kSecond:
          out_.seconds |= uint64_t{1} << v;
          break;
        case kMinute:
          out_.minutes |= uint64_t{1} << v;
          break;
        case kHour:
          out_.hours |= uint32_t{1} << v;
          break;
        case kDayOfMonth:
          out_.days |= uint32_t{1} << v;
          break;
        case kMonth:
          out_.months |= static_cast<uint16_t>(1u << v);
          break;
        case kDayOfWeek:
          out_.weekdays |= static_cast<uint8_t>(1u << (v % 7));
          break;
        default:
          break;
      }
    }
  }

  static bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return (x & ~0x20) == (y & ~0x20);
           });
  }
  static bool EndsWithLetter(std::string_view s, char upper) {
    return !s.empty() && (s.back() & ~0x20) == upper;
  }

  // Quartz items: L, LW, nW (day-of-month); nL, n#k, n#L (day-of-week). Returns true if handled.
  Result<bool> ParseSpecial(std::string_view item) {
    if (item.find_first_of("/-*") != std::string_view::npos) return false;
    if (index_ == kDayOfMonth) {
      if (EqualsIgnoreCase(item, "L")) {
        out_.last_day = true;
        return true;
      }
      if (EqualsIgnoreCase(item, "LW")) {
        out_.last_weekday_of_month = true;
        return true;
      }
      if (EndsWithLetter(item, 'W')) {
        if (item.size() == 1) return TokenError(item, "'W' needs a day before it (e.g. 15W)");
        int n = 0;
        bool is_name = false;
        RETURN_IF_ERROR(ParseValue(item.substr(0, item.size() - 1), item, n, is_name));
        out_.nearest_weekday |= uint32_t{1} << n;
        return true;
      }
      return false;
    }
    if (index_ != kDayOfWeek) return false;
    const size_t hash = item.find('#');
    if (hash != std::string_view::npos) {
      int weekday = 0;
      bool is_name = false;
      RETURN_IF_ERROR(ParseValue(item.substr(0, hash), item, weekday, is_name));
      const std::string_view k = item.substr(hash + 1);
      if (EqualsIgnoreCase(k, "L")) {
        out_.last_of_month |= static_cast<uint8_t>(1u << (weekday % 7));
        return true;
      }
      if (k.size() != 1 || k[0] < '1' || k[0] > '5') {
        return TokenError(item, "occurrence must be 1-5");
      }
      out_.nth[weekday % 7] |= static_cast<uint8_t>(1u << (k[0] - '0'));
      return true;
    }
    if (EndsWithLetter(item, 'L')) {
      if (item.size() == 1) {
        return TokenError(item, "'L' needs a weekday before it in day-of-week (e.g. 5L)");
      }
      int weekday = 0;
      bool is_name = false;
      RETURN_IF_ERROR(ParseValue(item.substr(0, item.size() - 1), item, weekday, is_name));
      out_.last_of_month |= static_cast<uint8_t>(1u << (weekday % 7));
      return true;
    }
    return false;
  }

  Status ParseItem(std::string_view item) {
    if (item == "?") {
      return Error("'?' is only allowed as the whole day-of-month or day-of-week field");
    }
    ASSIGN_OR_RETURN(bool special, ParseSpecial(item));
    if (special) return Status::Ok();

    std::string_view base = item;
    int step = 1;
    const size_t slash = item.find('/');
    if (slash != std::string_view::npos) {
      base = item.substr(0, slash);
      const std::string_view step_text = item.substr(slash + 1);
      if (step_text.empty()) return TokenError(item, "missing step after '/'");
      if (base.empty()) return TokenError(item, "a step needs '*' or a range before it");
      if (step_text.size() > 4 ||
          step_text.find_first_not_of("0123456789") != std::string_view::npos) {
        return TokenError(item, "step '" + std::string(step_text) + "' is not a number");
      }
      std::from_chars(step_text.data(), step_text.data() + step_text.size(), step);
      if (step < 1 || step > def_.size) {
        return Error("step " + std::to_string(step) + " out of range 1-" +
                     std::to_string(def_.size) + " in '" + std::string(item) + "'");
      }
    }

    if (base == "*") {
      SetRange(def_.min, index_ == kDayOfWeek ? 6 : def_.max, step);
      return Status::Ok();
    }
    const size_t dash = base.find('-');
    if (dash == std::string_view::npos) {
      if (slash != std::string_view::npos) {
        return TokenError(item, "a step needs '*' or a range before it");
      }
      int value = 0;
      bool is_name = false;
      RETURN_IF_ERROR(ParseValue(base, item, value, is_name));
      SetRange(value, value, 1);
      return Status::Ok();
    }
    int lo = 0;
    int hi = 0;
    bool lo_name = false;
    bool hi_name = false;
    RETURN_IF_ERROR(ParseValue(base.substr(0, dash), item, lo, lo_name));
    RETURN_IF_ERROR(ParseValue(base.substr(dash + 1), item, hi, hi_name));
    if (index_ == kDayOfWeek && hi_name && hi == 0 && lo > hi) hi = 7;  // FRI-SUN
    if (lo > hi) return TokenError(item, "reversed range");
    SetRange(lo, hi, step);
    return Status::Ok();
  }

  const FieldDef& def_;
  FieldIndex index_;
  CronSchedule::Fields& out_;
};

struct Macro {
  std::string_view name;
  std::string_view expansion;
};
constexpr Macro kMacros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

Status ParseFields(std::string_view expr, CronSchedule::Fields& f) {
  std::array<std::string_view, 7> parts;
  size_t count = 0;
  size_t i = 0;
  while (i < expr.size()) {
    while (i < expr.size() && IsBlank(expr[i])) ++i;
    if (i == expr.size()) break;
    const size_t start = i;
    while (i < expr.size() && !IsBlank(expr[i])) ++i;
    if (count < parts.size()) parts[count] = expr.substr(start, i - start);
    ++count;
  }
  if (count != 5 && count != 6) {
    return InvalidArgument(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
        "(with seconds first), got " +
        std::to_string(count));
  }
  const size_t first = count == 5 ? 1 : 0;
  if (count == 5) f.seconds = 1;  // second 0
  for (size_t k = 0; k < count; ++k) {
    const auto index = static_cast<FieldIndex>(first + k);
    RETURN_IF_ERROR(FieldParser(index, f).Parse(parts[k]));
  }
  const std::string_view dom = parts[kDayOfMonth - first];
  const std::string_view dow = parts[kDayOfWeek - first];
  f.day_and = dom.front() == '*' || dom == "?" || dow.front() == '*' || dow == "?";
  f.fixed_time = true;
  for (int k = kSecond; k <= kHour; ++k) {
    if (k < static_cast<int>(first)) continue;
    if (parts[k - first].find_first_of("*/") != std::string_view::npos) f.fixed_time = false;
  }
  return Status::Ok();
}

}  // namespace

// ---- Matching ------------------------------------------------------------------------------

bool CronSchedule::Fields::DayMatches(int year, unsigned month, unsigned day,
                                      unsigned weekday) const {
  const unsigned dim = DaysInMonth(year, month);
  bool dom = (days >> day & 1) != 0;
  if (!dom && last_day) dom = day == dim;
  if (!dom && (last_weekday_of_month || nearest_weekday != 0) && weekday >= 1 && weekday <= 5) {
    if (last_weekday_of_month) {
      const unsigned last_wd = (weekday + (dim - day)) % 7;  // weekday of the last day
      dom = NearestWeekday(dim, last_wd, dim) == day;
    }
    // A weekday d can only be the nearest weekday of d-2..d+2.
    for (unsigned n = day > 2 ? day - 2 : 1; !dom && n <= std::min(day + 2, dim); ++n) {
      if ((nearest_weekday >> n & 1) == 0) continue;
      const unsigned wd_n = (weekday + 7 + n - day) % 7;
      dom = NearestWeekday(n, wd_n, dim) == day;
    }
  }
  bool dow = (weekdays >> weekday & 1) != 0;
  if (!dow && (last_of_month >> weekday & 1)) dow = day + 7 > dim;
  if (!dow && nth[weekday] != 0) dow = (nth[weekday] >> ((day - 1) / 7 + 1) & 1) != 0;
  return day_and ? (dom && dow) : (dom || dow);
}

int CronSchedule::Fields::NextTimeOfDay(int sod) const {
  const int h = sod / 3600;
  const int m = sod / 60 % 60;
  const int s = sod % 60;
  const bool hour_ok = (hours >> h & 1) != 0;
  if (hour_ok && (minutes >> m & 1) != 0) {
    const int ns = NextBit(seconds, s);
    if (ns >= 0) return h * 3600 + m * 60 + ns;
  }
  const int first_second = std::countr_zero(seconds);
  if (hour_ok) {
    const int nm = NextBit(minutes, m + 1);
    if (nm >= 0) return h * 3600 + nm * 60 + first_second;
  }
  const int nh = NextBit(hours, h + 1);
  if (nh >= 0) return nh * 3600 + std::countr_zero(minutes) * 60 + first_second;
  return -1;
}

std::optional<int64_t> CronSchedule::Fields::NextLocal(int64_t after, int64_t before) const {
  int64_t t = after + 1;
  while (t < before) {
    const int64_t day_number = FloorDiv(t, kSecondsPerDay);
    const Civil c = CivilFromDays(day_number);
    if ((months >> c.month & 1) == 0) {
      const int next_month = NextBit(months, static_cast<int>(c.month) + 1);
      t = next_month > 0
              ? DaysFromCivil(c.year, static_cast<unsigned>(next_month), 1) * kSecondsPerDay
              : DaysFromCivil(c.year + 1, static_cast<unsigned>(std::countr_zero(months)), 1) *
                    kSecondsPerDay;
      continue;
    }
    if (DayMatches(c.year, c.month, c.day, WeekdayOfDays(day_number))) {
      const int tod = NextTimeOfDay(static_cast<int>(t - day_number * kSecondsPerDay));
      if (tod >= 0) {
        const int64_t result = day_number * kSecondsPerDay + tod;
        if (result < before) return result;
        return std::nullopt;
      }
    }
    t = (day_number + 1) * kSecondsPerDay;
  }
  return std::nullopt;
}

// ---- CronSchedule --------------------------------------------------------------------------

Result<CronSchedule> CronSchedule::Parse(std::string_view expr, std::string_view tz) {
  CronSchedule s;
  s.expr_ = std::string(expr);
  s.tz_name_ = tz.empty() ? "UTC" : std::string(tz);
  if (s.tz_name_ != "UTC") {
    s.zone_ = Zone::Locate(s.tz_name_);
    if (s.zone_ == nullptr && s.tz_name_ == "localtime") {
      return InvalidArgument(
          "timezone: 'localtime' is each host's own zone, which may differ between nodes: name "
          "the zone (e.g. Europe/Berlin)");
    }
    if (s.zone_ == nullptr)
      return InvalidArgument("timezone: unknown time zone '" + s.tz_name_ + "'");
  }

  std::string_view text = Trim(expr);
  if (text.empty()) return InvalidArgument("empty cron expression");
  if (text.front() == '@') {
    if (text.starts_with("@every")) {
      std::string_view rest = text.substr(6);
      if (rest.empty() || !IsBlank(rest.front())) {
        return InvalidArgument("@every needs a duration, e.g. '@every 90s'");
      }
      auto every = ParseDuration(Trim(rest));
      if (!every.ok()) return InvalidArgument("@every: " + every.status().message());
      s.every_ = *every;
      return s;
    }
    const auto* macro = std::find_if(std::begin(kMacros), std::end(kMacros),
                                     [&](const Macro& m) { return m.name == text; });
    if (macro == std::end(kMacros)) {
      return InvalidArgument("unknown macro '" + std::string(text) +
                             "' (expected @yearly, @annually, @monthly, @weekly, @daily, "
                             "@midnight, @hourly or @every <duration>)");
    }
    text = macro->expansion;
  }
  RETURN_IF_ERROR(ParseFields(text, s.fields_));

  const int64_t probe = DaysFromCivil(2000, 1, 1) * kSecondsPerDay;
  if (!s.fields_.NextLocal(probe - 1, probe + kSearchSpan)) {
    return InvalidArgument("expression '" + std::string(Trim(expr)) + "' never fires");
  }
  return s;
}

std::optional<int64_t> CronSchedule::NextZoned(int64_t after) const {
  using std::chrono::seconds;
  const int64_t limit = std::min(after + kSearchSpan, kEndOfTime);
  while (after < limit) {
    // The offset period holding the first candidate instant, after + 1.
    const date::sys_info info = zone_->Info(date::sys_seconds(seconds(after + 1)));
    const int64_t offset = info.offset.count();
    const int64_t begin = info.begin.time_since_epoch().count();
    const int64_t end = std::min(info.end.time_since_epoch().count(), limit);

    int64_t local_after = after + offset;
    if (fields_.fixed_time && begin > -kEndOfTime) {
      const int64_t prev_offset = zone_->Info(info.begin - seconds(1)).offset.count();
      if (prev_offset < offset && begin == after + 1) {
        // Spring forward right at the first candidate: fixed times inside the gap fire at the
        // first instant after it.
        if (fields_.NextLocal(begin + prev_offset - 1, begin + offset)) return begin;
      } else if (prev_offset > offset) {
        // After a fall-back, the local times the previous offset already covered are repeats.
        local_after = std::max(local_after, begin + prev_offset - 1);
      }
    }
    if (auto local = fields_.NextLocal(local_after, end + offset)) return *local - offset;
    if (end >= limit) return std::nullopt;
    after = end - 1;
  }
  return std::nullopt;
}

std::optional<TimePoint> CronSchedule::Next(TimePoint from) const {
  if (every_) return from + *every_;
  const int64_t after = FloorDiv(ToUnixMillis(from), 1000);
  std::optional<int64_t> next =
      zone_ == nullptr ? fields_.NextLocal(after, std::min(after + kSearchSpan, kEndOfTime))
                       : NextZoned(after);
  if (!next) return std::nullopt;
  return FromUnixMillis(*next * 1000);
}

size_t CronSchedule::NextN(TimePoint from, std::span<TimePoint> out) const {
  size_t n = 0;
  for (; n < out.size(); ++n) {
    auto next = Next(from);
    if (!next) break;
    out[n] = from = *next;
  }
  return n;
}

}  // namespace jobsched
