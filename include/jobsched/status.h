// Status and Result<T>: how every module boundary of jobsched reports errors.
//
// A Status is either OK or an error code with a message and, for input errors, the path of the
// offending field ("schedule.cron"). Result<T> holds a T or a non-OK Status. Both are cheap to
// move and [[nodiscard]]: ignoring an error must be written out (`IgnoreError()`), so it is
// greppable.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace jobsched {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad input: parse errors, out-of-range values, unknown fields
  kNotFound,            // the named object does not exist
  kAlreadyExists,       // create of an id that exists
  kFailedPrecondition,  // wrong state, version mismatch, stale fencing token
  kResourceExhausted,   // quota exceeded
  kPermissionDenied,    // the caller may not do this (an API key's role or permissions)
  kUnavailable,         // the store (or another dependency) cannot be reached
  kInternal,            // a bug or an invariant violation
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message, std::string field = {})
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Path of the input field the error is about ("schedule.cron"); empty when not applicable.
  const std::string& field() const { return field_; }

  // "invalid_argument: hour: value 25 out of range 0-23"
  std::string ToString() const;

  // Marks a deliberately ignored error.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_ && a.field_ == b.field_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string field_;
};

inline Status InvalidArgument(std::string message, std::string field = {}) {
  return Status(StatusCode::kInvalidArgument, std::move(message), std::move(field));
}
inline Status NotFound(std::string message) {
  return Status(StatusCode::kNotFound, std::move(message));
}
inline Status AlreadyExists(std::string message) {
  return Status(StatusCode::kAlreadyExists, std::move(message));
}
inline Status FailedPrecondition(std::string message) {
  return Status(StatusCode::kFailedPrecondition, std::move(message));
}
inline Status ResourceExhausted(std::string message) {
  return Status(StatusCode::kResourceExhausted, std::move(message));
}
inline Status Unavailable(std::string message) {
  return Status(StatusCode::kUnavailable, std::move(message));
}
inline Status Internal(std::string message) {
  return Status(StatusCode::kInternal, std::move(message));
}

// Holds a value or a non-OK Status. Constructing a Result from an OK Status is a bug and turns
// into kInternal.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) v_ = Internal("Result constructed from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const& {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  Status status() && { return ok() ? Status() : std::get<Status>(std::move(v_)); }

  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace jobsched

#define JOBSCHED_CONCAT_INNER_(a, b) a##b
#define JOBSCHED_CONCAT_(a, b) JOBSCHED_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::jobsched::Status jobsched_status_ = (expr);        \
    if (!jobsched_status_.ok()) return jobsched_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x from a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(JOBSCHED_CONCAT_(jobsched_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(result, lhs, expr)      \
  auto result = (expr);                                \
  if (!result.ok()) return std::move(result).status(); \
  lhs = std::move(result).value()
