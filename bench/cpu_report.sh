#!/usr/bin/env bash
# The CPU speed report, side by side in one run: every figure the CPU goals
# are stated in (docs/RESULTS.md, "CPU training throughput").
#   1. single-thread sgemm (bench_sgemm; the best of its shapes, the ceiling)
#   2. medium shape, 1 thread: tokens/s, model GFLOP/s, % of that sgemm rate
#   3. the same against PyTorch eager (bench/torch_eager_step.py), and tiny
#   4. medium, 2 threads over 1 thread
#   5. medium, mpirun -n 2 (one thread per rank) over one rank, micro-batch 2
#   6. router cost: gru over linear step time against their FLOP ratio
# Usage: bench/cpu_report.sh [STEPS [REPEATS]]
#   STEPS timed steps per medium run (default 5); each rmoe figure is the best
#   of REPEATS runs (default 2); torch runs once.
# Needs build/ (scripts/build.sh); /usr/bin/python3 with torch for item 3
# (skipped, and said so, without it); mpirun for item 5. Takes 3-5 minutes.
# The machine should be quiet: the figures are wall-clock medians.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5} repeats=${2:-2}
build=${RMOE_BUILD:-build}
bench=$build/bench/bench_train_step
[[ -x $bench && -x $build/bench/bench_sgemm ]] || {
  echo "cpu_report: $bench or bench_sgemm not found; run scripts/build.sh first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
medium=(--config configs/medium_char_rmoe.ini --micro-batch-size 4 --global-batch-size 4)
medium2=(--config configs/medium_char_rmoe.ini --micro-batch-size 2 --global-batch-size 4)  # the same 4 sequences
tiny=(--config configs/tiny.ini --micro-batch-size 8 --global-batch-size 8)

# field NAME LINE: the number before NAME in a bench line ("... | 1014 tokens/s | ...")
field() { grep -oE "[0-9.]+ $1" <<<"$2" | head -1 | cut -d' ' -f1; }
threads() { OMP_NUM_THREADS=$1 OPENBLAS_NUM_THREADS=$1 "${@:2}"; }
# run CMD...: the bench line of the fastest of $repeats runs (the machine may be shared:
# the best run is the one least disturbed)
run() {
  local out best="" i
  for ((i = 0; i < repeats; ++i)); do
    out=$("$@") || { echo "cpu_report: failed: $*" >&2; exit 1; }
    out=$(grep "step median" <<<"$out")
    if [[ -z $best ]] || awk -v a="$(field tokens/s "$out")" -v b="$(field tokens/s "$best")" 'BEGIN { exit !(a > b) }'; then
      best=$out
    fi
  done
  echo "$best"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v x="$1" -v goal="$2" 'BEGIN { print (x >= goal ? "met" : "NOT met") }'; }

echo "cpu_report: $(nproc) cores, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $steps timed steps per medium run, best of $repeats runs"
sg=$(threads 1 "$build/bench/bench_sgemm")
core=$(grep -oE 'core [A-Za-z0-9_]+' <<<"$sg" | cut -d' ' -f2)
peak=$(grep -oE '[0-9.]+ GFLOP/s' <<<"$sg" | cut -d' ' -f1 | sort -g | tail -1)
echo "OpenBLAS kernel $core; single-thread sgemm (best of bench_sgemm's shapes): $peak GFLOP/s"

m1=$(run threads 1 "$bench" "${medium[@]}" --steps "$steps")
m2=$(run threads 2 "$bench" "${medium[@]}" --steps "$steps")
lin=$(run threads 1 "$bench" "${medium[@]}" --steps "$steps" --moe-router-type linear)
p1=$(run threads 1 "$bench" "${medium2[@]}" --steps "$steps")
if command -v mpirun >/dev/null; then
  p2=$(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 run mpirun --oversubscribe -n 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
         "$bench" "${medium2[@]}" --steps "$steps")
fi
t1=$(run threads 1 "$bench" "${tiny[@]}" --steps 30)
have_torch=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && have_torch=1
if ((have_torch)); then
  tm=$(threads 1 /usr/bin/python3 bench/torch_eager_step.py --config configs/medium_char_rmoe.ini --micro-batch-size 4 \
         --steps "$((steps < 3 ? steps : 3))" --threads 1 | grep "step median")
  tt=$(threads 1 /usr/bin/python3 bench/torch_eager_step.py --config configs/tiny.ini --micro-batch-size 8 --steps 20 \
         --threads 1 | grep "step median")
fi

echo
echo "medium (configs/medium_char_rmoe.ini, micro-batch 4), 1 thread:  $m1"
echo "medium, 2 threads:                                  $m2"
echo "medium, linear router, 1 thread:                    $lin"
echo "medium, micro-batch 2, global 4, 1 rank:            $p1"
[[ -n ${p2:-} ]] && echo "medium, micro-batch 2, global 4, mpirun -n 2:       $p2"
echo "tiny (configs/tiny.ini, micro-batch 8), 1 thread:   $t1"
((have_torch)) && echo "torch eager, medium, 1 thread:                      $tm"
((have_torch)) && echo "torch eager, tiny, 1 thread:                        $tt"
echo
printf '%-52s %10s %8s %s\n' "figure" "value" "goal" "verdict"
pct=$(awk -v g="$(field GFLOP/s "$m1")" -v p="$peak" 'BEGIN { printf "%.1f", 100 * g / p }')
printf '%-52s %9s%% %7s%% %s\n' "medium model FLOP rate / 1-thread sgemm" "$pct" 70 "$(verdict "$pct" 70)"
if ((have_torch)); then
  r=$(ratio "$(field tokens/s "$m1")" "$(field tokens/s "$tm")")
  printf '%-52s %9sx %7sx %s\n' "medium rmoe / torch eager tokens/s" "$r" 1.5 "$(verdict "$r" 1.5)"
  r=$(ratio "$(field tokens/s "$t1")" "$(field tokens/s "$tt")")
  printf '%-52s %9sx %7sx %s\n' "tiny rmoe / torch eager tokens/s" "$r" 3 "$(verdict "$r" 3)"
else
  echo "torch eager: skipped (/usr/bin/python3 cannot import torch; apt-get install python3-torch)"
fi
r=$(ratio "$(field tokens/s "$m2")" "$(field tokens/s "$m1")")
printf '%-52s %9sx %7sx %s\n' "medium 2 threads / 1 thread tokens/s" "$r" 1.8 "$(verdict "$r" 1.8)"
if [[ -n ${p2:-} ]]; then
  r=$(ratio "$(field tokens/s "$p2")" "$(field tokens/s "$p1")")
  printf '%-52s %9sx %7sx %s\n' "medium mpirun -n 2 / 1 rank tokens/s" "$r" 1.85 "$(verdict "$r" 1.85)"
else
  echo "mpirun -n 2: skipped (no mpirun)"
fi
# step time ratio t_gru / t_lin = (tokens/s)_lin / (tokens/s)_gru; FLOP ratio from MFLOP/token
tr=$(awk -v a="$(field tokens/s "$lin")" -v b="$(field tokens/s "$m1")" 'BEGIN { printf "%.1f", 100 * (a / b - 1) }')
fr=$(awk -v a="$(field MFLOP/token "$m1")" -v b="$(field MFLOP/token "$lin")" 'BEGIN { printf "%.1f", 100 * (a / b - 1) }')
printf '%-52s %9s%% %7s%% %s\n' "medium gru over linear step time (FLOPs: +$fr%)" "+$tr" "+$(awk -v f="$fr" 'BEGIN { print f + 2 }')" \
  "$(awk -v t="$tr" -v f="$fr" 'BEGIN { print (t <= f + 2 ? "met" : "NOT met") }')"
