#!/usr/bin/env bash
# Checkpoints through rmoe_train:
#  1. 2N steps straight == N steps (--exit-interval, status 3) + resume + N:
#     bit-identical losses and bit-identical final checkpoints.
#  2. SIGUSR1 during training: checkpoint, status 3; the resumed run continues
#     the straight run's loss sequence exactly.
#  3. Saved at P = 2, resumed at P = 1 and P = 4: the next losses match the
#     run that never changed layout (float tolerance 2e-4).
#  4. A resume that changes the model is refused (status 2) naming each
#     option with both values; other changes are printed and recorded; the
#     token count is a running sum over a change of global batch size.
#  5. --save into another run's directory is refused and deletes nothing.
#  6. Non-finite steps: skipped, logged, recorded; after --max-skipped-steps
#     in a row the run ends with status 1 naming the step, and no checkpoint
#     holds a non-finite value.
# Every comparison of extracted numbers first checks that enough lines were
# extracted (two empty lists compare equal).
# Usage: checkpoint_resume.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
train="$build/rmoe_train"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--config "$src/configs/tiny.ini" --log-interval 1 --seed 11)
fail=0
losses() { sed -n 's/.*"loss":\([^,]*\),.*"step":\([0-9]*\),.*"type":"train".*/\2 \1/p' "$1"; }
# need_lines N WHAT FILE...: losses of FILE... (concatenated) must give at least N lines.
need_lines() {
  local n=$1 what=$2; shift 2
  local got
  got=$(cat "$@" 2>/dev/null | losses /dev/stdin | wc -l)
  [[ $got -ge $n ]] || { echo "FAIL: $what: $got loss lines extracted, expected at least $n"; fail=1; }
}

# 1. straight vs split
"$train" "${common[@]}" --train-iters 24 --save "$work/straight" --metrics-file "$work/straight.jsonl" > "$work/straight.log" 2>&1 \
  || { echo "FAIL: straight run"; cat "$work/straight.log"; exit 1; }
"$train" "${common[@]}" --train-iters 24 --save "$work/split" --load "$work/split" --exit-interval 12 \
  --metrics-file "$work/split.jsonl" > "$work/split1.log" 2>&1
st=$?
[[ $st -eq 3 ]] || { echo "FAIL: --exit-interval run exited $st, expected 3"; fail=1; }
"$train" "${common[@]}" --train-iters 24 --save "$work/split" --load "$work/split" --exit-interval 12 \
  --metrics-file "$work/split.jsonl" > "$work/split2.log" 2>&1 || { echo "FAIL: resumed run"; cat "$work/split2.log"; fail=1; }
grep -q "resumed from .*ckpt_00000012.h5 at step 12" "$work/split2.log" || { echo "FAIL: no resume line"; fail=1; }
need_lines 24 "straight run" "$work/straight.jsonl"
need_lines 24 "split run" "$work/split.jsonl"
if ! diff <(losses "$work/straight.jsonl") <(losses "$work/split.jsonl"); then
  echo "FAIL: split run's losses differ from the straight run's"; fail=1
fi
"$build/rmoe_ckpt" diff "$work/straight/ckpt_00000024.h5" "$work/split/ckpt_00000024.h5" > "$work/diff.txt" 2>&1 \
  && grep -q "^identical" "$work/diff.txt" || { echo "FAIL: final checkpoints differ"; tail -3 "$work/diff.txt"; fail=1; }

# 2. SIGUSR1 mid-run
"$train" "${common[@]}" --train-iters 400 --lr-decay-iters 24 --save "$work/sig" --load "$work/sig" \
  --metrics-file "$work/sig.jsonl" > "$work/sig1.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do grep -q '"step":3,' "$work/sig.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -USR1 $pid
wait $pid
st=$?
[[ $st -eq 3 ]] || { echo "FAIL: SIGUSR1 run exited $st, expected 3"; cat "$work/sig1.log"; fail=1; }
grep -q "signal 10: stopping" "$work/sig1.log" || { echo "FAIL: no signal line"; fail=1; }
ls "$work/sig"/ckpt_*.h5 > /dev/null 2>&1 || { echo "FAIL: no checkpoint after SIGUSR1"; fail=1; }
stopped=$(ls "$work/sig" | sed -n 's/ckpt_0*\([0-9][0-9]*\).h5/\1/p' | sort -n | tail -1)
"$train" "${common[@]}" --train-iters $((stopped + 5)) --lr-decay-iters 24 --save "$work/sig" --load "$work/sig" \
  --metrics-file "$work/sig.jsonl" > "$work/sig2.log" 2>&1 || { echo "FAIL: resume after signal"; fail=1; }
