#!/usr/bin/env bash
# One fuzz run for ctest (tests/fuzz/CMakeLists.txt): copies the committed
# corpus into WORK_DIR (libFuzzer adds the inputs it finds to its corpus
# directory; the committed one is never written), fuzzes for SECONDS with a
# 10 s per-input timeout and a 2 GB memory limit, and fails on any crash,
# hang, leak, sanitizer report or contract violation. A failing input is left
# in WORK_DIR/artifacts/ (reproduce: FUZZ_BIN FILE).
# Usage: run_fuzz.sh FUZZ_BIN CORPUS_DIR WORK_DIR SECONDS
set -euo pipefail
bin=$1 corpus=$2 work=$3 seconds=$4
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
cp "$corpus"/* "$work/corpus/"
export TMPDIR=$work/tmp
# Reports go to stderr here (scripts/test.sh sends the suite's to files).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=stderr"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=stderr"
echo "fuzzing $(basename "$bin") for ${seconds}s on a copy of $corpus ($(ls "$corpus" | wc -l) seeds)"
rc=0
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/fuzz.log" 2>&1 || rc=$?
tail -n 25 "$work/fuzz.log"
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -1)
echo "executions: ${execs:-?}; corpus now $(ls "$work/corpus" | wc -l) inputs"
if [[ $rc -ne 0 ]] || ls "$work/artifacts"/* >/dev/null 2>&1; then
  echo "FAIL: $(basename "$bin") exited with $rc; artifacts: $(ls "$work/artifacts" | tr '\n' ' ')"
  exit 1
fi
echo PASS
