// signals.h — stop a run gracefully on SIGTERM, SIGINT or SIGUSR1, and the
// exit statuses of rmoe_train that a requeueing job script relies on.
//
// install_stop_signal_handlers() makes those three signals set a flag instead
// of killing the process. The training loop polls the flag once per step
// (under MPI through stop_requested_any, so all ranks agree), finishes the
// step, saves a checkpoint and exits with exit_status_requeue. A second
// SIGINT (Ctrl-C twice) stops at once; repeated SIGTERM/SIGUSR1 (Slurm and
// mpirun may both deliver one) only keep the flag set. The handler writes one
// line on stderr, "rmoe: rank R caught SIGTERM: stopping after the step in
// progress"; the training loop then says which rank got which signal and
// whether it saved (src/apps/train_loop.h, stop_after).
//
// Slurm: `#SBATCH --signal=USR1@120` sends SIGUSR1 to the job steps two
// minutes before the time limit (mpirun forwards SIGUSR1 to every rank); on
// preemption Slurm sends SIGTERM and kills KillWait seconds later. A script
//   srun rmoe_train --save ck --load ck ...; rc=$?
//   if [ $rc -eq 3 ]; then scontrol requeue $SLURM_JOB_ID; fi; exit $rc
// serves the first run and every requeue.
//
// Tested by tests/test_checkpoint.cpp (raise sets the flag; a child process
// that gets SIGUSR1 saves and exits with exit_status_requeue).
#pragma once

namespace rmoe {

class Comm;

// Exit statuses of rmoe_train.
constexpr int exit_status_done = 0;     // reached --train-iters
constexpr int exit_status_failure = 1;  // an error (the message says what)
constexpr int exit_status_usage = 2;    // a bad option or value (one line naming it)
constexpr int exit_status_requeue = 3;  // stopped before --train-iters after saving a checkpoint (a
                                        // signal, or --exit-interval): run again with --load to continue

// Installs the handlers for SIGTERM, SIGINT and SIGUSR1 (idempotent).
void install_stop_signal_handlers();
// Whether one of those signals arrived since the start (or clear_stop_request).
bool stop_requested();
// The first such signal's number (SIGTERM, SIGINT, SIGUSR1), 0 if none.
int stop_signal();
// Forgets a received signal (tests).
void clear_stop_request();
// Collective over comm: true on every rank if any rank received a stop signal.
bool stop_requested_any(Comm& comm);

// Collective over comm: the lowest rank of comm that received a stop signal
// and that signal (signal 0, rank -1: none), the same on every rank.
struct StopRequest {
  int signal = 0;
  int rank = -1;
};
StopRequest stop_request_any(Comm& comm);
// "SIGTERM", "SIGINT", "SIGUSR1" ("no signal" for 0), for messages.
const char* stop_signal_name(int sig);

// The process is ending after an error (the apps' main calls it before it
// waits or aborts the other ranks): from now on SIGTERM, SIGINT and SIGUSR1
// end it at once, silently (their default action), instead of promising to
// finish a step: such a signal then comes from the launcher ending the job
// (this rank's own MPI_Abort, or another's), and there is nothing to save.
void end_on_stop_signals();

}  // namespace rmoe
