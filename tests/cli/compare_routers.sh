#!/usr/bin/env bash
# scripts/compare_routers.sh end to end at a toy size (its own corpus, 4 steps,
# a tiny model): every variant x seed trains, is evaluated and analysed; the
# report has one row per variant with each seed's BPC and the mean +- std
# (checked against the runs' own eval.txt); a second call keeps the finished
# runs; unknown variants and bad counts are usage errors (status 2).
# Usage: compare_routers.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

awk 'BEGIN { srand(11); split("the a of and to in he she it was said unto king land day light water", w, " ");
             for (i = 0; i < 40000; i++) { printf "%s%s", w[int(rand() * 17) + 1], (rand() < 0.1 ? ".\n" : " ") } }' \
  >"$work/text.txt"
small=(--num-layers 2 --hidden-size 32 --num-attention-heads 2 --ffn-hidden-size 32 --router-dim 16
       --seq-length 32 --micro-batch-size 4 --global-batch-size 4 --eval-interval 2 --eval-iters 2 --log-interval 2)
run() {
  bash "$src/scripts/compare_routers.sh" --skip-setup --no-install --build-dir "$build" --out "$work/out" \
    --corpus "$work/text.txt" --steps 4 --jobs 2 "$@" "${small[@]}"
}
out=$(run --variants smoe,rmoe-np --seeds 2 2>&1); st=$?
[[ $st -eq 0 ]] || bad "the comparison failed (status $st): $(tail -20 <<<"$out")"
md=$work/out/results.md
for v in smoe rmoe-np; do
  row=$(grep "^| $v |" "$md" 2>/dev/null)
  [[ -n $row ]] || { bad "no row for $v in results.md"; continue; }
  # The row's seed BPCs are the runs' own rmoe_eval results; the mean is theirs.
  b1=$(grep -o 'bpc [0-9.]*' "$work/out/runs/$v/seed1/eval.txt" | cut -d' ' -f2)
  b2=$(grep -o 'bpc [0-9.]*' "$work/out/runs/$v/seed2/eval.txt" | cut -d' ' -f2)
  mean=$(awk -v a="$b1" -v b="$b2" 'BEGIN { printf "%.4f", (a + b) / 2 }')
  grep -q "| $b1 | $b2 | $mean +- " <<<"$row" || bad "$v: row '$row' does not hold seeds $b1, $b2 and mean $mean"
  [[ -s $work/out/runs/$v/seed1/analysis/analysis.json ]] || bad "$v: no rmoe_analyze report"
done
/usr/bin/python3 - "$work/out/results.json" <<'EOF' || bad "results.json"
import json, sys
r = json.load(open(sys.argv[1]))
assert set(r["variants"]) == {"smoe", "rmoe-np"}, r["variants"].keys()
for v in r["variants"].values():
    assert set(v["seeds"]) == {"1", "2"}
    assert v["summary"]["router_params"] > 0 and v["summary"]["params"] > v["summary"]["router_params"]
    assert all(len(s["curve"]) == 2 for s in v["seeds"].values())
EOF
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  [[ -s $work/out/val_curves.png ]] || bad "no val_curves.png though matplotlib is there"
fi

# Finished runs are kept: a second call trains nothing again.
before=$(stat -c %Y "$work/out/runs/smoe/seed1/train.log")
sleep 1
out=$(run --variants smoe,rmoe-np --seeds 2 2>&1) || bad "the second call failed: $(tail -5 <<<"$out")"
[[ $(stat -c %Y "$work/out/runs/smoe/seed1/train.log") == "$before" ]] || bad "a finished run was trained again"

# A run that fails is named, and the comparison exits 1 (here rmoe_train refuses the option).
out=$(run --variants smoe --seeds 1 --out "$work/out_bad" --lr 1e300 2>&1); st=$?
[[ $st -eq 1 ]] && grep -q "FAILED smoe/seed1: rmoe_train --dry-run" <<<"$out" \
  || bad "a failing run: status $st: $(tail -5 <<<"$out")"

# Usage errors.
out=$(run --variants smoe,nope 2>&1); st=$?
[[ $st -eq 2 ]] && grep -q "unknown variant 'nope'" <<<"$out" || bad "--variants nope: status $st: $out"
out=$(run --seeds 0 2>&1); st=$?
[[ $st -eq 2 ]] && grep -q "\-\-seeds=0 must be a positive integer" <<<"$out" || bad "--seeds 0: status $st: $out"

[[ $fail -eq 0 ]] && echo PASS
exit $fail
