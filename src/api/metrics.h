// Prometheus metrics (GET /metrics) kept by this process: counters and histograms fed by the
// node's events and the HTTP layer. Gauges that describe the store (jobs, ready and running
// runs, nodes) are read from the store at scrape time by the server. Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace jobsched::api {

class Metrics {
 public:
  // `labels` is the rendered label set without braces: tenant="a",queue="b".
  void Inc(const std::string& name, const std::string& labels, double by = 1);
  void Observe(const std::string& name, const std::string& labels, double value);

  // Appends every series in the text exposition format, with HELP and TYPE lines. With
  // `only_tenant`, series labelled with another tenant are left out.
  void Render(std::string& out, const std::string& only_tenant = "") const;

  // Escapes a label value.
  static std::string Label(const std::string& value);

 private:
  struct Histogram {
    std::vector<double> buckets;  // cumulative counts per bound of kBounds
    double sum = 0;
    uint64_t count = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, double>> counters_;       // guarded by mu_
  std::map<std::string, std::map<std::string, Histogram>> histograms_;  // guarded by mu_
};

// Appends "# HELP" and "# TYPE" lines for a metric.
void MetricHeader(std::string& out, const std::string& name, const char* type, const char* help);

}  // namespace jobsched::api
