// threads.cpp — see threads.h.
#include "rmoe/core/threads.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace rmoe {

void use_thread_defaults(char** argv, int ranks_on_node) {
  bool changed = false;  // 0 below: the user's setting stands
  if (!std::getenv("OMP_WAIT_POLICY")) changed = setenv("OMP_WAIT_POLICY", "passive", 0) == 0;
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT"))
    changed = setenv("OPENBLAS_THREAD_TIMEOUT", std::to_string(kOpenBlasThreadTimeout).c_str(), 0) == 0 || changed;
  if (!changed) return;
  if (ranks_on_node > 1) {
    const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    const std::string share = std::to_string(std::max(1L, cores / ranks_on_node));
    setenv("OMP_NUM_THREADS", share.c_str(), 0);
    setenv("OPENBLAS_NUM_THREADS", share.c_str(), 0);
  }
  execv("/proc/self/exe", argv);  // only returns on failure: carry on as we are
}

}  // namespace rmoe
