#!/usr/bin/env bash
# rmoe_eval and rmoe_generate on small checkpoints:
#  1. rmoe_eval of a byte-level checkpoint: the whole validation split, the
#     same loss (to float rounding) at P = 1 and P = 2 and with a micro-batch
#     that does not divide the windows nor its count the ranks; --eval-iters limits it; BPC = loss/ln 2.
#  2. rmoe_eval of a synthetic-data checkpoint needs no --data-path.
#  3. rmoe_generate: the same seed gives the same text, another seed another
#     text, temperature 0 is greedy and repeatable; the prompt is kept.
#  4. Errors, each one line naming the problem, exit status 2: a missing
#     checkpoint, a directory without one, a dataset of another vocabulary
#     (eval and generate), bad sampling options, generate under mpirun -n 2.
#  5. The tokenizer: a dataset of another SentencePiece model with the same
#     vocabulary size is refused by eval and generate (status 2, one line
#     naming both fingerprints) unless --allow-tokenizer-mismatch; another
#     byte-level dataset is the same tokenizer and is accepted.
# Usage: eval_generate.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mpi=(mpiexec --oversubscribe)
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# A small byte-level dataset and a checkpoint trained on it; a synthetic one.
awk 'BEGIN { srand(7); split("the a of and to in he she it was said unto king land day light water", w, " ");
             for (i = 0; i < 6000; i++) { printf "%s%s", w[int(rand() * 17) + 1], (rand() < 0.1 ? ".\n" : " ") } }' \
  >"$work/text.txt"
