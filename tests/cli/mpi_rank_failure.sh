#!/usr/bin/env bash
# A failure on one rank ends every rank quickly with the message and a
# non-zero status (no hang):
#  1. a thrown error, injected with RMOE_FAIL_AT=rank:step;
#  2. a save that cannot be written (a file size limit stands in for a full
#     disk): the message, status 1 (not HDF5's crash at exit), no .tmp left;
#  3. bad input only one rank sees (mpirun's `A : B` gives rank 1 its own
#     --data-path): a missing dataset, a damaged shard, for rmoe_train and
#     rmoe_eval: that rank prints its own line "NAME: rank 1 (HOST): ...",
#     status 2; and a bad option every rank sees is printed once, by rank 0;
#  4. what the ranks say while they are ended: the rank that another rank's
#     MPI_Abort ends does not promise a checkpoint it will never write (1.),
#     and a rank ending after an error of its own says nothing about the
#     launcher's SIGTERM (a refused resume, decided by rank 0, on 2 ranks);
#  5. one rank killed with SIGKILL in the middle of training (it can print
#     nothing): mpirun ends the other within 60 s, non-zero, naming the rank
#     and the signal, and the checkpoint directory keeps only complete files;
#  6. one rank stopped with SIGSTOP (alive, silent): the other gives up after
#     --collective-timeout, naming itself and the call, and the job ends.
# Usage: mpi_rank_failure.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
source "$src/tests/cli/ranks.sh"

# 1. A thrown error on rank 1.
start=$(date +%s)
out=$(RMOE_FAIL_AT=1:5 timeout 120 mpiexec --oversubscribe -n 2 "$build/rmoe_train" \
        --config "$src/configs/tiny.ini" --train-iters 50 2>&1)
status=$?
elapsed=$(( $(date +%s) - start ))
echo "$out" | tail -n 5
echo "1. status $status after ${elapsed}s"
[[ $status -ne 0 && $status -ne 124 ]] || bad "1. expected a non-zero status without timeout"
grep -q "injected failure on rank 1 at step 5" <<<"$out" || bad "1. the failing rank's message is missing"
(( elapsed < 60 )) || bad "1. took ${elapsed}s to stop"
grep -q "caught SIG.*sav" <<<"$out" && bad "4. a rank ended by MPI_Abort promised to save: $(grep "caught SIG" <<<"$out")"

# 2. A save that fails to write. The limit (12 MB per file) leaves MPI's own
# files alone and stops the ~32 MB checkpoint of this model; SIGXFSZ ignored,
# so the write fails with EFBIG as a full disk fails with ENOSPC. One process:
# HDF5 1.10 cannot close the failed file, and its exit handler used to crash
# on it (status 139).
out=$( (trap '' XFSZ; ulimit -f 12000
        timeout 120 "$build/rmoe_train" --config "$src/configs/tiny.ini" --hidden-size 192 --ffn-hidden-size 512 \
          --train-iters 3 --save "$work/full" --save-interval 1) 2>&1)
status=$?
echo "$out" | grep -v '^step' | tail -n 3 | cut -c1-300
echo "2. status $status"
[[ $status -eq 1 ]] || bad "2. a failed save exited $status, expected 1"
grep -q "rmoe_train: error on .*saving checkpoint '$work/full/ckpt_00000001.h5' failed: .*File too large" <<<"$out" \
  || bad "2. the failed save's message is missing"
[[ -z $(ls -A "$work/full" 2>/dev/null) ]] || bad "2. the failed save left files: $(ls "$work/full")"

# 3. Rank-local bad input. A one-shard dataset (one 32768-token chunk: every
# read touches it) and a copy with one token byte changed (Fletcher32).
for ((i = 0; i < 400; i++)); do echo "line $i: In the beginning was the word, and the word was with God."; done > "$work/text.txt"
"$build/rmoe_prepare" --input "$work/text.txt" --output "$work/good" --tokenizer byte --val-tokens 4000 --quiet \
  >/dev/null 2>&1 || { echo "FAIL: rmoe_prepare"; exit 1; }
