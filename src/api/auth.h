// API keys and roles (docs/api.md). A key is "js_<id>_<secret>": the id is public (it names the
// key in lists and logs), the secret is 256 random bits. Only the SHA-256 of the whole key is
// stored; a presented key is hashed and compared with the stored hash in constant time.
#pragma once

#include <jobsched/status.h>
#include <jobsched/store.h>

#include <optional>
#include <string>
#include <string_view>

namespace jobsched::api {

enum class Role { kViewer = 1, kOperator = 2, kAdmin = 3 };

const char* RoleName(Role role);
Result<Role> ParseRole(std::string_view name);

// Who made a request.
struct Principal {
  std::string key_id;
  Role role = Role::kViewer;
  std::string tenant;  // "" for admin keys: every tenant
  bool allow_shell = false;
};

struct NewKey {
  std::string key;  // the whole key, shown once
  ApiKeyRecord record;
};

// A fresh key with 256 bits from the OS's CSPRNG. kInternal if randomness is unavailable.
Result<NewKey> GenerateKey(Role role, const std::string& tenant, bool allow_shell,
                           const std::string& name, TimePoint now);
// Hex SHA-256 of `key`.
std::string HashKey(std::string_view key);
// The record for a presented key, or kNotFound (malformed or unknown: callers answer 401).
Result<Principal> Authenticate(Store& store, std::string_view key);
// A record for a key given from outside (JOBSCHED_ADMIN_KEY); kInvalidArgument if malformed.
Result<ApiKeyRecord> RecordForKey(std::string_view key, Role role, const std::string& name,
                                  TimePoint now);

}  // namespace jobsched::api
