#include "exec/shell_executor.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "exec/cancellation.h"
#include "support/cgroup.h"

namespace jobsched::exec {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr const char* kChild = JOBSCHED_TEST_CHILD;

// A request running jobsched_test_child in `mode`.
ShellRequest Child(std::vector<std::string> args) {
  ShellRequest req;
  req.argv.push_back(kChild);
  req.argv.insert(req.argv.end(), args.begin(), args.end());
  return req;
}

ShellResult MustRun(const ShellRequest& req) {
  CancelSource cancel;
  Result<ShellResult> r = RunShell(req, cancel);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : ShellResult{};
}

// Runs a request on another thread, so the test can cancel it.
class BackgroundRun {
 public:
  explicit BackgroundRun(ShellRequest req) : req_(std::move(req)) {
    thread_ = std::thread([this] { result_.emplace(RunShell(req_, cancel_)); });
  }
  ~BackgroundRun() {
    if (thread_.joinable()) {
      cancel_.Cancel(CancelReason::kCancelled);
      thread_.join();
    }
  }
  CancelSource& cancel() { return cancel_; }
  ShellResult Wait() {
    thread_.join();
    EXPECT_TRUE(result_->ok()) << result_->status().ToString();
    return result_->ok() ? std::move(*result_).value() : ShellResult{};
  }

