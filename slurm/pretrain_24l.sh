#!/usr/bin/env bash
# The paper's 0.91B RMoE pre-training run (configs/pretrain_24l_rmoe.ini:
# 24 layers, 16 experts top-4, GRU router, seq 4096, global batch 1120) on
# 8-GPU A100 nodes, one MPI rank per GPU. The paper used 8 A100 = one node;
# more nodes: `sbatch --nodes=N` (1120 sequences must divide evenly over
# 8*N ranks: N = 1, 2, 4, 5, 7, 10, ...).
#
#   sbatch slurm/pretrain_24l.sh                      # from the repository root
#   sbatch -p gpu -A myproj --nodes=2 slurm/pretrain_24l.sh
#   RMOE_SAVE=/scratch/me/ck24 sbatch slurm/pretrain_24l.sh --lr 3e-4   # trailing args go to rmoe_train
#
# The job checkpoints every $RMOE_SAVE_INTERVAL steps and resumes from the
# newest checkpoint in $RMOE_SAVE on every start (--save and --load both point
# there), so the same script serves the first run and every restart.
#
# Stopping and requeueing. Slurm sends SIGUSR1 to the batch shell (this
# script) 300 s before the time limit (#SBATCH --signal=B:USR1@300); the
# script forwards it to the launcher (srun or mpirun), which forwards it to
# every rmoe_train rank. rmoe_train finishes the current step, saves a
# checkpoint and exits with status 3; the script then runs
# `scontrol requeue $SLURM_JOB_ID`, the job goes back to the queue under the
# same job id and the next run resumes. SIGTERM (scancel, preemption) and
# SIGINT are forwarded the same way (rmoe_train saves if it can before
# SIGKILL), but then the job is not requeued: scancel stops a job for good,
# and Slurm requeues preempted jobs itself (--requeue).
# Why "B:": without it Slurm signals only the job steps, not the batch shell.
# That still reaches ranks started by srun (they save and exit 3, and the
# script requeues), but not ranks that mpirun starts on the first node (they
# belong to the batch step). With "B:" only this shell gets the signal and
# forwards it, which works for both launchers. (On Slurm 22.05 a command-line
# `sbatch --signal=USR1@120` changes signal and time but keeps this line's
# "B:".) 300 s covers a step and a ~13 GB checkpoint on a parallel file
# system; raise it on slow storage (`sbatch --signal=B:USR1@600`). Slurm
# checks time limits every 30 s, so the signal may come up to ~60 s early.
#
# Exit status of the job (sacct / scontrol show job): 0 all steps done;
# 1 rmoe_train failed (no requeue: read the log); 2 bad usage (an option,
# a missing binary or config; no requeue); 3 stopped early with a checkpoint
# but not requeued (SIGTERM/scancel, requeue refused, or $RMOE_MAX_RESTARTS
# reached): resubmit to continue. A requeued run shows as state PENDING
# (Reason=BeginTime for ~2 minutes) and `scontrol show job` counts Restarts.
#
# Everything site-specific can be changed without editing this file:
#  - sbatch options on the command line override the #SBATCH lines below, and
#    so do sbatch's input environment variables (SBATCH_PARTITION,
#    SBATCH_ACCOUNT, SBATCH_QOS, SBATCH_TIMELIMIT, SBATCH_SIGNAL, ...).
#    No partition or account is set here: use -p/-A or those variables.
#  - RMOE_* environment variables (sbatch exports the submitting shell's
#    environment, and a requeued run sees the same values):
#      RMOE_ROOT            repository root               (default: the directory sbatch ran in)
#      RMOE_BIN             rmoe_train binary             ($RMOE_ROOT/build/rmoe_train)
#      RMOE_CONFIG          INI config                    ($RMOE_ROOT/configs/pretrain_24l_rmoe.ini)
#      RMOE_SAVE            checkpoint directory          ($RMOE_ROOT/checkpoints/<config name>)
#      RMOE_LOAD            directory or file to resume from ($RMOE_SAVE)
#      RMOE_SAVE_INTERVAL   steps between checkpoints     (500)
#      RMOE_KEEP_CHECKPOINTS newest checkpoints kept      (3)
#      RMOE_DEVICE          --device                      (cuda)
#      RMOE_DATA_PATH       --data-path, if set           (the config's)
#      RMOE_EXTRA_ARGS      more rmoe_train options, split on spaces (none)
#      RMOE_LAUNCHER        srun | mpirun                 (srun)
#      RMOE_MPI             srun --mpi= plugin            (pmix)
#      RMOE_SRUN_ARGS       more srun options, e.g. "--cpu-bind=cores" (none)
#      RMOE_MPIRUN_ARGS     more mpirun options           (none)
#      RMOE_OMP_THREADS     OpenMP/OpenBLAS threads per rank ($SLURM_CPUS_PER_TASK)
#      RMOE_MAX_RESTARTS    requeue at most this many times (100)
#    and NCCL_* variables (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) pass through.
#
# NOTE: rmoe's CUDA backend is not implemented yet (CPU only for now):
# `--device cuda` stops with a usage error (status 2). The script already
# passes --device from RMOE_DEVICE (default cuda); run it on CPUs with
# RMOE_DEVICE=cpu, or use slurm/pretrain_cpu.sh. See slurm/README.md.
#
#SBATCH --job-name=rmoe-24l
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

set -uo pipefail

