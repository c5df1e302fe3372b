# shellcheck shell=bash
# Job control shared by the Slurm templates slurm/pretrain_24l.sh and
# slurm/pretrain_cpu.sh: stop signals, settings, launch, wait, exit status,
# requeue and resume logging. Sourced, never run: sbatch runs a copy of a
# template from its spool directory, so the templates find this file as
# $RMOE_ROOT/slurm/job_control.sh. Behaviour: slurm/README.md.
#
# What a template sets before sourcing it (under `set -uo pipefail`):
#   early_signals   " USR1 TERM ..." caught by the template's own first traps
#   RMOE_SAVE_INTERVAL, RMOE_DEVICE   the template's defaults, as ${VAR:-default}
#   mpirun_x        optional: more variable names for mpirun -x, space-separated
#   RMOE_ROOT       the repository root
# and then `run_job "$@"`: runs rmoe_train with "$@" and exits with the job's status.

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  echo "slurm/job_control.sh is sourced by the slurm/ templates; submit one of them instead" >&2
  exit 2
fi

log() { echo "[rmoe-slurm $(date '+%F %T')] $*"; }

# ------------------------------------------------------------------ stop signals
# Installed as soon as this file is sourced, so that no signal kills the batch
# shell. The launcher will run in the background so that this shell can take
# signals while it runs (bash defers traps until a foreground command ends).
launcher_pid=""
phase=before  # before | running | after (rmoe_train has exited)
got_signal=""
interrupted=0
# shellcheck disable=SC2317  # called by the traps below
on_signal() {  # on_signal NAME
  interrupted=1
  # What decides about requeueing: TERM/INT (stop) wins over USR1 (pause).
  [[ $phase != after && $got_signal != TERM && $got_signal != INT ]] && got_signal=$1
  case $phase in
    before)
      log "batch shell got SIG$1 before rmoe_train started" ;;
    running)
      log "batch shell got SIG$1: sending SIGUSR1 to $RMOE_LAUNCHER (pid $launcher_pid) for rmoe_train to save and stop"
      kill -USR1 "$launcher_pid" 2>/dev/null || true ;;
    after) ;;  # e.g. the SIGTERM that ends this script when the job is requeued
  esac
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
# Signals the template's own traps noted before this file was read.
for s in ${early_signals:-}; do on_signal "$s"; done

