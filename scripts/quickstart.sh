#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine (root, or sudo):
#
#   1. installs the build dependencies (scripts/install_deps.sh) and builds
#      (scripts/build.sh; incremental);
#   2. installs a real English text, the King James Bible (Debian's bible-kjv,
#      4.3 MB of text), unless --corpus names another text;
#   3. prepares byte-level shards with rmoe_prepare into RUN_DIR/data (reused
#      by the next run while the corpus is the same);
#   4. trains a small RMoE (configs/quickstart.ini: GRU router, byte
#      vocabulary 256) with `mpirun -n 2`, printing progress as it goes,
#      saving checkpoints to RUN_DIR/ckpt and metrics to RUN_DIR/metrics.jsonl;
#   5. evaluates the whole validation split with rmoe_eval (bits per character),
#      prints a sample from rmoe_generate, plots the metrics (RUN_DIR/metrics.png,
#      installing python3-matplotlib if missing), and says where everything went.
#
# A few minutes on 2 cores after the build. RUN_DIR is runs/quickstart.
# Running it again reuses the build and the prepared data and starts a NEW
# run: the previous run's checkpoints, metrics, logs, sample and plot are
# moved to RUN_DIR/old/<date-time>/ first. With --resume it continues the
# previous run from its newest checkpoint instead (appending to its metrics);
# give a larger --steps (or --train-iters) to train further than it already did.
#
# Usage: scripts/quickstart.sh [options] [rmoe_train options]
#   --resume           continue the previous run in RUN_DIR
#   --steps N          train N steps (env QUICKSTART_STEPS; default: the config's train-iters)
#   --corpus PATH      train on this text file or directory instead of the KJV Bible
#   --corpus-bytes N   use only the first N bytes of the corpus (env QUICKSTART_CORPUS_BYTES)
#   --prompt TEXT      the sample's prompt (default: "And God said" for the Bible, else "The ")
#   --ranks N          MPI ranks (env QUICKSTART_RANKS; default 2; with more than 2 also give
#                      --micro-batch-size so that N x it divides the global batch of 32)
#   --run-dir DIR      where everything goes (default runs/quickstart)
#   --build-dir DIR    the rmoe binaries (default build/)
#   --skip-setup       do not run install_deps.sh and build.sh (BUILD_DIR must hold the binaries)
#   --no-install       never call apt-get (the corpus package and matplotlib must be present;
#                      without matplotlib the plot is skipped)
#   -h, --help         this text
# Anything else goes to rmoe_train and overrides the config, e.g.
#   scripts/quickstart.sh --moe-router-type linear --lr 2e-3
# Exit status: 0 done; 3 training stopped early after saving a checkpoint (resume with
# --resume); otherwise the failing step's status.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { echo "quickstart: $*"; }
die() { echo "quickstart: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

resume=0 setup=1 install=1
steps=${QUICKSTART_STEPS:-}
corpus="" corpus_bytes=${QUICKSTART_CORPUS_BYTES:-} prompt="" ranks=${QUICKSTART_RANKS:-2}
run=runs/quickstart build=build
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --resume) resume=1 ;;
    --steps) steps=${2:?--steps needs a value}; shift ;;
    --steps=*) steps=${1#*=} ;;
    --corpus) corpus=${2:?--corpus needs a path}; shift ;;
    --corpus=*) corpus=${1#*=} ;;
    --corpus-bytes) corpus_bytes=${2:?--corpus-bytes needs a value}; shift ;;
    --corpus-bytes=*) corpus_bytes=${1#*=} ;;
    --prompt) prompt=${2?--prompt needs a value}; shift ;;
    --prompt=*) prompt=${1#*=} ;;
    --ranks) ranks=${2:?--ranks needs a value}; shift ;;
    --ranks=*) ranks=${1#*=} ;;
    --run-dir) run=${2:?--run-dir needs a path}; shift ;;
    --run-dir=*) run=${1#*=} ;;
    --build-dir) build=${2:?--build-dir needs a path}; shift ;;
    --build-dir=*) build=${1#*=} ;;
    --skip-setup) setup=0 ;;
    --no-install) install=0 ;;
    -h | --help) usage; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
