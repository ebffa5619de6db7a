// Kills the process groups of the shell jobs this process runs when the process dies, however it
// dies. A job's own process is killed by the kernel when its parent dies (PR_SET_PDEATHSIG), but
// what it started in the background is not; after a SIGKILL of the node those would run on while
// the run is given to another node. The guard is a watcher process (/bin/sh, exec'd, so it holds
// none of this process's memory) in a process group of its own, reading "+<pgid>" and
// "-<pgid>" lines on a socket whose other end only this process holds: when that end closes (this
// process ended, by exit, crash or SIGKILL), it sends SIGKILL to every group still registered.
//
// Started at the first GuardGroup of a process (again in a forked child). Without /bin/sh, or once
// the watcher is gone, groups are not guarded (logged once).
#pragma once

#include <sys/types.h>

namespace jobsched::exec {

// Registers the process group `pgid` (a running job's) with the guard.
void GuardGroup(pid_t pgid);
// Takes it off once the group is empty (its leader reaped, the rest killed).
void UnguardGroup(pid_t pgid);

}  // namespace jobsched::exec
