#!/usr/bin/env bash
# rmoe pre-training on a CPU cluster: MPI ranks over nodes, OpenMP + OpenBLAS
# threads inside each rank. Default: one rank per socket of a 2-socket node
# (--ntasks-per-node=2, --cpus-per-task=16 cores each); one rank per N cores
# instead: `sbatch --ntasks-per-node=C/N --cpus-per-task=N` (C = cores per
# node). OMP_NUM_THREADS and OPENBLAS_NUM_THREADS follow --cpus-per-task.
# The global batch must divide evenly over the ranks (micro-batch x ranks).
#
#   sbatch slurm/pretrain_cpu.sh                      # from the repository root
#   sbatch -p cpu -A myproj --nodes=4 slurm/pretrain_cpu.sh
#   RMOE_CONFIG=configs/medium_char_rmoe.ini RMOE_SAVE=/scratch/me/ck sbatch slurm/pretrain_cpu.sh
#   sbatch slurm/pretrain_cpu.sh --train-iters 1000   # trailing args go to rmoe_train
#
# Same behaviour as slurm/pretrain_24l.sh (the GPU template; see it and
# slurm/README.md), from the same code: slurm/job_control.sh, which this
# script sources from $RMOE_ROOT (sbatch runs a copy of the script from its
# spool directory, so not from $0; without the helper the job exits 2).
# Checkpoints every $RMOE_SAVE_INTERVAL steps to $RMOE_SAVE and resumes from
# there on every start; SIGUSR1 reaches this batch shell 300 s before the
# time limit (#SBATCH --signal=B:USR1@300) and is forwarded to srun/mpirun and
# by them to every rank; rmoe_train finishes the step, saves, exits 3, and
# the script runs `scontrol requeue $SLURM_JOB_ID` so the next run resumes.
# SIGTERM/SIGINT (scancel, preemption) are forwarded alike but do not requeue
# (Slurm requeues preempted jobs itself). "B:" because only the batch shell
# can requeue and because ranks that mpirun starts on the first node are not
# job steps (slurm/README.md). A CPU step of a large model can take minutes:
# make the lead time (`sbatch --signal=B:USR1@900`) cover one step plus one
# checkpoint save.
#
# Exit status of the job: 0 all steps done; 1 rmoe_train failed (no requeue);
# 2 bad usage (option, missing binary, config or slurm/job_control.sh; no
# requeue); 3 stopped early with a checkpoint but not requeued
# (SIGTERM/scancel, requeue refused or $RMOE_MAX_RESTARTS reached): resubmit
# to continue.
#
# Site-specific values without editing this file: sbatch command-line options
# and SBATCH_* variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT,
# ...) override the #SBATCH lines (no partition or account is set here), and
#      RMOE_ROOT            repository root               (default: the directory sbatch ran in)
#      RMOE_BIN             rmoe_train binary             ($RMOE_ROOT/build/rmoe_train)
#      RMOE_CONFIG          INI config                    ($RMOE_ROOT/configs/pretrain_24l_rmoe.ini)
#      RMOE_SAVE            checkpoint directory          ($RMOE_ROOT/checkpoints/<config name>)
#      RMOE_LOAD            directory or file to resume from ($RMOE_SAVE)
#      RMOE_SAVE_INTERVAL   steps between checkpoints     (100)
#      RMOE_KEEP_CHECKPOINTS newest checkpoints kept      (3)
#      RMOE_DEVICE          --device                      (cpu)
#      RMOE_DATA_PATH       --data-path, if set           (the config's)
#      RMOE_EXTRA_ARGS      more rmoe_train options, split on spaces (none)
#      RMOE_LAUNCHER        srun | mpirun                 (srun)
#      RMOE_MPI             srun --mpi= plugin            (pmix)
#      RMOE_SRUN_ARGS       more srun options, e.g. "--cpu-bind=cores" (none)
#      RMOE_MPIRUN_ARGS     more mpirun options           (none)
#      RMOE_OMP_THREADS     OpenMP/OpenBLAS threads per rank ($SLURM_CPUS_PER_TASK)
#      RMOE_MAX_RESTARTS    requeue at most this many times (100)
# are read from the environment (sbatch exports it; a requeued run sees the
# values of the submission).
#
#SBATCH --job-name=rmoe-cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=16
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
RMOE_SAVE_INTERVAL=${RMOE_SAVE_INTERVAL:-100}
RMOE_DEVICE=${RMOE_DEVICE:-cpu}

# Everything else is shared with pretrain_24l.sh. sbatch runs a copy of this
# script from its spool directory, hence RMOE_ROOT and not $0.
RMOE_ROOT=${RMOE_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
job_control=$RMOE_ROOT/slurm/job_control.sh
[[ -r $job_control ]] || { echo "[rmoe-slurm $(date '+%F %T')] error: $job_control is missing: set RMOE_ROOT to the repository root"; exit 2; }
# shellcheck source=slurm/job_control.sh
source "$job_control"
run_job "$@"
