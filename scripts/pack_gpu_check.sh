#!/usr/bin/env bash
# pack_gpu_check.sh — bundles rmoe's GPU checks for a machine that has a GPU
# and the CUDA libraries but none of the build's other dependencies (no MPI,
# HDF5, OpenBLAS, maybe another glibc): test_cuda and bench_cuda of a CUDA
# build, scripts/gpu_check.sh, and every non-CUDA shared library they load,
# the dynamic loader and the C/C++ runtime included, so the binaries start
# through the pack's loader whatever that machine's Linux is. The CUDA
# libraries (driver, runtime, cuBLAS, ...) are left out: they must match the
# machine's driver, and gpu_check.sh finds them there.
#
# Usage: scripts/pack_gpu_check.sh OUT_DIR
#   binaries from $RMOE_BUILD when set, else build/ of this source tree;
#   OUT_DIR must not exist or be empty; the pack must stay under 60 MB.
# Then, on the GPU machine: OUT_DIR/gpu_check.sh
#
# The pack: bin/test_cuda, bin/bench_cuda, lib/ (each library under the
# soname the binaries ask for, copied from the file the link points to),
# gpu_check.sh, CUDA_NEEDED (the CUDA sonames the binaries need, one a line)
# and MANIFEST (source commit, glibc, size and sha256 of every file). The
# same build gives the same bytes: sorted lists, no dates, file times set to
# SOURCE_DATE_EPOCH (default 0).
set -euo pipefail

readonly LIMIT_BYTES=60000000  # 60 MB
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

