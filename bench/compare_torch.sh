#!/usr/bin/env bash
# rmoe against PyTorch eager on the same shape, side by side in one run:
# both take a full fp32 training step (forward, backward, AdamW) on one
# micro-batch, with the same thread count; prints both and the ratio.
# Usage: bench/compare_torch.sh CONFIG [MICRO_BATCH] [THREADS] [STEPS] [extra rmoe flags...]
#   e.g. bench/compare_torch.sh configs/medium_char_rmoe.ini 4 1 4
# Needs build/bench/bench_train_step and Debian's python3-torch (/usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: bench/compare_torch.sh CONFIG [MICRO_BATCH] [THREADS] [STEPS]}
mb=${2:-4} threads=${3:-1} steps=${4:-4}
shift $(($# < 4 ? $# : 4))
bin=${RMOE_BUILD:-build}/bench/bench_train_step
[[ -x $bin ]] || { echo "compare_torch: $bin not found; run scripts/build.sh first" >&2; exit 2; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "compare_torch: /usr/bin/python3 cannot import torch; apt-get install python3-torch" >&2; exit 2; }
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $threads thread(s), micro-batch $mb, $steps timed steps"
r=$("$bin" --config "$config" --micro-batch-size "$mb" --global-batch-size "$mb" --steps "$steps" "$@")
echo "rmoe:  ${r//$'\n'/$'\n       '}"
t=$(/usr/bin/python3 bench/torch_eager_step.py --config "$config" --micro-batch-size "$mb" --steps "$steps" \
      --threads "$threads")
echo "torch: ${t//$'\n'/$'\n       '}"
tok() { grep -oE '[0-9.]+ tokens/s' <<<"$1" | head -1 | cut -d' ' -f1; }
awk -v a="$(tok "$r")" -v b="$(tok "$t")" 'BEGIN { printf "ratio rmoe / torch eager: %.2fx\n", a / b }'
