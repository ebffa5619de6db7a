#include "exec/shell_executor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "exec/group_guard.h"

namespace jobsched::exec {
namespace {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

constexpr const char* kCleanPath = "/usr/local/bin:/usr/bin:/bin";
// How long output is still read after the program ended and its group was killed. Only
// processes that left the group (setsid) can hold the pipe open that long.
constexpr Duration kDrainLimit{2000};
// How long the cgroup teardown waits for killed members to die before giving up on rmdir.
constexpr Duration kCgroupEmptyLimit{2000};
// Poll interval when an event source has no file descriptor (no pidfd, no eventfd).
constexpr Duration kFallbackPoll{20};

std::string ErrnoText(int err) {
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? desc : "errno " + std::to_string(err);
}

std::string SignalText(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  std::string text = "signal " + std::to_string(sig);
  if (abbrev != nullptr) text += std::string(" (SIG") + abbrev + ")";
  return text;
}

Status ErrnoStatus(std::string_view what, int err) {
  return Internal(std::string(what) + ": " + ErrnoText(err));
}

Duration Elapsed(SteadyTime since, SteadyTime now) {
  return std::chrono::duration_cast<Duration>(now - since);
}

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A CLOEXEC pipe whose ends are both >= 3, so that the child's dup2 onto 0, 1 and 2 can never
// clobber another end (possible when the parent runs with a closed stdin/stdout).
Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  UniqueFd ends[2] = {UniqueFd(fds[0]), UniqueFd(fds[1])};
  for (UniqueFd& end : ends) {
    if (end.get() >= 3) continue;
    int moved = fcntl(end.get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC)", errno);
    end.Reset(moved);
  }
  *read_end = std::move(ends[0]);
  *write_end = std::move(ends[1]);
  return Status::Ok();
}

Status SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus("fcntl(O_NONBLOCK)", errno);
  }
  return Status::Ok();
}

// Returns 0 or the errno of the failure.
int WriteFile(const std::string& path, std::string_view content) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  ssize_t n = write(fd.get(), content.data(), content.size());
  if (n < 0) return errno;
  return n == static_cast<ssize_t>(content.size()) ? 0 : EIO;
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// The value of `key` in a flat-keyed cgroup file ("populated 1\nfrozen 0\n"), or -1.
int64_t FlatKeyedValue(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      return std::strtoll(std::string(line.substr(key.size() + 1)).c_str(), nullptr, 10);
    }
    pos = end + 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Request checks and preparation (all before fork: the child must not allocate).

Status Validate(const ShellRequest& req) {
  if (req.argv.empty() || req.argv[0].empty()) {
    return InvalidArgument("shell command must not be empty", "handler.command");
  }
  for (const std::string& arg : req.argv) {
    if (arg.find('\0') != std::string::npos) {
      return InvalidArgument("shell command arguments must not contain NUL bytes",
                             "handler.command");
    }
  }
  for (const auto& [name, value] : req.env) {
    if (name.empty() || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return InvalidArgument("invalid environment variable name '" + name + "'", "handler.env");
    }
    if (value.find('\0') != std::string::npos) {
      return InvalidArgument("environment variable '" + name + "' contains a NUL byte",
                             "handler.env");
    }
  }
  if (req.cwd && (req.cwd->empty() || req.cwd->find('\0') != std::string::npos)) {
    return InvalidArgument("invalid working directory", "handler.cwd");
  }
  const ResourceLimits& l = req.limits;
  if (l.cpu_seconds < 0 || l.memory_mb < 0 || l.max_open_files < 0 || !(l.cpu_cores >= 0)) {
    return InvalidArgument("limits must not be negative", "limits");
  }
  if (req.timeout.count() < 0 || req.kill_grace.count() < 0) {
    return InvalidArgument("timeout and kill_grace must not be negative", "timeout_ms");
  }
  return Status::Ok();
}

