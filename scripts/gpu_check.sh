#!/usr/bin/env bash
# gpu_check.sh — rmoe's GPU checks in one command, for a machine with an NVIDIA
# GPU: the CUDA tests (test_cuda, against the cpu backend) and then the
# throughput benchmark (bench_cuda), each under a timeout, under 8 minutes in
# all. Without a device every GPU test reports SKIPPED (never passed).
#
# Usage: gpu_check.sh [--bin DIR] [--log-dir DIR]
#   --bin DIR      the folder with test_cuda and bench_cuda (a build folder, or
#                  its tests/ and bench/, or a pack's bin/). Default: bin/ next
#                  to this script when it sits in a pack (scripts/pack_gpu_check.sh),
#                  else $RMOE_BUILD, else build/ of the source tree.
#   --log-dir DIR  where the full outputs go (default: a new temporary folder).
# Environment: RMOE_BF16_PEAK_TFLOPS (bench's "% peak" base; set here from the
# GPU's name when unset), RMOE_BENCH_SECONDS (timed seconds per bench case),
# RMOE_TEST_TIMEOUT_S / RMOE_BENCH_TIMEOUT_S (default 240 / 180).
#
# From a pack (bin/ and lib/ with its own dynamic loader) the binaries start
# through the pack's loader and C/C++ libraries, so they run on a Linux whose
# glibc or libstdc++ differ from the build machine's; only the CUDA libraries
# (driver, runtime, cuBLAS) come from the machine itself.
#
# Exit status: 0 when every test that ran passed (or none could: no device),
# 1 when a test failed or timed out, a binary could not start, the benchmark
# failed, or the machine has a GPU the CUDA runtime cannot use; 2 bad usage.
set -uo pipefail

# Together under 8 minutes; the variables are for tests of the timeout path.
readonly TEST_TIMEOUT_S=${RMOE_TEST_TIMEOUT_S:-240} BENCH_TIMEOUT_S=${RMOE_BENCH_TIMEOUT_S:-180}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$SECONDS

