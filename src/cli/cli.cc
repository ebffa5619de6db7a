#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <exception>
#include <iostream>

#include "cli/serve_cmd.h"

namespace jobsched::cli {

const CLI::Validator kWholeNumber(
    [](std::string& text) -> std::string {
      int64_t n = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec == std::errc::result_out_of_range) return "'" + text + "' is out of range";
      if (ec != std::errc() || end != text.data() + text.size()) {
        return "'" + text + "' is not a whole number";
      }
      return "";
    },
    "");  // no description: the help shows the option's own type name (INT), once

const CLI::Validator kNotEmpty(
    [](std::string& text) -> std::string { return text.empty() ? "empty" : ""; }, "");

int Main(int argc, char** argv) {
  CLI::App app{"jobsched: a distributed job scheduler", "jobsched"};
  app.require_subcommand(1);
  app.set_version_flag("--version", JOBSCHED_VERSION);
  int exit_code = kExitOk;
  AddCronCommands(app, &exit_code);
  AddClientCommands(app, &exit_code);
  AddServeCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailure;
  }
  return exit_code;
}

}  // namespace jobsched::cli