// "NAME=value" strings: the clean base environment, overridden by req.env.
std::vector<std::string> BuildEnvironment(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  env["PATH"] = kCleanPath;
  for (const char* name : {"HOME", "LANG"}) {
    // getenv is safe here as long as nobody calls setenv concurrently, which no multithreaded
    // program may do anyway.
    if (const char* value = std::getenv(name)) env[name] = value;
  }
  for (const auto& [name, value] : extra) env[name] = value;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

std::string EnvValue(const std::vector<std::string>& env, std::string_view name) {
  for (const std::string& entry : env) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
        entry[name.size()] == '=') {
      return entry.substr(name.size() + 1);
    }
  }
  return {};
}

// execvp's lookup, done in the parent (and against the child's PATH, not ours).
std::optional<std::string> ResolveProgram(const std::string& program, const std::string& path) {
  if (program.find('/') != std::string::npos) return program;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find(':', pos);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(pos, end - pos);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + program;
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    pos = end + 1;
  }
  return std::nullopt;
}

// What the child reports through the CLOEXEC pipe before exec (EOF means exec succeeded).
enum ChildStage : int32_t {
  kStageCgroupJoin = 1,  // not fatal: the child runs outside its cgroup
  kStageSetpgid,
  kStageDup,
  kStageRlimitCpu,
  kStageRlimitAs,
  kStageRlimitNofile,
  kStageChdir,
  kStageExec,
};

struct ChildReport {
  int32_t stage;
  int32_t err;
};

struct RlimitSetting {
  int resource;
  struct rlimit value;
  ChildStage stage;
};

// Everything the child needs, computed before fork.
struct SpawnPlan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int stdin_fd = -1;
  int output_fd = -1;
  int report_fd = -1;
  int cgroup_procs_fd = -1;
  int go_fd = -1;    // one byte once the parent has guarded the group (group_guard.h)
  pid_t parent = 0;  // the process that forks: the job dies with it
  RlimitSetting rlimits[3];
  int rlimit_count = 0;
};

// Clamps to the parent's hard limit: an unprivileged process cannot raise it, and the child
// should not fail over a limit that is already stricter than asked.
void AddRlimit(SpawnPlan* plan, int resource, rlim_t soft, rlim_t hard, ChildStage stage) {
  struct rlimit current;
  if (getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY) {
    hard = std::min(hard, current.rlim_max);
  }
  soft = std::min(soft, hard);
  plan->rlimits[plan->rlimit_count++] = {resource, {soft, hard}, stage};
}

void PlanRlimits(const ResourceLimits& limits, SpawnPlan* plan) {
  if (limits.cpu_seconds > 0) {
    // SIGXCPU at the soft limit; the kernel sends SIGKILL at the hard one, for programs that
    // handle or ignore SIGXCPU.
    rlim_t soft = static_cast<rlim_t>(limits.cpu_seconds);
    AddRlimit(plan, RLIMIT_CPU, soft, soft + 1, kStageRlimitCpu);
  }
  if (limits.memory_mb > 0) {
    constexpr int64_t kMaxMb = int64_t{1} << 40;  // keeps the byte count from overflowing
    rlim_t bytes = static_cast<rlim_t>(std::min(limits.memory_mb, kMaxMb)) << 20;
    AddRlimit(plan, RLIMIT_AS, bytes, bytes, kStageRlimitAs);
  }
  if (limits.max_open_files > 0) {
    rlim_t n = static_cast<rlim_t>(limits.max_open_files);
    AddRlimit(plan, RLIMIT_NOFILE, n, n, kStageRlimitNofile);
  }
}