die_usage() { echo "gpu_check: $*" >&2; echo "usage: gpu_check.sh [--bin DIR] [--log-dir DIR]" >&2; exit 2; }
bin_arg="" log_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) [[ $# -ge 2 ]] || die_usage "--bin needs a folder"; bin_arg=$2; shift 2 ;;
    --log-dir) [[ $# -ge 2 ]] || die_usage "--log-dir needs a folder"; log_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

# ---- the binaries ---------------------------------------------------------------
# $1 = a folder: prints the path of test_cuda / bench_cuda in it (build layout
# tests/ and bench/, or flat), or nothing.
find_bin() {
  local dir=$1 name=$2 sub
  for sub in "" tests/ bench/ bin/; do
    if [[ -x "$dir/$sub$name" && -f "$dir/$sub$name" ]]; then echo "$dir/$sub$name"; return; fi
  done
}
if [[ -n "$bin_arg" ]]; then
  [[ -d "$bin_arg" ]] || die_usage "--bin '$bin_arg' is not a folder"
  bin_dir=$(cd "$bin_arg" && pwd)
elif [[ -d "$here/bin" && -d "$here/lib" ]]; then
  bin_dir=$here/bin
elif [[ -n "${RMOE_BUILD:-}" ]]; then
  [[ -d "$RMOE_BUILD" ]] || die_usage "RMOE_BUILD='$RMOE_BUILD' is not a folder"
  bin_dir=$(cd "$RMOE_BUILD" && pwd)
else
  bin_dir=$(cd "$here/.." && pwd)/build
fi
test_bin=$(find_bin "$bin_dir" test_cuda)
bench_bin=$(find_bin "$bin_dir" bench_cuda)
if [[ -z "$test_bin" || -z "$bench_bin" ]]; then
  echo "gpu_check: no test_cuda and bench_cuda in $bin_dir (nor its tests/, bench/, bin/)." >&2
  echo "  Build them with CUDA: cmake -B build -DRMOE_CUDA=ON && cmake --build build --target test_cuda bench_cuda," >&2
  echo "  or pass --bin DIR, or set RMOE_BUILD, or run the gpu_check.sh of a pack (scripts/pack_gpu_check.sh)." >&2
  exit 1
fi

# A pack: lib/ next to the binaries' folder holds the dynamic loader.
pack_lib="" loader=""
for cand in "$(dirname "$test_bin")/../lib"; do
  for l in "$cand"/ld-linux*.so*; do
    if [[ -f "$l" ]]; then pack_lib=$(cd "$cand" && pwd); loader=$pack_lib/$(basename "$l"); break; fi
  done
done

if [[ -z "$log_dir" ]]; then
  log_dir=$(mktemp -d "${TMPDIR:-/tmp}/rmoe_gpu_check.XXXXXX") || { echo "gpu_check: cannot create a temporary folder" >&2; exit 1; }
else
  mkdir -p "$log_dir" || die_usage "cannot create --log-dir '$log_dir'"
fi

echo "== rmoe gpu_check $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname 2>/dev/null || echo '?')"
echo "binaries: $test_bin, $bench_bin"
if [[ -n "$loader" ]]; then echo "pack: loader $loader, libraries $pack_lib"; fi
echo "logs: $log_dir"

# ---- the GPU as the driver sees it ----------------------------------------------
gpus_listed=0 gpu_name="" driver_line=""
echo
echo "== GPUs (nvidia-smi -L)"
if command -v nvidia-smi >/dev/null 2>&1; then
  smi=$(timeout 30 nvidia-smi -L 2>&1); smi_rc=$?
  echo "$smi"
  if [[ $smi_rc -eq 0 ]]; then
    gpus_listed=$(grep -c '^GPU [0-9]' <<<"$smi")
    gpu_name=$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
    # The header's "CUDA Version" is the newest runtime this driver can run.
    driver_line=$(timeout 30 nvidia-smi 2>/dev/null | grep -o 'Driver Version: [^ ]*.*CUDA Version: [^ ]*' | head -n1 | tr -s ' ')
    [[ -n "$driver_line" ]] && echo "$driver_line"
  fi
else
  echo "(no nvidia-smi on this machine)"
fi

# ---- the CUDA libraries of this machine -----------------------------------------
# Candidate folders, in the order the pack's loader searches them after lib/.
cuda_dirs=()
add_dir() { local d; for d in "$@"; do
  [[ -n "$d" && -d "$d" ]] || continue
  d=$(cd "$d" && pwd -P)
  local x; for x in "${cuda_dirs[@]}"; do [[ "$x" == "$d" ]] && continue 2; done
  cuda_dirs+=("$d")
done; }
[[ -n "${CUDA_HOME:-}" ]] && add_dir "$CUDA_HOME/lib64" "$CUDA_HOME/lib"
add_dir /usr/local/cuda/lib64 /usr/local/cuda/lib
IFS=: read -r -a ld_dirs <<<"${LD_LIBRARY_PATH:-}"
add_dir "${ld_dirs[@]}"
# The pip wheels (nvidia-cublas-cu12, nvidia-cublas, ...) keep their libraries
# in site-packages/nvidia/<name>/lib; PyTorch's own lib/ last.
wheel_lib_dirs() {
  python3 - 2>/dev/null <<'PY'
import glob, importlib.util, os
try:
    import nvidia
    for p in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(p, "*", "lib")) + glob.glob(os.path.join(p, "*", "lib64"))):
            print(d)
except Exception:
    pass
try:
    spec = importlib.util.find_spec("torch")
    if spec and spec.submodule_search_locations:
        for p in spec.submodule_search_locations:
            print(os.path.join(p, "lib"))
except Exception:
    pass
PY
}
if command -v python3 >/dev/null 2>&1; then
  mapfile -t wheel_dirs < <(wheel_lib_dirs)
  add_dir "${wheel_dirs[@]}"
fi
# The driver's libcuda.so.1 (not part of the toolkit): where ldconfig knows it.
libcuda=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk '/libcuda\.so\.1 .*x86-64|libcuda\.so\.1 .*AArch64/ {print $NF; exit}')
if [[ -z "$libcuda" ]]; then
  for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/aarch64-linux-gnu /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
    if [[ -e "$d/libcuda.so.1" ]]; then libcuda=$d/libcuda.so.1; break; fi
  done
fi
[[ -n "$libcuda" ]] && add_dir "$(dirname "$libcuda")"

# The CUDA libraries the binaries need: the pack's list, else ldd's.
needed=()
if [[ -n "$pack_lib" && -f "$pack_lib/../CUDA_NEEDED" ]]; then
  mapfile -t needed < <(grep -v '^#' "$pack_lib/../CUDA_NEEDED")
elif command -v ldd >/dev/null 2>&1; then
  mapfile -t needed < <(ldd "$test_bin" "$bench_bin" 2>/dev/null | awk '{print $1}' |
    grep -E '^lib(cudart|cublas|cublasLt|nvrtc|nccl|cudnn)[^/]*\.so\.' | sort -u)
fi

