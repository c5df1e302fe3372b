#!/usr/bin/env bash
# The paper's "0.91B" RMoE pre-training run (1.069B parameters with these
# shapes; see `rmoe_train --dry-run`), configs/pretrain_24l_rmoe.ini:
# 24 layers, 16 experts top-4, GRU router, seq 4096, global batch 1120, on
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
# The job control (signal forwarding, requeue, exit statuses, the log lines)
# lives in slurm/job_control.sh, shared with slurm/pretrain_cpu.sh.
# sbatch runs a copy of this script from its spool directory, so the helper is
# found as $RMOE_ROOT/slurm/job_control.sh: without it the job exits with
# status 2 (set RMOE_ROOT to the repository root).
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
# a missing binary, config or slurm/job_control.sh; no requeue); 3 stopped
# early with a checkpoint but not requeued (SIGTERM/scancel, requeue refused,
# or $RMOE_MAX_RESTARTS reached): resubmit to continue. A requeued run shows
# as state PENDING (Reason=BeginTime for ~2 minutes) and `scontrol show job`
# counts Restarts.
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
# `--device cuda` stops with a usage error (status 2; `--dry-run --device
# cuda --dry-run-ranks 8` prints the per-GPU plan). The script already
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

# A stop signal that comes before job_control.sh has its traps is noted for it.
early_signals=""
trap 'early_signals+=" USR1"' USR1; trap 'early_signals+=" TERM"' TERM; trap 'early_signals+=" INT"' INT

# This template's defaults; job_control.sh sets the other RMOE_* (listed above).
RMOE_SAVE_INTERVAL=${RMOE_SAVE_INTERVAL:-500}
RMOE_DEVICE=${RMOE_DEVICE:-cuda}  # cuda is not implemented in rmoe yet; RMOE_DEVICE=cpu runs on CPUs
# NCCL: warnings only unless asked; interfaces and HCAs are site-specific
# (export NCCL_SOCKET_IFNAME=..., NCCL_IB_HCA=... before sbatch).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
mpirun_x=NCCL_DEBUG  # mpirun passes it on (-x) besides the thread counts
# rmoe picks its GPU by node-local rank, so every rank sees all GPUs of its
# node (no --gpus-per-task binding, which would hide the NVLink peers).

# Everything else is shared with pretrain_cpu.sh. sbatch runs a copy of this
# script from its spool directory, hence RMOE_ROOT and not $0.
RMOE_ROOT=${RMOE_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
job_control=$RMOE_ROOT/slurm/job_control.sh
[[ -r $job_control ]] || { echo "[rmoe-slurm $(date '+%F %T')] error: $job_control is missing: set RMOE_ROOT to the repository root"; exit 2; }
# shellcheck source=slurm/job_control.sh
source "$job_control"
run_job "$@"
