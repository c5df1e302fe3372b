#!/usr/bin/python3
"""Plots an rmoe_train metrics file (--metrics-file, JSON lines) to a PNG.

    scripts/plot_metrics.py runs/quickstart/metrics.jsonl            # -> runs/quickstart/metrics.png
    scripts/plot_metrics.py METRICS.jsonl -o curves.png --bpc --title "RMoE, KJV bytes"

Top panel: training loss and validation loss (nats/token) against the step;
with --bpc a right-hand axis in bits per character (loss / ln 2, byte data).
Bottom panel: expert load imbalance against the step: per layer when the
records carry a list "layer_max_load" (max/mean expert share of each layer),
otherwise the worst layer's "max_load" (1 = perfectly balanced, E/k = every
token slot on one expert), coloured by which layer was the worst.

Third panel, only when train records carry "router_grad_norm" (rmoe_train
--log-router-grads): the total norm of the router gradient and of its parts
by loss term (lm: the CE, lb: load balance, z: z-loss) against the step, on a
log scale.

Records used: {"type":"train","step","loss","max_load","worst_layer",...,
"router_grad_norm"} and {"type":"eval","step","val_loss"}. A resumed run appends to the same file and
may repeat steps: the last record of a step wins. Lines that are not JSON
(e.g. a line cut by a crash) are skipped with a warning.

Needs Debian's python3-matplotlib (system python, Agg backend: no display).
Exit status: 0 written, 1 unreadable or empty metrics, 2 bad usage.
"""
import argparse
import json
import math
import os
import sys


def load(path):
    train, evals, bad = {}, {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
                step = int(r["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if r.get("type") == "train" and "loss" in r:
                train[step] = r
            elif r.get("type") == "eval" and "val_loss" in r:
                evals[step] = r
    if bad:
        print(f"plot_metrics: skipped {bad} line(s) of {path} that are not metrics records", file=sys.stderr)
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def main():
    ap = argparse.ArgumentParser(description="Plot an rmoe_train metrics JSONL file to a PNG.")
    ap.add_argument("metrics", help="the --metrics-file of rmoe_train")
    ap.add_argument("-o", "--output", help="PNG to write (default: METRICS with the suffix .png)")
    ap.add_argument("--bpc", action="store_true", help="add a bits-per-character axis (byte-level data)")
    ap.add_argument("--title", default=None, help="figure title (default: the metrics file name)")
    args = ap.parse_args()
    out = args.output or os.path.splitext(args.metrics)[0] + ".png"

    try:
        train, evals = load(args.metrics)
    except OSError as e:
        print(f"plot_metrics: cannot read {args.metrics}: {e.strerror}", file=sys.stderr)
        return 1
    if not train and not evals:
        print(f"plot_metrics: {args.metrics} holds no train or eval records", file=sys.stderr)
        return 1

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics: matplotlib is missing; install Debian's python3-matplotlib "
              "(apt-get install python3-matplotlib) and run with /usr/bin/python3", file=sys.stderr)
        return 1

    router = [r for r in train if isinstance(r.get("router_grad_norm"), dict)]
    if router:
        fig, (ax_loss, ax_load, ax_router) = plt.subplots(3, 1, figsize=(9, 10), sharex=True,
                                                          gridspec_kw={"height_ratios": [3, 2, 2]})
    else:
        fig, (ax_loss, ax_load) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True,
                                               gridspec_kw={"height_ratios": [3, 2]})
    fig.suptitle(args.title or os.path.basename(args.metrics))

    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue",
                     lw=1.2, label="training loss")
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], color="tab:red",
                     lw=1.8, marker="o", ms=4, label="validation loss")
        last = evals[-1]
        note = f"val {last['val_loss']:.3f}"
        if args.bpc:
            note += f" ({last['val_loss'] / math.log(2):.3f} bpc)"
        ax_loss.annotate(note, (last["step"], last["val_loss"]), textcoords="offset points",
                         xytext=(-10, 12), ha="right", color="tab:red")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(loc="upper right")
    if args.bpc:
        ln2 = math.log(2)
        sec = ax_loss.secondary_yaxis("right", functions=(lambda x: x / ln2, lambda b: b * ln2))
        sec.set_ylabel("bits per character")

    loaded = [r for r in train if "max_load" in r or "layer_max_load" in r]
    if loaded and any("layer_max_load" in r for r in loaded):
        rows = [r for r in loaded if "layer_max_load" in r]
        layers = max(len(r["layer_max_load"]) for r in rows)
        cmap = plt.get_cmap("viridis")
        for l in range(layers):
            pts = [(r["step"], r["layer_max_load"][l]) for r in rows if l < len(r["layer_max_load"])]
            ax_load.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2,
                         color=cmap(l / max(layers - 1, 1)), label=f"layer {l}")
        ax_load.legend(loc="upper right", ncol=min(layers, 4), fontsize="small")
        ax_load.set_ylabel("max/mean expert share")
    elif loaded:
        steps = [r["step"] for r in loaded]
        ax_load.plot(steps, [r["max_load"] for r in loaded], color="0.6", lw=1, zorder=1)
        worst = [int(r.get("worst_layer", 0)) for r in loaded]
        layers = max(worst) + 1
        cmap = plt.get_cmap("viridis")
        for l in sorted(set(worst)):
            pts = [(s, r["max_load"]) for s, r, w in zip(steps, loaded, worst) if w == l]
            ax_load.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, zorder=2,
                            color=cmap(l / max(layers - 1, 1)), label=f"worst: layer {l}")
        ax_load.legend(loc="upper right", ncol=min(len(set(worst)), 4), fontsize="small")
        ax_load.set_ylabel("worst layer's max/mean\nexpert share")
    else:
        ax_load.text(0.5, 0.5, "no expert-load records", ha="center", va="center", transform=ax_load.transAxes)
    ax_load.axhline(1.0, color="k", lw=0.8, ls="--", alpha=0.5)
    ax_load.grid(True, alpha=0.3)
    ax_load.set_title("expert load (1 = balanced)", fontsize="medium")

    if router:
        parts = [("full", "whole router gradient", "0.4", "--"), ("lm", "lm (CE)", "tab:blue", "-"),
                 ("lb", "lb (load balance)", "tab:orange", "-"), ("z", "z-loss", "tab:green", "-")]
        for key, label, color, ls in parts:
            pts = [(r["step"], r["router_grad_norm"][key]["total"]) for r in router
                   if isinstance(r["router_grad_norm"].get(key), dict)
                   and r["router_grad_norm"][key].get("total", 0) > 0]
            if pts:
                ax_router.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls, lw=1.2,
                               label=label)
        ax_router.set_yscale("log")
        ax_router.set_ylabel("router gradient norm")
        ax_router.grid(True, alpha=0.3)
        ax_router.legend(loc="best", fontsize="small")
        ax_router.set_title("router gradient by loss term (before clipping)", fontsize="medium")
    (ax_router if router else ax_load).set_xlabel("step")

    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        print(f"plot_metrics: cannot write {out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"plot_metrics: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