log() { echo "[rmoe-slurm $(date '+%F %T')] $*"; }

# ------------------------------------------------------------------ stop signals
# Installed first, so that no signal kills this shell. The launcher will run
# in the background so that this shell can take signals while it runs (bash
# defers traps until a foreground command ends).
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

# ------------------------------------------------------------------ settings
RMOE_ROOT=${RMOE_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
RMOE_BIN=${RMOE_BIN:-$RMOE_ROOT/build/rmoe_train}
RMOE_CONFIG=${RMOE_CONFIG:-$RMOE_ROOT/configs/pretrain_24l_rmoe.ini}
config_name=$(basename "$RMOE_CONFIG" .ini)
RMOE_SAVE=${RMOE_SAVE:-$RMOE_ROOT/checkpoints/$config_name}
RMOE_SAVE_INTERVAL=${RMOE_SAVE_INTERVAL:-500}
RMOE_KEEP_CHECKPOINTS=${RMOE_KEEP_CHECKPOINTS:-3}
RMOE_DEVICE=${RMOE_DEVICE:-cuda}  # cuda is not implemented in rmoe yet; RMOE_DEVICE=cpu runs on CPUs
RMOE_DATA_PATH=${RMOE_DATA_PATH:-}
RMOE_EXTRA_ARGS=${RMOE_EXTRA_ARGS:-}
RMOE_LAUNCHER=${RMOE_LAUNCHER:-srun}
RMOE_MPI=${RMOE_MPI:-pmix}
RMOE_SRUN_ARGS=${RMOE_SRUN_ARGS:-}
RMOE_MPIRUN_ARGS=${RMOE_MPIRUN_ARGS:-}
RMOE_MAX_RESTARTS=${RMOE_MAX_RESTARTS:-100}
# Relative paths are taken from the job's working directory (where sbatch ran),
# else from RMOE_ROOT: RMOE_CONFIG=configs/tiny.ini works from anywhere.
from_root() { if [[ $1 != /* && ! -e $1 && -e $RMOE_ROOT/$1 ]]; then echo "$RMOE_ROOT/$1"; else echo "$1"; fi; }
RMOE_BIN=$(from_root "$RMOE_BIN")
RMOE_CONFIG=$(from_root "$RMOE_CONFIG")
[[ $RMOE_SAVE == /* ]] || RMOE_SAVE=$PWD/$RMOE_SAVE
RMOE_LOAD=${RMOE_LOAD:-$RMOE_SAVE}

cpus_per_task=${SLURM_CPUS_PER_TASK:-1}
ntasks=${SLURM_NTASKS:-1}
tasks_per_node=${SLURM_NTASKS_PER_NODE:-}
tasks_per_node=${tasks_per_node%%(*}  # "8(x2)" -> "8"
restart=${SLURM_RESTART_COUNT:-0}

# ------------------------------------------------------------------ environment
# OpenMP and OpenBLAS: the cores Slurm gave each rank (--cpus-per-task).
export OMP_NUM_THREADS=${RMOE_OMP_THREADS:-$cpus_per_task}
export OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
# srun in Slurm >= 22.05 does not inherit --cpus-per-task from sbatch.
export SRUN_CPUS_PER_TASK=$cpus_per_task
# NCCL: warnings only unless asked; interfaces and HCAs are site-specific
# (export NCCL_SOCKET_IFNAME=..., NCCL_IB_HCA=... before sbatch).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# rmoe picks its GPU by node-local rank, so every rank sees all GPUs of its
# node (no --gpus-per-task binding, which would hide the NVLink peers).

# ------------------------------------------------------------------ checks
fail_usage() { log "error: $*"; exit 2; }
[[ -x $RMOE_BIN ]] || fail_usage "RMOE_BIN=$RMOE_BIN is not an executable (build rmoe or set RMOE_BIN)"
[[ -r $RMOE_CONFIG ]] || fail_usage "RMOE_CONFIG=$RMOE_CONFIG cannot be read"
[[ $RMOE_LAUNCHER == srun || $RMOE_LAUNCHER == mpirun ]] || fail_usage "RMOE_LAUNCHER=$RMOE_LAUNCHER (srun | mpirun)"
mkdir -p "$RMOE_SAVE" || fail_usage "cannot create RMOE_SAVE=$RMOE_SAVE"

# ------------------------------------------------------------------ command
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
  if [[ -n $tasks_per_node ]]; then map="ppr:$tasks_per_node:node:PE=$cpus_per_task"; else map="slot:PE=$cpus_per_task"; fi
  # shellcheck disable=SC2206
  launch=(mpirun -n "$ntasks" --map-by "$map" --bind-to core
          -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x NCCL_DEBUG $RMOE_MPIRUN_ARGS)
fi

newest=""
for f in "$RMOE_SAVE"/ckpt_*.h5; do [[ -f $f ]] && newest=${f##*/}; done  # glob order = step order
log "job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}) run $((restart + 1)) (restart count $restart) on ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-$(hostname -s)}: $ntasks ranks x $OMP_NUM_THREADS threads"
if [[ -n $newest ]]; then
  log "save dir $RMOE_SAVE: newest checkpoint $newest (rmoe_train resumes from it)"
else
  log "save dir $RMOE_SAVE: no checkpoint yet (fresh start)"
fi
log "running: ${launch[*]} $RMOE_BIN ${args[*]}"

# ------------------------------------------------------------------ run

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
