#include "engine/actor.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace jobsched {
namespace {
thread_local bool t_node_thread = false;
}  // namespace

bool OnNodeThread() { return t_node_thread; }
void MarkNodeThread() { t_node_thread = true; }

void ActorThread::Start(std::string name, std::function<Duration()> tick, Duration max_sleep) {
  Stop();
  name_ = std::move(name);
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
    woken_ = false;
  }
  thread_ = std::thread([this, tick = std::move(tick), max_sleep] { Loop(tick, max_sleep); });
}

void ActorThread::Wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void ActorThread::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ActorThread::Loop(std::function<Duration()> tick, Duration max_sleep) {
  MarkNodeThread();
  while (true) {
    Duration sleep = max_sleep;
    try {
      sleep = std::clamp(tick(), Duration(0), max_sleep);
    } catch (const std::exception& e) {
      spdlog::error("{}: pass failed: {}", name_, e.what());
    } catch (...) {
      spdlog::error("{}: pass failed with an unknown exception", name_);
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, sleep, [this] { return woken_ || stopping_; });
    if (stopping_) return;
    woken_ = false;
  }
}

}  // namespace jobsched
