#include "api/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

namespace jobsched::api {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string ToHex(const unsigned char* data, size_t n) {
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[data[i] >> 4];
    out[2 * i + 1] = kHex[data[i] & 15];
  }
  return out;
}

// "js_<id>_<secret>" with id [0-9a-f]{16} and secret [0-9a-f]{64}; returns the id.
std::optional<std::string> KeyId(std::string_view key) {
  if (!key.starts_with("js_")) return std::nullopt;
  const size_t sep = key.find('_', 3);
  if (sep == std::string_view::npos || sep == 3 || sep + 1 >= key.size()) return std::nullopt;
  auto valid = [](std::string_view s) {
    for (char c : s) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-'))
        return false;
    }
    return true;
  };
  const std::string_view id = key.substr(3, sep - 3);
  const std::string_view secret = key.substr(sep + 1);
  if (id.size() > 64 || secret.size() < 32 || secret.size() > 256 || !valid(id) || !valid(secret))
    return std::nullopt;
  return std::string(id);
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kOperator:
      return "operator";
    case Role::kViewer:
      return "viewer";
  }
  return "viewer";
}

Result<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "viewer") return Role::kViewer;
  return InvalidArgument("role: must be admin, operator or viewer", "role");
}

std::string HashKey(std::string_view key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return ToHex(digest, sizeof digest);
}

Result<NewKey> GenerateKey(Role role, const std::string& tenant, bool allow_shell,
                           const std::string& name, TimePoint now) {
  unsigned char id_bytes[8];
  unsigned char secret_bytes[32];
  if (RAND_bytes(id_bytes, sizeof id_bytes) != 1 ||
      RAND_bytes(secret_bytes, sizeof secret_bytes) != 1) {
    return Internal("no randomness available for a new API key");
  }
  NewKey k;
  const std::string id = ToHex(id_bytes, sizeof id_bytes);
  k.key = "js_" + id + "_" + ToHex(secret_bytes, sizeof secret_bytes);
  k.record = ApiKeyRecord{.id = id,
                          .secret_hash = HashKey(k.key),
                          .tenant = role == Role::kAdmin ? "" : tenant,
                          .role = RoleName(role),
                          .allow_shell = role == Role::kAdmin || allow_shell,
                          .name = name,
                          .created_at = now};
  return k;
}

Result<ApiKeyRecord> RecordForKey(std::string_view key, Role role, const std::string& name,
                                  TimePoint now) {
  auto id = KeyId(key);
  if (!id) {
    return InvalidArgument(
        "an API key must look like js_<id>_<secret> with a secret of at least 32 "
        "characters [A-Za-z0-9-]");
  }
  return ApiKeyRecord{.id = *id,
                      .secret_hash = HashKey(key),
                      .tenant = "",
                      .role = RoleName(role),
                      .allow_shell = true,
                      .name = name,
                      .created_at = now};
}

Result<Principal> Authenticate(Store& store, std::string_view key) {
  auto id = KeyId(key);
  if (!id) return NotFound("malformed API key");
  const std::string hash = HashKey(key);
  auto record = store.GetApiKeyByHash(hash);
  if (!record.ok()) return record.status();
  if (record->secret_hash.size() != hash.size() ||
      CRYPTO_memcmp(record->secret_hash.data(), hash.data(), hash.size()) != 0 ||
      record->id != *id) {
    return NotFound("unknown API key");
  }
  ASSIGN_OR_RETURN(Role role, ParseRole(record->role));
  return Principal{.key_id = record->id,
                   .role = role,
                   .tenant = record->tenant,
                   .allow_shell = record->allow_shell};
}

}  // namespace jobsched::api
