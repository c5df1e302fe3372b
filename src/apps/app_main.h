// app_main.h — the one main of every rmoe app: run, turn an exception into
// one line on stderr and an exit status (signals.h).
//
//   int main(int argc, char** argv) { return rmoe::app_main("rmoe_prepare", argc, argv, run); }      // one process
//   int main(int argc, char** argv) { return rmoe::mpi_app_main("rmoe_train", argc, argv, run); }    // MPI
//
// run() returns the exit status (0 done, 3 requeue; rmoe_ckpt diff: 3 the
// checkpoints differ). A UsageError ends with "NAME: message" and status 2,
// any other exception with "NAME: error: message" and status 1; stdout is
// flushed first, so what the app printed comes before the error.
//
// The MPI apps (rmoe_train, rmoe_eval, rmoe_generate) differ in four ways:
// OpenMP waits passively (threads.h: before anything starts threads, so first
// of all); MPI is started and finalized; an error line names the host
// ("NAME: error on HOST: message") and a usage error is printed by rank 0 only
// (every rank has the same one); and any status other than done or requeue
// ends every rank (MPI_Abort), because an error may happen on one rank only
// and no rank may be left waiting in a collective.
// rmoe_prepare and rmoe_ckpt run in one process without MPI (app_main links
// nothing of MPI in).
//
// Both close HDF5 before the process exits (h5::close_library: every object
// still open, then the library). When HDF5 failed to close a file (a write to
// a full disk), closing the library would crash on it, and so would HDF5's
// own exit handler (h5.h): the process then ends at once with its status,
// without exit handlers (std::_Exit), after flushing stdout and stderr.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/train/signals.h"

namespace rmoe {

// How an app reports an exception from run().
struct ErrorReport {
  bool print_usage_errors = true;  // false on MPI ranks other than 0
  std::string failure = "error";   // "NAME: <failure>: message"; "error on HOST" under MPI
};

// Runs run(argc, argv) and maps its exceptions to a line and a status.
inline int run_and_report(const char* name, const ErrorReport& report, int argc, char** argv,
                          int (*run)(int, char**)) {
  int status = exit_status_done;
  try {
    status = run(argc, argv);
  } catch (const UsageError& e) {
    std::fflush(stdout);
    if (report.print_usage_errors) std::fprintf(stderr, "%s: %s\n", name, e.what());
    status = exit_status_usage;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s: %s\n", name, report.failure.c_str(), e.what());
    status = exit_status_failure;
  }
  std::fflush(stderr);
  std::fflush(stdout);
  return status;
}

// Ends the process with `status` now, without exit handlers, unless HDF5 could
// be closed (see the file comment).
inline void close_hdf5_or_quit(int status) {
  if (h5::close_library()) return;
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(status);
}

// One process, no MPI (rmoe_prepare, rmoe_ckpt).
inline int app_main(const char* name, int argc, char** argv, int (*run)(int, char**)) {
  const int status = run_and_report(name, ErrorReport{}, argc, argv, run);
  close_hdf5_or_quit(status);
  return status;
}

}  // namespace rmoe

// ---- the MPI apps ---------------------------------------------------------------
#include "rmoe/core/threads.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/launcher.h"

namespace rmoe {

// rmoe_train, rmoe_eval, rmoe_generate (see the file comment).
inline int mpi_app_main(const char* name, int argc, char** argv, int (*run)(int, char**)) {
  use_passive_omp_wait(argv, ranks_on_this_node());  // before anything starts threads (see threads.h)
  mpi_init(&argc, &argv);
  const ErrorReport report{mpi_world_rank() == 0, "error on " + host_name()};
  const int status = run_and_report(name, report, argc, argv, run);
  const bool hdf5_closed = h5::close_library();
  if (status != exit_status_done && status != exit_status_requeue && mpi_world()->size() > 1)
    mpi_abort_all(status);
  mpi_finalize();
  if (!hdf5_closed) close_hdf5_or_quit(status);  // quits: close_library declines again
  return status;
}

}  // namespace rmoe
