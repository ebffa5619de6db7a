// A cgroup v2 directory for tests of per-run cgroups.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>

namespace jobsched::testing {

// A new directory `name`-<pid> in this process's own cgroup v2, if cgroup v2 is mounted and
// writable here (none otherwise). The caller removes it (rmdir) once its runs are done.
inline std::optional<std::string> MakeCgroupDir(const std::string& name) {
  std::ifstream mounts("/proc/self/mounts");
  std::string root;
  for (std::string dev, dir, type, rest;
       mounts >> dev >> dir >> type && std::getline(mounts, rest);) {
    if (type == "cgroup2") {
      root = dir;
      break;
    }
  }
  if (root.empty()) return std::nullopt;
  std::ifstream self("/proc/self/cgroup");
  std::string own;
  for (std::string line; std::getline(self, line);) {
    if (line.rfind("0::", 0) == 0) own = line.substr(3);
  }
  std::string dir = root + (own == "/" ? "" : own) + "/" + name + "-" + std::to_string(getpid());
  if (mkdir(dir.c_str(), 0755) != 0) return std::nullopt;
  return dir;
}

}  // namespace jobsched::testing
