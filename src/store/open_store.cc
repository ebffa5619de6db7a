// OpenStore: the store URL (`--store`, JOBSCHED_STORE; docs/configuration.md) to a Store backend.
#include <jobsched/store.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "store/redis_store.h"
#include "store/sqlite_store.h"

namespace jobsched {
namespace {

constexpr std::string_view kSqliteScheme = "sqlite:";
constexpr std::string_view kRedisScheme = "redis://";
constexpr char kSupported[] =
    "expected sqlite:PATH, sqlite::memory: or redis://[user:password@]host:port[/db]";

Result<std::unique_ptr<Store>> OpenSqlite(const std::string& url) {
  const std::string path = url.substr(kSqliteScheme.size());
  if (path.empty()) {
    return InvalidArgument("store url '" + url + "' names no file: " + kSupported, "store");
  }
  if (path != ":memory:") {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return Unavailable("store url '" + url + "': cannot create directory '" + parent.string() +
                           "': " + ec.message());
      }
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::Open({.path = path}));
  return std::unique_ptr<Store>(std::move(store));
}

// Malformed URLs are kInvalidArgument naming the URL (password masked); an unreachable server is
// kUnavailable naming host:port.
Result<std::unique_ptr<Store>> OpenRedis(const std::string& url) {
  ASSIGN_OR_RETURN(RedisOptions options, RedisStore::ParseUrl(url));
  ASSIGN_OR_RETURN(std::unique_ptr<RedisStore> store, RedisStore::Open(options));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace

Result<std::unique_ptr<Store>> OpenStore(const std::string& url) {
  if (url.starts_with(kSqliteScheme)) return OpenSqlite(url);
  if (url.starts_with(kRedisScheme)) return OpenRedis(url);
  return InvalidArgument("unsupported store url '" + url + "': " + kSupported, "store");
}

}  // namespace jobsched
