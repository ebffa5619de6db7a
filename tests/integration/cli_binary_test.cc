// The `jobsched` binary as a user runs it: arguments, stdout, stderr and exit codes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr
};

CliRun Jobsched(const std::string& args, const std::string& stdin_text = "") {
  // One file per process and call: ctest runs the tests of this binary in parallel processes.
  static int calls = 0;
  const std::string input = testing::TempDir() + "/cli_stdin_" + std::to_string(::getpid()) + "_" +
                            std::to_string(++calls) + ".txt";
  FILE* f = std::fopen(input.c_str(), "w");
  std::fputs(stdin_text.c_str(), f);
  std::fclose(f);
  const std::string cmd = std::string(JOBSCHED_BIN) + " " + args + " < " + input + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  std::remove(input.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(CliBinary, CronNextAcrossTheNewYorkGap) {
  CliRun r =
      Jobsched("cron next '30 2 * * *' --tz America/New_York --from 2024-03-09T12:00:00Z -n 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2024-03-10T07:00:00Z"));
  EXPECT_THAT(r.output, HasSubstr("2024-03-11T06:30:00Z"));
}

TEST(CliBinary, CronNextBadHourExitsTwoNamingTheField) {
  CliRun r = Jobsched("cron next '0 25 * * *'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("hour: value 25 out of range 0-23"));
}

TEST(CliBinary, CronNextWithoutExpressionIsAUsageError) {
  CliRun r = Jobsched("cron next");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("EXPR"));
}

TEST(CliBinary, BatchReadsStdin) {
  CliRun r =
      Jobsched("cron next --batch",
               "{\"id\":1,\"expr\":\"0 0 * * *\",\"from\":\"2024-01-01T00:00:00Z\",\"n\":1}\n"
               "garbage\n");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr(R"("next":["2024-01-02T00:00:00Z"])"));
  EXPECT_THAT(r.output, HasSubstr(R"({"next":{"error":"invalid JSON line)"));
}

TEST(CliBinary, UnknownSubcommandIsAUsageError) { EXPECT_EQ(Jobsched("frobnicate").exit_code, 2); }

// Whole-number options say INT in the help, once (the check's name used to be appended: INT:INT),
// and a number that is not whole is refused naming the option.
TEST(CliBinary, WholeNumberOptionsReadAsIntInTheHelp) {
  for (const char* command : {"serve --help", "tenants set --help"}) {
    SCOPED_TRACE(command);
    CliRun r = Jobsched(command);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, Not(HasSubstr("INT:INT")));
  }
  EXPECT_THAT(Jobsched("serve --help").output, HasSubstr("--concurrency INT"));
  CliRun r = Jobsched("tenants set acme --max-jobs 1.5");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--max-jobs: '1.5' is not a whole number"));
}

}  // namespace
