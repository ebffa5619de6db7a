// HTTP URLs and header fields as the http handler takes them: what a job spec's url and
// headers must be (checked when the spec is written) and what the executor requests.
#pragma once

#include <jobsched/status.h>

#include <map>
#include <string>
#include <string_view>

namespace jobsched {

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // without brackets for IPv6
  int port = 0;
  std::string target;  // path and query; starts with '/'

  std::string Authority() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    bool default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    return default_port ? h : h + ":" + std::to_string(port);
  }
  // "https://host:port" with the port always present (what httplib::Client expects).
  std::string SchemeHostPort() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return scheme + "://" + h + ":" + std::to_string(port);
  }
  std::string Origin() const { return scheme + "://" + Authority(); }
  std::string ToString() const { return Origin() + target; }
};

// An absolute http:// or https:// URL with a host, an optional port (1-65535) and no user info.
// Errors are kInvalidArgument for the field handler.url: "invalid url '...': missing host".
Result<Url> ParseUrl(std::string_view text);

// ASCII case-insensitive comparisons, as HTTP compares header names and content codings.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix);

// A Location header's reference resolved against the URL it answered (RFC 3986, reduced to the
// forms servers send).
Result<Url> ResolveLocation(const Url& base, std::string_view location);

// An HTTP token (RFC 9110): a method or a header name.
bool IsHttpToken(std::string_view s);

// Header names must be tokens and values free of CR, LF and NUL. Errors name
// handler.headers.<name>.
Status CheckHttpHeaders(const std::map<std::string, std::string>& headers);

}  // namespace jobsched
