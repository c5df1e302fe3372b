// signals.cpp — the stop flag and its handlers (see signals.h). The handler
// only touches lock-free atomics and calls async-signal-safe functions
// (write, signal, raise). Tested by tests/test_checkpoint.cpp.
#include "rmoe/train/signals.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"

namespace rmoe {

namespace {

std::atomic<int> received_signal{0};
std::atomic<bool> ending{false};  // end_on_stop_signals() was called
static_assert(std::atomic<int>::is_always_lock_free, "the signal flag must be lock-free");
static_assert(std::atomic<bool>::is_always_lock_free, "the ending flag must be lock-free");

// The handler's lines, made at install time (the handler only writes them).
// They say what will happen: the run stops after the step in progress; the
// training loop then says whether it saved (a rank that another rank's
// MPI_Abort ends gets the same SIGTERM from the launcher and cannot tell,
// so no line promises a checkpoint).
char line_term[160], line_int[160], line_usr1[160];

void say(const char* text) {
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

extern "C" void on_stop_signal(int sig) {
  const int saved_errno = errno;
  if (ending.load()) {  // ending after an error: nothing to finish or save; die as the signal says
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    errno = saved_errno;
    return;
  }
  int none = 0;
  if (received_signal.compare_exchange_strong(none, sig)) {
    say(sig == SIGTERM ? line_term : sig == SIGINT ? line_int : line_usr1);
  } else if (sig == SIGINT && none == SIGINT) {  // Ctrl-C twice: stop now
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  errno = saved_errno;
}

void make_lines() {
  const std::string who = mpi_initialized() ? "rmoe: rank " + std::to_string(mpi_world_rank()) + " " : "rmoe: ";
  auto make = [&](char* out, const char* name, const char* extra) {
    std::snprintf(out, sizeof line_term, "%scaught %s: stopping after the step in progress%s\n", who.c_str(), name,
                  extra);
  };
  make(line_term, "SIGTERM", "");
  make(line_int, "SIGINT", "; Ctrl-C again stops at once");
  make(line_usr1, "SIGUSR1", "");
}

}  // namespace

void install_stop_signal_handlers() {
  make_lines();
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // interrupted reads and writes carry on
  for (int sig : {SIGTERM, SIGINT, SIGUSR1})
    RMOE_CHECK(sigaction(sig, &sa, nullptr) == 0, "cannot install the handler for signal " << sig);
}

void end_on_stop_signals() {
  ending.store(true);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) {  // only where ours is installed: leave others' choices alone
    struct sigaction old;
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler == on_stop_signal) std::signal(sig, SIG_DFL);
  }
}

bool stop_requested() { return received_signal.load() != 0; }

int stop_signal() { return received_signal.load(); }

void clear_stop_request() { received_signal.store(0); }

const char* stop_signal_name(int sig) {
  return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : sig == SIGUSR1 ? "SIGUSR1" : "no signal";
}

StopRequest stop_request_any(Comm& comm) {
  // Lowest rank with a signal wins: (size - rank) * 64 + signal, max-reduced (exact in a double).
  const int sig = stop_signal();
  double v = sig != 0 ? double(comm.size() - comm.rank()) * 64.0 + double(sig) : 0.0;
  comm.allreduce_max(&v, 1);
  if (v == 0.0) return {};
  const int64_t k = int64_t(v);
  return {int(k % 64), comm.size() - int(k / 64)};
}

bool stop_requested_any(Comm& comm) { return stop_request_any(comm).signal != 0; }

}  // namespace rmoe
