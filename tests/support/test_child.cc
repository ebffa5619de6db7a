// The program the shell executor tests run. One mode per invocation:
//
//   printenv NAME            print $NAME and a newline; exit 1 if unset
//   env                      print the whole environment, one NAME=value per line
//   echo-stdin               copy stdin to stdout
//   print-bytes N [C]        write N bytes of C (default 'x'), then "END"
//   alloc-mb N               allocate N MiB and touch every page: exit 0, or 3 if it failed
//   grandchild PIDFILE [FIFO]  fork a child that stays in our process group, writes its pid to
//                            PIDFILE and sleeps; once the file exists, write "ready" to FIFO
//                            (if given) and sleep
//   orphan PIDFILE           like grandchild, but exit 0 once the grandchild is running
//   cgroup                   print /proc/self/cgroup
//   sleep-forever [FIFO]     write "ready" to FIFO (if given), then sleep
//   ignore-term [FIFO]       ignore SIGTERM, write "ready" to FIFO (if given), then sleep
//   exit K                   exit with code K
//   burn-cpu                 spin forever
//   burn-cpu-ignoring-xcpu   spin forever, SIGXCPU ignored
//   pwd                      print the working directory
//   echo ARGS...             print the arguments separated by spaces
//
// Exit code 2 means a usage error.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

extern char** environ;

namespace {

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void Notify(const char* fifo) {
  if (fifo == nullptr) return;
  int fd = open(fifo, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    perror("open fifo");
    exit(2);
  }
  WriteAll(fd, "ready\n", 6);
  close(fd);
}

[[noreturn]] void SleepForever() {
  for (;;) pause();
}

int Grandchild(const char* pidfile, const char* fifo, bool exit_when_ready) {
  int sync[2];
  if (pipe(sync) != 0) return 2;
  pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    close(sync[0]);
    std::string tmp = std::string(pidfile) + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    if (f == nullptr) _exit(2);
    fprintf(f, "%d\n", static_cast<int>(getpid()));
    fclose(f);
    rename(tmp.c_str(), pidfile);
    WriteAll(sync[1], "x", 1);
    close(sync[1]);
    SleepForever();
  }
  close(sync[1]);
  char c;
  if (read(sync[0], &c, 1) != 1) return 2;
  printf("grandchild %d\n", static_cast<int>(pid));
  fflush(stdout);
  if (exit_when_ready) return 0;
  Notify(fifo);
  SleepForever();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string mode = argv[1];
  const char* arg2 = argc > 2 ? argv[2] : nullptr;
  const char* arg3 = argc > 3 ? argv[3] : nullptr;

  if (mode == "printenv" && arg2) {
    const char* value = getenv(arg2);
    if (value == nullptr) return 1;
    printf("%s\n", value);
    return 0;
  }
  if (mode == "env") {
    for (char** e = environ; *e != nullptr; ++e) printf("%s\n", *e);
    return 0;
  }
  if (mode == "echo-stdin") {
    char buf[65536];
    ssize_t n;
    while ((n = read(0, buf, sizeof(buf))) > 0) {
      if (!WriteAll(1, buf, static_cast<size_t>(n))) return 1;
    }
    return n < 0 ? 1 : 0;
  }
  if (mode == "print-bytes" && arg2) {
    size_t n = strtoull(arg2, nullptr, 10);
    char c = arg3 ? arg3[0] : 'x';
    std::string chunk(65536, c);
    while (n > 0) {
      size_t k = n < chunk.size() ? n : chunk.size();
      if (!WriteAll(1, chunk.data(), k)) return 1;
      n -= k;
    }
    return WriteAll(1, "END", 3) ? 0 : 1;
  }
  if (mode == "alloc-mb" && arg2) {
    size_t bytes = strtoull(arg2, nullptr, 10) << 20;
    char* p = static_cast<char*>(malloc(bytes));
    if (p == nullptr) {
      fprintf(stderr, "allocation of %s MiB failed\n", arg2);
      return 3;
    }
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    printf("allocated %s MiB\n", arg2);
    free(p);
    return 0;
  }
  if (mode == "grandchild" && arg2) return Grandchild(arg2, arg3, false);
  if (mode == "orphan" && arg2) return Grandchild(arg2, nullptr, true);
  if (mode == "cgroup") {
    FILE* f = fopen("/proc/self/cgroup", "r");
    if (f == nullptr) return 1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
  }
  if (mode == "sleep-forever") {
    Notify(arg2);
    SleepForever();
  }
  if (mode == "ignore-term") {
    signal(SIGTERM, SIG_IGN);
    Notify(arg2);
    SleepForever();
  }
  if (mode == "exit" && arg2) return atoi(arg2);
  if (mode == "burn-cpu-ignoring-xcpu") signal(SIGXCPU, SIG_IGN);
  if (mode == "burn-cpu" || mode == "burn-cpu-ignoring-xcpu") {
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
  }
  if (mode == "pwd") {
    char buf[4096];
    if (getcwd(buf, sizeof(buf)) == nullptr) return 1;
    printf("%s\n", buf);
    return 0;
  }
  if (mode == "echo") {
    for (int i = 2; i < argc; ++i) printf(i > 2 ? " %s" : "%s", argv[i]);
    printf("\n");
    return 0;
  }
  fprintf(stderr, "test_child: bad usage: %s\n", mode.c_str());
  return 2;
}