echo
echo "== CUDA libraries"
echo "searched: ${cuda_dirs[*]:-(none)}"
echo "libcuda.so.1 (driver): ${libcuda:-not found by ldconfig}"
missing=()
for so in "${needed[@]}"; do
  found=""
  if [[ -n "$loader" ]]; then  # the pack's loader searches lib/, then these folders
    for d in "${cuda_dirs[@]}"; do [[ -e "$d/$so" ]] && { found=$d/$so; break; }; done
  else  # the system's loader: what ldd resolves (the build's RUNPATH included)
    found=$(ldd "$test_bin" "$bench_bin" 2>/dev/null | awk -v so="$so" '$1 == so && $3 ~ /^\// {print $3; exit}')
  fi
  if [[ -n "$found" ]]; then
    echo "$so: $found"
  else
    base=${so%%.so.*}
    others=$(for d in "${cuda_dirs[@]}"; do ls "$d/$base".so.* 2>/dev/null; done | sort -u | tr '\n' ' ')
    if [[ -n "$others" ]]; then
      echo "$so: NOT FOUND; this machine has only: $others"
      echo "  INCOMPATIBLE: the binaries were built against ${so} and need that major version; another major version cannot stand in."
    else
      echo "$so: NOT FOUND"
    fi
    missing+=("$so")
  fi
done
[[ ${#needed[@]} -eq 0 ]] && echo "(could not list the binaries' CUDA libraries: no CUDA_NEEDED of a pack, and ldd lists none)"
if [[ ${#missing[@]} -gt 0 ]]; then
  echo
  if [[ $gpus_listed -eq 0 ]]; then
    echo "SKIPPED: no GPU listed and no ${missing[*]} on this machine: the CUDA binaries cannot start here; no GPU check ran"
    echo "RESULT: SKIPPED (nothing was checked on a GPU)"
    exit 0
  fi
  echo "RESULT: FAILED: the binaries need ${missing[*]}, which this machine lacks."
  echo "  Install the matching CUDA runtime and cuBLAS (the major version above), point CUDA_HOME or"
  echo "  LD_LIBRARY_PATH at them, or rebuild rmoe with this machine's CUDA toolkit."
  exit 1
fi

# ---- running ----------------------------------------------------------------------
lib_path=$pack_lib
for d in "${cuda_dirs[@]}"; do lib_path+=${lib_path:+:}$d; done
# run SECONDS BINARY ARGS...: under a timeout, through the pack's loader if any.
run() {
  local t=$1; shift
  local cmd=("$@")
  [[ -n "$loader" ]] && cmd=("$loader" --library-path "$lib_path" "${cmd[@]}")
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=10 "$t" "${cmd[@]}"
  else
    "${cmd[@]}"
  fi
}

# Peak bf16 TFLOP/s by name (dense, without sparsity) for bench's "% peak".
if [[ -z "${RMOE_BF16_PEAK_TFLOPS:-}" && -n "$gpu_name" ]]; then
  case "$gpu_name" in
    *H100*PCIe*) peak=756 ;;
    *H100*NVL*|*H200*NVL*) peak=835 ;;
    *H100*|*H200*|*H800*|*GH200*) peak=989 ;;
    *A100*|*A800*) peak=312 ;;
    *) peak="" ;;
  esac
  if [[ -n "$peak" ]]; then
    export RMOE_BF16_PEAK_TFLOPS=$peak
    echo "bf16 peak for '$gpu_name': $peak TFLOP/s dense"
  else
    echo "bf16 peak for '$gpu_name' unknown here: bench_cuda's default applies (set RMOE_BF16_PEAK_TFLOPS)"
  fi
fi

echo
echo "== test_cuda (timeout ${TEST_TIMEOUT_S} s)"
test_log=$log_dir/test_cuda.log
run "$TEST_TIMEOUT_S" "$test_bin" --gtest_color=no >"$test_log" 2>&1
test_rc=$?
# One line per test from gtest's per-test result lines ("[  SKIPPED ] Cuda.X (0 ms)"),
# with the skip reason (the line after "...: Skipped").
summary=$(awk '
  /^\[ RUN +\]/ { reason = ""; grab = 0; next }
  /: Skipped$/ { grab = 1; next }
  grab == 1 { reason = $0; grab = 0; next }
  /^\[ +(OK|SKIPPED|FAILED) +\] [^ ]+ \([0-9]+ ms\)$/ {
    print $2 "\t" $4 "\t" reason; reason = ""
  }' "$test_log")
n_ok=$(awk -F'\t' '$1 == "OK"' <<<"$summary" | grep -c .)
n_skip=$(awk -F'\t' '$1 == "SKIPPED"' <<<"$summary" | grep -c .)
n_fail=$(awk -F'\t' '$1 == "FAILED"' <<<"$summary" | grep -c .)
no_device=0
grep -q $'^SKIPPED\t.*no CUDA device' <<<"$summary" && no_device=1
while IFS=$'\t' read -r status name reason; do
  [[ -z "$status" ]] && continue
  case "$status" in
    OK) if [[ $no_device -eq 1 ]]; then echo "  ok (host-side, no GPU used)  $name"; else echo "  ok       $name"; fi ;;
    SKIPPED) echo "  SKIPPED  $name: $reason" ;;
    FAILED) echo "  FAILED   $name" ;;
  esac
