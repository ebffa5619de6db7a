// A TCP proxy on a free loopback port that forwards every connection to 127.0.0.1:<target>,
// and can cut them: the network failure between one node and Redis, made in the test process.
//
//   TcpProxy proxy(redis_port);
//   ASSERT_TRUE(proxy.ok()) << proxy.error();
//   start a node with --store redis://127.0.0.1:<proxy.port()>
//   proxy.Cut();       // every open connection is closed; new ones are accepted and closed
//   proxy.Restore();   // new connections are forwarded again
//   proxy.Stall();     // nothing is forwarded (it waits) until Restore: a server that stopped
//                      // answering (SIGSTOP), connections still open
//
// One thread polls every socket (non-blocking, with a buffer per direction). Cut and Restore
// return once that thread has acted on them. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace jobsched::testing {

class TcpProxy {
 public:
  // Starts listening at once; ok() tells whether it could.
  explicit TcpProxy(int target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  bool ok() const { return listen_fd_ >= 0; }
  const std::string& error() const { return error_; }
  // The port the proxy listens on (127.0.0.1).
  int port() const { return port_; }

  // Closes every forwarded connection and, until Restore, closes each new one right after
  // accepting it (the peer sees a connection that ends before any reply).
  void Cut();
  // Keeps every connection open, and accepts new ones, but forwards nothing either way until
  // Restore (what was sent meanwhile is forwarded then): a server that stopped answering.
  void Stall();
  // Ends Cut and Stall.
  void Restore();
  bool cut() const;

 private:
  struct Pair;
  void Loop();
  // Asks the loop to apply the current mode and waits until it has.
  void Sync();

  const int target_port_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // self-pipe: Cut, Restore and the destructor wake the loop
  int port_ = 0;
  std::string error_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool cut_ = false;       // guarded by mu_
  bool stalled_ = false;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  int64_t requested_ = 0;  // guarded by mu_: mode changes asked for
  int64_t applied_ = 0;    // guarded by mu_: mode changes the loop has acted on

  std::thread thread_;
};

}  // namespace jobsched::testing
