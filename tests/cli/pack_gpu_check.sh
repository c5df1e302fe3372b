#!/usr/bin/env bash
# scripts/pack_gpu_check.sh and the packed scripts/gpu_check.sh, here (a CUDA
# build; a GPU is not needed):
#  1. the pack: under 60 MB, bin/test_cuda and bin/bench_cuda, the dynamic
#     loader and the C/C++ runtime in lib/, no CUDA library in it, the CUDA
#     sonames listed in CUDA_NEEDED; packing twice gives the same bytes;
#     started through the pack's loader, bench_cuda loads every non-CUDA
#     library from the pack.
#  2. refusals, exit 1 and a message naming the problem: a non-empty OUT_DIR
#     (left untouched), a build folder without the binaries.
#  3. the packed gpu_check.sh runs through the pack's loader; without a GPU
#     every GPU test and the benchmark say SKIPPED, it exits 0, and no line
#     says a check passed. (With a GPU: it must end in RESULT: PASSED.)
#  4. a needed CUDA library of another major version than the machine's is
#     reported as INCOMPATIBLE, naming the one found.
#  5. nvidia-smi (a stand-in) lists a GPU the CUDA runtime does not see:
#     exit 1 naming the driver, and bench_cuda gets that GPU's bf16 peak.
#  6. gpu_check.sh --bin with a missing folder: exit 2.
#  7. stand-in binaries: a failing test and a test past the timeout (named)
#     end in RESULT: FAILED and exit 1.
# Skips (exit 77) when the build has no CUDA.
# Usage: pack_gpu_check.sh BUILD_DIR SOURCE_DIR
set -u
build=$(realpath "$1") src=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

if [[ ! -x "$build/tests/test_cuda" ]] || ! ldd "$build/tests/test_cuda" 2>/dev/null | grep -q 'libcudart\|libcublas'; then
  echo "SKIPPED: built without CUDA (test_cuda in $build links no CUDA library)"
  exit 77
fi
[[ -x "$build/bench/bench_cuda" ]] || { echo "FAIL: a CUDA build without $build/bench/bench_cuda"; exit 1; }

# ---- 1. the pack --------------------------------------------------------------
pack=$work/pack
RMOE_BUILD=$build bash "$src/scripts/pack_gpu_check.sh" "$pack" >"$work/pack.log" 2>&1 ||
  { echo "FAIL: pack_gpu_check.sh exited $?"; cat "$work/pack.log"; exit 1; }
