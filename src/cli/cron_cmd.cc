#include "cli/cron_cmd.h"

#include <date/tz.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "cli/cli.h"
#include "core/cron.h"
#include "core/time_util.h"
#include "core/zone.h"

namespace jobsched::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxN = 1000;

// "2024-03-10 03:00:00 EDT" in the schedule's zone. The offset and abbreviation come from the
// same Zone the schedule fires by, so past the zone file's last listed transition they follow
// the file's rule as the fire times do (date::zoned_time would keep the last listed offset).
std::string FormatLocal(TimePoint t, const std::string& tz) {
  const date::sys_seconds secs = std::chrono::floor<std::chrono::seconds>(t);
  // "" and "UTC" are UTC, as for CronSchedule::Parse.
  const Zone* zone = tz.empty() || tz == "UTC" ? nullptr : Zone::Locate(tz);
  if (zone == nullptr) return date::format("%F %T UTC", secs);
  const date::sys_info info = zone->Info(secs);
  return date::format("%F %T ", date::local_seconds{secs.time_since_epoch() + info.offset}) +
         info.abbrev;
}

// The parsed `from`, or now.
Result<TimePoint> FromOrNow(const std::string& from, const Clock& clock) {
  if (from.empty()) return clock.Now();
  auto t = ParseRfc3339(from);
  if (!t.ok()) return InvalidArgument("from: " + t.status().message());
  return t;
}

Status CheckN(int64_t n) {
  if (n < 1 || n > kMaxN) {
    return InvalidArgument("n: must be between 1 and " + std::to_string(kMaxN) + ", got " +
                           std::to_string(n));
  }
  return Status::Ok();
}

// The next `n` times, or the first error of the expression, zone, from or n.
Result<std::vector<TimePoint>> Preview(const std::string& expr, const std::string& tz,
                                       TimePoint from, int n) {
  RETURN_IF_ERROR(CheckN(n));
  ASSIGN_OR_RETURN(CronSchedule schedule, CronSchedule::Parse(expr, tz));
  std::vector<TimePoint> times(static_cast<size_t>(n));
  times.resize(schedule.NextN(from, times));
  return times;
}

// One batch line in, one JSON line out.
Json BatchLine(std::string_view line, const Clock& clock) {
  Json out = Json::object();
  auto fail = [&out](const std::string& message) {
    out["next"] = Json{{"error", message}};
    return out;
  };
  Json in;
  try {
    in = Json::parse(line);
  } catch (const Json::exception& e) {
    return fail(std::string("invalid JSON line: ") + e.what());
  }
  if (!in.is_object()) return fail("invalid line: expected a JSON object");
  if (in.contains("id")) out["id"] = in["id"];
  for (const auto& [key, value] : in.items()) {
    if (key != "id" && key != "expr" && key != "tz" && key != "from" && key != "n") {
      return fail("unknown field '" + key + "' (expected id, expr, tz, from, n)");
    }
  }
  if (!in.contains("expr")) return fail("expr: missing");
  if (!in["expr"].is_string()) return fail("expr: must be a string");
  out["expr"] = in["expr"];
  std::string tz = "UTC";
  if (in.contains("tz") && !in["tz"].is_null()) {
    if (!in["tz"].is_string()) return fail("tz: must be a string");
    tz = in["tz"].get<std::string>();
  }
  out["tz"] = tz;
  std::string from_text;
  if (in.contains("from") && !in["from"].is_null()) {
    if (!in["from"].is_string()) return fail("from: must be an RFC 3339 string");
    from_text = in["from"].get<std::string>();
  }
  int64_t n = 5;
  if (in.contains("n") && !in["n"].is_null()) {
    if (!in["n"].is_number_integer()) return fail("n: must be an integer");
    // A number past 2^63 - 1 would wrap to a negative one: said as it was written.
    if (in["n"].is_number_unsigned() &&
        in["n"].get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail("n: must be between 1 and " + std::to_string(kMaxN) + ", got " + in["n"].dump());
    }
    n = in["n"].get<int64_t>();
  }
  auto from = FromOrNow(from_text, clock);
  if (!from.ok()) return fail(from.status().message());
  out["from"] = from_text.empty() ? FormatRfc3339(*from) : from_text;
  if (Status s = CheckN(n); !s.ok()) return fail(s.message());
  auto times = Preview(in["expr"].get<std::string>(), tz, *from, static_cast<int>(n));
  if (!times.ok()) return fail(times.status().message());
  Json next = Json::array();
  for (TimePoint t : *times) next.push_back(FormatRfc3339Seconds(t));
  out["next"] = std::move(next);
  return out;
}

}  // namespace

int RunCronNext(const CronNextArgs& args, const Clock& clock, std::ostream& out,
                std::ostream& err) {
  auto from = FromOrNow(args.from, clock);
  if (!from.ok()) {
    err << "error: " << from.status().message() << "\n";
    return kExitUsage;
  }
  auto times = Preview(args.expr, args.tz, *from, args.n);
  if (!times.ok()) {
    err << "error: " << times.status().message() << "\n";
    return kExitUsage;
  }
  if (args.output == "json") {
    Json next = Json::array();
    for (TimePoint t : *times) {
      next.push_back({{"utc", FormatRfc3339Seconds(t)}, {"local", FormatLocal(t, args.tz)}});
    }
    out << Json{{"expr", args.expr},
                {"tz", args.tz},
                {"from", FormatRfc3339(*from)},
                {"next", next}}
               .dump()
        << "\n";
    return kExitOk;
  }
  out << "UTC                    LOCAL (" << args.tz << ")\n";
  for (TimePoint t : *times) {
    out << FormatRfc3339Seconds(t) << "   " << FormatLocal(t, args.tz) << "\n";
  }
  if (times->empty()) out << "(no fire times before the year 10000)\n";
  return kExitOk;
}

int RunCronBatch(std::istream& in, const Clock& clock, std::ostream& out) {
  std::string line;
  while (std::getline(in, line)) {
    out << BatchLine(line, clock).dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  }
  out.flush();
  return kExitOk;
}

void AddCronCommands(CLI::App& app, int* exit_code) {
  CLI::App* cron = app.add_subcommand("cron", "Cron expression tools");
  cron->require_subcommand(1);
  CLI::App* next = cron->add_subcommand("next", "Print the next fire times of a cron expression");
  auto args = std::make_shared<CronNextArgs>();
  auto batch = std::make_shared<bool>(false);
  next->add_option("expr", args->expr, "Cron expression (quote it)");
  next->add_option("--tz", args->tz, "IANA time zone")->capture_default_str();
  next->add_option("--from", args->from, "Start instant, RFC 3339 (default: now)");
  next->add_option("-n", args->n, "How many fire times")
      ->check(kWholeNumber)
      ->capture_default_str();
  next->add_option("-o,--output", args->output, "Output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  next->add_flag("--batch", *batch,
                 "Read JSON lines {id, expr, tz, from, n} on stdin, write one JSON line each");
  next->callback([args, batch, exit_code] {
    if (*batch) {
      if (!args->expr.empty())
        throw CLI::ValidationError("--batch reads expressions from stdin; no EXPR");
      *exit_code = RunCronBatch(std::cin, *Clock::Real(), std::cout);
      return;
    }
    if (args->expr.empty()) throw CLI::RequiredError("EXPR (or --batch)");
    *exit_code = RunCronNext(*args, *Clock::Real(), std::cout, std::cerr);
  });
}

}  // namespace jobsched::cli
