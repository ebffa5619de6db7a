// One-shot cancellation for executors, observable both as a flag and as a file descriptor so a
// poll() loop wakes the moment it fires.
//
//   CancelSource cancel;
//   std::thread t([&] { RunShell(request, cancel); });
//   cancel.Cancel(CancelReason::kTimeout);   // from any thread; the first reason wins
//
// Thread safety: every method may be called from any thread at any time.
#pragma once

#include <atomic>
#include <string_view>

namespace jobsched::exec {

enum class CancelReason {
  kNone = 0,   // not cancelled
  kTimeout,    // the attempt's deadline passed: the attempt ends timed_out
  kCancelled,  // a user or an overlap policy cancelled the run
  kFenced,     // this node lost the attempt's lease: stop the work and report nothing
};

// "none", "timeout", "cancelled", "fenced".
std::string_view CancelReasonName(CancelReason reason);

class CancelSource {
 public:
  // Never fails: when no eventfd can be created (fd limit reached), fd() is -1 and pollers fall
  // back to checking cancelled() at short intervals.
  CancelSource();
  ~CancelSource();
  CancelSource(const CancelSource&) = delete;
  CancelSource& operator=(const CancelSource&) = delete;

  // Fires the source with `reason`. Only the first call with a reason other than kNone has an
  // effect; later calls (and kNone) are ignored.
  void Cancel(CancelReason reason);

  bool cancelled() const { return reason() != CancelReason::kNone; }
  // kNone until Cancel() is called.
  CancelReason reason() const { return reason_.load(std::memory_order_acquire); }

  // An eventfd that becomes readable (POLLIN) when the source fires and stays readable: nobody
  // reads it, so any number of pollers see it. -1 if it could not be created. Owned by the
  // CancelSource; do not close or read it.
  int fd() const { return fd_; }

 private:
  std::atomic<CancelReason> reason_{CancelReason::kNone};
  const int fd_;  // immutable after construction
};

}  // namespace jobsched::exec
