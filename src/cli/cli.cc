#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>

#include "cli/serve_cmd.h"

namespace jobsched::cli {

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
