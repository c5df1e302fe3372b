#!/usr/bin/env python3
"""The table and curves of scripts/compare_routers.sh.

Reads, for every variant and seed, OUT/runs/VARIANT/seedS/: eval.txt
(rmoe_eval on the whole validation split), dry_run.txt (rmoe_train
--dry-run: the parameter counts), train.log (tokens/s), metrics.jsonl (the
validation curve) and analysis/analysis.json (rmoe_analyze). Writes
OUT/results.json, OUT/results.md and OUT/val_curves.png (when matplotlib is
there).

Usage: compare_routers_report.py --out OUT [--corpus P --corpus-bytes N
       --seeds N --minutes M --command C] VARIANT...
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

# The paper's character-level medium models on enwik8 (test BPC, Table 1 and
# 4): a reference beside the table, not a target (another data set and size).
PAPER_ENWIK8 = {"smoe": 1.128, "rmoe": 1.116, "rmoe-detach": 1.133, "rmoe-np": 1.123}


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def one_run(d):
    """The numbers of one run directory."""
    r = {}
    m = re.search(r"val loss ([0-9.]+) \| bpc ([0-9.]+).*\| tokens ([0-9]+)", read_text(os.path.join(d, "eval.txt")))
    if not m:
        raise SystemExit("compare_routers_report: no 'val loss .. | bpc ..' line in " + os.path.join(d, "eval.txt"))
    r["val_loss"], r["val_bpc"], r["val_tokens"] = float(m.group(1)), float(m.group(2)), int(m.group(3))
    dry = read_text(os.path.join(d, "dry_run.txt"))
    for key, pattern in (("params", r"^\s*total\s+([0-9,]+)"), ("router_params", r"^\s*router \(.*?\)\s+([0-9,]+)")):
        m = re.search(pattern, dry, re.M)
        r[key] = int(m.group(1).replace(",", "")) if m else None
    m = re.findall(r"\(([0-9]+) tokens/s\)", read_text(os.path.join(d, "train.log")))
    r["tokens_per_s"] = int(m[-1]) if m else None
    curve, last_train = [], None
    with open(os.path.join(d, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("type") == "eval":
                curve.append((rec["step"], rec["val_loss"] / math.log(2)))
            elif rec.get("type") == "train":
                last_train = rec
    r["curve"] = curve
    r["steps"] = last_train["step"] if last_train else None
    r["train_tokens"] = last_train.get("consumed_tokens") if last_train else None
    r["final_train_loss"] = last_train["loss"] if last_train else None
    a_path = os.path.join(d, "analysis", "analysis.json")
    if os.path.exists(a_path):
        with open(a_path, encoding="utf-8") as f:
            a = json.load(f)
        layers = a["layers"]
        L = len(layers)
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        r["gate_entropy"] = mean([x["gate_entropy"]["mean"] for x in layers])
        r["ib_median"] = mean([x["ib_median"] for x in layers if x["ib_median"] is not None])
        r["ob_median"] = mean([x["ob_median"] for x in layers])
        r["expert_similarity"] = mean([x["expert_similarity"]["mean"] for x in layers])
        mi = a["mutual_information"]
        adj = lambda m: mean([m[l][l + 1] for l in range(L - 1)])  # noqa: E731
        r["top1_mi_adjacent"] = adj(mi["top1_miller_madow"]["matrix"])
        r["binned_mi_adjacent"] = adj(mi["paper_binned"]["matrix"])
    return r


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus", default="")
    ap.add_argument("--corpus-bytes", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=0)
    ap.add_argument("--minutes", type=int, default=0)
    ap.add_argument("--command", default="")
    ap.add_argument("variants", nargs="+")
    o = ap.parse_args()

    results = {"command": o.command, "corpus": o.corpus, "corpus_bytes": o.corpus_bytes, "minutes": o.minutes,
               "paper_enwik8_test_bpc": PAPER_ENWIK8, "variants": {}}
    for v in o.variants:
        vdir = os.path.join(o.out, "runs", v)
        seeds = sorted((d for d in os.listdir(vdir) if d.startswith("seed")), key=lambda d: int(d[4:]))
        runs = {d[4:]: one_run(os.path.join(vdir, d)) for d in seeds}
        summary = {}
        for key in ("val_bpc", "tokens_per_s", "gate_entropy", "ib_median", "ob_median", "expert_similarity",
                    "top1_mi_adjacent", "binned_mi_adjacent"):
            m, s = mean_std([r.get(key) for r in runs.values()])
            summary[key] = {"mean": m, "std": s}
        first = next(iter(runs.values()))
        summary["params"], summary["router_params"] = first["params"], first["router_params"]
        summary["train_tokens"] = first["train_tokens"]
        results["variants"][v] = {"seeds": runs, "summary": summary}
    with open(os.path.join(o.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)

    lines = []
    first = results["variants"][o.variants[0]]["summary"]
    lines.append("Command: `%s` (%d min on this machine)." % (o.command, o.minutes))
    lines.append("")
    lines.append("Corpus: %s, %.1f MB; each run %s training tokens; validation BPC on the whole validation split "
                 "(rmoe_eval)." % (o.corpus, o.corpus_bytes / 1e6, format(first["train_tokens"] or 0, ",")))
    lines.append("")
    seeds = sorted({s for v in results["variants"].values() for s in v["seeds"]}, key=int)
    head = ["variant", "params", "router params"] + ["BPC seed %s" % s for s in seeds]
    head += ["BPC mean +- std", "tokens/s", "gate entropy", "IB", "OB", "top-1 MI (adj.)", "binned MI (adj.)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + " --- |" * len(head))
    for v in o.variants:
        res = results["variants"][v]
        s = res["summary"]
        row = [v, fmt(s["params"], ","), fmt(s["router_params"], ",")]
        row += [fmt(res["seeds"].get(k, {}).get("val_bpc"), ".4f") for k in seeds]
        row.append("%s +- %s" % (fmt(s["val_bpc"]["mean"], ".4f"), fmt(s["val_bpc"]["std"], ".4f")))
        row.append(fmt(s["tokens_per_s"]["mean"], ",.0f"))
        for key, spec in (("gate_entropy", ".3f"), ("ib_median", ".2f"), ("ob_median", ".3f"),
                          ("top1_mi_adjacent", ".3f"), ("binned_mi_adjacent", ".3f")):
            row.append(fmt(s[key]["mean"], spec))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    ref = ", ".join("%s %.3f" % (k, v) for k, v in PAPER_ENWIK8.items())
    lines.append("Paper, medium models on enwik8 (test BPC; another data set and scale, a reference only): %s." % ref)
    with open(os.path.join(o.out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare_routers_report: matplotlib is missing: no val_curves.png", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for v in o.variants:
        curves = [r["curve"] for r in results["variants"][v]["seeds"].values() if r["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [curves[0][i][0] for i in range(n)]
        mean = [statistics.fmean(c[i][1] for c in curves) for i in range(n)]
        lo = [min(c[i][1] for c in curves) for i in range(n)]
        hi = [max(c[i][1] for c in curves) for i in range(n)]
        line, = ax.plot(steps, mean, label=v)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("validation BPC (--eval-iters batches)")
    ax.set_title("Routers on real text: mean over seeds, band = min..max")
    all_means = [r["val_bpc"] for v in results["variants"].values() for r in v["seeds"].values()]
    if all_means:
        ax.set_ylim(min(all_means) - 0.15, min(all_means) + 1.2)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(o.out, "val_curves.png"), dpi=110)


if __name__ == "__main__":
    main()
