#include "core/http_url.h"

#include <algorithm>
#include <cctype>

namespace jobsched {
namespace {

Status BadUrl(std::string_view url, std::string_view why) {
  return InvalidArgument("invalid url '" + std::string(url) + "': " + std::string(why),
                         "handler.url");
}

}  // namespace

Result<Url> ParseUrl(std::string_view text) {
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return BadUrl(text, "contains a space or control character");
  }
  size_t sep = text.find("://");
  if (sep == std::string_view::npos) return BadUrl(text, "must start with http:// or https://");
  Url url;
  url.scheme = std::string(text.substr(0, sep));
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (url.scheme != "http" && url.scheme != "https") {
    return BadUrl(text, "must start with http:// or https://");
  }
  std::string_view rest = text.substr(sep + 3);
  size_t authority_end = rest.find_first_of("/?#");
  if (authority_end == std::string_view::npos) authority_end = rest.size();
  std::string_view authority = rest.substr(0, authority_end);
  if (authority.find('@') != std::string_view::npos) {
    return BadUrl(text, "user info is not supported; send an Authorization header");
  }
  std::string_view host, port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return BadUrl(text, "unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return BadUrl(text, "junk after the IPv6 address");
      port = after.substr(1);
    }
    for (char c : host) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') {
        return BadUrl(text, "invalid IPv6 address");
      }
    }
  } else {
    size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    for (char c : host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
        return BadUrl(text, "invalid host name");
      }
    }
  }
  if (host.empty()) return BadUrl(text, "missing host");
  url.host = std::string(host);
  if (port.empty()) {
    url.port = url.scheme == "https" ? 443 : 80;
  } else {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      return BadUrl(text, "invalid port");
    }
    url.port = std::stoi(std::string(port));
    if (url.port < 1 || url.port > 65535) return BadUrl(text, "port out of range 1-65535");
  }
  std::string_view target = rest.substr(authority_end);
  target = target.substr(0, target.find('#'));
  url.target = std::string(target);
  if (url.target.empty() || url.target[0] == '?') url.target.insert(0, "/");
  return url;
}

// RFC 3986 reference resolution, reduced to the forms servers send in Location.
Result<Url> ResolveLocation(const Url& base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return ParseUrl(location);
  if (location.substr(0, 2) == "//") return ParseUrl(base.scheme + ":" + std::string(location));
  for (char c : location) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return BadUrl(location, "contains a space or control character");
  }
  Url next = base;
  std::string_view ref = location.substr(0, location.find('#'));
  if (ref.empty()) return next;
  if (ref[0] == '/') {
    next.target = std::string(ref);
  } else if (ref[0] == '?') {
    next.target = base.target.substr(0, base.target.find('?')) + std::string(ref);
  } else {
    std::string path = base.target.substr(0, base.target.find('?'));
    next.target = path.substr(0, path.rfind('/') + 1) + std::string(ref);
  }
  return next;
}

bool IsHttpToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

Status CheckHttpHeaders(const std::map<std::string, std::string>& headers) {
  for (const auto& [name, value] : headers) {
    const std::string field = "handler.headers." + name;
    if (!IsHttpToken(name)) {
      return InvalidArgument(field + ": '" + name + "' is not a valid HTTP header name", field);
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return InvalidArgument(field + ": must not contain CR, LF or NUL", field);
    }
  }
  return Status::Ok();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && EqualsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

}  // namespace jobsched
