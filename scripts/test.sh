#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, runs every test;
# then the sanitizer + fuzz build (build-asan: clang, ASan + UBSan, libFuzzer)
# runs the whole suite again under the sanitizers, plus the fuzz targets
# (tests/fuzz/README.md). Any sanitizer report anywhere fails it.
# RMOE_TEST_SKIP_SANITIZERS=1 stops after the normal suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd build && ctest --output-on-failure -j2 --timeout 900)
[[ ${RMOE_TEST_SKIP_SANITIZERS:-0} == 1 ]] && exit 0

# ---- ASan + UBSan over the whole suite, and the fuzz targets (build-asan) ----
# cli_slurm_e2e (a local Slurm around the same apps) runs in the normal suite only.
t0=$(date +%s)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
mkdir -p build-asan
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DRMOE_CUDA=OFF -DRMOE_SANITIZE=ON -DRMOE_FUZZ=ON "${launcher[@]}" >build-asan/configure.log 2>&1 || {
  cat build-asan/configure.log; echo "test.sh: cmake configure of build-asan failed (log above)"; exit 1; }
cmake --build build-asan -j"$(nproc)"
t1=$(date +%s)
# Every report also goes to a file (log_path.<pid>), so one from a process
# whose exit status a test does not look at is still seen. The other options
# are compiled in (tests/fuzz/sanitizer_defaults.cpp).
reports=$PWD/build-asan/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
rc=0
(cd build-asan && ASAN_OPTIONS="log_path=$reports/asan" UBSAN_OPTIONS="log_path=$reports/ubsan" \
  ctest --output-on-failure -j2 --timeout 900 -E '^cli_slurm_e2e$') || rc=$?
t2=$(date +%s)
if compgen -G "$reports/*" >/dev/null; then
  for f in "$reports"/*; do echo "==== $f"; cat "$f"; done
  echo "test.sh: sanitizer reports in $reports (above)"
  rc=1
fi
echo "test.sh: sanitizer+fuzz build $((t1 - t0)) s, ASan/UBSan suite and fuzzing $((t2 - t1)) s"
exit $rc
