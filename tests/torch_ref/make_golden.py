"""Writes the golden HDF5 files tests/golden/*.h5 (format: docs/MODEL.md).

Run from the repository root with the system python (torch lives there):
    /usr/bin/python3 tests/torch_ref/make_golden.py [FILE.h5 ...]
With file names, only those cases are written (another torch build may move
the other files' float64 values by ~1e-15, which is no reason to rewrite them).

Parameters are float32, drawn with a fixed torch seed per case: matrices
normal(0, 0.3), norms 1 + 0.1*normal, biases 0.1*normal (larger than the
training init so routing, attention and every gradient path are non-trivial).
Everything is then computed in float64. A seed is accepted only if, for every
layer and token, the k-th and (k+1)-th largest router probabilities differ by
more than MARGIN, so a float32 implementation picks the same experts.
"""

import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmoe_torch as rm  # noqa: E402

MARGIN = 1e-3
MAX_TRIES = 1000
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")

# (file name, router_type, router_detach, tie_embeddings, first seed to try
#  [, dict of further Config fields])
CASES = [
    ("golden_linear.h5", "linear", 0, 0, 1000),
    ("golden_mlp_tanh.h5", "mlp-tanh", 0, 0, 2000),  # was golden_mlp.h5 before "mlp" became GELU
    ("golden_mlp.h5", "mlp", 0, 0, 8000),
    ("golden_gru.h5", "gru", 0, 0, 3000),
    ("golden_rnn.h5", "rnn", 0, 0, 4000),
    ("golden_gru_detach.h5", "gru", 1, 0, 5000),
    ("golden_gru_tied.h5", "gru", 0, 1, 6000),
    ("golden_gru_np.h5", "gru-np", 0, 0, 7000),
    ("golden_gru_capacity.h5", "gru", 0, 0, 9000, {"capacity_factor": 0.75}),
    ("golden_cosine.h5", "cosine", 0, 0, 9000),
    ("golden_xmoe.h5", "xmoe", 0, 0, 10000),
    ("golden_gru_xmoe.h5", "gru-xmoe", 0, 0, 11000),
    ("golden_gru_xmoe_detach.h5", "gru-xmoe", 1, 0, 12000),
    ("golden_lstm.h5", "lstm", 0, 0, 9000),
    ("golden_lstm_detach.h5", "lstm", 1, 0, 10000),
    ("golden_gru_shared_proj.h5", "gru", 0, 0, 11000, {"router_shared_proj": 1}),
    ("golden_gru_logit_residual.h5", "gru", 0, 0, 12000, {"router_logit_residual": 0.5}),
    ("golden_gru_logit_residual_detach.h5", "gru", 0, 0, 13000,
     {"router_logit_residual": 0.5, "router_logit_residual_detach": 1}),
]
COSINE_ROUTERS = ("cosine", "xmoe", "gru-xmoe")


def check_gru_cell():
    """Our hand-written GRU cell must match torch.nn.GRUCell."""
    g = torch.Generator().manual_seed(7)
    n, p = 5, 8
    cell = torch.nn.GRUCell(p, p).double()
    with torch.no_grad():
        for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    h = torch.randn(n, p, generator=g, dtype=torch.float64)
    ref = cell(x, h)
    ours = rm.gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    err = (ref - ours).abs().max().item()
    assert err < 1e-12, "gru_cell differs from torch.nn.GRUCell by %g" % err


def check_lstm_cell():
    """Our hand-written LSTM cell must match torch.nn.LSTMCell (h and c)."""
    g = torch.Generator().manual_seed(8)
    n, p = 5, 8
    cell = torch.nn.LSTMCell(p, p).double()
    with torch.no_grad():
        for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    h = torch.randn(n, p, generator=g, dtype=torch.float64)
    c = torch.randn(n, p, generator=g, dtype=torch.float64)
    ref_h, ref_c = cell(x, (h, c))
    ours_h, ours_c = rm.lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    err = max((ref_h - ours_h).abs().max().item(), (ref_c - ours_c).abs().max().item())
    assert err < 1e-12, "lstm_cell differs from torch.nn.LSTMCell by %g" % err


def make_params(cfg, gen):
    """float32 parameters in param_specs order."""
    P = {}
    for name, shape, kind in rm.param_specs(cfg):
        r = torch.randn(shape, generator=gen, dtype=torch.float32)
        if kind == "matrix":
            P[name] = 0.3 * r
        elif kind == "norm":
            P[name] = 1.0 + 0.1 * r
        elif kind == "log_scale":  # around log(1/0.07), the init, below the clamp at log(100)
            P[name] = 2.66 + 0.2 * r
        else:
            P[name] = 0.1 * r
    return P