"$build/rmoe_prepare" --input "$work/text.txt" --output "$work/data" --tokenizer byte --val-tokens 3000 --quiet \
  >/dev/null 2>&1 || { echo "FAIL: rmoe_prepare"; exit 1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --vocab-size 256 --data-path "$work/data" --train-iters 6 \
  --save "$work/ck" >"$work/train.log" 2>&1 || { echo "FAIL: training the byte checkpoint"; cat "$work/train.log"; exit 1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 2 --save "$work/cksyn" >"$work/syn.log" 2>&1 \
  || { echo "FAIL: training the synthetic checkpoint"; cat "$work/syn.log"; exit 1; }

# 1. evaluation
loss_of() { sed -n 's/^val loss \([0-9.]*\) .*/\1/p' <<<"$1"; }
out1=$("$build/rmoe_eval" --load "$work/ck" --data-path "$work/data" 2>&1) || bad "rmoe_eval P=1: $out1"
out2=$("${mpi[@]}" -n 2 "$build/rmoe_eval" --load "$work/ck" --data-path "$work/data" 2>&1) || bad "rmoe_eval P=2: $out2"
out3=$("${mpi[@]}" -n 2 "$build/rmoe_eval" --load "$work/ck/ckpt_00000006.h5" --data-path "$work/data" \
  --micro-batch-size 5 2>&1) || bad "rmoe_eval P=2 micro-batch 5: $out3"
l1=$(loss_of "$out1") l2=$(loss_of "$out2") l3=$(loss_of "$out3")
# 3000 val tokens = 93 windows of 33 (tiny.ini: S = 32): 93 x 32 tokens evaluated. With
# micro-batch 5 the last of 19 micro-batches holds 3 windows, and at P = 2 rank 1
# runs a padding micro-batch in the last round.
grep -q "| tokens 2976$" <<<"$out1" || bad "P=1 did not evaluate all 2976 validation tokens: $out1"
grep -q "| tokens 2976$" <<<"$out3" || bad "micro-batch 5 did not evaluate all 2976 validation tokens: $out3"
ok=$(awk -v a="$l1" -v b="$l2" -v c="$l3" 'BEGIN { d1 = a - b; d2 = a - c; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2;
  print (a > 0 && a < 6 && d1 < 1e-3 && d2 < 1e-3) ? "yes" : "no" }')
[[ $ok == yes ]] || bad "val loss differs between P=1 ($l1), P=2 ($l2), micro-batch 5 ($l3)"
bpc=$(sed -n 's/.*| bpc \([0-9.]*\) .*/\1/p' <<<"$out1")
ok=$(awk -v l="$l1" -v b="$bpc" 'BEGIN { d = l / log(2) - b; if (d < 0) d = -d; print (b != "" && d < 1e-3) ? "yes" : "no" }')
[[ $ok == yes ]] || bad "bpc $bpc is not val loss $l1 / ln 2"
out=$("$build/rmoe_eval" --load "$work/ck" --data-path "$work/data" --eval-iters 2 --micro-batch-size 4 2>&1) \
  || bad "rmoe_eval --eval-iters: $out"
grep -q "| tokens 256$" <<<"$out" || bad "--eval-iters 2 --micro-batch-size 4 should evaluate 8 x 32 tokens: $out"

# 2. synthetic data: no --data-path needed
out=$("$build/rmoe_eval" --load "$work/cksyn" 2>&1) || bad "rmoe_eval on synthetic data: $out"
grep -q "entropy rate" <<<"$out" && grep -q "| ppl " <<<"$out" || bad "synthetic eval output: $out"

# 3. generation
gen() { "$build/rmoe_generate" --load "$work/ck" --data-path "$work/data" --prompt "the king" --max-tokens 60 "$@" 2>/dev/null; }
a=$(gen --seed 5) || bad "rmoe_generate failed"
b=$(gen --seed 5)
c=$(gen --seed 6 --no-stop-at-eod)
d=$(gen --seed 6 --no-stop-at-eod)
[[ $a == "$b" ]] || bad "the same seed gave different text: '$a' vs '$b'"
[[ $c == "$d" ]] || bad "the same seed (6) gave different text"
[[ $a != "$c" ]] || bad "seeds 5 and 6 gave the same text: '$a'"
[[ $a == "the king"* && ${#a} -gt 8 ]] || bad "no continuation after the prompt: '$a'"
g1=$(gen --temperature 0) g2=$(gen --temperature 0 --seed 99)
[[ -n $g1 && $g1 == "$g2" ]] || bad "greedy decoding depends on the seed: '$g1' vs '$g2'"
t=$(gen --top-k 1 --seed 3)
[[ $t == "$g1" ]] || bad "--top-k 1 differs from greedy: '$t' vs '$g1'"
out=$("$build/rmoe_generate" --load "$work/ck" --prompt "" --max-tokens 20 --top-p 0.9 --top-k 10 2>&1) \
  || bad "generate from an empty prompt with the checkpoint's own data path: $out"

# 4. errors: one line, exit status 2
expect_usage() {  # expect_usage "needle" command...
  local needle=$1; shift
  local out st
  out=$("$@" 2>&1); st=$?
  if [[ $st -ne 2 ]] || ! grep -q -- "$needle" <<<"$out" || [[ $(wc -l <<<"$out") -ne 1 ]]; then
    bad "$* -> status $st, expected 2 and one line with '$needle'; output: $out"
  fi
}
expect_usage "no such file" "$build/rmoe_eval" --load "$work/nothing" --data-path "$work/data"
expect_usage "no such file" "$build/rmoe_eval" --load "$work/nothing.h5" --data-path "$work/data"
mkdir -p "$work/empty"
expect_usage "holds no checkpoint" "$build/rmoe_eval" --load "$work/empty" --data-path "$work/data"
expect_usage "--load is required" "$build/rmoe_eval" --data-path "$work/data"
expect_usage "--micro-batch-size=4294967296 must be an integer in \[1, 2147483647\]" "$build/rmoe_eval" --load "$work/ck" --data-path "$work/data" --micro-batch-size 4294967296
expect_usage "vocabulary 256" "$build/rmoe_eval" --load "$work/cksyn" --data-path "$work/data"
expect_usage "vocabulary 256" "$build/rmoe_generate" --load "$work/cksyn" --data-path "$work/data" --prompt x
expect_usage "not a dataset" "$build/rmoe_eval" --load "$work/ck" --data-path "$work/empty"
expect_usage "--eval-iters=0" "$build/rmoe_eval" --load "$work/ck" --eval-iters 0
expect_usage "no-such-flag" "$build/rmoe_eval" --load "$work/ck" --no-such-flag 1
expect_usage "--top-p" "$build/rmoe_generate" --load "$work/ck" --prompt x --top-p 0
expect_usage "--temperature" "$build/rmoe_generate" --load "$work/ck" --prompt x --temperature -1
expect_usage "--prompt is required" "$build/rmoe_generate" --load "$work/ck"
expect_usage "no such file" "$build/rmoe_generate" --load "$work/nothing" --prompt x
expect_usage "which has no tokenizer" "$build/rmoe_generate" --load "$work/cksyn" --prompt x
out=$("${mpi[@]}" -n 2 "$build/rmoe_generate" --load "$work/ck" --prompt x 2>&1); st=$?
[[ $st -ne 0 ]] && grep -q "one process" <<<"$out" || bad "rmoe_generate under mpiexec -n 2: status $st, $out"


# 5. tokenizers: two SentencePiece datasets of vocabulary 300 from different text.
awk 'BEGIN { srand(9); split("zebra quantum violet marble orbit copper saffron tundra glyph whisper nebula fjord", w, " ");
             for (i = 0; i < 6000; i++) { printf "%s%s", w[int(rand() * 12) + 1], (rand() < 0.1 ? ".\n" : " ") } }' \
  >"$work/other.txt"
for d in text other; do
  "$build/rmoe_prepare" --input "$work/$d.txt" --output "$work/sp_$d" --tokenizer sentencepiece --vocab-size 300 \
    --val-tokens 1000 --quiet >/dev/null 2>&1 || { echo "FAIL: rmoe_prepare sentencepiece $d"; exit 1; }
done
"$build/rmoe_prepare" --input "$work/other.txt" --output "$work/byte_other" --tokenizer byte --val-tokens 3000 --quiet \
  >/dev/null 2>&1 || { echo "FAIL: rmoe_prepare byte other"; exit 1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --vocab-size 300 --data-path "$work/sp_text" --train-iters 2 \
  --save "$work/cksp" >"$work/sp.log" 2>&1 || { echo "FAIL: training the sentencepiece checkpoint"; cat "$work/sp.log"; exit 1; }
expect_usage "--allow-tokenizer-mismatch" "$build/rmoe_eval" --load "$work/cksp" --data-path "$work/sp_other"
expect_usage "is not the one $work/cksp/ckpt_00000002.h5 was trained on" "$build/rmoe_generate" --load "$work/cksp" \
  --data-path "$work/sp_other" --prompt zebra
out=$("$build/rmoe_eval" --load "$work/cksp" --data-path "$work/sp_other" 2>&1)
[[ $(grep -o "\[sentencepiece:[0-9a-f]*:300\]" <<<"$out" | sort -u | wc -l) -eq 2 ]] \
  || bad "the refusal does not name two different fingerprints: $out"
out=$("$build/rmoe_eval" --load "$work/cksp" --data-path "$work/sp_other" --allow-tokenizer-mismatch 2>&1) \
  && grep -q "^warning: --allow-tokenizer-mismatch: " <<<"$out" && grep -q "^val loss " <<<"$out" \
  || bad "rmoe_eval --allow-tokenizer-mismatch: $out"
out=$("$build/rmoe_generate" --load "$work/cksp" --data-path "$work/sp_other" --prompt zebra --max-tokens 3 \
  --allow-tokenizer-mismatch 2>&1) && grep -q "^warning: --allow-tokenizer-mismatch: " <<<"$out" \
  || bad "rmoe_generate --allow-tokenizer-mismatch: $out"
out=$("$build/rmoe_eval" --load "$work/cksp" 2>&1) && ! grep -q warning <<<"$out" || bad "rmoe_eval on its own data: $out"
out=$("$build/rmoe_eval" --load "$work/ck" --data-path "$work/byte_other" 2>&1) && ! grep -q warning <<<"$out" \
  || bad "rmoe_eval of a byte model on other byte data: $out"

[[ $fail -eq 0 ]] && echo PASS
exit $fail
