#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on this machine, for trying and
# testing the job scripts in slurm/ (tests/cli/slurm_e2e.sh uses it).
#
#   scripts/slurm_local.sh [start]   install (if missing), configure and start munged,
#                                    slurmctld and slurmd; wait until the node is idle
#   scripts/slurm_local.sh stop      cancel every job, stop the daemons, kill leftovers
#   scripts/slurm_local.sh status    daemons, sinfo and squeue
#   scripts/slurm_local.sh env       print the line to eval:  eval "$(scripts/slurm_local.sh env)"
#
# After `start`, point the Slurm commands at this cluster with
#   export SLURM_CONF=/tmp/rmoe-slurm/slurm.conf      (the start command prints it)
# then sbatch, squeue, scontrol, scancel and srun work as on a real cluster.
#
# Needs root (SlurmUser=root; apt-get). Installs Debian's slurmctld, slurmd,
# slurm-client and munge when missing (apt-get, waits for the dpkg lock), and
# nothing else. Everything it writes lives under one state directory,
# $RMOE_SLURM_DIR (default /tmp/rmoe-slurm), wiped on every start: munge key
# and socket, slurm.conf, mpi.conf (pmix's client directories go under pmix/
# instead of /tmp), controller state, slurmd spool, pid and log files
# (log/slurmctld.log, log/slurmd.log, munge/munged.log, log/apt.log). It uses
# its own munge socket and its own ports, so a system munge or Slurm is left
# alone, and two clusters with different RMOE_SLURM_DIR and RMOE_SLURM_PORT
# can run side by side (tests/cli/slurm_e2e.sh starts its own).
#
# The node: NodeName = `hostname -s`, NodeAddr 127.0.0.1, one partition
# "debug". Without systemd or cgroups: ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none, no accounting. It declares
# max(nproc, $RMOE_SLURM_CPUS) CPUs (SlurmdParameters=config_overrides), so a
# 2-core machine can run a few small jobs at once (the cores are shared: give
# each task OMP_NUM_THREADS=1). MpiDefault=pmix when the pmix plugin exists
# (`srun --mpi=pmix` works with Debian's Open MPI; pmi2 does not). A requeued
# job waits cred_expire+1 seconds before it may start again: 121 s by default
# in Slurm, $RMOE_SLURM_REQUEUE_DELAY (default 10) here.
#
# Environment (all optional): RMOE_SLURM_DIR, RMOE_SLURM_CPUS (default 8),
# RMOE_SLURM_PORT (slurmctld port, default 16817; slurmd uses the next one),
# RMOE_SLURM_REQUEUE_DELAY (default 10), RMOE_SLURM_TIMEOUT (seconds to wait
# for each daemon, default 60).
#
# Exit status: 0 ok; 1 the daemons did not start (the logs' tails are printed);
# 2 bad usage; 77 Slurm or munge is not installed and cannot be installed here
# (not root, no apt-get, no package mirror): callers treat that as "skip".
set -uo pipefail

