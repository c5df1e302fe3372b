// app_main.h — the shared main of the MPI apps (rmoe_train, rmoe_eval,
// rmoe_generate): passive OpenMP waiting, MPI start, one-line errors, and
// exit statuses (signals.h). An error may happen on one rank only, so any
// status other than done/requeue ends every rank (MPI_Abort) — no rank is
// left waiting in a collective.
#pragma once
#include <cstdio>
#include <exception>

#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"
#include "rmoe/core/threads.h"
#include "rmoe/parallel/launcher.h"
#include "rmoe/train/signals.h"

namespace rmoe {

inline int app_main(const char* name, int argc, char** argv, int (*run)(int, char**)) {
  use_passive_omp_wait(argv, ranks_on_this_node());  // before anything starts threads (see threads.h)
  mpi_init(&argc, &argv);
  int status = exit_status_done;
  try {
    status = run(argc, argv);
  } catch (const UsageError& e) {
    if (mpi_world_rank() == 0) std::fprintf(stderr, "%s: %s\n", name, e.what());  // the same on every rank
    status = exit_status_usage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error on %s: %s\n", name, host_name().c_str(), e.what());
    status = exit_status_failure;
  }
  std::fflush(stderr);
  std::fflush(stdout);
  if (status != exit_status_done && status != exit_status_requeue) mpi_abort_all(status);
  mpi_finalize();
  return status;
}

}  // namespace rmoe
