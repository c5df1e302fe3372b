#!/usr/bin/env bash
# rmoe_train's command line: bad options end with one line naming the option
# and exit status 2; --dry-run prints sizes; --help works. Start-up checks
# (before any step): an unwritable --save and a --load that does not exist
# are status 2; --load = --save not yet created starts fresh (one line). Exit
# statuses of an early stop: 3 with a checkpoint, 4 without --save. --profile
# prints its table. --log-router-grads adds the router gradient's parts to the
# logged steps' lines and metrics records, and to no other.
# Usage: train_cli.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
expect_usage() {  # expect_usage "needle" args...
  local needle=$1; shift
  out=$("$build/rmoe_train" "$@" 2>&1); st=$?
  if [[ $st -ne 2 ]] || ! grep -q -- "$needle" <<<"$out" || [[ $(wc -l <<<"$out") -ne 1 ]]; then
    echo "FAIL: rmoe_train $* -> status $st, output: $out"; fail=1
  fi
}
expect_usage "--moe-router-topk=5" --num-experts 4 --moe-router-topk 5
expect_usage "--num-attention-heads" --hidden-size 30 --num-attention-heads 4
expect_usage "--moe-router-type" --moe-router-type sinkhorn
expect_usage "--xmoe-dim=0" --moe-router-type xmoe --xmoe-dim 0
expect_usage "--no-such-flag" --no-such-flag 1
expect_usage "missing.ini" --config /nonexistent/missing.ini
out=$("$build/rmoe_train" --config "$src/configs/pretrain_24l_rmoe.ini" --dry-run 2>&1) || { echo "FAIL: dry run"; fail=1; }
grep -q "1,069,106,560" <<<"$out" || { echo "FAIL: dry run total"; echo "$out"; fail=1; }
"$build/rmoe_train" --help | grep -q -- "--moe-router-type" || { echo "FAIL: --help"; fail=1; }
# Per-rank plan for 8 ranks: 2 of 16 experts per rank, replicated + 1/8 of the experts' parameters.
out=$("$build/rmoe_train" --config "$src/configs/pretrain_24l_rmoe.ini" --dry-run --dry-run-ranks 8 2>&1)
grep -q "2 of 16 experts per rank" <<<"$out" && grep -q "parameters per rank      491,079,040" <<<"$out" \
  || { echo "FAIL: dry-run layout"; echo "$out" | tail -7; fail=1; }
expect_usage "must be a multiple of ranks (12)" --config "$src/configs/pretrain_24l_rmoe.ini" --dry-run --dry-run-ranks 12
expect_usage "--expert-parallel-size=3" --config "$src/configs/pretrain_24l_rmoe.ini" --dry-run --dry-run-ranks 8 --expert-parallel-size 3

# --save is probed before the first step: a file where the directory should be.
touch "$work/blocker"
expect_usage "--save=$work/blocker/ck: cannot write checkpoints there" --config "$src/configs/tiny.ini" \
  --train-iters 50 --save "$work/blocker/ck"
expect_usage "--save=$work/blocker: cannot write checkpoints there" --config "$src/configs/tiny.ini" \
  --train-iters 50 --save "$work/blocker"
# --load must exist, unless it is also --save (the requeue idiom's first run).
expect_usage "--load=$work/missing: no such file or directory" --config "$src/configs/tiny.ini" --train-iters 2 \
  --load "$work/missing"
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 2 --load "$work/fresh" --save "$work/fresh" 2>&1)
st=$?
[[ $st -eq 0 ]] && grep -q "^--load=$work/fresh does not exist yet; it is also the --save directory: starting a fresh run at step 0$" <<<"$out" \
  && [[ -e $work/fresh/ckpt_00000002.h5 ]] || { echo "FAIL: --load = --save not yet created: status $st: $out"; fail=1; }
# An early stop: 3 only with a checkpoint of the stop step, 4 without --save.
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 20 --exit-interval 10 2>&1); st=$?
[[ $st -eq 4 ]] && grep -q "^warning: stopped early without --save: nothing to resume from (exit status 4)$" <<<"$out" \
  || { echo "FAIL: --exit-interval without --save: status $st (expected 4): $(tail -3 <<<"$out")"; fail=1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 20 --exit-interval 10 --save "$work/stop" >/dev/null 2>&1
st=$?
[[ $st -eq 3 && -e $work/stop/ckpt_00000010.h5 ]] || { echo "FAIL: --exit-interval with --save: status $st (expected 3)"; fail=1; }
# --profile: the table of regions and ops, for the steps after the first.
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 6 --profile 2>&1); st=$?
[[ $st -eq 0 ]] && grep -q "^profile: 5 steps, " <<<"$out" && grep -q "^  attention " <<<"$out" \
  && grep -q "^  experts_forward  *experts " <<<"$out" \
  || { echo "FAIL: --profile: status $st: $(tail -25 <<<"$out")"; fail=1; }
# --moe-expert-capacity-factor: the drop ratio per layer on the line and in
# the metrics; a negative factor is a usage error.
expect_usage "--moe-expert-capacity-factor=-1 must be a finite number >= 0" --moe-expert-capacity-factor -1
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 4 --log-interval 2 \
      --moe-expert-capacity-factor 0.5 --metrics-file "$work/cap.jsonl" 2>&1); st=$?
[[ $st -eq 0 ]] && grep -Eq "^step +4/4 .*\| drop [0-9.]+% \[[0-9.]+ [0-9.]+\]" <<<"$out" \
  && grep -q '"layer_drop":\[' "$work/cap.jsonl" \
  || { echo "FAIL: --moe-expert-capacity-factor: status $st: $(tail -5 <<<"$out")"; fail=1; }

# --log-router-grads: steps 1 (the first), 2 and 4 are logged, each with its lm, lb and z parts;
# their metrics records hold them per layer (2) and for the cell; step 3 measures nothing.
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 4 --log-interval 2 --log-router-grads \
  --moe-z-loss-coeff 0.001 --metrics-file "$work/router.jsonl" 2>&1); st=$?
num='[0-9][0-9.e+-]*'
[[ $st -eq 0 ]] && [[ $(grep -c "^step .* | router grad lm $num lb $num z $num | eta " <<<"$out") -eq 3 ]] \
  && [[ $(grep -c '"router_grad_norm":{"full":{"cell":[^,]*,"layers":\[[^],]*,[^],]*\],"total":[^}]*},"lb":{.*"lm":{.*"z":{' \
       "$work/router.jsonl") -eq 3 ]] && [[ $(grep -c '"type":"train"' "$work/router.jsonl") -eq 3 ]] \
  || { echo "FAIL: --log-router-grads: status $st: $out"; cat "$work/router.jsonl"; fail=1; }
out=$("$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 2 --log-interval 1 \
  --metrics-file "$work/plain.jsonl" 2>&1)
! grep -q "router grad" <<<"$out" && ! grep -q router_grad "$work/plain.jsonl" \
  || { echo "FAIL: router gradient parts without --log-router-grads: $out"; fail=1; }
[[ $fail -eq 0 ]] && echo PASS
exit $fail
