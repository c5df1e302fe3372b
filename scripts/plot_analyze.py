#!/usr/bin/python3
"""Plots an rmoe_analyze report (analysis.json) to three PNGs.

    scripts/plot_analyze.py analysis/analysis.json                # -> analysis/*.png
    scripts/plot_analyze.py REPORT.json --out figs --title "RMoE, step 1000"

gates.png               per layer: the gate-entropy histogram (nats, ln E marked),
                        the IB and OB medians (Table 8), and the expert selection
                        frequency as a layer x expert map (1/E = balanced)
mutual_information.png  the cross-layer MI matrices side by side: the paper's
                        binned estimator and the top-1 Miller-Madow one
experts.png             expert similarity per layer (mean of the three Gram
                        matrices and each; 1/E = mutually orthogonal experts) and
                        the router weight norm per layer

rmoe_analyze runs it after writing the report (unless --no-plots). The metrics
are defined in docs/ANALYSIS.md. Needs Debian's python3-matplotlib (system
python, Agg backend: no display).
Exit status: 0 written, 1 unreadable report, 2 bad usage, 3 matplotlib missing.
"""
import argparse
import json
import math
import os
import sys

NO_MATPLOTLIB = 3


def heatmap(ax, fig, rows, title, cmap="viridis", vmin=None, vmax=None, annotate=True):
    im = ax.imshow(rows, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    n = len(rows)
    ax.set_yticks(range(n))
    if len(rows[0]) <= 32:
        ax.set_xticks(range(len(rows[0])))
    if annotate and n <= 12 and len(rows[0]) <= 12:
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")


def main():
    ap = argparse.ArgumentParser(description="Plot an rmoe_analyze report to PNGs.")
    ap.add_argument("report", help="analysis.json written by rmoe_analyze")
    ap.add_argument("--out", help="directory for the PNGs (default: the report's directory)")
    ap.add_argument("--title", default=None, help="title prefix (default: the checkpoint's name and step)")
    args = ap.parse_args()
    out = args.out or os.path.dirname(os.path.abspath(args.report))

    try:
        with open(args.report, encoding="utf-8") as f:
            r = json.load(f)
        layers = r["layers"]
        model = r["model"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_analyze: cannot read {args.report}: {e}", file=sys.stderr)
        return 1

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_analyze: matplotlib is missing; install Debian's python3-matplotlib "
              "(apt-get install python3-matplotlib) and run with /usr/bin/python3", file=sys.stderr)
        return NO_MATPLOTLIB

    os.makedirs(out, exist_ok=True)
    L, E, k = model["num_layers"], model["num_experts"], model["topk"]
    title = args.title or f"{os.path.basename(r['checkpoint'])} (step {r['step']}, {model['router_type']} router)"
    cmap = plt.get_cmap("viridis")
    colour = [cmap(l / max(L - 1, 1)) for l in range(L)]
    xs = list(range(L))

    def layer_axis(ax):
        ax.set_xlabel("layer")
        ax.set_xticks(xs if L <= 32 else xs[::max(L // 16, 1)])

    # ---- gates.png ----
    fig, (ax_h, ax_b, ax_s) = plt.subplots(1, 3, figsize=(16, 4.8))
    fig.suptitle(f"{title}: gates over {r['data']['tokens']} tokens")
    for l, e in enumerate(layers):
        g = e["gate_entropy"]
        bins, hist = g["bins"], g["histogram"]
        width = g["max"] / bins
        total = max(sum(hist), 1)
        centres = [(i + 0.5) * width for i in range(bins)]
        ax_h.step(centres, [c / total for c in hist], where="mid", color=colour[l], label=f"layer {l}")
    ax_h.axvline(math.log(E), color="k", ls=":", lw=1)
    ax_h.set_xlabel("gate entropy (nats); dotted: ln E")
    ax_h.set_ylabel("fraction of tokens")
    if L <= 12:
        ax_h.legend(fontsize=7)
    ib = [e["ib_median"] if e["ib_median"] is not None else float("nan") for e in layers]
    ob = [e["ob_median"] for e in layers]
    ax_b.plot(xs, ib, "o-", color="tab:blue", label="IB median (top-1 / top-2)")
    layer_axis(ax_b)
    ax_b.set_ylabel("IB", color="tab:blue")
    ax_b2 = ax_b.twinx()
    ax_b2.plot(xs, ob, "s-", color="tab:red", label="OB median (top-k sum)")
    ax_b2.axhline(k / E, color="tab:red", ls=":", lw=1)
    ax_b2.set_ylabel("OB (dotted: k/E, uniform gates)", color="tab:red")
    ax_b.set_title("Table 8 balances", fontsize=10)
    heatmap(ax_s, fig, [e["selection_frequency"] for e in layers], f"selection frequency (balanced: 1/E = {1 / E:.3f})",
            vmin=0, annotate=False)
    ax_s.set_xlabel("expert")
    ax_s.set_ylabel("layer")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gates.png"), dpi=110)
    plt.close(fig)

    # ---- mutual_information.png ----
    mi = r["mutual_information"]
    fig, (ax_p, ax_t) = plt.subplots(1, 2, figsize=(12, 5))
    fig.suptitle(f"{title}: cross-layer mutual information (nats)")
    heatmap(ax_p, fig, mi["paper_binned"]["matrix"], "paper's binned estimator (E probabilities as samples)")
    heatmap(ax_t, fig, mi["top1_miller_madow"]["matrix"], "top-1 choices over tokens (Miller-Madow)")
    for ax in (ax_p, ax_t):
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "mutual_information.png"), dpi=110)
    plt.close(fig)

    # ---- experts.png ----
    fig, (ax_e, ax_w) = plt.subplots(1, 2, figsize=(12, 4.5))
    fig.suptitle(f"{title}: weights")
    for key, style in (("mean", "o-"), ("w1", "--"), ("w3", "--"), ("w2", "--")):
        ax_e.plot(xs, [e["expert_similarity"][key] for e in layers], style, label=key)
    ax_e.axhline(1 / E, color="k", ls=":", lw=1, label="1/E (orthogonal)")
    layer_axis(ax_e)
    ax_e.set_ylabel("mean of the Gram matrix")
    ax_e.set_title("expert similarity (App. A.4.3)", fontsize=10)
    ax_e.legend(fontsize=8)
    norms = [e["router_weights"]["norm"] if e.get("router_weights") else float("nan") for e in layers]
    stds = [e["router_weights"]["std"] if e.get("router_weights") else float("nan") for e in layers]
    ax_w.plot(xs, norms, "o-", color="tab:green", label="norm (layers/LL/router/*)")
    layer_axis(ax_w)
    ax_w.set_ylabel("router weight L2 norm", color="tab:green")
    ax_w2 = ax_w.twinx()
    ax_w2.plot(xs, stds, "s--", color="tab:purple")
    ax_w2.set_ylabel("router weight std", color="tab:purple")
    cell = r.get("router_cell")
    ax_w.set_title("router weights" + (f"; shared cell: norm {cell['norm']:.3f}, std {cell['std']:.4f}" if cell else ""),
                   fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "experts.png"), dpi=110)
    plt.close(fig)

    print(f"plot_analyze: wrote gates.png, mutual_information.png, experts.png in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
