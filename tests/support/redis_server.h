// A redis-server of the test process's own: started on a free loopback port when the tests
// begin, stopped (by its PID) when they end. Tests that need Redis register it once:
//
//   RedisServer* const kRedis = RedisServer::AddEnvironment();
//   ...
//   ASSERT_TRUE(kRedis->ok()) << kRedis->error();
//   ASSERT_TRUE(kRedis->FlushAll().ok());
//   auto store = RedisStore::Open({.port = kRedis->port()});
//
// Hermetic: no persistence (--save '' --appendonly no), a temp directory, bound to 127.0.0.1.
// A test that needs a server of its own (with an append-only file, stopped and started again)
// makes one with options and calls SetUp/TearDown itself:
//
//   RedisServer redis({.appendonly = true});
//   redis.SetUp();                       // starts it; redis.ok() tells
//   ...
//   ASSERT_TRUE(redis.Shutdown());       // SIGTERM: Redis writes and fsyncs its AOF, then exits
//   ASSERT_TRUE(redis.Restart());        // same port, same directory: it loads the AOF
//   redis.TearDown();                    // (also done by the destructor)
// When redis-server is not installed the environment reports a test failure that says how to
// install it (scripts/setup): tests fail, they are not skipped. ctest runs each test in its own
// process, so each process has its own server.
//
// The binary is $JOBSCHED_REDIS_SERVER if set, else redis-server on PATH, else
// /usr/bin/redis-server.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace jobsched::testing {

class RedisServer : public ::testing::Environment {
 public:
  struct Options {
    // --appendonly yes --appendfsync everysec (the production setting of docs/redis-store.md),
    // in the server's directory. Default: false (no persistence at all)
    bool appendonly = false;
  };

  RedisServer() = default;
  explicit RedisServer(Options options) : options_(options) {}
  ~RedisServer() override { TearDown(); }

  // Registers the one environment of this process (idempotent) and returns it.
  static RedisServer* AddEnvironment();

  // A loopback port nothing listens on right now (bound to port 0, read back, released).
  static int FreePort();

  void SetUp() override;
  void TearDown() override;

  bool ok() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Why the server is not running ("" when it is).
  const std::string& error() const { return error_; }
  int port() const { return port_; }
  // "127.0.0.1:<port>".
  std::string address() const;

  // Sends one command on a new connection and returns the reply as text: simple strings and
  // bulk strings as they are, integers in decimal, nil as "(nil)", errors as "ERR ...", arrays
  // as their elements joined by '\n'. Empty on I/O errors (with a test failure).
  std::string Command(const std::vector<std::string>& args) const;
  // Several commands on one connection (e.g. AUTH, then the command); the last reply.
  std::string Commands(const std::vector<std::vector<std::string>>& commands) const;
  // FLUSHALL: an empty server for the next test. False (with a test failure) if it fails.
  bool FlushAll() const;

  // Stops the server with SIGTERM, which Redis treats as SHUTDOWN (an append-only file is
  // written and fsynced first), and waits for it to exit. False if it did not exit within 5 s
  // and had to be SIGKILLed, or was not running.
  bool Shutdown();
  // Starts the stopped server again on the same port and directory (it loads its AOF). False,
  // with the reason in error(), if it does not answer PING within 10 s.
  bool Restart();

 private:
  // Starts redis-server on `port`; true once it answers PING.
  bool Start(const std::string& binary, int port);

  Options options_;
  std::string binary_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;  // temp dir: the server's working directory and log
  std::string error_;
};

}  // namespace jobsched::testing
