// launcher.cpp — see launcher.h.
#include "rmoe/parallel/launcher.h"

#include <algorithm>
#include <cstdlib>

namespace rmoe {

int ranks_on_this_node() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(name)) return std::max(1, std::atoi(v));
  return 1;
}

}  // namespace rmoe
