// watchdog.cpp — see watchdog.h.
#include "rmoe/parallel/watchdog.h"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "rmoe/core/timer.h"
#include "rmoe/parallel/comm.h"

namespace rmoe {

namespace {

std::atomic<const char*> waiting_in{nullptr};  // the collective in progress, if any
std::atomic<int64_t> waiting_since_ns{0};      // Clock time it started

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void stop_thread(struct Watchdog& w);

struct Watchdog {
  ~Watchdog() { stop_thread(*this); }  // a joinable std::thread must not be destroyed
  std::mutex mu;
  std::condition_variable cv;
  std::thread thread;
  bool stop = false;
  double timeout = 0;

  void run() {
    std::unique_lock<std::mutex> lk(mu);
    auto last_tick = Clock::now();
    while (!cv.wait_for(lk, std::chrono::milliseconds(500), [&] { return stop; })) {
      // A tick long overdue means this process itself was stopped (SIGSTOP,
      // a frozen VM): the wait so far says nothing about the other ranks.
      const bool was_suspended = seconds_since(last_tick) > 5.0;
      last_tick = Clock::now();
      const char* call = waiting_in.load();
      if (!call) continue;
      if (was_suspended) {
        waiting_since_ns.store(now_ns());
        continue;
      }
      const double waited = (now_ns() - waiting_since_ns.load()) * 1e-9;
      if (waited <= timeout) continue;
      std::fprintf(stderr,
                   "rmoe: rank %d (%s): %s has waited %.0f s for the other ranks (--collective-timeout=%g): a rank "
                   "stopped answering (stopped, hung, or its node failed); ending the job\n",
                   mpi_world_rank(), host_name().c_str(), call, waited, timeout);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
};

Watchdog& watchdog() {
  static Watchdog w;
  return w;
}

void stop_thread(Watchdog& w) {
  if (!w.thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(w.mu);
    w.stop = true;
  }
  w.cv.notify_all();
  w.thread.join();
  w.stop = false;
}

}  // namespace

void set_collective_timeout(double seconds) {
  Watchdog& w = watchdog();
  stop_thread(w);
  w.timeout = seconds;
  if (seconds > 0) w.thread = std::thread([&w] { w.run(); });
}

double collective_timeout() { return watchdog().timeout; }

CollectiveWait::CollectiveWait(const char* call) {
  waiting_since_ns.store(now_ns());
  waiting_in.store(call);
}

CollectiveWait::~CollectiveWait() { waiting_in.store(nullptr); }

}  // namespace rmoe