cp -r "$work/good" "$work/bad"
for shard in "$work/bad/train/00000.h5" "$work/bad/val/00000.h5"; do
  at=$(grep -obUaP 'I\x00n\x00 \x00t\x00h\x00e\x00' "$shard" | head -n 1 | cut -d: -f1)
  [[ -n $at ]] || { echo "FAIL: no token bytes found in $shard"; exit 1; }
  printf 'J' | dd of="$shard" bs=1 seek="$at" conv=notrunc status=none
done
host=$(hostname)
tiny=(--config "$src/configs/tiny.ini" --vocab-size 256 --log-interval 1)
# expect_rank_line LABEL STATUS PATTERN CMD...: runs CMD (a command or function, bounded by its own
# timeout), wants STATUS within 60 s and a line matching PATTERN.
expect_rank_line() {
  local label=$1 want=$2 pattern=$3 start out st
  shift 3
  start=$(date +%s)
  out=$("$@" 2>&1)
  st=$?
  local took=$(( $(date +%s) - start ))
  echo "3. $label: status $st after ${took}s: $(grep -m1 "$pattern" <<<"$out" | cut -c1-200)"
  [[ $st -eq $want ]] || { bad "3. $label: status $st, expected $want"; echo "$out" | tail -n 8; }
  grep -q "$pattern" <<<"$out" || { bad "3. $label: no line matching: $pattern"; echo "$out" | tail -n 8; }
  (( took < 60 )) || bad "3. $label: took ${took}s"
}
mpmd() {  # mpmd APP RANK0-ARGS... -- RANK1-ARGS...
  local app=$1 a=() b=()
  shift
  while [[ $1 != -- ]]; do a+=("$1"); shift; done
  shift
  b=("$@")
  timeout 120 mpiexec --oversubscribe -n 1 "$build/$app" "${a[@]}" : -n 1 "$build/$app" "${b[@]}"
}
expect_rank_line "train, dataset missing on rank 1" 2 \
  "^rmoe_train: rank 1 ($host): --data-path=$work/missing: does not exist" \
  mpmd rmoe_train "${tiny[@]}" --data-path "$work/good" -- "${tiny[@]}" --data-path "$work/missing"
expect_rank_line "train, damaged shard on rank 1" 2 \
  "^rmoe_train: rank 1 ($host): shard '$work/bad/train/00000.h5' is corrupt: .*checksum" \
  mpmd rmoe_train "${tiny[@]}" --train-iters 20 --data-path "$work/good" -- "${tiny[@]}" --train-iters 20 --data-path "$work/bad"
"$build/rmoe_train" "${tiny[@]}" --train-iters 2 --data-path "$work/good" --save "$work/ck" >/dev/null 2>&1 \
  || { echo "FAIL: training the checkpoint for rmoe_eval"; exit 1; }
expect_rank_line "eval, damaged shard on rank 1" 2 \
  "^rmoe_eval: rank 1 ($host): shard '$work/bad/val/00000.h5' is corrupt: .*checksum" \
  mpmd rmoe_eval --load "$work/ck" --data-path "$work/good" -- --load "$work/ck" --data-path "$work/bad"
expect_rank_line "eval, dataset missing on rank 1" 2 \
  "^rmoe_eval: rank 1 ($host): --data-path=$work/missing: " \
  mpmd rmoe_eval --load "$work/ck" --data-path "$work/good" -- --load "$work/ck" --data-path "$work/missing"
# A bad option: the same on every rank, printed once (by rank 0, without a rank).
out=$(timeout 120 mpiexec --oversubscribe -n 2 "$build/rmoe_train" --config "$src/configs/tiny.ini" --lr abc 2>&1)
st=$?
n=$(grep -c -- "--lr=abc" <<<"$out")
echo "3. bad option: status $st, $n line(s) naming it"
[[ $st -eq 2 ]] || bad "3. bad option: status $st, expected 2"
[[ $n -eq 1 ]] && grep -q "^rmoe_train: --lr=abc: " <<<"$out" || { bad "3. bad option: printed $n times"; echo "$out"; }

