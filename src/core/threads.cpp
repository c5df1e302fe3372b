// threads.cpp — see threads.h.
#include "rmoe/core/threads.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace rmoe {

void use_passive_omp_wait(char** argv, int ranks_on_node) {
  if (std::getenv("OMP_WAIT_POLICY")) return;  // the user's choice stands
  setenv("OMP_WAIT_POLICY", "passive", 1);
  if (ranks_on_node > 1) {
    const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    const std::string share = std::to_string(std::max(1L, cores / ranks_on_node));
    setenv("OMP_NUM_THREADS", share.c_str(), 0);  // 0: never override the user's
    setenv("OPENBLAS_NUM_THREADS", share.c_str(), 0);
  }
  execv("/proc/self/exe", argv);  // only returns on failure: carry on as we are
}

}  // namespace rmoe
