#!/usr/bin/env bash
# Router comparison on real text, in one command (docs/RESULTS.md "Routers on
# real text"). On a Debian 12 machine (root, or sudo):
#
#   1. installs the build dependencies and builds (scripts/install_deps.sh,
#      scripts/build.sh), unless --skip-setup;
#   2. makes the corpus from Debian packages, never committed: the King James
#      Bible (bible-kjv, 4.3 MB) and the GNU Collaborative International
#      Dictionary of English (dict-gcide: Webster's 1913 and later entries,
#      their definitions and quotations, 36 MB without its "[1913 Webster]"
#      source lines): 40 MB of English text; or --corpus PATH;
#   3. prepares byte-level shards (1% for validation) once, reused after;
#   4. trains every variant x seed with configs/compare_routers.ini and the
#      same token budget, --jobs runs at a time, one thread each;
#   5. evaluates each on the whole validation split (rmoe_eval), runs
#      rmoe_analyze on it, and writes OUT/results.md, OUT/results.json and
#      OUT/val_curves.png (scripts/compare_routers_report.py): per-seed and
#      mean +- std validation BPC, parameters, tokens/s, routing metrics.
#
# Usage: scripts/compare_routers.sh [options] [rmoe_train options for every run]
#   --variants LIST   comma-separated (default smoe,rmoe,rmoe-torch,rmoe-detach,rmoe-np); known:
#                     smoe (linear), smoe-mlp (GELU MLP, hidden 256), random (frozen linear),
#                     rmoe (gru), rmoe-torch (gru, --router-init torch), rmoe-detach, rmoe-np (gru-np),
#                     rmoe-rnn, rmoe-lstm, rmoe-sproj (shared projection), rmoe-r0.5 (logit residual),
#                     cosine, xmoe, gru-xmoe, smoe-cap1.25 (linear, capacity factor 1.25)
#   --seeds N         seeds 1..N per variant (default 3)
#   --steps N         optimizer steps per run (default: the config's train-iters)
#   --jobs N          runs at a time (default: the number of cores)
#   --out DIR         where everything goes (default runs/compare_routers); a variant/seed
#                     whose run already finished there is kept, not trained again
#   --corpus PATH     train on this text file or directory instead of the KJV + GCIDE corpus
#   --corpus-bytes N  use only the first N bytes of the corpus
#   --build-dir DIR   the rmoe binaries (default build/)
#   --skip-setup      do not run install_deps.sh and build.sh
#   --no-install      never call apt-get (the corpus packages must be present)
#   -h, --help        this text
# Exit status: 0 done, 1 a run failed (its log is named), 2 bad usage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cmdline="scripts/compare_routers.sh $*"

say() { echo "compare_routers: $*"; }
die() { echo "compare_routers: $*" >&2; exit 1; }
usage_fail() { echo "compare_routers: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

variants=smoe,rmoe,rmoe-torch,rmoe-detach,rmoe-np seeds=3 steps="" jobs=$(nproc)
out=runs/compare_routers corpus="" corpus_bytes="" build=build setup=1 install=1
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --variants) variants=${2:?--variants needs a list}; shift ;;
    --seeds) seeds=${2:?--seeds needs a value}; shift ;;
    --steps) steps=${2:?--steps needs a value}; shift ;;
    --jobs) jobs=${2:?--jobs needs a value}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --corpus) corpus=${2:?--corpus needs a path}; shift ;;
    --corpus-bytes) corpus_bytes=${2:?--corpus-bytes needs a value}; shift ;;
    --build-dir) build=${2:?--build-dir needs a directory}; shift ;;
    --skip-setup) setup=0 ;;
    --no-install) install=0 ;;
    -h|--help) usage; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
for v in seeds jobs; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || usage_fail "--$v=${!v} must be a positive integer"
done
[[ -z $steps || $steps =~ ^[1-9][0-9]*$ ]] || usage_fail "--steps=$steps must be a positive integer"
[[ -z $corpus_bytes || $corpus_bytes =~ ^[1-9][0-9]*$ ]] || usage_fail "--corpus-bytes=$corpus_bytes must be a positive integer"
[[ -z $corpus || -e $corpus ]] || usage_fail "--corpus=$corpus: no such file or directory"

