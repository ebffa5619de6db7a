#include "support/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace jobsched::testing {
namespace {

namespace fs = std::filesystem;

}  // namespace

// redis-server itself does not accept --port 0. Another process could take the port before the
// server does; Start then fails and SetUp tries another.
int RedisServer::FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

namespace {

std::string FindBinary() {
  if (const char* env = std::getenv("JOBSCHED_REDIS_SERVER"); env != nullptr && *env != '\0') {
    return access(env, X_OK) == 0 ? env : "";
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      if (dir.empty()) continue;
      const fs::path candidate = fs::path(dir) / "redis-server";
      if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
    }
  }
  if (access("/usr/bin/redis-server", X_OK) == 0) return "/usr/bin/redis-server";
  return "";
}

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A minimal RESP reader over a blocking socket.
class RespReader {
 public:
  explicit RespReader(int fd) : fd_(fd) {}

  // One reply as text (see RedisServer::Command); false on I/O or protocol errors.
  bool Read(std::string& out) {
    std::string line;
    if (!Line(line) || line.empty()) return false;
    const char type = line[0];
    const std::string rest = line.substr(1);
    switch (type) {
      case '+':
      case '-':
      case ':':
        out = rest;
        return true;
      case '$': {
        const long len = std::strtol(rest.c_str(), nullptr, 10);
        if (len < 0) {
          out = "(nil)";
          return true;
        }
        std::string data;
        if (!Bytes(static_cast<size_t>(len) + 2, data)) return false;
        out = data.substr(0, static_cast<size_t>(len));
        return true;
      }
      case '*': {
        const long n = std::strtol(rest.c_str(), nullptr, 10);
        out.clear();
        for (long i = 0; i < n; ++i) {
          std::string element;
          if (!Read(element)) return false;
          if (i > 0) out += '\n';
          out += element;
        }
        if (n < 0) out = "(nil)";
        return true;
      }
      default:
        return false;
    }
  }

 private:
  bool Fill() {
    char chunk[4096];
    const ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  bool Line(std::string& line) {
    for (;;) {
      const size_t end = buf_.find("\r\n");
      if (end != std::string::npos) {
        line = buf_.substr(0, end);
        buf_.erase(0, end + 2);
        return true;
      }
      if (!Fill()) return false;
    }
  }
  bool Bytes(size_t n, std::string& out) {
    while (buf_.size() < n) {
      if (!Fill()) return false;
    }
    out = buf_.substr(0, n);
    buf_.erase(0, n);
    return true;
  }

  int fd_;
  std::string buf_;
};

// Sends the commands on one new connection; the last reply as text, or false.
bool RoundTrip(int port, const std::vector<std::vector<std::string>>& commands,
               std::string& reply) {
  const int fd = Connect(port);
  if (fd < 0) return false;
  std::string req;
  for (const std::vector<std::string>& args : commands) {
    req += "*" + std::to_string(args.size()) + "\r\n";
    for (const std::string& a : args) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  }
  bool ok = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  RespReader reader(fd);
  for (size_t i = 0; ok && i < commands.size(); ++i) ok = reader.Read(reply);
  close(fd);
  return ok;
}

std::string Tail(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

}  // namespace

RedisServer* RedisServer::AddEnvironment() {
  static RedisServer* const server = [] {
    auto* s = new RedisServer;
    ::testing::AddGlobalTestEnvironment(s);  // gtest owns it
    return s;
  }();
  return server;
}

std::string RedisServer::address() const { return "127.0.0.1:" + std::to_string(port_); }

void RedisServer::SetUp() {
  const std::string binary = FindBinary();
  if (binary.empty()) {
    const char* env = std::getenv("JOBSCHED_REDIS_SERVER");
    error_ = env != nullptr && *env != '\0'
                 ? std::string("JOBSCHED_REDIS_SERVER=") + env + " is not an executable"
                 : "redis-server is not installed (not on PATH, not /usr/bin/redis-server): run "
                   "scripts/setup, or apt-get install redis-server";
    ADD_FAILURE() << error_;
    return;
  }
  std::string tmpl = (fs::path(::testing::TempDir()) / "jobsched-redis-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    error_ = "mkdtemp failed for " + tmpl + ": " + std::strerror(errno);
    ADD_FAILURE() << error_;
    return;
  }
  dir_ = tmpl;
  binary_ = binary;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int port = FreePort();
    if (port != 0 && Start(binary, port)) return;
  }
  ADD_FAILURE() << "could not start " << binary << ": " << error_;
}

bool RedisServer::Start(const std::string& binary, int port) {
  const std::string log = (fs::path(dir_) / "redis.log").string();
  const std::string port_text = std::to_string(port);
  // No snapshots, loopback only, the eviction policy docs/redis-store.md asks for; an
  // append-only file with fsync every second when asked for (the production setting there).
  const std::pair<const char*, std::string> flags[] = {
      {"--port", port_text},
      {"--bind", "127.0.0.1"},
      {"--save", ""},
      {"--appendonly", options_.appendonly ? "yes" : "no"},
      {"--appendfsync", "everysec"},
      {"--dir", dir_},
      {"--daemonize", "no"},
      {"--logfile", log},
      {"--maxmemory-policy", "noeviction"},
  };
  std::vector<std::string> args = {binary};
  for (const auto& [flag, value] : flags) {
    args.push_back(flag);
    args.push_back(value);
  }
  const pid_t pid = fork();
  if (pid < 0) {
    error_ = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  if (pid == 0) {
    // The server dies with the test process, even if that one crashes.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      error_ = "redis-server exited (status " + std::to_string(status) + ") on port " + port_text +
               "; log:\n" + Tail(log);
      return false;
    }
    std::string reply;
    if (RoundTrip(port, {{"PING"}}, reply) && reply == "PONG") {
      pid_ = pid;
      port_ = port;
      error_.clear();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  error_ =
      "redis-server did not answer PING within 10 s on port " + port_text + "; log:\n" + Tail(log);
  return false;
}

void RedisServer::TearDown() {
  Shutdown();
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    dir_.clear();
  }
}

bool RedisServer::Shutdown() {
  if (pid_ <= 0) return false;
  kill(pid_, SIGTERM);
  bool graceful = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (waitpid(pid_, nullptr, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      graceful = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return graceful;
}

bool RedisServer::Restart() {
  if (pid_ > 0 || binary_.empty() || port_ == 0) {
    error_ = pid_ > 0 ? "Restart: the server is running" : "Restart: the server never started";
    return false;
  }
  return Start(binary_, port_);
}

std::string RedisServer::Command(const std::vector<std::string>& args) const {
  return Commands({args});
}

std::string RedisServer::Commands(const std::vector<std::vector<std::string>>& commands) const {
  std::string reply;
  if (!ok() || !RoundTrip(port_, commands, reply)) {
    ADD_FAILURE() << "redis commands failed on " << address();
    return "";
  }
  return reply;
}

bool RedisServer::FlushAll() const {
  const std::string reply = Command({"FLUSHALL"});
  if (reply != "OK") {
    ADD_FAILURE() << "FLUSHALL on " << address() << ": " << reply;
    return false;
  }
  return true;
}

}  // namespace jobsched::testing
