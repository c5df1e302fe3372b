#!/usr/bin/env bash
# mpirun -n 8 rmoe_train with the tiny config completes on a small machine
# (oversubscribed) and reports the layout it ran.
# Usage: mpi_8_ranks.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1 src=$2
out=$(mpiexec --oversubscribe -n 8 "$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 10 \
        --log-interval 5 2>&1)
echo "$out" | tail -n 6
grep -q "layout: 8 ranks, expert-parallel size 4" <<<"$out"
grep -q "done: step 10/10" <<<"$out"
echo "PASS"