# The router flags of a variant (every other option is the config's).
variant_flags() {
  case $1 in
    smoe) echo "--moe-router-type linear" ;;
    smoe-mlp) echo "--moe-router-type mlp --router-dim 256" ;;
    random) echo "--moe-router-type random" ;;
    rmoe) echo "--moe-router-type gru" ;;
    rmoe-torch) echo "--moe-router-type gru --router-init torch" ;;
    rmoe-detach) echo "--moe-router-type gru --router-detach" ;;
    rmoe-np) echo "--moe-router-type gru-np" ;;
    rmoe-rnn) echo "--moe-router-type rnn" ;;
    rmoe-lstm) echo "--moe-router-type lstm" ;;
    rmoe-sproj) echo "--moe-router-type gru --router-shared-proj" ;;
    rmoe-r0.5) echo "--moe-router-type gru --router-logit-residual 0.5" ;;
    cosine) echo "--moe-router-type cosine" ;;
    xmoe) echo "--moe-router-type xmoe" ;;
    gru-xmoe) echo "--moe-router-type gru-xmoe" ;;
    smoe-cap1.25) echo "--moe-router-type linear --moe-expert-capacity-factor 1.25" ;;
    *) return 1 ;;
  esac
}
IFS=, read -r -a variant_list <<<"$variants"
[[ ${#variant_list[@]} -ge 1 ]] || usage_fail "--variants is empty"
for v in "${variant_list[@]}"; do
  variant_flags "$v" >/dev/null || usage_fail "--variants: unknown variant '$v' (see --help for the known ones)"
done

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
apt_install() {  # apt_install PACKAGE...
  local opts=(-o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install "${opts[@]}" "$@" >"$out/apt.log" 2>&1 && return 0
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >>"$out/apt.log" 2>&1 || true
  $SUDO apt-get install "${opts[@]}" "$@" >>"$out/apt.log" 2>&1
}
mkdir -p "$out"
t_start=$SECONDS

# ---- 1. build -----------------------------------------------------------------
if [[ $setup -eq 1 ]]; then
  say "installing dependencies and building (scripts/install_deps.sh, scripts/build.sh)"
  scripts/install_deps.sh >"$out/setup.log" 2>&1 || die "install_deps.sh failed (log: $out/setup.log)"
  scripts/build.sh >>"$out/setup.log" 2>&1 || die "build.sh failed (log: $out/setup.log)"
fi
for app in rmoe_prepare rmoe_train rmoe_eval rmoe_analyze; do
  [[ -x $build/$app ]] || die "$build/$app is missing: build first (scripts/build.sh) or give --build-dir"
done

# ---- 2. the corpus ------------------------------------------------------------
if [[ -z $corpus ]]; then
  corpus=$out/corpus
  if [[ ! -s $corpus/kjv.txt || ! -s $corpus/gcide.txt ]]; then
    need=()
    command -v bible >/dev/null || need+=(bible-kjv)
    [[ -s /usr/share/dictd/gcide.dict.dz ]] || need+=(dict-gcide)
    if [[ ${#need[@]} -gt 0 ]]; then
      [[ $install -eq 1 ]] || die "the corpus needs Debian's ${need[*]}, and --no-install is set; install them or give --corpus PATH"
      say "installing the corpus packages: ${need[*]}"
      apt_install "${need[@]}" || die "could not install ${need[*]} (log: $out/apt.log); give your own text with --corpus PATH"
    fi
    mkdir -p "$corpus"
    COLUMNS=80 bible Gen1:1-Rev22:21 >"$corpus/kjv.txt.tmp" || die "bible-kjv could not print the text"
    mv "$corpus/kjv.txt.tmp" "$corpus/kjv.txt"
    # dictd's text: headwords, definitions and quotations; the source tags are dropped.
    gzip -dc /usr/share/dictd/gcide.dict.dz | grep -a -v '^ *\[[^]]*Webster\]$' >"$corpus/gcide.txt.tmp" \
      || die "could not read dict-gcide's /usr/share/dictd/gcide.dict.dz"
    mv "$corpus/gcide.txt.tmp" "$corpus/gcide.txt"
  fi
fi
input=$corpus
if [[ -n $corpus_bytes ]]; then
  input=$out/corpus-slice.txt
  # head ends the pipe early on purpose (SIGPIPE upstream): no pipefail here.
  if [[ -d $corpus ]]; then
    (set +o pipefail; find "$corpus" -type f -not -name '.*' -print0 | sort -z | xargs -0 cat | head -c "$corpus_bytes") \
      >"$input"
  else
    head -c "$corpus_bytes" "$corpus" >"$input"
  fi
fi
corpus_size=$(if [[ -d $input ]]; then du -sbL "$input" | cut -f1; else stat -L -c %s "$input"; fi)
[[ $corpus_size -ge 65536 ]] || die "the corpus $input holds only $corpus_size bytes; give at least 64 kB"

# ---- 3. byte-level shards (reused while the corpus is the same) -------------
stamp="corpus=$(realpath "$input") size=$corpus_size"
if [[ -f $out/data/dataset.h5 && -f $out/data.source && $(cat "$out/data.source") == "$stamp" ]]; then
  say "reusing the prepared data in $out/data"
else
  say "preparing byte-level shards of $input ($corpus_size bytes, 1% for validation) into $out/data"
  rm -f "$out/data.source"
  "$build/rmoe_prepare" --input "$input" --output "$out/data" --tokenizer byte --val-fraction 0.01 --overwrite \
    --quiet | sed 's/^/  /'
  echo "$stamp" >"$out/data.source"
fi

# ---- 4. training: variant x seed, --jobs at a time ------------------------------
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1  # one thread per run: the runs share the cores
train_common=(--config configs/compare_routers.ini --data-path "$out/data")
[[ -n $steps ]] && train_common+=(--train-iters "$steps")
train_common+=("${extra[@]}")
runs=()
for v in "${variant_list[@]}"; do
  for s in $(seq 1 "$seeds"); do runs+=("$v/seed$s"); done
done
say "${#runs[@]} runs (${variants} x seeds 1..$seeds), $jobs at a time, into $out/runs"
# One run: train (unless it finished before), then evaluate and analyse its last checkpoint.
one_run() {
  local run=$1 v=${1%/*} s=${1#*/seed} dir=$out/runs/$1
  mkdir -p "$dir"
  if [[ ! -f $dir/done ]]; then
    rm -rf "$dir/ckpt" "$dir/metrics.jsonl"
    # shellcheck disable=SC2046
    "$build/rmoe_train" "${train_common[@]}" $(variant_flags "$v") --dry-run >"$dir/dry_run.txt" 2>&1 \
      || { echo "FAILED $run: rmoe_train --dry-run (log: $dir/dry_run.txt)"; return 1; }
    # shellcheck disable=SC2046
    "$build/rmoe_train" "${train_common[@]}" $(variant_flags "$v") --seed "$s" --save "$dir/ckpt" \
      --save-interval 0 --keep-checkpoints 1 --metrics-file "$dir/metrics.jsonl" >"$dir/train.log" 2>&1 \
      || { echo "FAILED $run: rmoe_train (log: $dir/train.log)"; return 1; }
    "$build/rmoe_eval" --load "$dir/ckpt" --data-path "$out/data" >"$dir/eval.txt" 2>&1 \
      || { echo "FAILED $run: rmoe_eval (log: $dir/eval.txt)"; return 1; }
    "$build/rmoe_analyze" --load "$dir/ckpt" --data-path "$out/data" --out "$dir/analysis" --no-plots \
      >"$dir/analyze.log" 2>&1 || { echo "FAILED $run: rmoe_analyze (log: $dir/analyze.log)"; return 1; }
    touch "$dir/done"
  fi
  echo "done $run: $(grep -o 'bpc [0-9.]*' "$dir/eval.txt" | head -1) ($(grep -o '[0-9]* tokens/s' "$dir/train.log" | tail -1))"
}
# Each run in a subshell that records its exit status next to its outputs;
# `jobs -rp` paces them (wait -n only wakes the loop: its status is not used,
# since a run that ends before wait -n is called is reported as 127).
for run in "${runs[@]}"; do
  mkdir -p "$out/runs/$run"
  rm -f "$out/runs/$run/exit_status"
  while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n 2>/dev/null || true; done
  ( one_run "$run" && st=0 || st=$?; echo "$st" >"$out/runs/$run/exit_status" ) &
done
wait
failed=0 n_done=0
for run in "${runs[@]}"; do
  st=$(cat "$out/runs/$run/exit_status" 2>/dev/null || echo missing)
  [[ $st == 0 ]] && n_done=$((n_done + 1)) || { failed=1; echo "run $run: exit status $st"; }
done
say "$n_done/${#runs[@]} runs finished ($(( (SECONDS - t_start) / 60 )) min)"
[[ $failed -eq 0 ]] || die "some runs failed (FAILED lines above); finished runs are kept: run the same command again to redo only the failed ones"

# ---- 5. the table and the curves ---------------------------------------------------
args=(--out "$out" --corpus "$input" --corpus-bytes "$corpus_size" --seeds "$seeds" --minutes $(( (SECONDS - t_start + 59) / 60 )))
args+=(--command "$cmdline")
/usr/bin/python3 scripts/compare_routers_report.py "${args[@]}" "${variant_list[@]}" \
  || die "the report failed (scripts/compare_routers_report.py)"
say "done in $(( (SECONDS - t_start) / 60 )) min: $out/results.md, $out/results.json, $out/val_curves.png"