action=${1:-start}
dir=${RMOE_SLURM_DIR:-/tmp/rmoe-slurm}
cpus_min=${RMOE_SLURM_CPUS:-8}
ctld_port=${RMOE_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
requeue_delay=${RMOE_SLURM_REQUEUE_DELAY:-10}
wait_s=${RMOE_SLURM_TIMEOUT:-60}
conf=$dir/slurm.conf
node=$(hostname -s)

say() { echo "slurm_local: $*"; }
die() { local st=$1; shift; echo "slurm_local: $*" >&2; exit "$st"; }

# ---------------------------------------------------------------- helpers

# The pid in FILE if that process is alive and its command line contains NAME.
live_pid() {  # live_pid FILE NAME
  local pid
  [[ -r $1 ]] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  grep -qz -- "$2" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# Waits up to SECONDS for PID to exit; then SIGKILL.
stop_pid() {  # stop_pid PID WHAT SECONDS
  local pid=$1 what=$2 t=$3 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { say "stopped $what (pid $pid)"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  say "killed $what (pid $pid) after ${t}s"
}

# Processes started by this cluster that outlived it: slurmstepd and job
# processes carry SLURM_CONF=<our conf> in their environment (job processes
# also SLURM_JOB_ID). Never this script or its ancestors.
leftover_pids() {
  local self_and_parents=" $$ " p=$$ pid env
  while [[ $p -gt 1 ]]; do
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || break
    [[ -n $p ]] || break
    self_and_parents+="$p "
  done
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}; pid=${pid%/environ}
    [[ $self_and_parents == *" $pid "* ]] && continue
    grep -qzx "SLURM_CONF=$conf" "$env" 2>/dev/null || continue
    if grep -qz '^SLURM_JOB_ID=' "$env" 2>/dev/null || grep -qz slurmstepd "/proc/$pid/cmdline" 2>/dev/null; then
      echo "$pid"
    fi
  done
}

stop_all() {
  local pid
  if [[ -r $conf ]] && live_pid "$dir/slurmctld.pid" slurmctld >/dev/null; then
    SLURM_CONF=$conf timeout 10 scancel --quiet --full --user=root 2>/dev/null || true
    SLURM_CONF=$conf timeout 10 scancel --quiet --user=root 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do  # up to 10 s for jobs to end
      [[ -z $(SLURM_CONF=$conf timeout 5 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  pid=$(live_pid "$dir/slurmd.pid" slurmd) && stop_pid "$pid" slurmd 10
  pid=$(live_pid "$dir/slurmctld.pid" slurmctld) && stop_pid "$pid" slurmctld 10
  pid=$(live_pid "$dir/munge/munged.pid" munged) && stop_pid "$pid" munged 5
  local left
  mapfile -t left < <(leftover_pids)
  if [[ ${#left[@]} -gt 0 ]]; then
    say "killing leftover job processes: ${left[*]}"
    kill -9 "${left[@]}" 2>/dev/null || true
  fi
  # A start that failed half-way may have left daemons without pid files.
  for name in slurmd slurmctld; do
    for pid in $(pgrep -x "$name" 2>/dev/null); do
      grep -qzx "SLURM_CONF=$conf" "/proc/$pid/environ" 2>/dev/null && stop_pid "$pid" "$name" 5
    done
  done
  for pid in $(pgrep -x munged 2>/dev/null); do
    grep -qz -- "--socket=$dir/munge/" "/proc/$pid/cmdline" 2>/dev/null && stop_pid "$pid" munged 5
  done
  return 0
}

show_logs() {
  local f
  for f in "$dir/munge/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log" "$dir/log/"*.stderr; do
    [[ -s $f ]] || continue
    echo "----- tail of $f"
    tail -n 15 "$f"
  done
}

# Waits up to $wait_s seconds for COMMAND to succeed.
wait_for() {  # wait_for WHAT COMMAND...
  local what=$1 i
  shift
  for ((i = 0; i < wait_s * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "slurm_local: timed out after ${wait_s}s waiting for $what" >&2
  show_logs >&2
  stop_all >&2
  exit 1
}

plugin_dir() {
  local d
  for d in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib/"$(uname -m)"-linux-gnu/slurm-wlm /usr/lib64/slurm /usr/lib/slurm; do
    [[ -e $d/select_linear.so ]] && { echo "$d"; return 0; }
  done
  return 1
}

install_packages() {
  local need=()
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v slurmd >/dev/null || need+=(slurmd)
  command -v sbatch >/dev/null || need+=(slurm-client)
  command -v munged >/dev/null || need+=(munge)
  [[ ${#need[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die 77 "Slurm is not installed (${need[*]} missing) and installing it needs root"
  command -v apt-get >/dev/null || die 77 "Slurm is not installed (${need[*]} missing) and there is no apt-get"
  say "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
  # The package scripts try to start the services; without systemd they only warn.
  local apt_log=$dir/log/apt.log
  if ! apt-get install "${opts[@]}" "${need[@]}" >"$apt_log" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update -q >>"$apt_log" 2>&1
    apt-get install "${opts[@]}" "${need[@]}" >>"$apt_log" 2>&1 || {
      tail -n 5 "$apt_log" >&2
      die 77 "apt-get could not install ${need[*]} (log: $apt_log)"
    }
  fi
  for c in slurmctld slurmd sbatch munged mungekey; do
    command -v "$c" >/dev/null || die 77 "$c is still missing after installing ${need[*]}"
  done
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

write_conf() {
  local cpus mem_mb mpi=none pdir
  cpus=$(nproc)
  ((cpus < cpus_min)) && cpus=$cpus_min
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  ((mem_mb > 4096)) && mem_mb=4096
  pdir=$(plugin_dir) || pdir=""
  [[ -n $pdir && -e $pdir/mpi_pmix.so ]] && mpi=pmix
  cat >"$conf" <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster. Do not use in production.
ClusterName=rmoe-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
# Our own munged; cred_expire also sets how long a requeued job waits to start again.
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=$requeue_delay
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No systemd, no cgroups in containers: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=$mpi
ReturnToService=2
# Trust the CPU count below even where the hardware has fewer cores.
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=600
JobRequeue=1
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # pmix's per-step client directories default to /tmp/spmix_appdir_<uid>_<job>.<step>,
  # which two local clusters (both counting jobs from 1) would share.
  mkdir -p "$dir/pmix"
  echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"
}

start_all() {
  stop_all >/dev/null
  rm -rf "$dir"
  mkdir -p "$dir"/{munge,state,spool,log} || die 1 "cannot create $dir"
  install_packages
  local p
  for p in $ctld_port $slurmd_port; do
    port_busy "$p" && die 1 "port $p is in use (another Slurm?); set RMOE_SLURM_PORT to a free port"
  done
  chmod 755 "$dir" "$dir/munge"   # munged insists that no one else can write the socket's directory
  write_conf
  export SLURM_CONF=$conf

  # munge: our own key and socket.
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1
  fi
  [[ -s $dir/munge/munge.key ]] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 600 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/munge/munged.log" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" >"$dir/log/munged.stderr" 2>&1 || {
    show_logs >&2; die 1 "munged did not start"; }
  wait_for "munged" bash -c "munge -S '$dir/munge/munge.socket' -n | unmunge -S '$dir/munge/munge.socket'"

  # slurmctld and slurmd fork into the background (no systemd needed) and write pid files.
  slurmctld -i >"$dir/log/slurmctld.stderr" 2>&1 || { show_logs >&2; stop_all >&2; die 1 "slurmctld did not start"; }
  wait_for "slurmctld to answer" timeout 5 scontrol ping
  slurmd >"$dir/log/slurmd.stderr" 2>&1 || { show_logs >&2; stop_all >&2; die 1 "slurmd did not start"; }
  wait_for "node $node to become idle" bash -c "timeout 5 sinfo -h -n '$node' -o %t | grep -qx idle"
  say "Slurm is up: node $node ($(sinfo -h -n "$node" -o %c) CPUs), partition debug, MpiDefault=$(scontrol show config | awk '/^MpiDefault/ {print $3}')"
  say "state and logs in $dir; stop with: $0 stop"
  echo "export SLURM_CONF=$conf"
}

case $action in
  start) start_all ;;
  stop)
    stop_all
    say "stopped (state kept in $dir)" ;;
  status)
    for d in munged:munge/munged.pid slurmctld:slurmctld.pid slurmd:slurmd.pid; do
      pid=$(live_pid "$dir/${d#*:}" "${d%%:*}") && echo "${d%%:*}: running (pid $pid)" || echo "${d%%:*}: not running"
    done
    if [[ -r $conf ]]; then
      SLURM_CONF=$conf timeout 5 sinfo 2>&1
      SLURM_CONF=$conf timeout 5 squeue 2>&1
    fi ;;
  env) echo "export SLURM_CONF=$conf" ;;
  -h | --help | help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die 2 "unknown action '$action' (start | stop | status | env | help)" ;;
esac
