#include "api/metrics.h"

#include <fmt/format.h>

namespace jobsched::api {
namespace {

constexpr double kBounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                              1,     2.5,   5,    10,    30,   60,  300};

struct Help {
  const char* name;
  const char* type;
  const char* text;
};
constexpr Help kHelp[] = {
    {"jobsched_runs_total", "counter", "Attempts that ended on this node, by outcome."},
    {"jobsched_run_duration_seconds", "histogram", "Run time of attempts on this node."},
    {"jobsched_fire_delay_seconds", "histogram",
     "Start of an attempt minus when it could start (its occurrence's time plus jitter, its "
     "retry time, or when it was queued)."},
    {"jobsched_leases_lost_total", "counter",
     "Attempts this node stopped because it lost their lease, by tenant and queue."},
    {"jobsched_runs_recovered_total", "counter",
     "Runs this node queued again (or failed) after their lease expired, by tenant and queue."},
    {"jobsched_http_requests_total", "counter", "HTTP requests by route and status code."},
};

const Help* FindHelp(const std::string& name) {
  for (const Help& h : kHelp) {
    if (name == h.name) return &h;
  }
  return nullptr;
}

}  // namespace

void MetricHeader(std::string& out, const std::string& name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

std::string Metrics::Label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void Metrics::Inc(const std::string& name, const std::string& labels, double by) {
  std::lock_guard lock(mu_);
  counters_[name][labels] += by;
}

void Metrics::Observe(const std::string& name, const std::string& labels, double value) {
  std::lock_guard lock(mu_);
  Histogram& h = histograms_[name][labels];
  if (h.buckets.empty()) h.buckets.assign(std::size(kBounds), 0);
  for (size_t i = 0; i < std::size(kBounds); ++i) {
    if (value <= kBounds[i]) h.buckets[i] += 1;
  }
  h.sum += value;
  h.count += 1;
}

void Metrics::Render(std::string& out, const std::string& only_tenant) const {
  const std::string mine = "tenant=\"" + Label(only_tenant) + "\"";
  auto hidden = [&](const std::string& labels) {
    return !only_tenant.empty() && labels.find("tenant=\"") != std::string::npos &&
           labels.find(mine) == std::string::npos;
  };
  std::lock_guard lock(mu_);
  for (const auto& [name, series] : counters_) {
    const Help* help = FindHelp(name);
    MetricHeader(out, name, "counter", help ? help->text : name.c_str());
    for (const auto& [labels, value] : series) {
      if (hidden(labels)) continue;
      out += fmt::format("{}{}{}{} {}\n", name, labels.empty() ? "" : "{", labels,
                         labels.empty() ? "" : "}", value);
    }
  }
  for (const auto& [name, series] : histograms_) {
    const Help* help = FindHelp(name);
    MetricHeader(out, name, "histogram", help ? help->text : name.c_str());
    for (const auto& [labels, h] : series) {
      if (hidden(labels)) continue;
      const std::string sep = labels.empty() ? "" : ",";
      for (size_t i = 0; i < std::size(kBounds); ++i) {
        out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, kBounds[i],
                           h.buckets[i]);
      }
      out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, h.count);
      out += fmt::format("{}_sum{}{}{} {}\n", name, labels.empty() ? "" : "{", labels,
                         labels.empty() ? "" : "}", h.sum);
      out += fmt::format("{}_count{}{}{} {}\n", name, labels.empty() ? "" : "{", labels,
                         labels.empty() ? "" : "}", h.count);
    }
  }
}

}  // namespace jobsched::api
