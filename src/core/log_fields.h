#pragma once

// The shape of jobsched's log lines: "<what happened> key=value key=value[: free text]". A
// value that may hold anything (an error, a reason, a request path) is written with LogValue, so
// that neither the text nor the JSON log format can be made to show fields, or lines, that the
// code did not write.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace jobsched {

// `value` as it is when it is a plain token (not empty; no space, '"', '\\', '=' or control
// character; not ending in ':'), else in double quotes with '"', '\\' and control characters
// escaped (\n, \r, \t, \u00XX).
std::string LogValue(std::string_view value);

// The key=value fields of a log message, in order; a key ([a-z_]+) seen before is left out
// (the first wins). A value is plain up to the next space, or quoted as LogValue writes it (a
// quote that does not close ends the fields). The fields follow the message's first words; a
// word or a value ending in ':', or a word after a field, ends them: what follows is free text.
std::vector<std::pair<std::string, std::string>> LogFields(std::string_view message);

// `text` with its control characters escaped as LogValue escapes them: one log record, one line.
std::string EscapeControl(std::string_view text);

}  // namespace jobsched