// Runs in the child between fork and execve. Only async-signal-safe calls: the parent may have
// other threads, whose locks (malloc, stdio) were copied in whatever state they were in.
[[noreturn]] void ChildMain(const SpawnPlan& p) {
  auto report = [&p](ChildStage stage, int err) {
    ChildReport r{stage, err};
    ssize_t n = write(p.report_fd, &r, sizeof(r));
    (void)n;
  };
  auto fail = [&report](ChildStage stage) {
    report(stage, errno);
    _exit(127);
  };

  if (setpgid(0, 0) != 0) fail(kStageSetpgid);
  // A node killed with SIGKILL cannot kill its jobs: the kernel does (the job runs again
  // elsewhere; an orphan would run it twice at once). If the parent died before this line, the
  // job is not started at all.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != p.parent) _exit(127);
  // Nothing of the job runs before its group is guarded: what it starts in the background is
  // then killed with the parent, however early the parent dies.
  {
    char go = 0;
    ssize_t n;
    while ((n = read(p.go_fd, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) _exit(127);
  }
  if (p.cgroup_procs_fd >= 0 && write(p.cgroup_procs_fd, "0", 1) != 1) {
    report(kStageCgroupJoin, errno);
  }
  // The parent blocked every signal around fork. Reset dispositions (an ignored SIGPIPE or
  // SIGTERM would survive execve), then unblock.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t empty;
  sigemptyset(&empty);
  sigprocmask(SIG_SETMASK, &empty, nullptr);

  if (dup2(p.stdin_fd, STDIN_FILENO) < 0 || dup2(p.output_fd, STDOUT_FILENO) < 0 ||
      dup2(p.output_fd, STDERR_FILENO) < 0) {
    fail(kStageDup);
  }
  // Descriptors the embedding program opened without O_CLOEXEC must not leak into jobs. Best
  // effort: close_range needs Linux 5.11 for this flag.
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  for (int i = 0; i < p.rlimit_count; ++i) {
    if (setrlimit(p.rlimits[i].resource, &p.rlimits[i].value) != 0) fail(p.rlimits[i].stage);
  }
  if (p.cwd != nullptr && chdir(p.cwd) != 0) fail(kStageChdir);
  execve(p.path, p.argv, p.envp);
  fail(kStageExec);
  _exit(127);  // not reached
}

std::string SpawnErrorText(const ChildReport& r, const ShellRequest& req, const std::string& path) {
  std::string err = ErrnoText(r.err);
  switch (r.stage) {
    case kStageExec:
      return "cannot execute '" + path + "': " + err;
    case kStageChdir:
      return "cannot change to directory '" + req.cwd.value_or("") + "': " + err;
    case kStageRlimitCpu:
      return "cannot set RLIMIT_CPU: " + err;
    case kStageRlimitAs:
      return "cannot set RLIMIT_AS: " + err;
    case kStageRlimitNofile:
      return "cannot set RLIMIT_NOFILE: " + err;
    case kStageSetpgid:
      return "cannot create a process group: " + err;
    case kStageDup:
      return "cannot redirect stdin/stdout/stderr: " + err;
    default:
      return "cannot start '" + path + "': " + err;
  }
}

// ---------------------------------------------------------------------------------------------
// cgroup v2

std::atomic<uint64_t> g_cgroup_counter{0};

class RunCgroup {
 public:
  // Creates <parent>/jobsched-<pid>-<n> and writes the limits. Sets *use and *note.
  void Create(const std::string& parent, const ResourceLimits& limits, CgroupUse* use,
              std::string* note) {
    std::string dir;
    for (int attempt = 0; attempt < 100; ++attempt) {
      dir = parent + "/jobsched-" + std::to_string(getpid()) + "-" +
            std::to_string(g_cgroup_counter.fetch_add(1));
      if (mkdir(dir.c_str(), 0755) == 0) break;
      if (errno != EEXIST) {
        *use = CgroupUse::kSkipped;
        *note = "cannot create a cgroup under '" + parent + "': " + ErrnoText(errno);
        return;
      }
      dir.clear();
    }
    if (dir.empty()) {
      *use = CgroupUse::kSkipped;
      *note = "cannot create a cgroup under '" + parent + "': name collisions";
      return;
    }
    dir_ = dir;
    procs_fd_.Reset(open((dir_ + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs_fd_.valid()) {
      *use = CgroupUse::kSkipped;
      *note = "cannot open '" + dir_ + "/cgroup.procs': " + ErrnoText(errno);
      rmdir(dir_.c_str());
      dir_.clear();
      return;
    }
    *use = CgroupUse::kApplied;
    auto write_limit = [&](const char* file, const std::string& value) {
      int err = WriteFile(dir_ + "/" + file, value);
      if (err == 0) return;
      *use = CgroupUse::kPartial;
      if (!note->empty()) *note += "; ";
      *note += std::string("cannot write ") + file + ": " + ErrnoText(err);
      if (err == ENOENT) *note += " (controller not enabled in the parent's subtree_control)";
    };
    if (limits.memory_mb > 0) {
      memory_max_mb_ = limits.memory_mb;
      write_limit("memory.max", std::to_string(static_cast<uint64_t>(limits.memory_mb) << 20));
      // Without this, a job at its memory.max would swap instead of being OOM-killed.
      // Not every host has swap accounting; silently ignored.
      WriteFile(dir_ + "/memory.swap.max", "0");
    }
    if (limits.cpu_cores > 0) {
      constexpr int64_t kPeriodUs = 100000;
      int64_t quota = std::max<int64_t>(1000, static_cast<int64_t>(limits.cpu_cores * kPeriodUs));
      write_limit("cpu.max", std::to_string(quota) + " " + std::to_string(kPeriodUs));
    }
  }

  bool active() const { return !dir_.empty(); }
  int procs_fd() const { return procs_fd_.get(); }
  void CloseProcsFd() { procs_fd_.Reset(); }

  // SIGKILLs every process in the cgroup, including those that left the process group.
  void KillAll() {
    if (!active()) return;
    if (WriteFile(dir_ + "/cgroup.kill", "1") == 0) return;
    // Before Linux 5.14: signal the members one by one.
    std::optional<std::string> procs = ReadSmallFile(dir_ + "/cgroup.procs");
    if (!procs) return;
    size_t pos = 0;
    while (pos < procs->size()) {
      size_t end = procs->find('\n', pos);
      if (end == std::string::npos) end = procs->size();
      pid_t pid =
          static_cast<pid_t>(std::strtol(procs->substr(pos, end - pos).c_str(), nullptr, 10));
      if (pid > 0) kill(pid, SIGKILL);
      pos = end + 1;
    }
  }

  // True when the kernel OOM-killed something in the cgroup.
  bool OomKilled() const {
    if (!active() || memory_max_mb_ == 0) return false;
    std::optional<std::string> events = ReadSmallFile(dir_ + "/memory.events");
    return events && FlatKeyedValue(*events, "oom_kill") > 0;
  }
  int64_t memory_max_mb() const { return memory_max_mb_; }

  // Kills what is left, waits (bounded) until the members are gone, removes the directory.
  // Returns a note when the directory could not be removed.
  std::string Remove() {
    if (!active()) return {};
    KillAll();
    UniqueFd events(open((dir_ + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC));
    const SteadyTime deadline = SteadyClock::now() + kCgroupEmptyLimit;
    while (events.valid()) {
      char buf[256];
      ssize_t n = pread(events.get(), buf, sizeof(buf) - 1, 0);
      if (n <= 0 ||
          FlatKeyedValue(std::string_view(buf, static_cast<size_t>(n)), "populated") != 1) {
        break;
      }
      auto left = std::chrono::ceil<Duration>(deadline - SteadyClock::now());
      if (left.count() <= 0) break;
      // A change of cgroup.events is signalled as POLLPRI.
      struct pollfd pfd = {events.get(), POLLPRI, 0};
      if (poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    }
    std::string note;
    if (rmdir(dir_.c_str()) != 0) {
      note = "cannot remove cgroup '" + dir_ + "': " + ErrnoText(errno);
    }
    dir_.clear();
    return note;
  }

  ~RunCgroup() { Remove(); }

 private:
  std::string dir_;
  UniqueFd procs_fd_;
  int64_t memory_max_mb_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The parent's side of one run.

// Blocks signals in the calling thread for the lifetime of the object.
class ScopedSignalMask {
 public:
  explicit ScopedSignalMask(const sigset_t& block) { pthread_sigmask(SIG_BLOCK, &block, &old_); }
  ~ScopedSignalMask() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  ScopedSignalMask(const ScopedSignalMask&) = delete;
  ScopedSignalMask& operator=(const ScopedSignalMask&) = delete;

 private:
  sigset_t old_;
};

class Runner {
 public:
  Runner(const ShellRequest& req, CancelSource& cancel, SteadyTime start)
      : req_(req), cancel_(cancel), start_(start), tail_(req.max_output_bytes) {}

  Result<ShellResult> Run();

 private:
  void SpawnFailed(std::string error) {
    result_.outcome = ShellOutcome::kSpawnFailed;
    result_.error = std::move(error);
  }
  Status Spawn(const std::string& path, const std::vector<std::string>& env_strings);
  void Supervise();
  void PumpOutput();
  void PumpStdin();
  void StartTermination(CancelReason reason, SteadyTime now);
  void KillGroup(int sig);
  bool ChildExited();
  void Drain();
  // `usage`: the program's own resource use (wait4).
  void Finish(int wait_status, const struct rusage& usage);

  const ShellRequest& req_;
  CancelSource& cancel_;
  const SteadyTime start_;

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd output_;  // read end of the stdout+stderr pipe
  UniqueFd stdin_;   // write end of the stdin pipe
  size_t stdin_offset_ = 0;
  bool stdin_epipe_ = false;
  OutputTail tail_;
  RunCgroup cgroup_;

  CancelReason terminating_ = CancelReason::kNone;
  Duration terminated_after_{0};
  std::optional<SteadyTime> kill_deadline_;
  bool sigkill_sent_ = false;

  ShellResult result_;
};

Status Runner::Spawn(const std::string& path, const std::vector<std::string>& env_strings) {
  // argv/envp arrays point into req_.argv and env_strings, which outlive the child's execve.
  std::vector<char*> argv;
  argv.reserve(req_.argv.size() + 1);
  for (const std::string& arg : req_.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (const std::string& entry : env_strings) envp.push_back(const_cast<char*>(entry.c_str()));
  envp.push_back(nullptr);

  UniqueFd stdin_read, output_write, report_read, report_write, go_read, go_write;
  RETURN_IF_ERROR(MakePipe(&stdin_read, &stdin_));
  RETURN_IF_ERROR(MakePipe(&go_read, &go_write));
  RETURN_IF_ERROR(MakePipe(&output_, &output_write));
  RETURN_IF_ERROR(MakePipe(&report_read, &report_write));
  RETURN_IF_ERROR(SetNonBlocking(stdin_.get()));
  RETURN_IF_ERROR(SetNonBlocking(output_.get()));

  SpawnPlan plan;
  plan.path = path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = req_.cwd ? req_.cwd->c_str() : nullptr;
  plan.stdin_fd = stdin_read.get();
  plan.output_fd = output_write.get();
  plan.report_fd = report_write.get();
  plan.go_fd = go_read.get();
  plan.cgroup_procs_fd = cgroup_.procs_fd();
  plan.parent = getpid();
  PlanRlimits(req_.limits, &plan);

  {
    // No signal handler of the parent may run in the child before it resets them.
    sigset_t all;
    sigfillset(&all);
    ScopedSignalMask mask(all);
    pid_ = fork();
    if (pid_ == 0) ChildMain(plan);
    if (pid_ < 0) return ErrnoStatus("fork", errno);
  }
  // Also done by the child; doing it here too closes the race with an early kill(-pid).
  setpgid(pid_, pid_);
  GuardGroup(pid_);
  const char go = 1;
  while (write(go_write.get(), &go, 1) < 0 && errno == EINTR) {
  }
  go_read.Reset();
  go_write.Reset();
  stdin_read.Reset();
  output_write.Reset();
  report_write.Reset();
  cgroup_.CloseProcsFd();

  // Wait for exec (EOF) or for the child's reports. Bounded: the child does nothing that blocks.
  bool fatal = false;
  for (;;) {
    ChildReport r;
    ssize_t n = read(report_read.get(), &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(r))) break;
    if (r.stage == kStageCgroupJoin) {
      if (result_.cgroup != CgroupUse::kSkipped) {
        result_.cgroup = CgroupUse::kSkipped;
        result_.cgroup_note = "cannot join the cgroup: " + ErrnoText(r.err);
      }
      continue;
    }
    SpawnFailed(SpawnErrorText(r, req_, path));
    fatal = true;
  }
  if (fatal) {
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    UnguardGroup(pid_);
    pid_ = -1;
    return Status::Ok();
  }

#ifdef SYS_pidfd_open
  pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
#endif
  if (req_.stdin_data.empty()) stdin_.Reset();
  return Status::Ok();
}

void Runner::KillGroup(int sig) {
  // The group id is the child's pid, which cannot be reused before we reap the child.
  kill(-pid_, sig);
  if (sig == SIGKILL) cgroup_.KillAll();
}

void Runner::StartTermination(CancelReason reason, SteadyTime now) {
  terminating_ = reason;
  terminated_after_ = Elapsed(start_, now);
  if (req_.kill_grace.count() == 0) {
    KillGroup(SIGKILL);
    sigkill_sent_ = true;
    return;
  }
  KillGroup(SIGTERM);
  kill_deadline_ = now + req_.kill_grace;
}

bool Runner::ChildExited() {
  // WNOWAIT: the child stays a zombie, so its pid (= the group id) stays reserved until we have
  // swept the group.
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return errno != EINTR;  // ECHILD: someone else reaped it; nothing left to wait for
  }
  return info.si_pid != 0;
}

void Runner::PumpOutput() {
  char buf[65536];
  for (;;) {
    ssize_t n = read(output_.get(), buf, sizeof(buf));
    if (n > 0) {
      tail_.Append(std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    output_.Reset();  // EOF or error
    return;
  }
}

void Runner::PumpStdin() {
  const std::string& data = req_.stdin_data;
  while (stdin_offset_ < data.size()) {
    // SIGPIPE is blocked in this thread; EPIPE (the child closed stdin) ends the writing.
    ssize_t n = write(stdin_.get(), data.data() + stdin_offset_, data.size() - stdin_offset_);
    if (n > 0) {
      stdin_offset_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0 && errno == EPIPE) stdin_epipe_ = true;
    break;
  }
  stdin_.Reset();
}

void Runner::Supervise() {
  const std::optional<SteadyTime> deadline =
      req_.timeout.count() > 0 ? std::optional<SteadyTime>(start_ + req_.timeout) : std::nullopt;
  for (;;) {
    SteadyTime now = SteadyClock::now();
    if (terminating_ == CancelReason::kNone) {
      if (cancel_.cancelled()) {
        StartTermination(cancel_.reason(), now);
      } else if (deadline && now >= *deadline) {
        StartTermination(CancelReason::kTimeout, now);
      }
    }
    if (kill_deadline_ && now >= *kill_deadline_) {
      KillGroup(SIGKILL);
      sigkill_sent_ = true;
      kill_deadline_.reset();
    }
    if (ChildExited()) return;

    struct pollfd fds[4];
    nfds_t nfds = 0;
    int output_index = -1, stdin_index = -1;
    if (output_.valid()) {
      output_index = static_cast<int>(nfds);
      fds[nfds++] = {output_.get(), POLLIN, 0};
    }
    if (stdin_.valid()) {
      stdin_index = static_cast<int>(nfds);
      fds[nfds++] = {stdin_.get(), POLLOUT, 0};
    }
    bool fallback = !pidfd_.valid();
    if (pidfd_.valid()) fds[nfds++] = {pidfd_.get(), POLLIN, 0};
    if (terminating_ == CancelReason::kNone) {
      if (cancel_.fd() >= 0) {
        fds[nfds++] = {cancel_.fd(), POLLIN, 0};
      } else {
        fallback = true;
      }
    }
    std::optional<SteadyTime> wake;
    if (terminating_ == CancelReason::kNone && deadline) wake = deadline;
    if (kill_deadline_ && (!wake || *kill_deadline_ < *wake)) wake = kill_deadline_;
    int timeout_ms = -1;
    if (wake) {
      timeout_ms =
          static_cast<int>(std::max<int64_t>(0, std::chrono::ceil<Duration>(*wake - now).count()));
    }
    if (fallback && (timeout_ms < 0 || timeout_ms > kFallbackPoll.count())) {
      timeout_ms = static_cast<int>(kFallbackPoll.count());
    }

    int ready = poll(fds, nfds, timeout_ms);
    if (ready < 0) continue;  // EINTR; anything else would be a bug in the fd set
    if (output_index >= 0 && fds[output_index].revents != 0) PumpOutput();
    if (stdin_index >= 0 && fds[stdin_index].revents != 0) {
      // POLLERR/POLLHUP: the read end is closed; the write below reports EPIPE.
      PumpStdin();
    }
  }
}

void Runner::Drain() {
  const SteadyTime deadline = SteadyClock::now() + kDrainLimit;
  while (output_.valid()) {
    PumpOutput();
    if (!output_.valid()) break;
    auto left = std::chrono::ceil<Duration>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    struct pollfd pfd = {output_.get(), POLLIN, 0};
    poll(&pfd, 1, static_cast<int>(left.count()));
  }
  output_.Reset();
}

void Runner::Finish(int wait_status, const struct rusage& usage) {
  if (WIFEXITED(wait_status)) result_.exit_code = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) result_.term_signal = WTERMSIG(wait_status);
  switch (terminating_) {
    case CancelReason::kTimeout: {
      result_.outcome = ShellOutcome::kTimedOut;
      Duration after = req_.timeout.count() > 0 && terminated_after_ >= req_.timeout
                           ? req_.timeout
                           : terminated_after_;
      result_.error = "timed out after " + std::to_string(after.count()) + "ms";
      break;
    }
    case CancelReason::kCancelled:
      result_.outcome = ShellOutcome::kCancelled;
      result_.error = "cancelled";
      break;
    case CancelReason::kFenced:
      result_.outcome = ShellOutcome::kFenced;
      result_.error = "fenced: the node lost the run's lease";
      break;
    case CancelReason::kNone:
      if (WIFSIGNALED(wait_status)) {
        result_.outcome = ShellOutcome::kSignaled;
        result_.error = "killed by " + SignalText(result_.term_signal);
        // SIGXCPU at the limit; SIGKILL a second later for a program that ignores SIGXCPU.
        const int64_t cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec;
        if (result_.term_signal == SIGXCPU ||
            (result_.term_signal == SIGKILL && req_.limits.cpu_seconds > 0 &&
             cpu_s >= req_.limits.cpu_seconds)) {
          result_.error +=
              ": CPU time limit of " + std::to_string(req_.limits.cpu_seconds) + "s exceeded";
        }
      } else {
        result_.outcome = ShellOutcome::kExited;
        if (result_.exit_code != 0) {
          result_.error = "exited with code " + std::to_string(result_.exit_code);
        }
      }
      break;
  }
  if (terminating_ != CancelReason::kNone && sigkill_sent_ && req_.kill_grace.count() > 0 &&
      result_.term_signal == SIGKILL) {
    result_.error += " (SIGKILL after a " + std::to_string(req_.kill_grace.count()) + "ms grace)";
  }
  if (cgroup_.OomKilled()) {
    if (!result_.error.empty()) result_.error += "; ";
    result_.error +=
        "out of memory (cgroup memory.max " + std::to_string(cgroup_.memory_max_mb()) + " MB)";
  }
}

Result<ShellResult> Runner::Run() {
  std::vector<std::string> env_strings = BuildEnvironment(req_.env);
  std::optional<std::string> path = ResolveProgram(req_.argv[0], EnvValue(env_strings, "PATH"));
  if (!path) {
    SpawnFailed("cannot execute '" + req_.argv[0] + "': not found in PATH (" +
                EnvValue(env_strings, "PATH") + ")");
    result_.duration = Elapsed(start_, SteadyClock::now());
    return std::move(result_);
  }
  if (cancel_.cancelled()) {
    // Nothing was started, so nothing needs terminating.
    terminating_ = cancel_.reason();
    Finish(0, {});
    result_.exit_code = -1;
    result_.duration = Elapsed(start_, SteadyClock::now());
    return std::move(result_);
  }
  if (req_.cgroup_parent) {
    cgroup_.Create(*req_.cgroup_parent, req_.limits, &result_.cgroup, &result_.cgroup_note);
  }

  // SIGPIPE stays blocked in this thread while we write the child's stdin.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  {
    ScopedSignalMask mask(pipe_set);
    Status spawned = Spawn(*path, env_strings);
    if (spawned.ok() && pid_ > 0) {
      Supervise();
      // The program has ended (a zombie holding the group id): sweep what is left of its group
      // so nothing outlives it and the output pipe reaches EOF.
      KillGroup(SIGKILL);
      int status = 0;
      struct rusage usage {};
      pid_t waited;
      while ((waited = wait4(pid_, &status, 0, &usage)) < 0 && errno == EINTR) {
      }
      if (waited < 0) spawned = ErrnoStatus("wait4", errno);
      UnguardGroup(pid_);
      stdin_.Reset();
      Drain();
      if (spawned.ok()) Finish(status, usage);
    }
    if (stdin_epipe_) {
      // Consume the SIGPIPE our write raised, so it does not fire when the mask is restored.
      struct timespec zero = {0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
    if (!spawned.ok()) return spawned;
  }
  std::string cgroup_note = cgroup_.Remove();
  if (!cgroup_note.empty()) {
    result_.cgroup_note += (result_.cgroup_note.empty() ? "" : "; ") + cgroup_note;
  }
  result_.output_truncated = tail_.truncated();
  result_.output_bytes = tail_.total_bytes();
  result_.output = std::move(tail_).Take();
  result_.duration = Elapsed(start_, SteadyClock::now());
  return std::move(result_);
}

}  // namespace

std::string_view ShellOutcomeName(ShellOutcome outcome) {
  switch (outcome) {
    case ShellOutcome::kExited:
      return "exited";
    case ShellOutcome::kSignaled:
      return "signaled";
    case ShellOutcome::kTimedOut:
      return "timed_out";
    case ShellOutcome::kCancelled:
      return "cancelled";
    case ShellOutcome::kFenced:
      return "fenced";
    case ShellOutcome::kSpawnFailed:
      return "spawn_failed";
  }
  return "unknown";
}

void OutputTail::Append(std::string_view data) {
  total_bytes_ += data.size();
  if (max_bytes_ == 0) return;
  if (data.size() >= max_bytes_) {
    buf_.assign(data.substr(data.size() - max_bytes_));
    return;
  }
  buf_.append(data);
  // Trim only when the buffer doubled, so appends stay amortised O(n).
  if (buf_.size() > 2 * max_bytes_) buf_.erase(0, buf_.size() - max_bytes_);
}

std::string OutputTail::Take() && {
  if (buf_.size() > max_bytes_) buf_.erase(0, buf_.size() - max_bytes_);
  if (truncated()) {
    // The cut may have split a UTF-8 sequence; drop its continuation bytes (at most 3).
    size_t skip = 0;
    while (skip < 3 && skip < buf_.size() &&
           (static_cast<unsigned char>(buf_[skip]) & 0xC0) == 0x80) {
      ++skip;
    }
    buf_.erase(0, skip);
  }
  return std::move(buf_);
}

Result<ShellResult> RunShell(const ShellRequest& request, CancelSource& cancel) {
  RETURN_IF_ERROR(Validate(request));
  Runner runner(request, cancel, SteadyClock::now());
  return runner.Run();
}

}  // namespace jobsched::exec
