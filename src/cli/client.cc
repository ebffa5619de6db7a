#include "cli/client.h"

#include <httplib.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

namespace jobsched::cli {
namespace {

StatusCode CodeForHttp(int status) {
  switch (status) {
    case 400:
    case 413:
      return StatusCode::kInvalidArgument;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    case 401:
    case 412:
      return StatusCode::kFailedPrecondition;
    case 403:
      return StatusCode::kPermissionDenied;
    case 429:
      return StatusCode::kResourceExhausted;
    case 502:
    case 503:
    case 504:
      return StatusCode::kUnavailable;
    default:
      return StatusCode::kInternal;
  }
}

// Why a request got no answer, in words (httplib's own names are enum names).
std::string Why(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "connection failed (is the server running, and is this its address?)";
    case httplib::Error::ConnectionTimeout:
      return "connection timed out";
    case httplib::Error::Read:
      return "no answer (the connection broke or the read timed out)";
    case httplib::Error::Write:
      return "the request could not be sent";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed (an http:// server, or no common protocol?)";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load the CA certificates (--ca-cert, JOBSCHED_CA_CERT)";
    case httplib::Error::SSLServerVerification:
      return "the server's TLS certificate is not trusted (give its CA with --ca-cert or "
             "JOBSCHED_CA_CERT)";
    default:
      return httplib::to_string(error);
  }
}

std::string Shorten(std::string text, size_t max) {
  if (text.size() > max) text = text.substr(0, max) + "...";
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

std::string Trim(std::string s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && space(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && space(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

Result<std::string> ReadKeyFile(const std::string& path, const std::string& source) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return InvalidArgument("cannot read the key file '" + path + "' (" + source +
                           "): " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string key = Trim(text.str());
  if (key.empty()) return InvalidArgument("the key file '" + path + "' (" + source + ") is empty");
  return key;
}

}  // namespace

std::string Escape(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// ---- SseParser ----------------------------------------------------------------------------

bool SseParser::Feed(std::string_view chunk, const std::function<bool(const SseEvent&)>& on_event) {
  pending_.append(chunk);
  size_t start = 0;
  size_t end;
  while ((end = pending_.find('\n', start)) != std::string::npos) {
    std::string_view line(pending_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = end + 1;
    if (!Line(line, on_event)) {
      pending_.erase(0, start);
      return false;
    }
  }
  pending_.erase(0, start);
  return true;
}

bool SseParser::Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event) {
  if (line.empty()) {  // end of an event
    if (!has_data_) {
      event_.type.clear();
      return true;
    }
    SseEvent e = event_;
    if (e.type.empty()) e.type = "message";
    event_.type.clear();
    event_.data.clear();
    has_data_ = false;
    return on_event(e);
  }
  if (line.front() == ':') return true;  // a comment (keep-alive)
  std::string_view field = line;
  std::string_view value;
  if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) event_.data += '\n';
    event_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.type = std::string(value);
  } else if (field == "id") {
    // The last event id persists across events (the SSE spec); it is what a reconnect sends.
    if (value.find('\0') == std::string_view::npos) event_.id = std::string(value);
  }
  return true;
}

// ---- Client -------------------------------------------------------------------------------

Result<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  static const std::regex kUrl(
      R"(^(https?)://(\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]@]+)(?::([0-9]{1,5}))?(/[^?#]*)?$)");
  std::smatch m;
  if (!std::regex_match(options.server, m, kUrl)) {
    return InvalidArgument("server: expected http(s)://HOST[:PORT], got '" + options.server + "'",
                           "server");
  }
  const std::string scheme = m[1].str();
  const std::string host = m[2].str();
  int port = scheme == "https" ? 443 : 80;
  if (m[3].matched) {
    port = std::stoi(m[3].str());
    if (port < 1 || port > 65535) {
      return InvalidArgument("server: bad port in '" + options.server + "'", "server");
    }
  }
  std::string prefix = m[4].matched ? m[4].str() : "";
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  const std::string origin = scheme + "://" + host + ":" + std::to_string(port);
  return std::unique_ptr<Client>(new Client(std::move(options), origin + prefix, prefix));
}

Client::Client(ClientOptions options, std::string base_url, std::string prefix)
    : options_(std::move(options)), base_url_(std::move(base_url)), prefix_(std::move(prefix)) {
  http_ = std::make_unique<httplib::Client>(base_url_.substr(0, base_url_.size() - prefix_.size()));
  http_->set_connection_timeout(options_.connect_timeout);
  http_->set_read_timeout(options_.read_timeout);
  http_->set_write_timeout(options_.read_timeout);
  if (!options_.key.empty()) http_->set_bearer_token_auth(options_.key);
  if (!options_.ca_cert.empty()) http_->set_ca_cert_path(options_.ca_cert);
}

Client::~Client() = default;

namespace {

// The Status for a non-2xx answer: the server's {"error": {...}} when there is one.
Status ErrorFromResponse(int status, const std::string& body, const std::string& url,
                         bool has_key) {
  const StatusCode code = CodeForHttp(status);
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].contains("message") && j["error"]["message"].is_string()) {
    const Json& e = j["error"];
    std::string message = e["message"].get<std::string>();
    if (status == 401 && !has_key) {
      message += " (no API key given: use --key, --key-file, JOBSCHED_KEY or JOBSCHED_KEY_FILE)";
    }
    const std::string field =
        e.contains("field") && e["field"].is_string() ? e["field"].get<std::string>() : "";
    return Status(code, message, field);
  }
  std::string message = "HTTP " + std::to_string(status) + " from " + url;
  if (!body.empty()) message += ": " + Shorten(body, 200);
  return Status(code, message);
}

}  // namespace

Result<Json> Client::Send(const std::string& method, const std::string& path, const Json* body,
                          const std::string& if_match) {
  httplib::Headers headers{{"Accept", "application/json"}};
  if (!if_match.empty()) headers.emplace("If-Match", if_match);
  // `path` is escaped by the caller; httplib's own escaping leaves '%' alone.
  const std::string full = prefix_ + path;
  const std::string text = body == nullptr || body->is_null() ? "" : body->dump();
  httplib::Result res{nullptr, httplib::Error::Unknown};
  try {
    if (method == "GET") {
      res = http_->Get(full, headers);
    } else if (method == "DELETE") {
      res = http_->Delete(full, headers);
    } else if (method == "POST") {
      res = http_->Post(full, headers, text, "application/json");
    } else {
      res = http_->Put(full, headers, text, "application/json");
    }
  } catch (const std::exception& e) {
    return Unavailable("cannot reach " + base_url_ + ": " + e.what());
  }
  if (!res) return Unavailable("cannot reach " + base_url_ + ": " + Why(res.error()));
  if (res->status < 200 || res->status >= 300) {
    return ErrorFromResponse(res->status, res->body, base_url_ + path, has_key());
  }
  if (res->body.empty()) return Json(nullptr);
  Json out = Json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    return Internal("the answer of " + method + " " + base_url_ + path +
                    " is not JSON: " + Shorten(res->body, 200));
  }
  return out;
}