 private:
  ShellRequest req_;
  CancelSource cancel_;
  std::optional<Result<ShellResult>> result_;
  std::thread thread_;
};

class ShellExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jobsched-exec-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (int fd : fifo_fds_) close(fd);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Creates a FIFO the child writes "ready" to (the mode's FIFO argument) and opens its read
  // end, so the child's open() does not block.
  std::string MakeReadyFifo() {
    std::string path = Path("ready.fifo");
    EXPECT_EQ(mkfifo(path.c_str(), 0600), 0);
    int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    fifo_fds_.push_back(fd);
    return path;
  }

  // Blocks until the child wrote "ready" to the FIFO. The bound only turns a broken child
  // into a failure instead of a hang.
  bool WaitReady() {
    std::string got;
    for (;;) {
      struct pollfd pfd = {fifo_fds_.back(), POLLIN, 0};
      if (poll(&pfd, 1, 30000) <= 0) return false;
      char buf[64];
      ssize_t n = read(fifo_fds_.back(), buf, sizeof(buf));
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      if (got.find("ready\n") != std::string::npos) return true;
      if (n == 0) return false;
    }
  }

  // Defined below: runs a script as a job in a process that is then SIGKILLed.
  std::optional<int> StatusAfterTheNodeIsKilled(const std::string& script);

  std::string dir_;
  std::vector<int> fifo_fds_;
};

std::optional<pid_t> ReadPidFile(const std::string& path) {
  std::ifstream in(path);
  int pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return pid;
}

// With this process as child subreaper, the orphaned grandchild is re-parented to us once the
// child it belonged to is gone. Waits for it to exit (a pidfd is readable once the process is a
// zombie) and returns its wait status; nullopt if it is still alive after 30 s.
std::optional<int> ReapOrphan(pid_t pid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return std::nullopt;
  struct pollfd pfd = {fd, POLLIN, 0};
  int ready = poll(&pfd, 1, 30000);
  close(fd);
  if (ready != 1) return std::nullopt;
  // Dead; it is ours to reap once re-parented, which follows its own parent's death (a job's
  // background process may die before the job's process does).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int status = 0;
  for (;;) {
    const pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) return status;
    if ((got < 0 && errno != ECHILD) || std::chrono::steady_clock::now() > deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

TEST_F(ShellExecutorTest, ExitCodeIsRecorded) {
  ShellResult r = MustRun(Child({"exit", "7"}));
  EXPECT_EQ(r.outcome, ShellOutcome::kExited);
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_EQ(r.term_signal, 0);
  EXPECT_FALSE(r.succeeded());
  EXPECT_EQ(r.error, "exited with code 7");

  ShellResult ok = MustRun(Child({"exit", "0"}));
  EXPECT_EQ(ok.outcome, ShellOutcome::kExited);
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_TRUE(ok.succeeded());
  EXPECT_EQ(ok.error, "");
}

TEST_F(ShellExecutorTest, OutputCombinesStdoutAndStderr) {
  ShellRequest req;
  req.argv = {"sh", "-c", "echo out; echo err >&2"};
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_EQ(r.output, "out\nerr\n");
  EXPECT_FALSE(r.output_truncated);
}

TEST_F(ShellExecutorTest, EnvironmentIsCleanPlusRequestEnv) {
  // Single-threaded here: setenv is safe.
  ASSERT_EQ(setenv("JOBSCHED_TEST_PARENT_SECRET", "must-not-leak", 1), 0);
  ShellRequest req = Child({"env"});
  req.env = {{"JOBSCHED_RUN_ID", "job@123"}, {"JOBSCHED_ATTEMPT", "2"}, {"GREETING", "a b=c"}};
  ShellResult r = MustRun(req);
  unsetenv("JOBSCHED_TEST_PARENT_SECRET");
  ASSERT_TRUE(r.succeeded()) << r.error;

  std::set<std::string> names;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) names.insert(line.substr(0, line.find('=')));
  EXPECT_THAT(r.output, HasSubstr("JOBSCHED_RUN_ID=job@123\n"));
  EXPECT_THAT(r.output, HasSubstr("JOBSCHED_ATTEMPT=2\n"));
  EXPECT_THAT(r.output, HasSubstr("GREETING=a b=c\n"));
  EXPECT_THAT(r.output, HasSubstr("PATH=/usr/local/bin:/usr/bin:/bin\n"));
  EXPECT_THAT(r.output, Not(HasSubstr("must-not-leak")));
  for (const std::string& name : names) {
    EXPECT_THAT(name,
                AnyOf("PATH", "HOME", "LANG", "JOBSCHED_RUN_ID", "JOBSCHED_ATTEMPT", "GREETING"));
  }
}

TEST_F(ShellExecutorTest, RequestEnvOverridesPath) {
  ShellRequest req = Child({"printenv", "PATH"});
  req.env = {{"PATH", "/bin"}};
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.output, "/bin\n");
}

TEST_F(ShellExecutorTest, ProgramWithoutSlashIsFoundInPath) {
  ShellRequest req;
  req.argv = {"echo", "hello", "world"};
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_EQ(r.output, "hello world\n");
}

TEST_F(ShellExecutorTest, StdinIsDeliveredThenClosed) {
  // Larger than a pipe buffer in both directions, so writing and reading must interleave.
  std::string data;
  for (int i = 0; data.size() < 300000; ++i) data += "line " + std::to_string(i) + "\n";
  ShellRequest req = Child({"echo-stdin"});
  req.stdin_data = data;
  req.max_output_bytes = 1 << 20;
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_EQ(r.output.size(), data.size());
  EXPECT_TRUE(r.output == data);
}

TEST_F(ShellExecutorTest, EmptyStdinReadsEof) {
  ShellResult r = MustRun(Child({"echo-stdin"}));
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_EQ(r.output, "");
}

TEST_F(ShellExecutorTest, ChildThatIgnoresStdinDoesNotBlockTheRun) {
  ShellRequest exits = Child({"exit", "0"});
  exits.stdin_data = std::string(4 << 20, 'x');
  ShellResult r = MustRun(exits);
  EXPECT_TRUE(r.succeeded()) << r.error;

  // The child neither reads nor exits: only the timeout ends the run, and it must.
  ShellRequest sleeps = Child({"sleep-forever"});
  sleeps.stdin_data = std::string(4 << 20, 'x');
  sleeps.timeout = Duration(300);
  ShellResult t = MustRun(sleeps);
  EXPECT_EQ(t.outcome, ShellOutcome::kTimedOut);
}

TEST_F(ShellExecutorTest, OutputIsCappedToTheTail) {
  ShellRequest req = Child({"print-bytes", "100000"});
  req.max_output_bytes = 1000;
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_TRUE(r.output_truncated);
  EXPECT_EQ(r.output_bytes, 100003u);
  ASSERT_EQ(r.output.size(), 1000u);
  EXPECT_EQ(r.output, std::string(997, 'x') + "END");

  ShellRequest small = Child({"print-bytes", "10"});
  ShellResult s = MustRun(small);
  EXPECT_FALSE(s.output_truncated);
  EXPECT_EQ(s.output_bytes, 13u);
  EXPECT_EQ(s.output, "xxxxxxxxxxEND");
}

TEST_F(ShellExecutorTest, TimeoutKillsTheWholeProcessGroup) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  std::string pidfile = Path("grandchild.pid");
  ShellRequest req = Child({"grandchild", pidfile});
  req.timeout = Duration(1000);
  req.kill_grace = Duration(5000);
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.outcome, ShellOutcome::kTimedOut);
  EXPECT_EQ(r.error, "timed out after 1000ms");
  EXPECT_EQ(r.term_signal, SIGTERM);
  EXPECT_THAT(r.output, StartsWith("grandchild "));

  std::optional<pid_t> grandchild = ReadPidFile(pidfile);
  ASSERT_TRUE(grandchild.has_value()) << "the grandchild never started";
  std::optional<int> status = ReapOrphan(*grandchild);
  ASSERT_TRUE(status.has_value()) << "grandchild " << *grandchild << " survived the timeout";
  EXPECT_TRUE(WIFSIGNALED(*status));
}

