#!/usr/bin/env bash
# rmoe_analyze on small checkpoints (docs/ANALYSIS.md):
#  1. a GRU checkpoint of byte data, --tokens 1000: analysis.json has every
#     field, of the right shape, each value in its range (entropy in
#     [0, ln E], histograms summing to the tokens, IB >= 1, OB in [k/E, 1],
#     selection frequencies summing to 1, symmetric MI matrices no larger off
#     the diagonal than on it, expert similarity in [0, 1] with a unit
#     diagonal, the router tensors named); the PNGs when matplotlib is present;
#     a second run writes the same JSON.
#  2. the default is the whole validation split; more --tokens than the split
#     is cut to it with a note.
#  3. without matplotlib (a stand-in package on PYTHONPATH that fails to
#     import) the JSON is still written, the app says so and exits 0;
#     --no-plots writes no figure.
#  4. a linear-router checkpoint (no shared cell: router_cell null, gate_w
#     only), and a synthetic-data checkpoint with no --data-path.
#  5. errors, one line and exit status 2: --tokens 0, no --load, --out a file; refused under
#     mpirun -n 2.
# Usage: analyze.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
py=/usr/bin/python3
have_mpl=0
$py -c 'import matplotlib' 2>/dev/null && have_mpl=1

awk 'BEGIN { srand(7); split("the a of and to in he she it was said unto king land day light water", w, " ");
             for (i = 0; i < 6000; i++) { printf "%s%s", w[int(rand() * 17) + 1], (rand() < 0.1 ? ".\n" : " ") } }' \
  >"$work/text.txt"
"$build/rmoe_prepare" --input "$work/text.txt" --output "$work/data" --tokenizer byte --val-tokens 3000 --quiet \
  >/dev/null 2>&1 || { echo "FAIL: rmoe_prepare"; exit 1; }