fail() { echo "pack_gpu_check: $*" >&2; exit 1; }
[[ $# -eq 1 && -n "$1" ]] || { echo "usage: pack_gpu_check.sh OUT_DIR   (binaries from \$RMOE_BUILD or build/)" >&2; exit 2; }
out=$1
if [[ -e "$out" ]]; then
  [[ -d "$out" ]] || fail "OUT_DIR '$out' exists and is not a folder; name a new or empty folder"
  [[ -z "$(ls -A "$out")" ]] || fail "OUT_DIR '$out' is not empty; name a new or empty folder (nothing was written)"
fi

build=${RMOE_BUILD:-$src/build}
[[ -d "$build" ]] || fail "build folder '$build' does not exist; configure and build with CUDA (cmake -B build -DRMOE_CUDA=ON) or set RMOE_BUILD"
test_bin=$build/tests/test_cuda bench_bin=$build/bench/bench_cuda
[[ -x "$test_bin" ]] || fail "no $test_bin; build it: cmake --build $build --target test_cuda"
[[ -x "$bench_bin" ]] || fail "no $bench_bin: the build in $build has no CUDA (bench_cuda exists only with it) or it is not built; configure with -DRMOE_CUDA=ON and run cmake --build $build --target test_cuda bench_cuda"
command -v ldd >/dev/null || fail "ldd is needed to list the binaries' libraries (glibc's ldd; install libc-bin)"

# The CUDA libraries, never packed: the GPU machine's driver decides which work.
cuda_re='^lib(cuda|cudart|cublas|cublasLt|nvrtc|nvrtc-builtins|nvJitLink|nccl|cudnn[A-Za-z0-9_]*|cufft|cufftw|curand|cusolver|cusparse|cusparseLt|cupti|nvToolsExt|nvidia-[A-Za-z0-9_-]+)\.so'

# ldd of both binaries -> "soname<TAB>path" lines, the loader as "LOADER<TAB>path".
libs=$(ldd "$test_bin" "$bench_bin" | awk '
  $2 == "=>" && $3 ~ /^\// { print $1 "\t" $3; next }
  $2 == "=>" && $3 == "not" { print $1 "\tNOT_FOUND"; next }
  $1 ~ /^\// && $1 ~ /ld-linux|ld64/ { print "LOADER\t" $1 }' | sort -u)
loader=$(awk -F'\t' '$1 == "LOADER" {print $2; exit}' <<<"$libs")
[[ -n "$loader" ]] || fail "ldd names no dynamic loader for $test_bin (a static binary? this script packs dynamic ones)"
cuda_needed=$(awk -F'\t' '$1 != "LOADER" {print $1}' <<<"$libs" | grep -E "$cuda_re" | sort -u || true)
[[ -n "$cuda_needed" ]] || fail "$test_bin links no CUDA library: $build is not a CUDA build; configure with -DRMOE_CUDA=ON"
unresolved=$(awk -F'\t' '$2 == "NOT_FOUND" {print $1}' <<<"$libs" | grep -vE "$cuda_re" || true)
[[ -z "$unresolved" ]] || fail "ldd cannot find $(echo $unresolved) for the binaries in $build; the pack would not start; fix the library path (LD_LIBRARY_PATH) and rerun"

# Keep a half-written or refused pack from looking like a good one.
created=0
[[ -e "$out" ]] || created=1
done_ok=0
cleanup() {
  [[ $done_ok -eq 1 ]] && return
  rm -rf "$out/bin" "$out/lib" "$out/gpu_check.sh" "$out/CUDA_NEEDED" "$out/MANIFEST"
  [[ $created -eq 1 ]] && rmdir "$out" 2>/dev/null
  return 0
}
trap cleanup EXIT
mkdir -p "$out/bin" "$out/lib"

cp "$test_bin" "$bench_bin" "$out/bin/"
cp "$src/scripts/gpu_check.sh" "$out/gpu_check.sh"
chmod 755 "$out/bin/test_cuda" "$out/bin/bench_cuda" "$out/gpu_check.sh"
cp -L "$loader" "$out/lib/$(basename "$loader")"
libc_dir=""
while IFS=$'\t' read -r so path; do
  [[ "$so" == LOADER || "$path" == NOT_FOUND ]] && continue
  grep -qE "$cuda_re" <<<"$so" && continue
  cp -L "$path" "$out/lib/$so"
  if [[ "$so" == libc.so.6 ]]; then libc_dir=$(dirname "$(readlink -f "$path")"); fi
done <<<"$libs"
# glibc's other parts that the machine's CUDA libraries may load (libcuda
# links libdl, libpthread, librt): from the pack's glibc too, since a glibc
# mixed from two versions fails at symbol binding.
if [[ -n "$libc_dir" ]]; then
  for so in libdl.so.2 libpthread.so.0 librt.so.1 libm.so.6; do
    if [[ ! -e "$out/lib/$so" && -e "$libc_dir/$so" ]]; then cp -L "$libc_dir/$so" "$out/lib/$so"; fi
  done
fi
chmod 755 "$out/lib"/*
echo "$cuda_needed" >"$out/CUDA_NEEDED"

# MANIFEST: what was packed, from which source, against which glibc.
commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
# (No `| head` under pipefail: the writer's SIGPIPE would fail the script.)
changes=$(git -C "$src" status --porcelain 2>/dev/null || true)
glibc=$(ldd --version 2>/dev/null | sed -n 1p || true)
{
  echo "# rmoe gpu_check pack: run ./gpu_check.sh on the GPU machine"
  echo "source: $commit${changes:+ (with uncommitted changes)}"
  echo "glibc: $glibc"
  echo "cuda libraries needed from the machine: $(echo $cuda_needed)"
  (cd "$out" && find bin lib gpu_check.sh CUDA_NEEDED -type f | LC_ALL=C sort | while read -r f; do
    printf '%s %10d %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
  done)
} >"$out/MANIFEST"
find "$out" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +

size=$(find "$out" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
mb=$(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1e6}')
if [[ $size -gt $LIMIT_BYTES ]]; then
  echo "pack_gpu_check: the pack is $mb MB, over the 60 MB limit; the largest files:" >&2
  (cd "$out" && find . -type f -printf '%s %p\n' | sort -rn | awk 'NR <= 5' | awk '{printf "  %6.1f MB %s\n", $1 / 1e6, $2}') >&2
  echo "  Nothing was kept in $out. Build the binaries without unneeded libraries (or stripped) and rerun." >&2
  exit 1
fi
done_ok=1
echo "packed $out: $mb MB (limit 60 MB): bin/test_cuda, bin/bench_cuda, $(ls "$out/lib" | wc -l) libraries in lib/, gpu_check.sh"
echo "CUDA libraries left to the GPU machine: $(echo $cuda_needed)"
echo "run there: $out/gpu_check.sh"
