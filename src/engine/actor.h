// A background thread that runs a one-pass Tick() over and over: after each pass it sleeps
// until the time the pass asked for, or until Wake() or Stop(). Every actor of the engine is
// one of these; tests call the actors' Tick() directly instead of starting threads.
#pragma once

#include <jobsched/clock.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace jobsched {

// Whether the calling thread is one a node runs (its actors, workers and committer): handlers and
// event callbacks run on those, and a node is not started or stopped from one (stopping joins
// them, and a thread cannot join itself).
bool OnNodeThread();
// Marks the calling thread as a node's, for the rest of its life.
void MarkNodeThread();

class ActorThread {
 public:
  ActorThread() = default;
  ~ActorThread() { Stop(); }
  ActorThread(const ActorThread&) = delete;
  ActorThread& operator=(const ActorThread&) = delete;

  // Starts the thread. `tick` runs one pass and returns how long to sleep before the next
  // (clamped to [0, max_sleep]). Exceptions escaping `tick` are logged and the loop goes on.
  void Start(std::string name, std::function<Duration()> tick, Duration max_sleep = Duration(1000));
  // Ends the current sleep early (a pass runs at once). Thread-safe; no-op when stopped.
  void Wake();
  // Stops the thread after the current pass. Thread-safe; idempotent.
  void Stop();
  bool running() const { return thread_.joinable(); }

 private:
  void Loop(std::function<Duration()> tick, Duration max_sleep);

  std::string name_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;     // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
};

}  // namespace jobsched
