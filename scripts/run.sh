#!/usr/bin/env bash
# Kept for old instructions: the README's first command is now
# scripts/quickstart.sh (install, build, byte-level RMoE on real text under
# mpirun -n 2, evaluation, a sample, a plot). Arguments pass through.
exec bash "$(dirname "$0")/quickstart.sh" "$@"