# 4. A resume both ranks refuse (another --seed): one line, and no rank
# reports the SIGTERM with which the abort ends it.
"$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 2 --save "$work/seeded" >/dev/null 2>&1 \
  || { echo "FAIL: training the checkpoint to resume"; exit 1; }
out=$(timeout 120 mpiexec --oversubscribe -n 2 "$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 4 \
        --save "$work/seeded" --load "$work/seeded" --seed 5 2>&1)
st=$?
echo "4. refused resume: status $st; $(grep -c '^rmoe' <<<"$out") rmoe line(s)"
[[ $st -eq 2 ]] || bad "4. refused resume: status $st, expected 2"
[[ $(grep -c "^rmoe_train: .*seed" <<<"$out") -eq 1 ]] || { bad "4. refused resume: not one line naming the seed"; echo "$out"; }
grep -q "caught SIG" <<<"$out" && { bad "4. a rank ending after an error reported a signal"; echo "$out"; }

# signal_rank1 PART SIGNAL LOG READY ARGS...: starts rmoe_train ARGS on 2 ranks
# (log in LOG), waits for a line matching READY, sends SIGNAL to rank 1 and
# waits at most 60 s for mpiexec to end; sets st (its status) and elapsed.
# Returns 1 (after reporting) when the run never got ready.
signal_rank1() {
  local part=$1 sig=$2 log=$3 ready=$4 launcher rank1 i t0
  shift 4
  mpiexec --oversubscribe -n 2 "$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 100000 \
    --log-interval 1 "$@" > "$log" 2>&1 &
  launcher=$!
  for ((i = 0; i < 1200; i++)); do grep -q "$ready" "$log" && break; kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
  rank1=$(rank_pid $launcher 1)
  if [[ -z $rank1 ]]; then
    bad "$part. no '$ready' line or no rank 1 found"; tail -n 5 "$log"; kill -KILL $launcher
    return 1
  fi
  kill -"$sig" "$rank1"
  t0=$(date +%s)
  for ((i = 0; i < 600; i++)); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
  if kill -0 $launcher 2>/dev/null; then bad "$part. still running 60 s after SIG$sig to rank 1"; kill -KILL $launcher; fi
  wait $launcher
  st=$?
  elapsed=$(( $(date +%s) - t0 ))
}

# 5. SIGKILL of rank 1 while it trains (and saves every 2 steps).
log=$work/kill.log
if signal_rank1 5 KILL "$log" '^saved ' --save "$work/killed" --save-interval 2; then
  echo "5. SIGKILL of rank 1: status $st after ${elapsed}s; $(grep -m1 -i 'signal 9' "$log")"
  [[ $st -ne 0 ]] || bad "5. status 0 after a rank was killed"
  grep -qi "rank 1 .*signal 9" "$log" || { bad "5. no line names rank 1 and signal 9"; tail -n 8 "$log"; }
  compgen -G "$work/killed/*.tmp" > /dev/null && echo "   (a .tmp of an interrupted save is left; it is never loaded)"
  for f in "$work"/killed/ckpt_*.h5; do
    "$build/rmoe_ckpt" info "$f" > /dev/null 2>&1 || bad "5. $f does not load after the kill"
  done
fi

# 6. SIGSTOP of rank 1, --collective-timeout 5.
log=$work/stop.log
if signal_rank1 6 STOP "$log" '^step' --collective-timeout 5; then
  echo "6. SIGSTOP of rank 1: status $st after ${elapsed}s; $(grep -m1 'has waited' "$log")"
  [[ $st -ne 0 ]] || bad "6. status 0 after a rank stopped answering"
  grep -q "^rmoe: rank 0 (.*): MPI_[A-Za-z]* .*has waited [0-9]* s for the other ranks (--collective-timeout=5)" "$log" \
    || { bad "6. rank 0 did not name the collective it waited in"; tail -n 8 "$log"; }
  grep -q "rank 1 (.*): .*has waited" "$log" && bad "6. the stopped rank blamed the others"
fi

((fail == 0)) && echo "PASS"
exit $fail
