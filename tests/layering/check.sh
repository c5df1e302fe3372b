#!/usr/bin/env bash
# A wrong include fails to build: builds each layering probe (CMakeLists.txt
# beside this file) and checks that the forbidden ones fail because the
# header is not on that layer's include path, and that the allowed one builds.
# Usage: check.sh BUILD_DIR
set -u
build=$1
bad=0
expect() {  # expect PROBE ok|missing HEADER
  local out rc
  out=$(cmake --build "$build" --target "probe_$1" 2>&1); rc=$?
  if [[ $2 == ok ]]; then
    if [[ $rc -ne 0 ]]; then echo "FAIL: probe_$1 should build:"; echo "$out" | tail -5; bad=1; else echo "ok: probe_$1 builds"; fi
  elif [[ $rc -eq 0 ]]; then
    echo "FAIL: probe_$1 built, but its layer must not see $3"; bad=1
  elif ! grep -q -e "$3: No such file" -e "'$3' file not found" <<<"$out"; then  # gcc's, clang's words
    echo "FAIL: probe_$1 failed for another reason than the missing $3:"; echo "$out" | tail -5; bad=1
  else
    echo "ok: probe_$1 fails: $3 is not on its include path"
  fi
}
expect kernels_includes_model missing rmoe/model/model.h
expect core_includes_kernels missing rmoe/kernels/ops.h
expect model_includes_parallel missing rmoe/parallel/comm.h
expect data_includes_train missing rmoe/train/config.h
expect model_includes_kernels ok
[[ $bad -eq 0 ]] && echo PASS || { echo FAILED; exit 1; }
