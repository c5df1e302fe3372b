#!/usr/bin/env bash
# Configures and builds rmoe into build/ (incremental: a second run only
# rebuilds what changed). Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" > build.configure.log 2>&1 || {
  cat build.configure.log; echo "build.sh: cmake configure failed (log above)"; exit 1; }
cmake --build build -j"$(nproc)"