# Same schedule (--lr-decay-iters 24), so the sequence equals a straight run.
"$train" "${common[@]}" --train-iters $((stopped + 5)) --lr-decay-iters 24 \
  --metrics-file "$work/sigref.jsonl" > /dev/null 2>&1
need_lines 8 "signal reference run" "$work/sigref.jsonl"
need_lines 8 "signal-resumed run" "$work/sig.jsonl"
if ! diff <(losses "$work/sigref.jsonl") <(losses "$work/sig.jsonl" | awk '!seen[$1]++'); then
  echo "FAIL: losses after the signal-resume differ from a straight run"; fail=1
fi

# 3. change of layout: save at P=2 after 12 steps, continue at P=1 and P=4
mpi=(mpiexec --oversubscribe)
"${mpi[@]}" -n 2 "$train" "${common[@]}" --train-iters 24 --save "$work/p2" --exit-interval 12 > "$work/p2.log" 2>&1
"${mpi[@]}" -n 2 "$train" "${common[@]}" --train-iters 24 --metrics-file "$work/p2ref.jsonl" > /dev/null 2>&1
need_lines 24 "P=2 reference run" "$work/p2ref.jsonl"
for np in 1 4; do
  rm -rf "$work/p$np"; cp -r "$work/p2" "$work/p$np"
  "${mpi[@]}" -n $np "$train" "${common[@]}" --train-iters 14 --lr-decay-iters 24 --load "$work/p$np" \
    --metrics-file "$work/p$np.jsonl" > "$work/p$np.log" 2>&1 || { echo "FAIL: resume at P=$np"; tail -3 "$work/p$np.log"; fail=1; }
  ok=$(awk 'NR == FNR { ref[$1] = $2; next }
            $1 > 12 { n++; d = ref[$1] - $2; if (d < 0) d = -d; if (!($1 in ref) || d > 2e-4) bad++ }
            END { print (n == 2 && !bad) ? "yes" : "no" }' <(losses "$work/p2ref.jsonl") <(losses "$work/p$np.jsonl"))
  [[ $ok == yes ]] || { echo "FAIL: P=2 -> P=$np resume losses differ"; losses "$work/p2ref.jsonl" | tail -12; losses "$work/p$np.jsonl"; fail=1; }
done

# 4. what a resume checks. A model change: status 2, one line naming every option with both values.
expect_refused() {  # expect_refused "needle"... -- args
  local needles=() out st
  while [[ $1 != -- ]]; do needles+=("$1"); shift; done; shift
  out=$("$train" "${common[@]}" "$@" 2>&1); st=$?
  local ok=1
  [[ $st -eq 2 && $(wc -l <<<"$out") -eq 1 ]] || ok=0
  for n in "${needles[@]}"; do grep -qF -- "$n" <<<"$out" || ok=0; done
  [[ $ok -eq 1 ]] || { echo "FAIL: rmoe_train $* -> status $st, expected 2 and one line with ${needles[*]}: $out"; fail=1; }
}
before=$(ls "$work/straight")
expect_refused "hidden-size: 32 -> 48" -- --train-iters 30 --hidden-size 48 --load "$work/straight"
expect_refused "moe-router-topk: 2 -> 1" "router-detach: false -> true" "cannot resume" \
  -- --train-iters 30 --moe-router-topk 1 --router-detach --load "$work/straight"
expect_refused "moe-router-type: gru -> linear" -- --train-iters 30 --moe-router-type linear --load "$work/straight"
[[ $(ls "$work/straight") == "$before" ]] || { echo "FAIL: a refused resume changed the checkpoints"; fail=1; }
# Other changes: one line each, a "resume" record; tokens are a running sum
# (8 steps x 8 x 32 + 8 steps x 16 x 32 = 6144, not 16 x 16 x 32).
"$train" "${common[@]}" --train-iters 16 --save "$work/gb" --load "$work/gb" --exit-interval 8 > /dev/null 2>&1
"$train" "${common[@]}" --train-iters 16 --save "$work/gb" --load "$work/gb" --global-batch-size 16 --lr 5e-3 \
  --metrics-file "$work/gb.jsonl" > "$work/gb.log" 2>&1 || { echo "FAIL: resume with another batch size"; cat "$work/gb.log"; fail=1; }
grep -q "^resume: global-batch-size changed since the checkpoint: 8 -> 16$" "$work/gb.log" \
  && grep -q "^resume: lr changed since the checkpoint: 0.01 -> 0.005$" "$work/gb.log" \
  || { echo "FAIL: no change lines on resume"; head -5 "$work/gb.log"; fail=1; }
grep -q '"type":"resume"' "$work/gb.jsonl" && grep -q '"global-batch-size":{"from":"8","to":"16"}' "$work/gb.jsonl" \
  || { echo "FAIL: no resume record in the metrics"; cat "$work/gb.jsonl" | head -2; fail=1; }
"$build/rmoe_ckpt" info "$work/gb" > "$work/gb.info" 2>&1
grep -q "^tokens  *6144 consumed" "$work/gb.info" || { echo "FAIL: token count: $(grep tokens "$work/gb.info")"; fail=1; }

# 5. another run's directory: B without --load must not touch A's checkpoints.
"$train" "${common[@]}" --train-iters 10 --save "$work/runA" --save-interval 5 > /dev/null 2>&1
out=$("$train" "${common[@]}" --train-iters 6 --save "$work/runA" --keep-checkpoints 2 2>&1); st=$?
[[ $st -eq 2 ]] && grep -q "already holds checkpoints of another run" <<<"$out" && grep -q -- "--load $work/runA" <<<"$out" \
  || { echo "FAIL: saving into another run's directory: status $st: $out"; fail=1; }
[[ $(ls "$work/runA" | tr '\n' ' ') == "ckpt_00000005.h5 ckpt_00000010.h5 " ]] \
  || { echo "FAIL: run A's checkpoints changed: $(ls "$work/runA")"; fail=1; }
"$train" "${common[@]}" --train-iters 12 --save "$work/runA" --load "$work/runA" --keep-checkpoints 2 > /dev/null 2>&1 \
  || { echo "FAIL: resuming run A in its own directory"; fail=1; }
[[ $(ls "$work/runA" | tr '\n' ' ') == "ckpt_00000010.h5 ckpt_00000012.h5 " ]] \
  || { echo "FAIL: keep-K of the resumed run: $(ls "$work/runA")"; fail=1; }

# 6. non-finite steps: lr 1e30 without warm-up blows the weights up at step 1,
# steps 2 and 3 are skipped (non-finite loss), step 4 ends the run.
out=$("$train" "${common[@]}" --train-iters 30 --lr 1e30 --lr-warmup-iters 0 --max-skipped-steps 2 \
  --save "$work/nan" --save-interval 1 --metrics-file "$work/nan.jsonl" 2>&1); st=$?
[[ $st -eq 1 ]] || { echo "FAIL: diverging run exited $st, expected 1: $out"; fail=1; }
grep -q "^step 2/30 | SKIPPED: loss .* not finite, no update (1 in a row" <<<"$out" \
  && grep -q "^step 3/30 | SKIPPED: .*(2 in a row" <<<"$out" \
  || { echo "FAIL: no SKIPPED lines: $out"; fail=1; }
grep -q "error.*step 4: loss .* are not finite, and so were the 2 step(s) before it (--max-skipped-steps=2)" <<<"$out" \
  || { echo "FAIL: the error does not name step 4: $out"; fail=1; }
[[ $(grep -c '"type":"skip"' "$work/nan.jsonl") -eq 2 ]] || { echo "FAIL: expected 2 skip records"; fail=1; }
[[ -e $work/nan/ckpt_00000003.h5 && ! -e $work/nan/ckpt_00000004.h5 ]] \
  || { echo "FAIL: checkpoints after the divergence: $(ls "$work/nan")"; fail=1; }
for f in "$work"/nan/ckpt_*.h5; do
  "$build/rmoe_ckpt" info "$f" > "$work/nan.info" 2>&1 || { echo "FAIL: $f is not a clean checkpoint: $(tail -1 "$work/nan.info")"; fail=1; }
done
grep -q "^skipped  *2 step(s)" "$work/nan.info" || { echo "FAIL: skip count not in the checkpoint: $(grep -i skip "$work/nan.info")"; fail=1; }

[[ $fail -eq 0 ]] && echo PASS
exit $fail
