#!/usr/bin/env bash
# The README's first command (scripts/quickstart.sh) end to end on a short
# budget, in a temporary run directory, with the binaries of BUILD_DIR (no
# install, no build):
#  1. a fresh run: prepares a slice of the corpus, trains a few steps under
#     mpirun -n 2, evaluates, samples, plots. Checks: the checkpoint loads
#     (rmoe_eval at P = 1 gives the quickstart's P = 2 result), the validation
#     BPC is finite and below both 8 (uniform over bytes) and the first
#     training loss in bits, the sample continues the prompt, the plot is a
#     PNG (when the system python has matplotlib).
#  2. --resume: reuses the prepared data and continues from the checkpoint.
#  3. a new run: moves the previous run aside into RUN_DIR/old/.
# Corpus: the King James Bible (Debian's bible-kjv) when it is installed or
# can be installed; otherwise a text this test generates (it says so).
# Usage: quickstart.sh BUILD_DIR SOURCE_DIR
set -u
build=$(realpath "$1") src=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

corpus_args=()
if ! command -v bible >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive timeout 120 apt-get install -o DPkg::Lock::Timeout=60 -y -q --no-install-recommends \
    bible-kjv >"$work/apt.log" 2>&1 || true
fi
if command -v bible >/dev/null; then
  echo "corpus: the King James Bible (bible-kjv), first 400 kB"
else
  echo "corpus: bible-kjv is not installed and could not be installed: using a generated text instead"
  awk 'BEGIN { srand(3); n = split("and the of to that in he shall unto for i his a lord they be is him not them it with all thou", w, " ");
               for (i = 0; i < 80000; i++) { printf "%s%s", w[int(rand() * n) + 1], (rand() < 0.08 ? ".\n" : " ") } }' \
    >"$work/generated.txt"
  corpus_args=(--corpus "$work/generated.txt")
fi

qs=(bash "$src/scripts/quickstart.sh" --skip-setup --no-install --build-dir "$build" --run-dir "$work/run"
  "${corpus_args[@]}" --corpus-bytes 400000 --eval-interval 10 --eval-iters 4 --log-interval 5)
run=$work/run

# 1. a fresh run
"${qs[@]}" --steps 30 >"$work/qs1.log" 2>&1 || { echo "FAIL: quickstart exited $?"; tail -30 "$work/qs1.log"; exit 1; }
ls "$run"/ckpt/ckpt_00000030.h5 >/dev/null 2>&1 || bad "no checkpoint of step 30 in $run/ckpt"
out=$("$build/rmoe_eval" --load "$run/ckpt" --data-path "$run/data" 2>&1) || bad "rmoe_eval on the quickstart checkpoint: $out"
bpc=$(sed -n 's/.*| bpc \([0-9.]*\) .*/\1/p' <<<"$out")
bpc2=$(sed -n 's/.*| bpc \([0-9.]*\) .*/\1/p' "$run/eval.txt")
first=$(sed -n 's/.*"loss":\([^,}]*\).*"step":1,.*"type":"train".*/\1/p' "$run/metrics.jsonl" | head -1)
ok=$(awk -v b="$bpc" -v b2="$bpc2" -v f="$first" 'BEGIN { d = b - b2; if (d < 0) d = -d;
  print (b != "" && f != "" && b + 0 > 0 && b + 0 < 8 && b + 0 < f / log(2) && d < 2e-3) ? "yes" : "no" }')
[[ $ok == yes ]] || bad "validation bpc '$bpc' (P=1) / '$bpc2' (quickstart, P=2): want equal, finite, < 8 and < the first training loss in bits ($first nats)"
echo "validation bpc after 30 steps: $bpc (first training loss: $first nats)"
sample=$(cat "$run/sample.txt" 2>/dev/null)
prompt="And God said"
[[ ${#corpus_args[@]} -gt 0 ]] && prompt="The "
[[ $sample == "$prompt"* && ${#sample} -gt $((${#prompt} + 10)) ]] || bad "the sample does not continue the prompt: '$sample'"
grep -qF -- "$(head -n 1 <<<"$sample")" "$work/qs1.log" || bad "the sample was not printed"
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  [[ $(head -c 8 "$run/metrics.png" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] \
    || bad "$run/metrics.png is not a PNG"
else
  echo "SKIP plot check: /usr/bin/python3 has no matplotlib"
fi
grep -q "done in" "$work/qs1.log" && grep -q "checkpoints  $run/ckpt" "$work/qs1.log" || bad "no closing summary"

# 2. --resume: same data, continues at step 30
"${qs[@]}" --resume --steps 34 >"$work/qs2.log" 2>&1 || { bad "quickstart --resume exited $?"; tail -20 "$work/qs2.log"; }
grep -q "reusing the prepared data" "$work/qs2.log" || bad "--resume prepared the data again"
grep -q "resumed from .*ckpt_00000030.h5 at step 30" "$work/qs2.log" || bad "--resume did not continue from step 30"
ls "$run"/ckpt/ckpt_00000034.h5 >/dev/null 2>&1 || bad "no checkpoint of step 34 after --resume"

# 3. a new run moves the previous one aside
"${qs[@]}" --steps 2 >"$work/qs3.log" 2>&1 || { bad "second fresh quickstart exited $?"; tail -20 "$work/qs3.log"; }
old=$(ls -d "$run"/old/*/ 2>/dev/null | head -1)
[[ -n $old && -e $old/ckpt/ckpt_00000034.h5 && -e $old/metrics.jsonl ]] || bad "the previous run was not moved to $run/old/"
ls "$run"/ckpt/ckpt_00000002.h5 >/dev/null 2>&1 && ! ls "$run"/ckpt/ckpt_00000034.h5 >/dev/null 2>&1 \
  || bad "the new run did not start from step 0 in a fresh $run/ckpt"

[[ $fail -eq 0 ]] && echo PASS
exit $fail
