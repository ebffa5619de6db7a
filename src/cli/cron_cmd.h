// `jobsched cron next`: previews a cron expression, one at a time or in batch (JSON lines).
#pragma once

#include <jobsched/clock.h>

#include <iosfwd>
#include <string>

namespace jobsched::cli {

struct CronNextArgs {
  std::string expr;
  std::string tz = "UTC";
  std::string from;  // RFC 3339; empty = now
  int n = 5;
  std::string output = "table";  // table | json
};

// Writes the next `n` fire times to `out`, or the error to `err` and returns kExitUsage.
int RunCronNext(const CronNextArgs& args, const Clock& clock, std::ostream& out, std::ostream& err);

// Reads JSON lines {"id", "expr", "tz", "from", "n"} (only expr required) and writes one JSON line
// per input line, in order: the input's id, expr, tz and from, and "next": [UTC times] or
// "next": {"error": "..."}. A malformed line gets an error line. Returns kExitOk.
int RunCronBatch(std::istream& in, const Clock& clock, std::ostream& out);

}  // namespace jobsched::cli
