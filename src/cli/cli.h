// The `jobsched` command line: every subcommand is registered here; apps/jobsched/main.cc only
// calls Main().
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>

namespace jobsched::cli {

// Exit codes shared by all subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the operation failed (server error, I/O)
inline constexpr int kExitUsage = 2;    // bad arguments or bad input

int Main(int argc, char** argv);

// A check for a 64-bit integer option: the value must be a whole number that fits (without it,
// CLI11 turns 99999999999999999999 into the largest one).
extern const CLI::Validator kWholeNumber;
// A check for a text option (or each item of a list option): not empty.
extern const CLI::Validator kNotEmpty;

// Registers `jobsched cron ...`; the callback stores its exit code in *exit_code.
void AddCronCommands(CLI::App& app, int* exit_code);

// Registers the REST API client commands (`jobsched jobs|runs|events|nodes|keys|tenants ...`,
// src/cli/client_cmds.cc); the callbacks store their exit code in *exit_code.
void AddClientCommands(CLI::App& app, int* exit_code);

}  // namespace jobsched::cli
