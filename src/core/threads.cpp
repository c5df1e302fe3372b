// threads.cpp — see threads.h.
#include "rmoe/core/threads.h"

#include <unistd.h>

#include <cstdlib>

namespace rmoe {

void use_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;  // the user's choice stands
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // only returns on failure: carry on as we are
}

}  // namespace rmoe