# Relative paths are taken from the job's working directory (where sbatch ran),
# else from RMOE_ROOT: RMOE_CONFIG=configs/tiny.ini works from anywhere.
from_root() { if [[ $1 != /* && ! -e $1 && -e $RMOE_ROOT/$1 ]]; then echo "$RMOE_ROOT/$1"; else echo "$1"; fi; }
fail_usage() { log "error: $*"; exit 2; }

# ------------------------------------------------------------------ settings
# RMOE_ROOT, RMOE_SAVE_INTERVAL and RMOE_DEVICE come from the template.
job_settings() {
  RMOE_BIN=${RMOE_BIN:-$RMOE_ROOT/build/rmoe_train}
  RMOE_CONFIG=${RMOE_CONFIG:-$RMOE_ROOT/configs/pretrain_24l_rmoe.ini}
  config_name=$(basename "$RMOE_CONFIG" .ini)
  RMOE_SAVE=${RMOE_SAVE:-$RMOE_ROOT/checkpoints/$config_name}
  RMOE_KEEP_CHECKPOINTS=${RMOE_KEEP_CHECKPOINTS:-3}
  RMOE_DATA_PATH=${RMOE_DATA_PATH:-}
  RMOE_EXTRA_ARGS=${RMOE_EXTRA_ARGS:-}
  RMOE_LAUNCHER=${RMOE_LAUNCHER:-srun}
  RMOE_MPI=${RMOE_MPI:-pmix}
  RMOE_SRUN_ARGS=${RMOE_SRUN_ARGS:-}
  RMOE_MPIRUN_ARGS=${RMOE_MPIRUN_ARGS:-}
  RMOE_MAX_RESTARTS=${RMOE_MAX_RESTARTS:-100}
  RMOE_BIN=$(from_root "$RMOE_BIN")
  RMOE_CONFIG=$(from_root "$RMOE_CONFIG")
  [[ $RMOE_SAVE == /* ]] || RMOE_SAVE=$PWD/$RMOE_SAVE
  RMOE_LOAD=${RMOE_LOAD:-$RMOE_SAVE}

  cpus_per_task=${SLURM_CPUS_PER_TASK:-1}
  ntasks=${SLURM_NTASKS:-1}
  tasks_per_node=${SLURM_NTASKS_PER_NODE:-}
  tasks_per_node=${tasks_per_node%%(*}  # "8(x2)" -> "8"
  restart=${SLURM_RESTART_COUNT:-0}

  # OpenMP and OpenBLAS: the cores Slurm gave each rank (--cpus-per-task).
  export OMP_NUM_THREADS=${RMOE_OMP_THREADS:-$cpus_per_task}
  export OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
  # srun in Slurm >= 22.05 does not inherit --cpus-per-task from sbatch.
  export SRUN_CPUS_PER_TASK=$cpus_per_task
}

job_checks() {
  [[ -x $RMOE_BIN ]] || fail_usage "RMOE_BIN=$RMOE_BIN is not an executable (build rmoe or set RMOE_BIN)"
  [[ -r $RMOE_CONFIG ]] || fail_usage "RMOE_CONFIG=$RMOE_CONFIG cannot be read"
  [[ $RMOE_LAUNCHER == srun || $RMOE_LAUNCHER == mpirun ]] || fail_usage "RMOE_LAUNCHER=$RMOE_LAUNCHER (srun | mpirun)"
  mkdir -p "$RMOE_SAVE" || fail_usage "cannot create RMOE_SAVE=$RMOE_SAVE"
}

# ------------------------------------------------------------------ command
job_command() {  # job_command RMOE_TRAIN-ARGS...
  args=(--config "$RMOE_CONFIG" --device "$RMOE_DEVICE"
        --save "$RMOE_SAVE" --load "$RMOE_LOAD"
        --save-interval "$RMOE_SAVE_INTERVAL" --keep-checkpoints "$RMOE_KEEP_CHECKPOINTS")
  [[ -n $RMOE_DATA_PATH ]] && args+=(--data-path "$RMOE_DATA_PATH")
  # shellcheck disable=SC2206  # split on purpose
  args+=($RMOE_EXTRA_ARGS "$@")

  if [[ $RMOE_LAUNCHER == srun ]]; then
    # shellcheck disable=SC2206
    launch=(srun --mpi="$RMOE_MPI" --kill-on-bad-exit=1 --cpus-per-task="$cpus_per_task" $RMOE_SRUN_ARGS)
  else
    # mpirun reads the allocation from Slurm; it forwards SIGUSR1 to every rank.
    local map v
    if [[ -n $tasks_per_node ]]; then map="ppr:$tasks_per_node:node:PE=$cpus_per_task"; else map="slot:PE=$cpus_per_task"; fi
    launch=(mpirun -n "$ntasks" --map-by "$map" --bind-to core)
    for v in OMP_NUM_THREADS OPENBLAS_NUM_THREADS ${mpirun_x:-}; do launch+=(-x "$v"); done
    # shellcheck disable=SC2206
    launch+=($RMOE_MPIRUN_ARGS)
  fi
}

job_banner() {
  local f newest=""
  for f in "$RMOE_SAVE"/ckpt_*.h5; do [[ -f $f ]] && newest=${f##*/}; done  # glob order = step order
  log "job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}) run $((restart + 1)) (restart count $restart) on ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-$(hostname -s)}: $ntasks ranks x $OMP_NUM_THREADS threads"
  if [[ -n $newest ]]; then
    log "save dir $RMOE_SAVE: newest checkpoint $newest (rmoe_train resumes from it)"
  else
    log "save dir $RMOE_SAVE: no checkpoint yet (fresh start)"
  fi
  log "running: ${launch[*]} $RMOE_BIN ${args[*]}"
}

# ------------------------------------------------------------------ run
# Sets started (0: a signal came first, nothing ran) and rc.
job_launch() {
  local st
  started=0 rc=3
  if [[ -z $got_signal ]]; then
    started=1
    "${launch[@]}" "$RMOE_BIN" "${args[@]}" &
    launcher_pid=$!
    phase=running
    while :; do
      interrupted=0
      wait "$launcher_pid"
      rc=$?
      if ((interrupted && rc > 128)); then  # a trap interrupted wait
        kill -0 "$launcher_pid" 2>/dev/null && continue
        wait "$launcher_pid" 2>/dev/null; st=$?
        ((st != 127)) && rc=$st
      fi
      break
    done
  fi
  phase=after
}

# ------------------------------------------------------------------ outcome
requeue() {  # requeue WHY
  if ((restart >= RMOE_MAX_RESTARTS)); then
    log "$1; not requeueing: restart count $restart reached RMOE_MAX_RESTARTS=$RMOE_MAX_RESTARTS. Resubmit to continue."
    exit 3
  fi
  log "$1: requeueing job ${SLURM_JOB_ID:-?}; the next run resumes from $RMOE_SAVE"
  # A successful scontrol requeue ends this script at once (SIGTERM, then SIGKILL).
  if [[ -n ${SLURM_JOB_ID:-} ]] && scontrol requeue "$SLURM_JOB_ID"; then
    sleep 60 & wait $!
    exit 3
  fi
  log "scontrol requeue failed (job not requeueable? see JobRequeue in slurm.conf); resubmit to continue"
  exit 3
}
# SIGUSR1 (the time-limit warning, or `scancel --signal=USR1 --batch`) and
# --exit-interval mean "continue later": requeue. SIGTERM and SIGINT come from
# scancel (and from preemption, which Slurm requeues by itself when its
# PreemptMode says so) and mean "stop": save, but do not requeue.
no_requeue() {  # no_requeue WHY
  log "$1; not requeueing after SIG$got_signal (scancel or preemption; Slurm requeues preempted jobs itself). Resubmit to continue."
  exit 3
}
job_outcome() {  # exits with the job's status
  local why
  if ((!started)); then
    [[ $got_signal == USR1 ]] && requeue "asked to stop (SIGUSR1) before rmoe_train started"
    no_requeue "asked to stop before rmoe_train started"
  fi
  case $rc in
    0)
      log "rmoe_train exited with status 0: training done"
      exit 0 ;;
    3)
      why="rmoe_train exited with status 3 (stopped after saving a checkpoint${got_signal:+, on SIG$got_signal})"
      [[ $got_signal == TERM || $got_signal == INT ]] && no_requeue "$why"
      requeue "$why" ;;
    2)
      log "rmoe_train exited with status 2: bad usage (see the message above); not requeueing"
      exit 2 ;;
    138)
      # Killed by SIGUSR1 itself (it came before rmoe_train installed its
      # handlers): no new checkpoint, but the newest one is intact.
      [[ $got_signal == USR1 ]] && requeue "rmoe_train was killed by SIGUSR1 (status 138) before it could save"
      log "rmoe_train exited with status 138 (killed by SIGUSR1); not requeueing"
      exit 138 ;;
    *)
      log "rmoe_train exited with status $rc: failure (see the messages above); not requeueing"
      exit "$rc" ;;
  esac
}

run_job() {  # run_job RMOE_TRAIN-ARGS...
  job_settings
  job_checks
  job_command "$@"
  job_banner
  job_launch
  job_outcome
}
