#!/usr/bin/env bash
# Installs rmoe's build and test dependencies from Debian packages. Idempotent:
# packages already present are skipped, so a second run costs a dpkg query.
# Usage: scripts/install_deps.sh
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  libboost-program-options-dev
  libopenblas-dev
  libgtest-dev
  nlohmann-json3-dev
  libsentencepiece-dev sentencepiece
  # Figures of scripts/plot_metrics.py and scripts/plot_analyze.py (rmoe_analyze
  # runs the latter; tests/cli/analyze.sh checks the PNGs when it is present).
  python3-matplotlib
  # The sanitizer + fuzz build of scripts/test.sh (build-asan, tests/fuzz):
  # clang 14, its sanitizer and libFuzzer runtimes, its OpenMP runtime, and
  # llvm-symbolizer for readable sanitizer reports.
  clang libclang-rt-14-dev libomp-dev llvm
)
# The test suite needs nothing more: golden files are committed, so torch is
# only needed to regenerate them (tests/torch_ref/README.md).

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "install_deps: installing ${missing[*]}"
# Wait for another apt/dpkg to release its lock instead of failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get install "${apt_opts[@]}" "${missing[@]}"
