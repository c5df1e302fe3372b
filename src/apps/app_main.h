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
// of all); MPI is started and finalized; an error is reported by the rank
// that has it (below); and any status other than done or requeue ends every
// rank (MPI_Abort), because an error may happen on one rank only and no rank
// may be left waiting in a collective. The failing rank prints its line on
// stderr (non-root ranks' stdout may be /dev/null) before it aborts the
// others.
//
// Which rank prints what, under MPI with P > 1 ranks (P = 1: "NAME: message"
// for a UsageError, "NAME: error on HOST: message" otherwise):
//  - any failure (not a UsageError), and an InputError (error.h: a dataset,
//    shard or tokenizer file this rank read, which another node may not
//    see): printed at once by the rank that has it, whatever its rank:
//    "NAME: rank R (HOST): error: message" / "NAME: rank R (HOST): message".
//  - any other UsageError is taken to be a bad option or value, which every
//    rank of an SPMD run finds identically while parsing the same command
//    line: rank 0 prints "NAME: message" at once and aborts the others. Any
//    other rank waits kUsageErrorGraceSeconds first: in the SPMD case rank 0's
//    MPI_Abort ends it within that time, silently, so the line appears once.
//    If it is still running (rank 0 did not fail: the error was this rank's
//    own, e.g. an MPMD command line `mpirun -n 1 A : -n 1 B`, or a file check
//    outside the data layer that threw a plain UsageError), it prints
//    "NAME: rank R (HOST): message" and aborts. The only cost of a wrong
//    guess is that delay (or, if rank 0 is that slow, one duplicate line).
// rmoe_prepare and rmoe_ckpt run in one process without MPI (app_main links
// nothing of MPI in).
//
// Both close HDF5 before the process exits (h5::close_library: every object
// still open, then the library). When HDF5 failed to close a file (a write to
// a full disk), closing the library would crash on it, and so would HDF5's
// own exit handler (h5.h): the process then ends at once with its status,
// without exit handlers (std::_Exit), after flushing stdout and stderr.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/train/signals.h"

namespace rmoe {

// Who is reporting: one process (ranks 0), or rank `rank` of `ranks` on `host`.
struct ErrorReport {
  int rank = 0, ranks = 0;  // ranks 0: an app without MPI
  std::string host;
};

// What run_and_report leaves to its caller: the status and, on a rank other
// than 0 with a plain UsageError (see the file comment), the line to print
// if the process is still alive after kUsageErrorGraceSeconds.
struct RunOutcome {
  int status = exit_status_done;
  std::string deferred_line;
};

inline constexpr int kUsageErrorGraceSeconds = 3;

// Runs run(argc, argv) and maps its exceptions to a line and a status (see
// the file comment for the forms of the line).
inline RunOutcome run_and_report(const char* name, const ErrorReport& report, int argc, char** argv,
                                 int (*run)(int, char**)) {
  RunOutcome out;
  const bool several = report.ranks > 1;
  const std::string who = std::string(name) + ": " +
                          (several ? "rank " + std::to_string(report.rank) + " (" + report.host + "): " : "");
  std::string line;
  try {
    out.status = run(argc, argv);
  } catch (const UsageError& e) {
    out.status = exit_status_usage;
    const bool own_input = dynamic_cast<const InputError*>(&e) != nullptr;
    if (!several || (report.rank == 0 && !own_input))
      line = std::string(name) + ": " + e.what();
    else if (own_input)
      line = who + e.what();
    else
      out.deferred_line = who + e.what();
  } catch (const std::exception& e) {
    out.status = exit_status_failure;
    line = several || report.ranks == 0 ? who + "error: " + e.what()
                                        : std::string(name) + ": error on " + report.host + ": " + e.what();
  }
  std::fflush(stdout);  // what the app printed comes first
  if (!line.empty()) std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  return out;
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
  const int status = run_and_report(name, ErrorReport{}, argc, argv, run).status;
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
  use_thread_defaults(argv, ranks_on_this_node());  // before anything starts threads (see threads.h)
  mpi_init(&argc, &argv);
  const ErrorReport report{mpi_world_rank(), mpi_world()->size(), host_name()};
  const RunOutcome outcome = run_and_report(name, report, argc, argv, run);
  const int status = outcome.status;
  const bool hdf5_closed = h5::close_library();
  const bool failed = status != exit_status_done && status != exit_status_requeue;
  if (failed) end_on_stop_signals();  // the launcher's SIGTERM (an abort) ends this rank quietly (signals.h)
  if (!outcome.deferred_line.empty()) {  // rank 0 has it too, unless this rank's own (file comment)
    std::this_thread::sleep_for(std::chrono::seconds(kUsageErrorGraceSeconds));
    std::fprintf(stderr, "%s\n", outcome.deferred_line.c_str());
    std::fflush(stderr);
  }
  if (failed && report.ranks > 1) mpi_abort_all(status);
  mpi_finalize();
  if (!hdf5_closed) close_hdf5_or_quit(status);  // quits: close_library declines again
  return status;
}

}  // namespace rmoe