Result<Json> Client::Get(const std::string& path) { return Send("GET", path, nullptr, ""); }
Result<Json> Client::Delete(const std::string& path) { return Send("DELETE", path, nullptr, ""); }
Result<Json> Client::Post(const std::string& path, const Json& body) {
  return Send("POST", path, &body, "");
}
Result<Json> Client::Put(const std::string& path, const Json& body, const std::string& if_match) {
  return Send("PUT", path, &body, if_match);
}

Status Client::Stream(const std::string& path, std::string& last_event_id,
                      const std::function<void()>& on_open,
                      const std::function<bool(const SseEvent&)>& on_event) {
  httplib::Headers headers{{"Accept", "text/event-stream"}};
  if (!last_event_id.empty()) headers.emplace("Last-Event-ID", last_event_id);
  int status = 0;
  std::string error_body;  // the body of a refusal
  bool stopped = false;    // on_event asked to stop
  SseParser parser;
  http_->set_read_timeout(options_.stream_read_timeout);
  httplib::Result res{nullptr, httplib::Error::Unknown};
  struct KeepLastId {  // on every return
    std::string& id;
    const SseParser& parser;
    ~KeepLastId() {
      if (!parser.last_id().empty()) id = parser.last_id();
    }
  } keep{last_event_id, parser};
  try {
    res = http_->Get(
        prefix_ + path, headers,
        [&](const httplib::Response& r) {
          status = r.status;
          if (status == 200) on_open();
          return true;
        },
        [&](const char* data, size_t n) {
          if (status != 200) {
            if (error_body.size() < 64 * 1024) error_body.append(data, n);
            return true;
          }
          if (!parser.Feed(std::string_view(data, n), on_event)) {
            stopped = true;
            return false;
          }
          return true;
        });
  } catch (const std::exception& e) {
    http_->set_read_timeout(options_.read_timeout);
    if (stopped) return Status::Ok();
    return Unavailable("cannot reach " + base_url_ + ": " + e.what());
  }
  http_->set_read_timeout(options_.read_timeout);
  if (stopped) return Status::Ok();
  if (status != 0 && status != 200)
    return ErrorFromResponse(status, error_body, base_url_ + path, has_key());
  if (!res) {
    if (status == 200) {
      return Unavailable("the event stream from " + base_url_ + " broke: " + Why(res.error()));
    }
    return Unavailable("cannot reach " + base_url_ + ": " + Why(res.error()));
  }
  return Unavailable("the server at " + base_url_ + " ended the event stream");
}

// ---- Settings -----------------------------------------------------------------------------

Result<Connection> ResolveConnection(const ConnectionFlags& flags) {
  Connection c;
  c.options.server = !flags.server.empty() ? flags.server : Env("JOBSCHED_URL");
  if (c.options.server.empty()) c.options.server = ClientOptions{}.server;
  c.tenant = !flags.tenant.empty() ? flags.tenant : Env("JOBSCHED_TENANT");
  if (c.tenant.empty()) c.tenant = "default";
  c.options.ca_cert = !flags.ca_cert.empty() ? flags.ca_cert : Env("JOBSCHED_CA_CERT");

  if (!flags.key.empty()) {
    c.options.key = flags.key;
    c.key_source = "--key";
  } else if (!flags.key_file.empty()) {
    ASSIGN_OR_RETURN(c.options.key, ReadKeyFile(flags.key_file, "--key-file"));
    c.key_source = "--key-file";
  } else if (std::string env = Env("JOBSCHED_KEY"); !env.empty()) {
    c.options.key = Trim(env);
    c.key_source = "JOBSCHED_KEY";
  } else if (std::string file = Env("JOBSCHED_KEY_FILE"); !file.empty()) {
    ASSIGN_OR_RETURN(c.options.key, ReadKeyFile(file, "JOBSCHED_KEY_FILE"));
    c.key_source = "JOBSCHED_KEY_FILE";
  } else {
    static constexpr char kDefaultKeyFile[] = "./data/admin.key";
    std::error_code ec;
    if (std::filesystem::exists(kDefaultKeyFile, ec)) {
      ASSIGN_OR_RETURN(c.options.key, ReadKeyFile(kDefaultKeyFile, "the default key file"));
      c.key_source = kDefaultKeyFile;
    }
  }
  return c;
}

}  // namespace jobsched::cli
