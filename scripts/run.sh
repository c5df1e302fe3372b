#!/usr/bin/env bash
# The README's main command: installs dependencies, builds, and trains a small
# RMoE (GRU router) on the synthetic Markov source with live progress, then
# prints the validation loss next to the source's entropy rate (the best
# possible loss). Extra arguments override the config (e.g. --train-iters 50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
mkdir -p runs
exec ./build/rmoe_train --config configs/quickstart.ini --metrics-file runs/quickstart.jsonl "$@"