for v in steps corpus_bytes ranks; do
  [[ -z ${!v} || ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "quickstart: --${v//_/-}=${!v} must be a positive integer" >&2; exit 2; }
done
[[ -z $corpus || -e $corpus ]] || { echo "quickstart: --corpus=$corpus: no such file or directory" >&2; exit 2; }
[[ -n $corpus ]] && corpus=$(realpath "$corpus")
mkdir -p "$run"
run=$(realpath "$run")
build=$(realpath -m "$build")

t_start=$SECONDS
elapsed() { local s=$((SECONDS - ${1:-$t_start})); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
apt_install() {  # apt_install PACKAGE... (update once if the first try fails)
  local log=$run/apt.log
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
  $SUDO apt-get install "${opts[@]}" "$@" >"$log" 2>&1 && return 0
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >>"$log" 2>&1 || true
  $SUDO apt-get install "${opts[@]}" "$@" >>"$log" 2>&1 && return 0
  tail -n 3 "$log" >&2
  return 1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# ---- 1. dependencies and build ------------------------------------------------
if [[ $setup -eq 1 ]]; then
  say "installing dependencies (scripts/install_deps.sh) and building (scripts/build.sh)"
  bash scripts/install_deps.sh
  [[ $build == "$root/build" ]] || die "--build-dir is for --skip-setup; scripts/build.sh builds into build/"
  bash scripts/build.sh
fi
for app in rmoe_train rmoe_prepare rmoe_eval rmoe_generate; do
  [[ -x $build/$app ]] || die "$build/$app is missing; build first (scripts/build.sh) or run without --skip-setup"
done
t_work=$SECONDS

# ---- 2. the corpus -----------------------------------------------------------
bible_text=0
if [[ -z $corpus ]]; then
  bible_text=1
  corpus=$run/corpus/kjv.txt
  if [[ ! -s $corpus ]]; then
    if ! command -v bible >/dev/null; then
      [[ $install -eq 1 ]] || die "the King James Bible (Debian package bible-kjv) is not installed and --no-install is set; install it or give --corpus FILE"
      say "installing the corpus: Debian's bible-kjv (the King James Bible, 2.5 MB download)"
      apt_install bible-kjv || die "could not install bible-kjv (log: $run/apt.log); give your own text with --corpus FILE"
    fi
    mkdir -p "$run/corpus"
    # The whole text, pretty-printed: book and chapter headings, numbered verses, lines <= 79 columns.
    COLUMNS=80 bible Gen1:1-Rev22:21 >"$corpus.tmp" || die "bible-kjv could not print the text"
    mv "$corpus.tmp" "$corpus"
  fi
fi
input=$corpus
if [[ -n $corpus_bytes ]]; then
  input=$run/corpus-slice.txt
  if [[ -d $corpus ]]; then
    find "$corpus" -type f -not -name '.*' -print0 | sort -z | xargs -0 cat | head -c "$corpus_bytes" >"$input"
  else
    head -c "$corpus_bytes" "$corpus" >"$input"
  fi
fi
corpus_size=$(if [[ -d $input ]]; then du -sb "$input" | cut -f1; else stat -c %s "$input"; fi)
[[ $corpus_size -ge 4096 ]] || die "the corpus $input holds only $corpus_size bytes; give at least 4 kB"

# ---- 3. byte-level shards (reused while the corpus is the same) -------------
stamp="corpus=$corpus bytes=${corpus_bytes:-all} size=$corpus_size"
if [[ -f $run/data/dataset.h5 && -f $run/data.source && $(cat "$run/data.source") == "$stamp" ]]; then
  say "reusing the prepared data in $run/data"
else
  # 1% of the text for validation, at least 8192 tokens (64 windows of 128).
  val=$((corpus_size / 100 > 8192 ? corpus_size / 100 : 8192))
  say "preparing byte-level shards of $input ($corpus_size bytes) into $run/data"
  rm -f "$run/data.source"
  "$build/rmoe_prepare" --input "$input" --output "$run/data" --tokenizer byte --val-tokens "$val" --overwrite \
    --quiet | sed 's/^/  /'
  echo "$stamp" >"$run/data.source"
fi

# ---- 4. training ---------------------------------------------------------------
outputs=(ckpt metrics.jsonl metrics.png train.log eval.txt sample.txt)
moved=""
if [[ $resume -eq 0 ]]; then
  for f in "${outputs[@]}"; do
    if [[ -e $run/$f ]]; then
      [[ -n $moved ]] || { moved=$run/old/$(date +%Y%m%d-%H%M%S); mkdir -p "$moved"; }
      mv "$run/$f" "$moved/"
    fi
  done
  [[ -z $moved ]] || say "moved the previous run to $moved (use --resume to continue a run instead)"
fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1  # one thread per rank: the ranks share the cores
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe -n "$ranks")
train_args=(--config configs/quickstart.ini --data-path "$run/data" --save "$run/ckpt"
  --metrics-file "$run/metrics.jsonl")
[[ $resume -eq 1 ]] && train_args+=(--load "$run/ckpt")
[[ -n $steps ]] && train_args+=(--train-iters "$steps")
train_args+=("${extra[@]}")
say "training with $ranks MPI ranks: rmoe_train ${train_args[*]}"
trap 'echo; say "interrupted; the run so far is in $run (continue it with: scripts/quickstart.sh --resume)"; exit 130' INT
t_train=$SECONDS
set +e
"${mpi[@]}" "$build/rmoe_train" "${train_args[@]}" 2>&1 | tee -a "$run/train.log"
st=${PIPESTATUS[0]}
set -e
trap - INT
train_time=$(elapsed "$t_train")
if [[ $st -eq 3 ]]; then
  say "training stopped early after saving a checkpoint in $run/ckpt; continue with: scripts/quickstart.sh --resume"
  exit 3
fi
[[ $st -eq 0 ]] || die "rmoe_train failed (status $st); its output is in $run/train.log"

# ---- 5. evaluation, a sample, the plot ------------------------------------------
say "evaluating the newest checkpoint on the whole validation split (rmoe_eval)"
set +e
"${mpi[@]}" "$build/rmoe_eval" --load "$run/ckpt" --data-path "$run/data" 2>&1 | tee "$run/eval.txt"
st=${PIPESTATUS[0]}
set -e
[[ $st -eq 0 ]] || die "rmoe_eval failed (status $st); see $run/eval.txt"

if [[ -z $prompt ]]; then
  if [[ $bible_text -eq 1 ]]; then prompt="And God said"; else prompt="The "; fi
fi
say "a sample (rmoe_generate --prompt \"$prompt\" --max-tokens 400 --temperature 0.8 --seed 1):"
"$build/rmoe_generate" --load "$run/ckpt" --data-path "$run/data" --prompt "$prompt" --max-tokens 400 \
  --temperature 0.8 --seed 1 >"$run/sample.txt" 2>"$run/sample.log" \
  || { cat "$run/sample.log" >&2; die "rmoe_generate failed"; }
echo "----------------------------------------------------------------------"
cat "$run/sample.txt"
echo "----------------------------------------------------------------------"

plot_note=""
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  if [[ $install -eq 1 ]]; then
    say "installing python3-matplotlib for the plot"
    apt_install python3-matplotlib || say "warning: could not install python3-matplotlib (log: $run/apt.log)"
  fi
fi
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  /usr/bin/python3 scripts/plot_metrics.py "$run/metrics.jsonl" -o "$run/metrics.png" --bpc \
    --title "quickstart: RMoE (GRU router), byte-level $(basename "$corpus")" | sed 's/^/  /'
else
  plot_note=" (not written: python3-matplotlib is missing)"
fi

bpc=$(sed -n 's/.*| bpc \([0-9.]*\).*/\1/p' "$run/eval.txt" | tail -1)
tps=$(sed -n 's/^done: .*(\([0-9]*\) tokens\/s).*/\1/p' "$run/train.log" | tail -1)
echo
say "done in $(elapsed) ($(elapsed "$t_work") after the build; training $train_time)"
echo "  validation   ${bpc:-?} bits per character (whole validation split; 8 = uniform over bytes)"
echo "  throughput   ${tps:-?} tokens/s with $ranks ranks"
echo "  corpus       $input"
echo "  data         $run/data (byte-level shards; reused next time)"
echo "  checkpoints  $run/ckpt"
echo "  training log $run/train.log"
echo "  metrics      $run/metrics.jsonl"
echo "  plot         $run/metrics.png$plot_note"
echo "  evaluation   $run/eval.txt"
echo "  sample       $run/sample.txt"
[[ -z $moved ]] || echo "  previous run $moved"
echo "Continue this run:  scripts/quickstart.sh --resume --steps N   (N > the steps done so far)"
echo "Evaluate / sample:  $build/rmoe_eval --load $run/ckpt --data-path $run/data"
echo "                    $build/rmoe_generate --load $run/ckpt --data-path $run/data --prompt \"$prompt\""