grep -q 'MB (limit 60 MB)' "$work/pack.log" || bad "pack_gpu_check.sh does not print the pack's size: $(cat "$work/pack.log")"
size=$(find "$pack" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
[[ $size -gt 0 && $size -le 60000000 ]] || bad "the pack holds $size bytes, over 60 MB"
for f in bin/test_cuda bin/bench_cuda gpu_check.sh CUDA_NEEDED MANIFEST lib/libc.so.6 lib/libstdc++.so.6; do
  [[ -f "$pack/$f" ]] || bad "no $f in the pack"
done
ls "$pack"/lib/ld-linux*.so* >/dev/null 2>&1 || bad "no dynamic loader in the pack's lib/"
cuda_packed=$(ls "$pack/lib" | grep -E '^lib(cuda|cudart|cublas|nvrtc|nvJitLink|nccl|cudnn|cufft|curand|cusolver|cusparse|cupti|nvidia-)' || true)
[[ -z "$cuda_packed" ]] || bad "CUDA libraries packed: $cuda_packed"
find "$pack/lib" -type l | grep -q . && bad "symbolic links in lib/ (the real files belong there): $(find "$pack/lib" -type l)"
grep -q '^libcublas\.so\.' "$pack/CUDA_NEEDED" || bad "CUDA_NEEDED does not list libcublas: $(cat "$pack/CUDA_NEEDED")"
# Every library a packed binary needs, other than CUDA's, is in lib/.
for b in test_cuda bench_cuda; do
  for so in $(ldd "$build"/*/"$b" | awk '$2 == "=>" {print $1}'); do
    grep -qE '^lib(cuda|cudart|cublas|cublasLt|nvrtc|nvJitLink)' <<<"$so" && continue
    [[ -f "$pack/lib/$so" ]] || bad "$b needs $so, not in the pack"
  done
done
RMOE_BUILD=$build bash "$src/scripts/pack_gpu_check.sh" "$work/pack2" >/dev/null 2>&1 || bad "the second pack failed"
diff -r "$pack" "$work/pack2" >/dev/null || bad "two packs of the same build differ: $(diff -r "$pack" "$work/pack2" | head -n 5)"

# ---- 2. refusals ----------------------------------------------------------------
mkdir "$work/full" && echo keep >"$work/full/x"
out=$(RMOE_BUILD=$build bash "$src/scripts/pack_gpu_check.sh" "$work/full" 2>&1)
rc=$?
[[ $rc -eq 1 ]] || bad "a non-empty OUT_DIR: exit $rc, want 1"
grep -q "not empty" <<<"$out" || bad "a non-empty OUT_DIR: no 'not empty' in: $out"
[[ "$(ls -A "$work/full")" == x && "$(cat "$work/full/x")" == keep ]] || bad "a refused OUT_DIR was changed"
mkdir "$work/nobuild"
out=$(RMOE_BUILD=$work/nobuild bash "$src/scripts/pack_gpu_check.sh" "$work/p3" 2>&1)
rc=$?
[[ $rc -eq 1 ]] || bad "a build folder without binaries: exit $rc, want 1"
grep -q "test_cuda" <<<"$out" || bad "a build folder without binaries: the message does not name test_cuda: $out"
[[ -e "$work/p3" ]] && bad "a refused pack left $work/p3 behind"

# ---- 3. the packed gpu_check.sh ---------------------------------------------------
have_gpu=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU [0-9]' && have_gpu=1
RMOE_BENCH_SECONDS=0.05 "$pack/gpu_check.sh" --log-dir "$work/logs" >"$work/check.log" 2>&1
rc=$?
grep -q '^pack: loader .*/lib/ld-linux' "$work/check.log" || bad "the packed gpu_check.sh did not use the pack's loader"
grep -q '^libcublas\.so\.[0-9]*: /' "$work/check.log" || bad "gpu_check.sh does not say which libcublas it found"
if [[ $have_gpu -eq 1 ]]; then
  [[ $rc -eq 0 ]] || bad "gpu_check.sh on this GPU machine: exit $rc"
  grep -q '^RESULT: PASSED' "$work/check.log" || bad "gpu_check.sh on this GPU machine: no RESULT: PASSED"
else
  [[ $rc -eq 0 ]] || bad "gpu_check.sh without a GPU: exit $rc, want 0"
  grep -q '^  SKIPPED  Cuda\.[A-Za-z]*: no CUDA device' "$work/check.log" || bad "gpu_check.sh lists no SKIPPED GPU test"
  grep -q '^SKIPPED: no CUDA device' "$work/check.log" || bad "bench_cuda did not say SKIPPED: no CUDA device"
  grep -q '^RESULT: SKIPPED: no CUDA device' "$work/check.log" || bad "gpu_check.sh does not end in RESULT: SKIPPED"
  grep -qi 'pass' "$work/check.log" && bad "gpu_check.sh without a GPU says something passed: $(grep -i pass "$work/check.log")"
  # Each test line is SKIPPED or a host-side check; none is reported as run on a GPU.
  grep -E '^  (ok|FAILED) ' "$work/check.log" | grep -v 'ok (host-side, no GPU used)' | grep -q . &&
    bad "gpu_check.sh without a GPU reports a test as run: $(grep -E '^  (ok|FAILED) ' "$work/check.log")"
fi
[[ -s "$work/logs/test_cuda.log" ]] || bad "no test_cuda.log in --log-dir"
# Started as gpu_check.sh starts it, the packed bench_cuda loads every
# library but CUDA's from the pack (LD_DEBUG lists each one initialised).
cudart_dir=$(dirname "$(ldd "$build/bench/bench_cuda" | awk '$1 ~ /^libcudart/ {print $3; exit}')")
outside=$(LD_DEBUG=libs "$pack"/lib/ld-linux*.so* --library-path "$pack/lib:$cudart_dir" "$pack/bin/bench_cuda" 2>&1 |
  awk '/calling init:/ {print $NF}' | sort -u | grep -v "^$pack/lib/" | grep -vE '/lib(cudart|cublas|cublasLt|cuda)\.so' || true)
[[ -z "$outside" ]] || bad "the packed bench_cuda loads non-CUDA libraries from outside the pack: $outside"
[[ $fail -eq 0 ]] || { echo "--- gpu_check.sh output ---"; cat "$work/check.log"; }

# ---- 4. another major version than the machine's ------------------------------------
cp -r "$pack" "$work/packx"
chmod -R u+w "$work/packx"
echo libcublas.so.99 >"$work/packx/CUDA_NEEDED"
"$work/packx/gpu_check.sh" --log-dir "$work/logsx" >"$work/checkx.log" 2>&1
rc=$?
grep -q '^libcublas\.so\.99: NOT FOUND; this machine has only: .*libcublas\.so\.' "$work/checkx.log" ||
  bad "a missing libcublas.so.99 is not reported with the one found: $(cat "$work/checkx.log")"
grep -q 'INCOMPATIBLE' "$work/checkx.log" || bad "a libcublas of another major version is not called INCOMPATIBLE"
if [[ $have_gpu -eq 0 ]]; then
  [[ $rc -eq 0 ]] && grep -q '^RESULT: SKIPPED' "$work/checkx.log" || bad "no GPU and no usable libcublas: exit $rc, want 0 and RESULT: SKIPPED"
else
  [[ $rc -eq 1 ]] || bad "a GPU and no usable libcublas: exit $rc, want 1"
fi

# ---- 5. a GPU the runtime cannot use (no GPU here: a stand-in nvidia-smi) -----------
# nvidia-smi lists an A100 with a CUDA 12 driver; the runtime sees no device:
# a failure naming the driver, not a skip; the peak follows the name.
if [[ $have_gpu -eq 0 ]]; then
  mkdir "$work/fakebin"
  cat >"$work/fakebin/nvidia-smi" <<'SMI'
#!/bin/sh
case "$*" in
  -L) echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
  *query-gpu=name*) echo "NVIDIA A100-SXM4-80GB" ;;
  *) echo "| NVIDIA-SMI 535.54.03    Driver Version: 535.54.03    CUDA Version: 12.2 |" ;;
