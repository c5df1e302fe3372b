#!/usr/bin/env bash
# A failure on one rank ends every rank quickly with the message and a
# non-zero status (no hang). Fault injected with RMOE_FAIL_AT=rank:step.
# Usage: mpi_rank_failure.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
start=$(date +%s)
out=$(RMOE_FAIL_AT=1:5 timeout 120 mpiexec --oversubscribe -n 2 "$build/rmoe_train" \
        --config "$src/configs/tiny.ini" --train-iters 50 2>&1)
status=$?
elapsed=$(( $(date +%s) - start ))
echo "$out" | tail -n 5
echo "status $status after ${elapsed}s"
[[ $status -ne 0 && $status -ne 124 ]] || { echo "FAIL: expected a non-zero status without timeout"; exit 1; }
grep -q "injected failure on rank 1 at step 5" <<<"$out" || { echo "FAIL: the failing rank's message is missing"; exit 1; }
(( elapsed < 60 )) || { echo "FAIL: took ${elapsed}s to stop"; exit 1; }
echo "PASS"