// Runs `script` (sh -c; the FIFO's path in $1) as a job in a forked "node" process, waits until
// it wrote a pid to $2 and the ready line to the FIFO, SIGKILLs the node and returns the wait
// status of the process whose pid was written (re-parented to this subreaper): nullopt if it
// outlived the node by 30 s.
std::optional<int> ShellExecutorTest::StatusAfterTheNodeIsKilled(const std::string& script) {
  EXPECT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const std::string fifo = MakeReadyFifo();
  const std::string pidfile = Path("watched.pid");
  ShellRequest req;
  req.argv = {"/bin/sh", "-c", script, "job", fifo, pidfile};
  const pid_t node = fork();
  if (node == 0) {  // a node running the job on one of its threads
    CancelSource cancel;
    (void)RunShell(req, cancel);
    _exit(0);
  }
  EXPECT_GT(node, 0);
  if (node <= 0 || !WaitReady()) return std::nullopt;
  std::optional<pid_t> watched = ReadPidFile(pidfile);
  EXPECT_EQ(kill(node, SIGKILL), 0);
  int node_status = 0;
  EXPECT_EQ(waitpid(node, &node_status, 0), node);
  if (!watched) return std::nullopt;
  return ReapOrphan(*watched);
}

TEST_F(ShellExecutorTest, AJobDiesWhenTheProcessRunningItIsKilled) {
  std::optional<int> status = StatusAfterTheNodeIsKilled(
      "echo $$ > \"$2\"; exec " + std::string(kChild) + " sleep-forever \"$1\"");
  ASSERT_TRUE(status.has_value()) << "the job outlived the process that ran it";
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
}

TEST_F(ShellExecutorTest, ABackgroundProcessOfAJobDiesWhenTheProcessRunningItIsKilled) {
  // The job's own process dies with its parent (the kernel sees to it); what it started in the
  // background is killed by the job guard, a watcher that outlives the parent.
  std::optional<int> status = StatusAfterTheNodeIsKilled(
      std::string(kChild) + " sleep-forever /dev/null & echo $! > \"$2\"; exec " +
      std::string(kChild) + " sleep-forever \"$1\"");
  ASSERT_TRUE(status.has_value()) << "the job's background process outlived the node";
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
}

TEST_F(ShellExecutorTest, GroupMembersLeftBehindByANormalExitAreKilled) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  std::string pidfile = Path("orphan.pid");
  // The orphan keeps the output pipe open: the run returns only because it is killed.
  ShellResult r = MustRun(Child({"orphan", pidfile}));
  EXPECT_TRUE(r.succeeded()) << r.error;

  std::optional<pid_t> grandchild = ReadPidFile(pidfile);
  ASSERT_TRUE(grandchild.has_value());
  std::optional<int> status = ReapOrphan(*grandchild);
  ASSERT_TRUE(status.has_value()) << "grandchild " << *grandchild << " outlived the run";
  ASSERT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
}

TEST_F(ShellExecutorTest, ChildIgnoringSigtermIsKilledAfterTheGrace) {
  std::string fifo = MakeReadyFifo();
  ShellRequest req = Child({"ignore-term", fifo});
  req.kill_grace = Duration(300);
  BackgroundRun run(req);
  ASSERT_TRUE(WaitReady());
  run.cancel().Cancel(CancelReason::kCancelled);
  ShellResult r = run.Wait();
  EXPECT_EQ(r.outcome, ShellOutcome::kCancelled);
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_GE(r.duration.count(), 300);
  EXPECT_EQ(r.error, "cancelled (SIGKILL after a 300ms grace)");
}

