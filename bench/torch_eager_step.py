#!/usr/bin/python3
"""The rmoe model written the ordinary PyTorch way, timed like bench_train_step.

A PyTorch user's eager implementation of the same model (docs/MODEL.md): nn
modules, masked T x T softmax attention, a sorted-token MoE with
index_select / index_add_ and one GEMM chain per expert, the router (linear,
mlp, rnn or gru: one cell shared by all layers), Switch load-balance + z-loss,
torch.optim.AdamW. fp32, one full step (forward, backward, AdamW) per timing.
It is a speed yardstick, not a reference: correctness is checked against
tests/torch_ref (independent code) by the golden tests.

Usage (Debian's python3-torch is seen only by the system python):
  /usr/bin/python3 bench/torch_eager_step.py --config configs/medium_char_rmoe.ini \
      --micro-batch-size 4 --steps 4 [--threads 1]
Prints one line: tokens/s, median step seconds, the thread count and BLAS.
"""
import argparse
import configparser
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_config(path):
    cp = configparser.ConfigParser()
    with open(path) as f:
        cp.read_string("[c]\n" + f.read())
    c = cp["c"]
    get = lambda k, d: c.get(k, d)
    return dict(
        L=int(get("num-layers", 2)), d=int(get("hidden-size", 64)), H=int(get("num-attention-heads", 2)),
        E=int(get("num-experts", 4)), k=int(get("moe-router-topk", 2)), f=int(get("ffn-hidden-size", 64)),
        p=int(get("router-dim", 128)), router=get("moe-router-type", "gru"), V=int(get("vocab-size", 256)),
        S=int(get("seq-length", 64)), B=int(get("micro-batch-size", 1)))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, theta=10000.0):  # x [B, S, H, D], half-split pairs
    B, S, H, D = x.shape
    inv = theta ** (-torch.arange(0, D // 2, dtype=x.dtype) * 2 / D)
    ang = torch.arange(S, dtype=x.dtype)[:, None] * inv[None, :]
    c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


class Attention(nn.Module):
    def __init__(self, d, H):
        super().__init__()
        self.H = H
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x, mask):
        B, S, d = x.shape
        D = d // self.H
        q = rope(self.wq(x).view(B, S, self.H, D)).transpose(1, 2)
        k = rope(self.wk(x).view(B, S, self.H, D)).transpose(1, 2)
        v = self.wv(x).view(B, S, self.H, D).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.wo((att @ v).transpose(1, 2).reshape(B, S, d))


class MoE(nn.Module):
    def __init__(self, d, f, E, k):
        super().__init__()
        self.E, self.k = E, k
        self.w1 = nn.Parameter(torch.randn(E, f, d) * 0.02)
        self.w3 = nn.Parameter(torch.randn(E, f, d) * 0.02)
        self.w2 = nn.Parameter(torch.randn(E, d, f) * 0.02)

    def forward(self, u, logits):  # u [T, d], logits [T, E]
        probs = logits.float().softmax(-1)
        topv, topi = probs.topk(self.k, dim=-1)
        gates = topv / topv.sum(-1, keepdim=True)
        flat = topi.reshape(-1)
        order = flat.argsort(stable=True)
        tok = order // self.k
        counts = torch.bincount(flat, minlength=self.E).tolist()
        out = torch.zeros_like(u)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            t = tok[start:start + n]
            x = u.index_select(0, t)
            y = (F.silu(x @ self.w1[e].t()) * (x @ self.w3[e].t())) @ self.w2[e].t()
            g = gates.reshape(-1)[order[start:start + n]]
            out.index_add_(0, t, y * g[:, None])
            start += n
        f_e = torch.bincount(flat, minlength=self.E).float() / flat.numel()
        lb = self.E * (f_e * probs.mean(0)).sum()
        z = torch.logsumexp(logits, -1).pow(2).mean()
        return out, lb, z


class Router(nn.Module):
    def __init__(self, kind, d, p, E, cell):
        super().__init__()
        self.kind, self.cell = kind, cell
        if kind == "linear":
            self.gate = nn.Linear(d, E, bias=False)
        else:
            self.proj = nn.Linear(d, p)
            self.gate = nn.Linear(p, E)

    def forward(self, u, h):
        if self.kind == "linear":
            return self.gate(u), h
        up = self.proj(u)
        if self.kind == "mlp":
            h = torch.tanh(up)
        else:
            h = self.cell(up, h)
        return self.gate(h), h


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c["V"], c["d"])
        cell = None
        if c["router"] == "gru":
            cell = nn.GRUCell(c["p"], c["p"])
        elif c["router"] == "rnn":
            cell = nn.RNNCell(c["p"], c["p"], nonlinearity="tanh")
        self.cell = cell
        self.layers = nn.ModuleList()
        for _ in range(c["L"]):
            self.layers.append(nn.ModuleDict(dict(
                attn_norm=RMSNorm(c["d"]), attn=Attention(c["d"], c["H"]), moe_norm=RMSNorm(c["d"]),
                router=Router(c["router"], c["d"], c["p"], c["E"], cell), moe=MoE(c["d"], c["f"], c["E"], c["k"]))))
        self.final_norm = RMSNorm(c["d"])
        self.head = nn.Linear(c["d"], c["V"], bias=False)

    def forward(self, tokens, targets, aux=0.01, zc=0.001):
        B, S = tokens.shape
        mask = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
        x = self.wte(tokens)
        h = torch.zeros(B * S, self.c["p"]) if self.c["router"] != "linear" else None
        lb_sum, z_sum = 0.0, 0.0
        for layer in self.layers:
            x = x + layer["attn"](layer["attn_norm"](x), mask)
            u = layer["moe_norm"](x).reshape(B * S, -1)
            logits, h = layer["router"](u, h)
            y, lb, z = layer["moe"](u, logits)
            x = x + y.view(B, S, -1)
            lb_sum, z_sum = lb_sum + lb, z_sum + z
        logits = self.head(self.final_norm(x))
        ce = F.cross_entropy(logits.view(B * S, -1), targets.view(-1))
        L = len(self.layers)
        return ce + aux * lb_sum / L + zc * z_sum / L


def blas_in_use():
    """The BLAS library this process has mapped (Debian's torch calls the system libblas.so.3)."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in path.lower() or "mkl" in path.lower():
                libs.add(path.rsplit("/", 1)[-1])
    return "BLAS " + (", ".join(sorted(libs)) or "unknown")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--micro-batch-size", type=int)
    ap.add_argument("--moe-router-type")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    c = read_config(a.config)
    if a.micro_batch_size:
        c["B"] = a.micro_batch_size
    if a.moe_router_type:
        c["router"] = a.moe_router_type
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Model(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, c["V"], (c["B"], c["S"]), generator=gen)
    targets = torch.randint(0, c["V"], (c["B"], c["S"]), generator=gen)
    secs = []
    for i in range(a.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i > 0:
            secs.append(time.perf_counter() - t0)
    secs.sort()
    med = secs[len(secs) // 2]
    ntok = c["B"] * c["S"]
    blas = blas_in_use()
    print(f"torch {torch.__version__} eager | router {c['router']} L={c['L']} d={c['d']} E={c['E']} k={c['k']} "
          f"f={c['f']} S={c['S']} batch {c['B']} | {blas} | threads {torch.get_num_threads()}")
    print(f"step median {med:.4f} s (min {secs[0]:.4f}, max {secs[-1]:.4f}, {len(secs)} steps) | "
          f"{ntok / med:.0f} tokens/s | loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
