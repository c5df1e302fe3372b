// signals.cpp — the stop flag and its handlers (see signals.h). The handler
// only touches a lock-free atomic and calls async-signal-safe functions
// (write, signal, raise). Tested by tests/test_checkpoint.cpp.
#include "rmoe/train/signals.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"

namespace rmoe {

namespace {

std::atomic<int> received_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal flag must be lock-free");
static_assert(exit_status_requeue == 3, "the messages below name the status");

void say(const char* text) {
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

extern "C" void on_stop_signal(int sig) {
  const int saved_errno = errno;
  int none = 0;
  if (received_signal.compare_exchange_strong(none, sig)) {
    say(sig == SIGTERM   ? "rmoe: caught SIGTERM: finishing this step, saving a checkpoint, then exiting (status 3)\n"
        : sig == SIGINT  ? "rmoe: caught SIGINT: finishing this step, saving a checkpoint, then exiting (status 3); "
                           "Ctrl-C again stops at once\n"
                         : "rmoe: caught SIGUSR1: finishing this step, saving a checkpoint, then exiting (status 3)\n");
  } else if (sig == SIGINT && none == SIGINT) {  // Ctrl-C twice: stop now
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  errno = saved_errno;
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // interrupted reads and writes carry on
  for (int sig : {SIGTERM, SIGINT, SIGUSR1})
    RMOE_CHECK(sigaction(sig, &sa, nullptr) == 0, "cannot install the handler for signal " << sig);
}

bool stop_requested() { return received_signal.load() != 0; }

int stop_signal() { return received_signal.load(); }

void clear_stop_request() { received_signal.store(0); }

bool stop_requested_any(Comm& comm) {
  double flag = stop_requested() ? 1.0 : 0.0;
  comm.allreduce_max(&flag, 1);
  return flag > 0.0;
}

}  // namespace rmoe