def capacity_margin(out, cfg):
    """The smallest gap between an expert's last kept and first dropped
    probability (inf when nothing is dropped), so float32 drops the same slots."""
    m = float("inf")
    if cfg.capacity_factor <= 0:
        return m
    for prob, idx, keep in zip(out["prob"], out["topk_idx"], out["keep"]):
        p = prob.detach().gather(1, idx).reshape(-1)
        e = idx.reshape(-1)
        kept = keep.reshape(-1)
        for x in range(cfg.num_experts):
            mine = e == x
            if bool((mine & ~kept).any()):
                m = min(m, (p[mine & kept].min() - p[mine & ~kept].max()).item())
    return m


def min_margin(probs, k):
    m = float("inf")
    for prob in probs:
        s, _ = torch.sort(prob.detach(), dim=-1, descending=True)
        m = min(m, (s[:, k - 1] - s[:, k]).min().item())
    return m


def build_case(cfg, first_seed):
    for seed in range(first_seed, first_seed + MAX_TRIES):
        gen = torch.Generator().manual_seed(seed)
        P32 = make_params(cfg, gen)
        shape = (cfg.batch_size, cfg.seq_length)
        tokens = torch.randint(0, cfg.vocab_size, shape, generator=gen, dtype=torch.int64)
        targets = torch.randint(0, cfg.vocab_size, shape, generator=gen, dtype=torch.int64)
        P64 = {n: t.double().requires_grad_(True) for n, t in P32.items()}
        out = rm.forward(P64, tokens, targets, cfg)
        if min_margin(out["prob"], cfg.topk) <= MARGIN or capacity_margin(out, cfg) <= MARGIN:
            continue
        grads = torch.autograd.grad(out["total"], list(P64.values()))
        return seed, P32, tokens, targets, out, dict(zip(P64.keys(), grads))
    raise RuntimeError("no seed with routing margin > %g" % MARGIN)


def write_golden(path, cfg, P32, tokens, targets, out, grads):
    with h5py.File(path, "w") as f:
        for key in ("num_layers", "hidden_size", "num_heads", "num_experts", "topk",
                    "ffn_hidden_size", "router_dim", "vocab_size", "seq_length",
                    "batch_size", "router_detach", "tie_embeddings"):
            f.attrs[key] = np.int32(getattr(cfg, key))
        f.attrs["router_type"] = cfg.router_type  # variable-length utf-8 string
        if cfg.router_type in COSINE_ROUTERS:
            f.attrs["xmoe_dim"] = np.int32(cfg.xmoe_dim)
        # Options newer than the first files: written only when not at their
        # default, so the older files stay as they were (the reader defaults them).
        if cfg.router_shared_proj:
            f.attrs["router_shared_proj"] = np.int32(cfg.router_shared_proj)
        if cfg.router_logit_residual != 0:
            f.attrs["router_logit_residual"] = np.float64(cfg.router_logit_residual)
            f.attrs["router_logit_residual_detach"] = np.int32(cfg.router_logit_residual_detach)
        for key in ("aux_loss_coeff", "z_loss_coeff", "rms_eps", "rope_theta", "capacity_factor"):
            f.attrs[key] = np.float64(getattr(cfg, key))
        f.create_dataset("inputs/tokens", data=tokens.numpy().astype(np.int32))
        f.create_dataset("inputs/targets", data=targets.numpy().astype(np.int32))
        for name, t in P32.items():
            f.create_dataset("params/" + name, data=t.numpy().astype(np.float32))
        f.create_dataset("outputs/logits", data=out["logits"].detach().numpy().astype(np.float64))
        for key in ("ce", "lb", "z", "total"):
            f.create_dataset("outputs/" + key, data=np.float64(out[key].item()))
        for i, idx in enumerate(out["topk_idx"]):
            f.create_dataset("outputs/topk_idx/%02d" % i, data=idx.numpy().astype(np.int32))
        dropped = [int((~keep).sum().item()) for keep in out["keep"]]
        f.create_dataset("outputs/dropped", data=np.array(dropped, dtype=np.int64))
        for name, g in grads.items():
            assert g.shape == P32[name].shape
            f.create_dataset("grads/" + name, data=g.numpy().astype(np.float64))


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    check_gru_cell()
    check_lstm_cell()
    os.makedirs(OUT_DIR, exist_ok=True)
    only = set(sys.argv[1:])
    unknown = only - {c[0] for c in CASES}
    if unknown:
        raise SystemExit("no golden case named " + ", ".join(sorted(unknown)))
    for fname, rtype, detach, tied, first_seed, *more in CASES:
        if only and fname not in only:
            continue
        cfg = rm.Config(router_type=rtype, router_detach=detach, tie_embeddings=tied,
                        **(more[0] if more else {}))
        seed, P32, tokens, targets, out, grads = build_case(cfg, first_seed)
        path = os.path.normpath(os.path.join(OUT_DIR, fname))
        write_golden(path, cfg, P32, tokens, targets, out, grads)
        print("%-22s seed %d  ce %.6f  lb %.6f  z %.6f  total %.6f  margin %.2e"
              % (fname, seed, out["ce"].item(), out["lb"].item(), out["z"].item(),
                 out["total"].item(), min_margin(out["prob"], cfg.topk)))


if __name__ == "__main__":
    main()