# tiny.ini: 2 layers, 4 experts top-2, S = 32. 3 layers here so the MI matrix has a non-neighbour pair.
"$build/rmoe_train" --config "$src/configs/tiny.ini" --vocab-size 256 --data-path "$work/data" --num-layers 3 \
  --train-iters 30 --save "$work/ck" >"$work/train.log" 2>&1 || { echo "FAIL: training"; cat "$work/train.log"; exit 1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --vocab-size 256 --data-path "$work/data" \
  --moe-router-type linear --train-iters 4 --save "$work/cklin" >"$work/lin.log" 2>&1 \
  || { echo "FAIL: training the linear checkpoint"; cat "$work/lin.log"; exit 1; }
"$build/rmoe_train" --config "$src/configs/tiny.ini" --train-iters 2 --save "$work/cksyn" >"$work/syn.log" 2>&1 \
  || { echo "FAIL: training the synthetic checkpoint"; cat "$work/syn.log"; exit 1; }

# check_report JSON TOKENS LAYERS EXPERTS TOPK ROUTER: prints nothing when the report is sound.
check_report() {
  $py - "$@" <<'EOF'
import json, math, sys
path, tokens, L, E, k, router = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = json.load(open(path))
err = []
def check(cond, what):
    if not cond:
        err.append(what)
check(r["data"]["tokens"] == tokens, f"tokens {r['data']['tokens']} != {tokens}")
m = r["model"]
check((m["num_layers"], m["num_experts"], m["topk"], m["router_type"]) == (L, E, k, router), f"model {m}")
check(len(r["layers"]) == L, "one entry per layer")
eps = 1e-6
for l, e in enumerate(r["layers"]):
    g = e["gate_entropy"]
    check(abs(g["max"] - math.log(E)) < 1e-12, f"layer {l} entropy max")
    check(0 <= g["mean"] <= math.log(E) + eps, f"layer {l} entropy mean {g['mean']}")
    check(len(g["histogram"]) == g["bins"] and sum(g["histogram"]) == tokens, f"layer {l} histogram")
    check(e["ib_median"] is None or e["ib_median"] >= 1, f"layer {l} IB {e['ib_median']}")
    check(0 <= e["ib_infinite_fraction"] <= 1, f"layer {l} IB infinite fraction")
    check(k / E - eps <= e["ob_median"] <= 1 + eps, f"layer {l} OB {e['ob_median']}")
    f = e["selection_frequency"]
    check(len(f) == E and all(0 <= x <= 1 for x in f) and abs(sum(f) - 1) < 1e-9, f"layer {l} selection {f}")
    want = {"gate_w"} if router in ("linear", "random") else {"proj_w", "proj_b", "gate_w", "gate_b"}
    names = set(e["router_weights"]["tensors"])
    check(names == {f"layers/{l:02d}/router/{n}" for n in want}, f"layer {l} router tensors {names}")
    check(e["router_weights"]["norm"] > 0 and e["router_weights"]["std"] > 0, f"layer {l} router stats")
    s = e["expert_similarity"]
    check(all(-eps <= s[x] <= 1 + eps for x in ("mean", "w1", "w3", "w2")), f"layer {l} similarity {s['mean']}")
    check(abs(s["mean"] - (s["w1"] + s["w3"] + s["w2"]) / 3) < 1e-12, f"layer {l} similarity mean of three")
    check(abs(s["orthogonal_value"] - 1 / E) < 1e-15, f"layer {l} orthogonal value")
    G = s["gram"]
    check(len(G) == E and all(len(row) == E for row in G), f"layer {l} gram shape")
    check(all(abs(G[i][i] - 1) < 1e-9 for i in range(E)), f"layer {l} gram diagonal")
    check(abs(sum(map(sum, G)) / E**2 - s["mean"]) < 1e-9, f"layer {l} gram mean")
cell = r["router_cell"]
if router in ("gru", "gru-np", "rnn"):
    check(cell is not None and set(cell["tensors"]) == {f"router/cell/{n}" for n in ("w_ih", "w_hh", "b_ih", "b_hh")},
          f"router cell {cell}")
else:
    check(cell is None, "router_cell should be null without a shared cell")
mi = r["mutual_information"]
check(mi["paper_binned"]["bins"] == 100, "paper bins")
for name in ("paper_binned", "top1_miller_madow", "top1_plugin"):
    M = mi[name]["matrix"]
    check(len(M) == L and all(len(row) == L for row in M), f"{name} shape")
    for a in range(L):
        for b in range(L):
            check(M[a][b] == M[b][a], f"{name} not symmetric at {a},{b}")
            if name != "top1_miller_madow":  # plug-in MI: 0 <= I(a;b) <= min(H(a), H(b))
                check(-1e-12 <= M[a][b] <= min(M[a][a], M[b][b]) + 1e-9, f"{name}[{a}][{b}] = {M[a][b]}")
    if name == "top1_miller_madow":
        P = mi["top1_plugin"]["matrix"]
        check(all(M[a][a] >= P[a][a] for a in range(L)), "Miller-Madow adds (m - 1)/2N to each entropy")
for e in err:
    print(e)
EOF
}
pngs() { ls "$1"/*.png 2>/dev/null | wc -l; }
is_png() { [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; }

# 1. a GRU checkpoint, 1000 tokens
out=$("$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --tokens 1000 --out "$work/a1" 2>&1) \
  || bad "rmoe_analyze: $out"
[[ -f $work/a1/analysis.json ]] || bad "no analysis.json: $out"
problems=$(check_report "$work/a1/analysis.json" 1000 3 4 2 gru 2>&1)
[[ -z $problems ]] || bad "report of the GRU checkpoint: $problems"
grep -q "analysing 1000 tokens (--tokens)" <<<"$out" || bad "no line on the tokens analysed: $out"
if [[ $have_mpl -eq 1 ]]; then
  for f in gates experts mutual_information; do
    [[ -s $work/a1/$f.png ]] && is_png "$work/a1/$f.png" || bad "no $f.png with matplotlib present: $out"
  done
else
  echo "note: matplotlib is missing here, so the figures are not checked"
fi
"$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --tokens 1000 --out "$work/a1b" --no-plots \
  >/dev/null 2>&1 || bad "second run"
cmp -s "$work/a1/analysis.json" "$work/a1b/analysis.json" || bad "two runs wrote different reports"
[[ $(pngs "$work/a1b") -eq 0 ]] || bad "--no-plots wrote figures"

# 2. the default: the whole validation split (3000 tokens = 93 windows of 33: 93 x 32 tokens)
out=$("$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --out "$work/a2" --no-plots 2>&1) \
  || bad "rmoe_analyze default: $out"
grep -q "analysing 2976 tokens (all of the validation split)" <<<"$out" || bad "default tokens: $out"
problems=$(check_report "$work/a2/analysis.json" 2976 3 4 2 gru 2>&1)
[[ -z $problems ]] || bad "report of the whole split: $problems"
out=$("$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --tokens 99999 --out "$work/a3" --no-plots 2>&1) \
  || bad "rmoe_analyze --tokens 99999: $out"
grep -q "more than the validation split's 2976 tokens" <<<"$out" || bad "no note for --tokens past the split: $out"
cmp -s "$work/a2/analysis.json" "$work/a3/analysis.json" || bad "--tokens past the split should analyse the split"

# 3. without matplotlib: a package of that name that fails to import
mkdir -p "$work/nompl/matplotlib"
echo 'raise ImportError("matplotlib hidden by tests/cli/analyze.sh")' >"$work/nompl/matplotlib/__init__.py"
out=$(PYTHONPATH="$work/nompl" "$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --tokens 500 \
  --out "$work/a4" 2>&1)
st=$?
[[ $st -eq 0 ]] || bad "without matplotlib the status should be 0, got $st: $out"
grep -q "figures not written: matplotlib is missing" <<<"$out" || bad "no note that matplotlib is missing: $out"
problems=$(check_report "$work/a4/analysis.json" 500 3 4 2 gru 2>&1)
[[ -z $problems ]] || bad "report without matplotlib: $problems"
[[ $(pngs "$work/a4") -eq 0 ]] || bad "figures written without matplotlib"

# 4. a linear router; synthetic data without --data-path
out=$("$build/rmoe_analyze" --load "$work/cklin" --data-path "$work/data" --tokens 640 --out "$work/a5" --no-plots 2>&1) \
  || bad "rmoe_analyze linear: $out"
problems=$(check_report "$work/a5/analysis.json" 640 2 4 2 linear 2>&1)
[[ -z $problems ]] || bad "report of the linear checkpoint: $problems"
out=$("$build/rmoe_analyze" --load "$work/cksyn" --tokens 512 --out "$work/a6" --no-plots 2>&1) \
  || bad "rmoe_analyze synthetic: $out"
problems=$(check_report "$work/a6/analysis.json" 512 2 4 2 gru 2>&1)
[[ -z $problems ]] || bad "report of the synthetic checkpoint: $problems"

# 5. errors: one line, status 2
expect_usage() {
  local what=$1
  shift
  local out st
  out=$("$@" 2>&1)
  st=$?
  [[ $st -eq 2 ]] || bad "$what: status $st (want 2): $out"
  [[ $(wc -l <<<"$out") -eq 1 ]] || bad "$what: not one line: $out"
  grep -q -- "$what" <<<"$out" || bad "the message does not name $what: $out"
}
expect_usage "--tokens=0" "$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --tokens 0 --out "$work/e"
expect_usage "--load is required" "$build/rmoe_analyze" --data-path "$work/data"
expect_usage "is a file" "$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --out "$work/text.txt"
# Under mpiexec the launcher adds lines of its own and its status is not the rank's: a failure naming it.
out=$(mpiexec --oversubscribe -n 2 "$build/rmoe_analyze" --load "$work/ck" --data-path "$work/data" --out "$work/e" 2>&1)
st=$?
[[ $st -ne 0 ]] && grep -q "runs in one process" <<<"$out" || bad "rmoe_analyze under mpiexec -n 2: status $st, $out"

if [[ $fail -eq 0 ]]; then echo PASS; else exit 1; fi
