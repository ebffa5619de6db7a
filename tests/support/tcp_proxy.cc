#include "support/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace jobsched::testing {
namespace {

constexpr size_t kMaxBuffered = 1 << 20;  // per direction; reading pauses above it

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

}  // namespace

// One forwarded connection: side 0 is the client, side 1 the target.
struct TcpProxy::Pair {
  int fd[2] = {-1, -1};
  std::string out[2];  // bytes waiting to be written to fd[i]
  ~Pair() {
    for (int f : fd) {
      if (f >= 0) close(f);
    }
  }
};

TcpProxy::TcpProxy(int target_port) : target_port_(target_port) {
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    error_ = std::string("pipe2: ") + std::strerror(errno);
    return;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return;
  }
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 128) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    error_ = std::string("bind/listen: ") + std::strerror(errno);
    close(fd);
    return;
  }
  listen_fd_ = fd;
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Loop(); });
}

TcpProxy::~TcpProxy() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    const char byte = 0;
    ssize_t n = write(wake_[1], &byte, 1);
    (void)n;
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_[0], wake_[1]}) {
    if (fd >= 0) close(fd);
  }
}

void TcpProxy::Cut() {
  {
    std::lock_guard lock(mu_);
    cut_ = true;
    ++requested_;
  }
  Sync();
}

void TcpProxy::Stall() {
  {
    std::lock_guard lock(mu_);
    stalled_ = true;
    ++requested_;
  }
  Sync();
}

void TcpProxy::Restore() {
  {
    std::lock_guard lock(mu_);
    cut_ = false;
    stalled_ = false;
    ++requested_;
  }
  Sync();
}

bool TcpProxy::cut() const {
  std::lock_guard lock(mu_);
  return cut_;
}

void TcpProxy::Sync() {
  if (!thread_.joinable()) return;
  const char byte = 0;
  ssize_t n = write(wake_[1], &byte, 1);
  (void)n;
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return applied_ == requested_; });
}

void TcpProxy::Loop() {
  std::vector<std::unique_ptr<Pair>> pairs;
  std::vector<pollfd> fds;
  char chunk[64 * 1024];
  for (;;) {
    bool cut, stalled;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      cut = cut_;
      stalled = stalled_;
      if (cut) pairs.clear();  // closes both sides of every connection
      if (applied_ != requested_) {
        applied_ = requested_;
        cv_.notify_all();
      }
    }

    fds.clear();
    fds.push_back({.fd = wake_[0], .events = POLLIN, .revents = 0});
    fds.push_back({.fd = listen_fd_, .events = POLLIN, .revents = 0});
    for (const auto& p : pairs) {
      for (int side = 0; side < 2; ++side) {
        short events = 0;
        if (p->out[1 - side].size() < kMaxBuffered) events |= POLLIN;
        if (!p->out[side].empty() && !stalled) events |= POLLOUT;
        fds.push_back({.fd = p->fd[side], .events = events, .revents = 0});
      }
    }
    if (poll(fds.data(), fds.size(), 1000) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) {
      while (read(wake_[0], chunk, sizeof chunk) > 0) {
      }
    }

    // Pairs first (their pollfds are at fixed positions), then new connections.
    std::vector<std::unique_ptr<Pair>> alive;
    for (size_t i = 0; i < pairs.size(); ++i) {
      Pair& p = *pairs[i];
      bool broken = false;
      for (int side = 0; side < 2 && !broken; ++side) {
        const short revents = fds[2 + 2 * i + side].revents;
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
          const ssize_t n = recv(p.fd[side], chunk, sizeof chunk, 0);
          if (n > 0) {
            p.out[1 - side].append(chunk, static_cast<size_t>(n));
          } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            broken = true;  // either side ending ends the pair (Redis clients never half-close)
          }
        }
      }
      for (int side = 0; side < 2 && !broken && !stalled; ++side) {
        if (p.out[side].empty()) continue;
        const ssize_t n = send(p.fd[side], p.out[side].data(), p.out[side].size(), MSG_NOSIGNAL);
        if (n > 0) {
          p.out[side].erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          broken = true;
        }
      }
      if (!broken) alive.push_back(std::move(pairs[i]));
    }
    pairs.swap(alive);

    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client < 0) break;
        if (cut) {
          close(client);
          continue;
        }
        auto pair = std::make_unique<Pair>();
        pair->fd[0] = client;
        const int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pair->fd[1] = upstream;
        sockaddr_in target = Loopback(target_port_);
        // Loopback: a blocking connect answers at once (refused when the target is down).
        if (upstream < 0 ||
            connect(upstream, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
          continue;  // the pair's destructor closes the client: it sees the target as down
        }
        SetNonBlocking(upstream);
        const int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pairs.push_back(std::move(pair));
      }
    }
  }
}

}  // namespace jobsched::testing
