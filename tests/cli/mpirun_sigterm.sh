#!/usr/bin/env bash
# Stopping an mpirun run with a signal (README "Checkpoints"):
#  1. SIGTERM to mpirun itself, with the documented launcher setting
#     --mca odls_base_sigkill_timeout S. Open MPI 4.1's mpirun answers SIGTERM
#     by ending the job: SIGCONT to the ranks, S seconds, SIGTERM, S seconds,
#     SIGKILL (default S = 1: too short for a step plus a save, and the ranks
#     were killed mid-save). With S covering a step plus a save, the ranks
#     finish the step, save it and exit 3, and the checkpoint of the stop step
#     is complete; mpirun itself exits 1 whatever the ranks did (Open MPI sets
#     its status as soon as it is signalled).
#  2. SIGUSR1 to mpirun: forwarded to every rank at once; they save and exit
#     3, and so does mpirun (what slurm/job_control.sh sends it).
#  3. SIGUSR1 to rank 1 only: every rank stops after the same step; rank 0,
#     which got no signal, says which rank got which one (not "signal 0").
# Usage: mpirun_sigterm.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
launcher=""
cleanup() {
  [[ -n $launcher ]] && kill -KILL "$launcher" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
source "$src/tests/cli/ranks.sh"
tiny=(--config "$src/configs/tiny.ini" --log-interval 1 --train-iters 100000)

# start LOG ARGS...: mpirun -n 2 rmoe_train ARGS in the background (pid in $launcher).
start() {
  local log=$1
  shift
  mpiexec --oversubscribe -n 2 "$@" > "$log" 2>&1 &
  launcher=$!
}
# wait_for PATTERN FILE SECONDS: until a line of FILE matches (false on timeout).
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$1" "$2" 2>/dev/null && return 0
    kill -0 "$launcher" 2>/dev/null || { grep -q "$1" "$2" 2>/dev/null; return; }
    sleep 0.1
  done
  return 1
}
# finish SECONDS: waits for the launcher at most that long (killing it after); sets st.
finish() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$launcher" 2>/dev/null; then
    kill -KILL "$launcher"
    bad "the run did not end within $1 s"
  fi
  wait "$launcher"
  st=$?
  launcher=""
}
# stop_checkpoint LOG DIR: the stop step's checkpoint must exist, be complete, and no .tmp be left.
stop_checkpoint() {
  local step
  step=$(sed -n 's/.*stopping after step \([0-9]*\).*/\1/p' "$1" | head -n 1)
  [[ -n $step ]] || { bad "$1: no 'stopping after step' line"; return; }
  local ck
  ck=$(printf '%s/ckpt_%08d.h5' "$2" "$step")
  [[ -f $ck ]] || { bad "no checkpoint of the stop step $step ($ck)"; return; }
  "$build/rmoe_ckpt" info "$ck" > "$work/info.txt" 2>&1 || { bad "rmoe_ckpt info $ck failed"; cat "$work/info.txt"; }
  compgen -G "$2/*.tmp" > /dev/null && bad "a .tmp was left in $2: $(ls "$2")"
  echo "   stop step $step: $ck complete"
}

# 1. SIGTERM to mpirun. A model whose step takes seconds and whose checkpoint
# (330 MB, one kept) takes about half a second to save: the rest of a step
# plus a save do not fit in Open MPI's default 1 s; S = 20 covers them even on
# a loaded machine.
S=20
big=(--hidden-size 512 --ffn-hidden-size 2048 --num-attention-heads 8 --global-batch-size 128
     --save "$work/term" --save-interval 2 --keep-checkpoints 1)
start "$work/term.log" --mca odls_base_sigkill_timeout "${RMOE_TEST_SIGKILL_TIMEOUT:-$S}" "$build/rmoe_train" "${tiny[@]}" "${big[@]}"
if wait_for '^saved ' "$work/term.log" 120; then
  t0=$(date +%s)
  kill -TERM "$launcher"
  finish $((3 * S + 30))
  echo "1. SIGTERM to mpirun: status $st after $(( $(date +%s) - t0 ))s"
  [[ $st -eq 1 ]] || bad "1. mpirun exited $st after SIGTERM; Open MPI 4.1 gives 1 (README)"
  grep -q "rank [01] caught SIGTERM: stopping after the step in progress" "$work/term.log" \
    || bad "1. no rank reported SIGTERM"
  grep -q "^signal 15: stopping after step" "$work/term.log" || bad "1. rank 0 did not stop on SIGTERM"
  stop_checkpoint "$work/term.log" "$work/term"
else
  bad "1. no checkpoint within 120 s"; tail -n 5 "$work/term.log"; finish 5
fi

# 2. SIGUSR1 to mpirun.
start "$work/usr1.log" "$build/rmoe_train" "${tiny[@]}" --save "$work/usr1" --save-interval 1000
if wait_for '^step' "$work/usr1.log" 120; then
  kill -USR1 "$launcher"
  finish 60
  echo "2. SIGUSR1 to mpirun: status $st"
  [[ $st -eq 3 ]] || bad "2. mpirun exited $st after SIGUSR1, expected 3"
  grep -q "^signal 10: stopping after step" "$work/usr1.log" || bad "2. rank 0 did not stop on SIGUSR1"
  stop_checkpoint "$work/usr1.log" "$work/usr1"
else
  bad "2. no step within 120 s"; tail -n 5 "$work/usr1.log"; finish 5
fi

# 3. SIGUSR1 to rank 1 only (the ranks are mpirun's children on one node).
start "$work/rank1.log" "$build/rmoe_train" "${tiny[@]}" --save "$work/rank1" --save-interval 1000
if wait_for '^step' "$work/rank1.log" 120; then
  rank1=$(rank_pid "$launcher" 1)
  if [[ -n $rank1 ]]; then
    kill -USR1 "$rank1"
    finish 60
    echo "3. SIGUSR1 to rank 1 (pid $rank1): status $st; $(grep 'stopping after' "$work/rank1.log")"
    [[ $st -eq 3 ]] || bad "3. exited $st, expected 3"
    grep -q "^stopping after step [0-9]*: rank 1 got signal 10 (SIGUSR1)$" "$work/rank1.log" \
      || bad "3. rank 0 does not say that rank 1 got SIGUSR1"
    grep -q "signal 0" "$work/rank1.log" && bad "3. 'signal 0' printed"
    grep -q "rank 1 caught SIGUSR1" "$work/rank1.log" || bad "3. rank 1 did not report its signal"
    stop_checkpoint "$work/rank1.log" "$work/rank1"
  else
    bad "3. cannot find rank 1 among mpirun's children ($(ps -o pid= --ppid "$launcher" | tr '\n' ' '))"; finish 5
  fi
else
  bad "3. no step within 120 s"; tail -n 5 "$work/rank1.log"; finish 5
fi

((fail == 0)) && echo "PASS"
exit $fail
