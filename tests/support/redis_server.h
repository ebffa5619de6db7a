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
  // Registers the one environment of this process (idempotent) and returns it.
  static RedisServer* AddEnvironment();

  // A loopback port nothing listens on right now (bound to port 0, read back, released).
  static int FreePort();

  void SetUp() override;
  void TearDown() override;

  bool ok() const { return pid_ > 0; }
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

 private:
  // Starts redis-server on `port`; true once it answers PING.
  bool Start(const std::string& binary, int port);
  void Stop();

  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;  // temp dir: the server's working directory and log
  std::string error_;
};

}  // namespace jobsched::testing