esac
SMI
  chmod +x "$work/fakebin/nvidia-smi"
  PATH=$work/fakebin:$PATH RMOE_BENCH_SECONDS=0.05 "$pack/gpu_check.sh" --log-dir "$work/logsf" >"$work/checkf.log" 2>&1
  rc=$?
  [[ $rc -eq 1 ]] || bad "a listed GPU the runtime does not see: exit $rc, want 1"
  grep -q '^RESULT: FAILED: nvidia-smi lists 1 GPU(s) but the CUDA runtime sees no device' "$work/checkf.log" ||
    bad "a listed GPU the runtime does not see: no RESULT: FAILED line: $(tail -n 5 "$work/checkf.log")"
  grep -q 'Driver Version: 535.54.03 CUDA Version: 12.2' "$work/checkf.log" || bad "the driver version is not reported"
  grep -q '^bf16 peak: 312 TFLOP/s dense (from RMOE_BF16_PEAK_TFLOPS)' "$work/checkf.log" ||
    bad "the A100's peak (312) did not reach bench_cuda"
fi

# ---- 6. usage -------------------------------------------------------------------------
"$pack/gpu_check.sh" --bin "$work/none" >/dev/null 2>&1
rc=$?
[[ $rc -eq 2 ]] || bad "gpu_check.sh --bin with a missing folder: exit $rc, want 2"

# ---- 7. a failing and a hanging test (stand-in binaries) --------------------------------
mkdir "$work/fake"
printf '#!/bin/sh\necho "CUDA devices: 1"\n' >"$work/fake/bench_cuda"
cat >"$work/fake/test_cuda" <<'GT'
#!/bin/sh
echo "[ RUN      ] Cuda.Bad"
echo "x.cpp:1: Failure"
echo "[  FAILED  ] Cuda.Bad (3 ms)"
echo "[ RUN      ] Cuda.Good"
echo "[       OK ] Cuda.Good (1 ms)"
exit 1
GT
chmod +x "$work/fake/test_cuda" "$work/fake/bench_cuda"
"$src/scripts/gpu_check.sh" --bin "$work/fake" --log-dir "$work/logsb" >"$work/checkb.log" 2>&1
rc=$?
[[ $rc -eq 1 ]] || bad "a failing test: exit $rc, want 1"
grep -q '^  FAILED   Cuda.Bad$' "$work/checkb.log" || bad "a failing test is not listed as FAILED"
grep -q '^RESULT: FAILED: 1 test(s) FAILED' "$work/checkb.log" || bad "a failing test: no RESULT: FAILED line"
printf '#!/bin/sh\necho "[ RUN      ] Cuda.Hangs"\nexec sleep 60\n' >"$work/fake/test_cuda"
RMOE_TEST_TIMEOUT_S=2 "$src/scripts/gpu_check.sh" --bin "$work/fake" --log-dir "$work/logsh" >"$work/checkh.log" 2>&1
rc=$?
[[ $rc -eq 1 ]] || bad "a hanging test: exit $rc, want 1"
grep -q '^RESULT: FAILED: test_cuda timed out after 2 s in Cuda.Hangs' "$work/checkh.log" ||
  bad "a hanging test: no timeout naming it: $(tail -n 3 "$work/checkh.log")"

[[ $fail -eq 0 ]] && echo PASS
exit $fail