TEST_F(ShellExecutorTest, TimedOutChildIgnoringSigtermIsKilledAfterTheGrace) {
  std::string fifo = MakeReadyFifo();
  ShellRequest req = Child({"ignore-term", fifo});
  req.timeout = Duration(2000);
  req.kill_grace = Duration(200);
  BackgroundRun run(req);
  ASSERT_TRUE(WaitReady());  // SIGTERM is ignored from here on
  ShellResult r = run.Wait();
  EXPECT_EQ(r.outcome, ShellOutcome::kTimedOut);
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_GE(r.duration.count(), 2200);
}

TEST_F(ShellExecutorTest, CancelFromAnotherThreadEndsTheRunPromptly) {
  std::string fifo = MakeReadyFifo();
  ShellRequest req = Child({"sleep-forever", fifo});
  req.kill_grace = Duration(60000);  // a SIGTERM must be enough: no wait for the grace
  BackgroundRun run(req);
  ASSERT_TRUE(WaitReady());
  run.cancel().Cancel(CancelReason::kCancelled);
  ShellResult r = run.Wait();
  EXPECT_EQ(r.outcome, ShellOutcome::kCancelled);
  EXPECT_EQ(r.term_signal, SIGTERM);
  EXPECT_EQ(r.error, "cancelled");
  EXPECT_LT(r.duration.count(), 60000);
}

TEST_F(ShellExecutorTest, FencedCancellationIsReportedAsFenced) {
  std::string fifo = MakeReadyFifo();
  BackgroundRun run(Child({"sleep-forever", fifo}));
  ASSERT_TRUE(WaitReady());
  run.cancel().Cancel(CancelReason::kFenced);
  run.cancel().Cancel(CancelReason::kCancelled);  // the first reason wins
  ShellResult r = run.Wait();
  EXPECT_EQ(r.outcome, ShellOutcome::kFenced);
}

TEST_F(ShellExecutorTest, AlreadyCancelledSourceStartsNothing) {
  CancelSource cancel;
  cancel.Cancel(CancelReason::kCancelled);
  Result<ShellResult> r = RunShell(Child({"exit", "0"}), cancel);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, ShellOutcome::kCancelled);
  EXPECT_EQ(r->exit_code, -1);
}

TEST_F(ShellExecutorTest, MemoryLimitMakesABigAllocationFail) {
  ShellRequest req = Child({"alloc-mb", "512"});
  req.limits.memory_mb = 64;
  ShellResult r = MustRun(req);
  EXPECT_FALSE(r.succeeded());
  EXPECT_EQ(r.outcome, ShellOutcome::kExited);
  EXPECT_EQ(r.exit_code, 3) << r.output;

  // The same limit leaves room for a small allocation.
  ShellRequest small = Child({"alloc-mb", "16"});
  small.limits.memory_mb = 64;
  ShellResult s = MustRun(small);
  EXPECT_TRUE(s.succeeded()) << s.error << " " << s.output;
}

// The test child in `mode` (a busy loop) under a CPU limit of 1 s.
ShellResult BurnOneCpuSecond(const std::string& mode) {
  ShellRequest req = Child({mode});
  req.limits.cpu_seconds = 1;
  req.timeout = Duration(120000);  // a safety net only
  return MustRun(req);
}

TEST_F(ShellExecutorTest, CpuLimitEndsABusyLoop) {
  ShellResult r = BurnOneCpuSecond("burn-cpu");
  EXPECT_EQ(r.outcome, ShellOutcome::kSignaled) << r.error;
  EXPECT_THAT(r.term_signal, AnyOf(SIGXCPU, SIGKILL));
  EXPECT_THAT(r.error, HasSubstr("killed by signal"));
  EXPECT_THAT(r.error, HasSubstr("CPU time limit of 1s exceeded"));
}

// A program that ignores SIGXCPU is killed by the kernel's SIGKILL a second later; the error
// still names the limit, not a bare signal.
TEST_F(ShellExecutorTest, CpuLimitIsNamedWhenTheProgramIgnoresSigxcpu) {
  ShellResult r = BurnOneCpuSecond("burn-cpu-ignoring-xcpu");
  EXPECT_EQ(r.outcome, ShellOutcome::kSignaled) << r.error;
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_EQ(r.error, "killed by signal 9 (SIGKILL): CPU time limit of 1s exceeded");
}

TEST_F(ShellExecutorTest, OpenFilesLimitIsApplied) {
  ShellRequest req;
  req.argv = {"sh", "-c", "ulimit -n"};
  req.limits.max_open_files = 64;
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.output, "64\n");
}

