#!/usr/bin/env bash
# rmoe_train's command line: bad options end with one line naming the option
# and exit status 2; --dry-run prints sizes; --help works.
# Usage: train_cli.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
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
expect_usage "--moe-router-type" --moe-router-type cosine
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
[[ $fail -eq 0 ]] && echo PASS
exit $fail
