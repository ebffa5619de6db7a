#include "exec/group_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include <spdlog/spdlog.h>

namespace jobsched::exec {
namespace {

// The watcher: keeps the registered groups in a space-separated list and kills what is left of
// them when its input ends. It ignores the signals a terminal or a supervisor sends to a group
// (it has a group of its own anyway): only the end of its input ends it.
constexpr char kWatcher[] = R"sh(trap '' HUP INT TERM PIPE
groups=' '
while read -r op pg; do
  case "$op" in
    +) groups="$groups$pg " ;;
    -) case "$groups" in *" $pg "*) groups="${groups%% $pg *} ${groups#* $pg }" ;; esac ;;
  esac
done
for pg in $groups; do kill -9 "-$pg"; done
)sh";

class Guard {
 public:
  void Send(char op, pid_t pgid) {
    std::lock_guard lock(mu_);
    if (owner_ != getpid()) Start();  // first use, or a forked child: a watcher of its own
    if (fd_ < 0) return;
    const std::string line = std::string(1, op) + ' ' + std::to_string(pgid) + '\n';
    if (send(fd_, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
      spdlog::warn("job guard: the watcher is gone ({}); background processes of shell jobs "
                   "are no longer killed if this process is killed",
                   strerror(errno));
      close(fd_);
      fd_ = -1;
    }
  }

 private:
  // Requires mu_ held.
  void Start() {
    if (fd_ >= 0) close(fd_);  // a forked child's copy of its parent's end
    fd_ = -1;
    owner_ = getpid();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      spdlog::warn("job guard not started: socketpair: {}", strerror(errno));
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sv[1], STDIN_FILENO);
    // Nothing else of this process's: an inherited socket or pipe (its output's too, which a
    // supervisor may read to the end) would stay open in the watcher.
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    char sh[] = "/bin/sh", dash_c[] = "-c", name[] = "jobsched-job-guard";
    std::string script = kWatcher;
    char* argv[] = {sh, dash_c, script.data(), name, nullptr};
    char path[] = "PATH=/usr/bin:/bin";
    char* envp[] = {path, nullptr};
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(sv[1]);
    if (rc != 0) {
      close(sv[0]);
      spdlog::warn("job guard not started: /bin/sh: {}", strerror(rc));
      return;
    }
    fd_ = sv[0];
  }

  std::mutex mu_;
  pid_t owner_ = 0;  // the process whose watcher fd_ talks to; guarded by mu_
  int fd_ = -1;      // guarded by mu_
};

Guard& TheGuard() {
  static Guard* guard = new Guard;  // never destroyed: its end closes with the process
  return *guard;
}

}  // namespace

void GuardGroup(pid_t pgid) { TheGuard().Send('+', pgid); }
void UnguardGroup(pid_t pgid) { TheGuard().Send('-', pgid); }

}  // namespace jobsched::exec