TEST_F(ShellExecutorTest, SignalFromWithinIsReported) {
  ShellRequest req;
  req.argv = {"sh", "-c", "kill -KILL $$"};
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.outcome, ShellOutcome::kSignaled);
  EXPECT_EQ(r.term_signal, SIGKILL);
  EXPECT_EQ(r.error, "killed by signal 9 (SIGKILL)");
}

TEST_F(ShellExecutorTest, MissingProgramIsASpawnFailureNamingIt) {
  ShellRequest in_path;
  in_path.argv = {"jobsched-no-such-program"};
  ShellResult r = MustRun(in_path);
  EXPECT_EQ(r.outcome, ShellOutcome::kSpawnFailed);
  EXPECT_THAT(r.error, HasSubstr("jobsched-no-such-program"));
  EXPECT_FALSE(r.succeeded());

  ShellRequest absolute;
  absolute.argv = {"/nonexistent/jobsched-prog", "x"};
  ShellResult a = MustRun(absolute);
  EXPECT_EQ(a.outcome, ShellOutcome::kSpawnFailed);
  EXPECT_EQ(a.error, "cannot execute '/nonexistent/jobsched-prog': No such file or directory");
}

TEST_F(ShellExecutorTest, NonExecutableFileIsASpawnFailure) {
  std::string path = Path("not-executable");
  std::ofstream(path) << "#!/bin/sh\necho hi\n";
  ShellRequest req;
  req.argv = {path};
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.outcome, ShellOutcome::kSpawnFailed);
  EXPECT_THAT(r.error, HasSubstr("Permission denied"));
}

TEST_F(ShellExecutorTest, WorkingDirectory) {
  ShellRequest req = Child({"pwd"});
  req.cwd = dir_;
  ShellResult r = MustRun(req);
  EXPECT_EQ(r.output, std::filesystem::canonical(dir_).string() + "\n");

  ShellRequest bad = Child({"pwd"});
  bad.cwd = dir_ + "/missing";
  ShellResult b = MustRun(bad);
  EXPECT_EQ(b.outcome, ShellOutcome::kSpawnFailed);
  EXPECT_THAT(b.error, HasSubstr(dir_ + "/missing"));
}