done <<<"$summary"
test_problem=""
if [[ $test_rc -eq 124 || $test_rc -eq 137 ]]; then
  hung=$(awk '/^\[ RUN +\]/ {t = $4} /^\[ +(OK|SKIPPED|FAILED) +\] [^ ]+ \([0-9]+ ms\)$/ {t = ""} END {print t}' "$test_log")
  test_problem="test_cuda timed out after ${TEST_TIMEOUT_S} s${hung:+ in $hung}"
elif [[ $n_fail -gt 0 ]]; then
  test_problem="$n_fail test(s) FAILED"
elif [[ $test_rc -ne 0 ]]; then
  test_problem="test_cuda exited with status $test_rc"
elif [[ $((n_ok + n_skip)) -eq 0 ]]; then
  test_problem="test_cuda ran no test"
fi
echo "test_cuda: $((n_ok + n_skip + n_fail)) tests: $n_ok ok, $n_skip SKIPPED, $n_fail FAILED (exit $test_rc; full output $test_log)"
if [[ -n "$test_problem" ]]; then
  echo "--- test_cuda output (last 60 lines) ---"
  tail -n 60 "$test_log"
  echo "---"
fi

echo
echo "== bench_cuda (timeout ${BENCH_TIMEOUT_S} s)"
bench_log=$log_dir/bench_cuda.log
bench_args=()
[[ -n "${RMOE_BENCH_SECONDS:-}" ]] && bench_args=(--seconds "$RMOE_BENCH_SECONDS")
run "$BENCH_TIMEOUT_S" "$bench_bin" "${bench_args[@]}" 2>&1 | tee "$bench_log"
bench_rc=${PIPESTATUS[0]}
bench_problem=""
if [[ $bench_rc -eq 124 || $bench_rc -eq 137 ]]; then
  bench_problem="bench_cuda timed out after ${BENCH_TIMEOUT_S} s"
elif [[ $bench_rc -ne 0 ]]; then
  bench_problem="bench_cuda FAILED (exit $bench_rc)"
fi
bench_skipped=0
grep -q '^SKIPPED: no CUDA device' "$bench_log" && { no_device=1; bench_skipped=1; }

echo
echo "elapsed: $((SECONDS - start)) s"
if [[ -n "$test_problem" || -n "$bench_problem" ]]; then
  echo "RESULT: FAILED: ${test_problem}${test_problem:+${bench_problem:+; }}${bench_problem}"
  exit 1
fi
if [[ $no_device -eq 1 ]]; then
  if [[ $gpus_listed -gt 0 ]]; then
    # The runtime's device count hides why it is 0; the usual cause is a driver
    # older than the runtime the binaries were built with.
    rt=$(printf '%s\n' "${needed[@]}" | sed -n 's/^libcudart\.so\.\([0-9]*\)$/\1/p' | head -n1)
    case "$rt" in 13) min=" (CUDA 13 needs driver 580 or newer)" ;; 12) min=" (CUDA 12 needs driver 525 or newer)" ;; *) min="" ;; esac
    echo "RESULT: FAILED: nvidia-smi lists $gpus_listed GPU(s) but the CUDA runtime sees no device,"
    echo "  so no GPU check ran. ${driver_line:-Driver version unknown.} The driver must support the"
    echo "  CUDA runtime the binaries use (libcudart.so.${rt:-?})$min, and libcuda.so.1 must be found."
    exit 1
  fi
  bench_word="the benchmark did not say SKIPPED"
  [[ $bench_skipped -eq 1 ]] && bench_word="the benchmark SKIPPED"
  echo "RESULT: SKIPPED: no CUDA device: $n_skip GPU tests SKIPPED and $bench_word; nothing was checked on a GPU ($n_ok host-side tests ok)"
  exit 0
fi
if [[ $n_skip -gt 0 ]]; then
  echo "RESULT: $n_ok tests PASSED on ${gpu_name:-the GPU}, $n_skip SKIPPED (listed above); benchmark done"
else
  echo "RESULT: PASSED: all $n_ok tests ran on ${gpu_name:-the GPU}; benchmark done"
fi
exit 0
