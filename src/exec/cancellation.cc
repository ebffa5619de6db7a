#include "exec/cancellation.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace jobsched::exec {

std::string_view CancelReasonName(CancelReason reason) {
  switch (reason) {
    case CancelReason::kNone:
      return "none";
    case CancelReason::kTimeout:
      return "timeout";
    case CancelReason::kCancelled:
      return "cancelled";
    case CancelReason::kFenced:
      return "fenced";
  }
  return "unknown";
}

CancelSource::CancelSource() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

CancelSource::~CancelSource() {
  if (fd_ >= 0) close(fd_);
}

void CancelSource::Cancel(CancelReason reason) {
  if (reason == CancelReason::kNone) return;
  CancelReason expected = CancelReason::kNone;
  if (!reason_.compare_exchange_strong(expected, reason, std::memory_order_acq_rel)) return;
  if (fd_ >= 0) {
    const uint64_t one = 1;
    // Cannot fail in a way that matters: the counter only overflows after 2^64-1 writes, and
    // we write once.
    ssize_t n = write(fd_, &one, sizeof(one));
    (void)n;
  }
}

}  // namespace jobsched::exec