TEST_F(ShellExecutorTest, InvalidRequestsAreRejected) {
  CancelSource cancel;
  EXPECT_EQ(RunShell(ShellRequest{}, cancel).status().code(), StatusCode::kInvalidArgument);
  ShellRequest bad_env = Child({"exit", "0"});
  bad_env.env = {{"A=B", "c"}};
  EXPECT_EQ(RunShell(bad_env, cancel).status().code(), StatusCode::kInvalidArgument);
  ShellRequest nul = Child({std::string("a\0b", 3)});
  EXPECT_EQ(RunShell(nul, cancel).status().code(), StatusCode::kInvalidArgument);
  ShellRequest negative = Child({"exit", "0"});
  negative.timeout = Duration(-1);
  EXPECT_EQ(RunShell(negative, cancel).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ShellExecutorTest, ConcurrentRunsEachGetTheirOwnOutput) {
  constexpr int kRuns = 20;
  std::vector<std::optional<Result<ShellResult>>> results(kRuns);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRuns; ++i) {
    threads.emplace_back([&results, i] {
      // Alternate modes so that stdin, env and output all run concurrently.
      ShellRequest req =
          i % 2 == 0 ? Child({"printenv", "JOBSCHED_RUN_ID"}) : Child({"echo-stdin"});
      req.env = {{"JOBSCHED_RUN_ID", "run-" + std::to_string(i)}};
      req.stdin_data = "stdin-" + std::to_string(i) + "\n";
      CancelSource cancel;
      results[i].emplace(RunShell(req, cancel));
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kRuns; ++i) {
    ASSERT_TRUE(results[i]->ok()) << results[i]->status().ToString();
    const ShellResult& r = results[i]->value();
    EXPECT_TRUE(r.succeeded()) << i << ": " << r.error;
    std::string expected = (i % 2 == 0 ? "run-" : "stdin-") + std::to_string(i) + "\n";
    EXPECT_EQ(r.output, expected);
  }
}

TEST_F(ShellExecutorTest, UnwritableCgroupParentIsSkipped) {
  ShellRequest req = Child({"exit", "0"});
  req.cgroup_parent = dir_ + "/no-such-cgroup";
  req.limits.memory_mb = 64;
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_EQ(r.cgroup, CgroupUse::kSkipped);
  EXPECT_THAT(r.cgroup_note, HasSubstr("no-such-cgroup"));
}

TEST_F(ShellExecutorTest, RunGetsItsOwnCgroupWhenWritable) {
  std::optional<std::string> parent = testing::MakeCgroupDir("jobsched-test");
  if (!parent) GTEST_SKIP() << "no writable cgroup v2 hierarchy";
  ShellRequest req = Child({"cgroup"});
  req.cgroup_parent = *parent;
  req.limits.memory_mb = 256;
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  EXPECT_THAT(r.cgroup, AnyOf(CgroupUse::kApplied, CgroupUse::kPartial)) << r.cgroup_note;
  EXPECT_THAT(r.output, HasSubstr("/jobsched-test-" + std::to_string(getpid()) + "/jobsched-"));
  // The per-run cgroup is gone, so the parent can be removed.
  EXPECT_EQ(rmdir(parent->c_str()), 0) << "per-run cgroup left behind under " << *parent;
}

// cpu_cores becomes the run cgroup's cpu.max (quota per 100 ms period), or, where the parent does
// not delegate the cpu controller, a partial cgroup with a note that says so.
TEST_F(ShellExecutorTest, CpuCoresBecomeTheRunCgroupsCpuMax) {
  std::optional<std::string> parent = testing::MakeCgroupDir("jobsched-test-cpu");
  if (!parent) GTEST_SKIP() << "no writable cgroup v2 hierarchy";
  ShellRequest req;
  req.argv = {"/bin/sh", "-c", "/bin/cat " + *parent + "/jobsched-*/cpu.max 2>&1; exit 0"};
  req.cgroup_parent = *parent;
  req.limits.cpu_cores = 0.5;
  ShellResult r = MustRun(req);
  EXPECT_TRUE(r.succeeded()) << r.error;
  if (r.cgroup == CgroupUse::kApplied) {
    EXPECT_EQ(r.output, "50000 100000\n");
  } else {
    EXPECT_EQ(r.cgroup, CgroupUse::kPartial);
    EXPECT_THAT(r.cgroup_note, HasSubstr("cannot write cpu.max"));
    EXPECT_THAT(r.cgroup_note, HasSubstr("subtree_control"));
  }
  EXPECT_EQ(rmdir(parent->c_str()), 0) << "per-run cgroup left behind under " << *parent;
}

TEST(OutputTailTest, KeepsTheLastBytes) {
  OutputTail tail(5);
  tail.Append("abc");
  tail.Append("defg");
  tail.Append("h");
  EXPECT_TRUE(tail.truncated());
  EXPECT_EQ(tail.total_bytes(), 8u);
  EXPECT_EQ(std::move(tail).Take(), "defgh");
}

TEST(OutputTailTest, CutDoesNotStartInsideAUtf8Character) {
  OutputTail tail(4);
  tail.Append("a\xc3\xa9\xc3\xa9");  // "aéé": the last 4 bytes are "éé"
  EXPECT_EQ(std::move(tail).Take(), "\xc3\xa9\xc3\xa9");
  OutputTail cut(3);
  cut.Append("a\xc3\xa9\xc3\xa9");  // the last 3 bytes start inside the first 'é'
  EXPECT_EQ(std::move(cut).Take(), "\xc3\xa9");
}

TEST(OutputTailTest, ZeroKeepsNothing) {
  OutputTail tail(0);
  tail.Append("abc");
  EXPECT_TRUE(tail.truncated());
  EXPECT_EQ(std::move(tail).Take(), "");
}

TEST(CancelSourceTest, FirstReasonWinsAndFdBecomesReadable) {
  CancelSource cancel;
  EXPECT_FALSE(cancel.cancelled());
  EXPECT_EQ(cancel.reason(), CancelReason::kNone);
  ASSERT_GE(cancel.fd(), 0);
  struct pollfd pfd = {cancel.fd(), POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0);
  cancel.Cancel(CancelReason::kNone);
  EXPECT_FALSE(cancel.cancelled());
  cancel.Cancel(CancelReason::kTimeout);
  cancel.Cancel(CancelReason::kFenced);
  EXPECT_TRUE(cancel.cancelled());
  EXPECT_EQ(cancel.reason(), CancelReason::kTimeout);
  EXPECT_EQ(poll(&pfd, 1, 0), 1);
  EXPECT_EQ(poll(&pfd, 1, 0), 1);  // stays readable for every poller
  EXPECT_EQ(CancelReasonName(cancel.reason()), "timeout");
}

}  // namespace
}  // namespace jobsched::exec
