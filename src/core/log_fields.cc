#include "core/log_fields.h"

#include <cstdio>

namespace jobsched {
namespace {

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

void AppendEscaped(std::string& out, unsigned char c) {
  switch (c) {
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default: {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    }
  }
}

bool IsKeyChar(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }

// Reads a value quoted by LogValue starting at text[pos] == '"'; false if it does not close.
bool ReadQuoted(std::string_view text, size_t& pos, std::string& value) {
  value.clear();
  for (size_t i = pos + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') {
      pos = i + 1;
      return true;
    }
    if (c != '\\' || i + 1 == text.size()) {
      value += c;
      continue;
    }
    const char e = text[++i];
    if (e == 'n') {
      value += '\n';
    } else if (e == 'r') {
      value += '\r';
    } else if (e == 't') {
      value += '\t';
    } else if (e == 'u' && i + 4 < text.size()) {
      unsigned code = 0;
      if (std::sscanf(std::string(text.substr(i + 1, 4)).c_str(), "%4x", &code) == 1 &&
          code < 0x80) {
        value += static_cast<char>(code);
        i += 4;
      } else {
        value += "\\u";
      }
    } else {
      value += e;
    }
  }
  return false;
}

}  // namespace

std::string LogValue(std::string_view value) {
  bool plain = !value.empty() && value.back() != ':';
  for (unsigned char c : value) {
    if (c == ' ' || c == '"' || c == '\\' || c == '=' || IsControl(c)) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (IsControl(c)) {
      AppendEscaped(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::vector<std::pair<std::string, std::string>> LogFields(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> fields;
  auto seen = [&](std::string_view key) {
    for (const auto& [k, v] : fields)
      if (k == key) return true;
    return false;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    if (text[pos] == ' ') {
      ++pos;
      continue;
    }
    size_t key_end = pos;
    while (key_end < text.size() && IsKeyChar(text[key_end])) ++key_end;
    const bool is_field = key_end > pos && key_end < text.size() && text[key_end] == '=';
    if (!is_field) {
      // A word of the message: the fields come after the words that say what happened, and
      // before a ':' or any other word (free text, which may hold anything).
      const size_t end = text.find(' ', pos);
      pos = end == std::string_view::npos ? text.size() : end;
      if (!fields.empty() || text[pos - 1] == ':') break;
      continue;
    }
    const std::string_view key = text.substr(pos, key_end - pos);
    size_t vpos = key_end + 1;
    std::string value;
    bool last = false;
    if (vpos < text.size() && text[vpos] == '"') {
      if (!ReadQuoted(text, vpos, value)) break;
      if (vpos < text.size() && text[vpos] == ':') last = true;
    } else {
      size_t end = text.find(' ', vpos);
      if (end == std::string_view::npos) end = text.size();
      value = std::string(text.substr(vpos, end - vpos));
      vpos = end;
      if (!value.empty() && value.back() == ':') {
        value.pop_back();
        last = true;
      }
    }
    if (!seen(key)) fields.emplace_back(std::string(key), std::move(value));
    if (last) break;
    pos = vpos;
  }
  return fields;
}

std::string EscapeControl(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (IsControl(c)) {
      AppendEscaped(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace jobsched
