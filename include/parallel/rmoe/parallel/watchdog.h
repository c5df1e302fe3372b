// watchdog.h — no rank waits forever for another (--collective-timeout).
//
// A killed rank is noticed by the launcher, which ends the job. A rank that
// stops answering (SIGSTOP, a hung node, a deadlock) is not: the others would
// wait in their next collective forever. Every blocking collective of the MPI
// communicator (mpi_comm.cpp) is bracketed by a CollectiveWait; a watchdog
// thread checks about once a second, and when one has lasted longer than the
// timeout it prints one line naming this rank, its host, the call and the
// time waited, and ends the job (MPI_Abort). Legitimate waits (another rank
// saving a checkpoint or evaluating) must stay below the timeout.
#pragma once

namespace rmoe {

// 0 = no limit (the watchdog thread is stopped). Call after mpi_init().
void set_collective_timeout(double seconds);
double collective_timeout();

// Marks a blocking collective in progress on this rank (one at a time; the
// calling thread is the only one that communicates).
class CollectiveWait {
 public:
  explicit CollectiveWait(const char* call);
  ~CollectiveWait();
  CollectiveWait(const CollectiveWait&) = delete;
  CollectiveWait& operator=(const CollectiveWait&) = delete;
};

}  // namespace rmoe
