"""Independent PyTorch reference of the rmoe model (docs/MODEL.md).

Written from docs/MODEL.md only; it shares no code with
the C++ model. Parameters are a dict {name: tensor} with the names and shapes of
MODEL.md ("embed/wte", "layers/00/attn/wq", "router/cell/w_ih", ...). Gradients
come from torch autograd. Works in whatever dtype the parameters have (the
golden generator uses float64).
"""

import math
from dataclasses import dataclass

import torch


@dataclass
class Config:
    num_layers: int = 3
    hidden_size: int = 16
    num_heads: int = 2
    num_experts: int = 4
    topk: int = 2
    ffn_hidden_size: int = 24
    router_dim: int = 8
    vocab_size: int = 32
    seq_length: int = 8
    batch_size: int = 2
    router_type: str = "gru"  # linear | mlp | mlp-tanh | gru | gru-np | rnn | cosine | xmoe | gru-xmoe | lstm
    xmoe_dim: int = 6  # r, the cosine head's width (xmoe, gru-xmoe)
    router_detach: int = 0
    router_shared_proj: int = 0  # 1: one router/proj_w, proj_b for all layers ("S-proj")
    router_logit_residual: float = 0.0  # A: logit_i += A * logit_{i-1} for i >= 1 ("r-A"); 0 = off
    router_logit_residual_detach: int = 0  # 1: the residual term is a constant for the gradient
    tie_embeddings: int = 0
    capacity_factor: float = 0.0  # 0 = dropless
    aux_loss_coeff: float = 0.1
    z_loss_coeff: float = 0.01
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0


# --------------------------------------------------------------------------
# Parameter table (names, shapes, kind) exactly as MODEL.md "Parameters".
# kind: "matrix" (2-D or 3-D weight), "norm" (RMSNorm gain), "bias",
# "log_scale" (the cosine head's log inverse temperature).
# --------------------------------------------------------------------------

def layer_name(i, rest):
    return "layers/%02d/%s" % (i, rest)


def param_specs(cfg):
    """Ordered list of (name, shape, kind)."""
    d, V, E = cfg.hidden_size, cfg.vocab_size, cfg.num_experts
    p, f = cfg.router_dim, cfg.ffn_hidden_size
    specs = [("embed/wte", (V, d), "matrix")]
    for i in range(cfg.num_layers):
        specs.append((layer_name(i, "attn_norm"), (d,), "norm"))
        for w in ("wq", "wk", "wv", "wo"):
            specs.append((layer_name(i, "attn/" + w), (d, d), "matrix"))
        specs.append((layer_name(i, "moe_norm"), (d,), "norm"))
        if cfg.router_type == "linear":
            specs.append((layer_name(i, "router/gate_w"), (E, d), "matrix"))
        elif cfg.router_type in ("cosine", "xmoe", "gru-xmoe"):
            r = d if cfg.router_type == "cosine" else cfg.xmoe_dim
            if cfg.router_type == "gru-xmoe" and not cfg.router_shared_proj:
                specs.append((layer_name(i, "router/proj_w"), (p, d), "matrix"))
                specs.append((layer_name(i, "router/proj_b"), (p,), "bias"))
            if cfg.router_type != "cosine":
                specs.append((layer_name(i, "router/xmoe_proj"),
                              (r, p if cfg.router_type == "gru-xmoe" else d), "matrix"))
            specs.append((layer_name(i, "router/expert_emb"), (E, r), "matrix"))
            specs.append((layer_name(i, "router/log_scale"), (1,), "log_scale"))
        elif cfg.router_type in ("mlp", "mlp-tanh", "gru", "gru-np", "rnn", "lstm"):
            if not cfg.router_shared_proj:
                specs.append((layer_name(i, "router/proj_w"), (p, d), "matrix"))
                specs.append((layer_name(i, "router/proj_b"), (p,), "bias"))
            specs.append((layer_name(i, "router/gate_w"), (E, p), "matrix"))
            specs.append((layer_name(i, "router/gate_b"), (E,), "bias"))
        else:
            raise ValueError("unknown router_type " + cfg.router_type)
        specs.append((layer_name(i, "experts/w1"), (E, f, d), "matrix"))
        specs.append((layer_name(i, "experts/w2"), (E, d, f), "matrix"))
        specs.append((layer_name(i, "experts/w3"), (E, f, d), "matrix"))
    if cfg.router_type in ("gru", "gru-np", "rnn", "gru-xmoe", "lstm"):
        g = {"gru": 3 * p, "gru-np": 3 * p, "gru-xmoe": 3 * p, "rnn": p, "lstm": 4 * p}[cfg.router_type]
        specs.append(("router/cell/w_ih", (g, p), "matrix"))
        specs.append(("router/cell/w_hh", (g, p), "matrix"))
        specs.append(("router/cell/b_ih", (g,), "bias"))
        specs.append(("router/cell/b_hh", (g,), "bias"))
    if cfg.router_shared_proj:
        if cfg.router_type == "linear":
            raise ValueError("router_shared_proj needs a router with a projection")
        specs.append(("router/proj_w", (p, d), "matrix"))
        specs.append(("router/proj_b", (p,), "bias"))
    specs.append(("final_norm", (d,), "norm"))
    if not cfg.tie_embeddings:
        specs.append(("head", (V, d), "matrix"))
    return specs


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w, over the last dim."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, theta):
    """Half-split RoPE. x: [B, S, H, D]; position s = 0..S-1 within each sequence.

    Pairs (j, j + D/2), j < D/2, angle = s * theta^(-2j/D):
    (x_j, x_{j+D/2}) -> (x_j c - x_{j+D/2} s', x_j s' + x_{j+D/2} c).
    """
    B, S, H, D = x.shape
    half = D // 2
    j = torch.arange(half, dtype=x.dtype)
    inv_freq = theta ** (-2.0 * j / D)                     # [D/2]
    pos = torch.arange(S, dtype=x.dtype)                   # [S]
    ang = pos[:, None] * inv_freq[None, :]                 # [S, D/2]
    c = torch.cos(ang)[None, :, None, :]                   # [1, S, 1, D/2]
    s = torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


def attention(a, P, i, cfg):
    """Causal multi-head attention with RoPE, no biases. a: [T, d] -> [T, d]."""
    B, S, H = cfg.batch_size, cfg.seq_length, cfg.num_heads
    d = cfg.hidden_size
    D = d // H
    q = (a @ P[layer_name(i, "attn/wq")].T).view(B, S, H, D)
    k = (a @ P[layer_name(i, "attn/wk")].T).view(B, S, H, D)
    v = (a @ P[layer_name(i, "attn/wv")].T).view(B, S, H, D)
    q = rope(q, cfg.rope_theta)
    k = rope(k, cfg.rope_theta)
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # [B, H, S, D]
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)        # [B, H, S, S]
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v                  # [B, H, S, D]
    o = o.permute(0, 2, 1, 3).reshape(B * S, d)
    return o @ P[layer_name(i, "attn/wo")].T


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """GRU cell from the equations (rows ordered r, z, n as torch.nn.GRUCell)."""
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """LSTM cell from the equations (rows ordered i, f, g, o as torch.nn.LSTMCell).

    Returns (h', c'): c' = f * c + i * g, h' = o * tanh(c')."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
    i, f, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o)
    g = torch.tanh(a_g)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """tanh RNN cell: h' = tanh(x w_ih^T + b_ih + h w_hh^T + b_hh)."""
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def cosine_head(x, P, i, cfg):
    """X-MoE's head: exp(min(s, log 100)) * cos(x W^T, e_j) (W: xmoe_proj, not
    for cosine). x: [T, d or p] -> logit [T, E]."""
    if cfg.router_type in ("xmoe", "gru-xmoe"):
        x = x @ P[layer_name(i, "router/xmoe_proj")].T
    z = torch.nn.functional.normalize(x, dim=-1)  # eps 1e-12: x / max(||x||, eps)
    e = torch.nn.functional.normalize(P[layer_name(i, "router/expert_emb")], dim=-1)
    scale = torch.clamp(P[layer_name(i, "router/log_scale")], max=math.log(100.0)).exp()
    return scale * (z @ e.T)


def router(u, h_prev, P, i, cfg):
    """Returns (logit [T, E], new hidden state or None). For lstm the state
    is the pair (h, c)."""
    rt = cfg.router_type
    if rt in ("cosine", "xmoe"):
        return cosine_head(u, P, i, cfg), None
    if rt == "linear":
        return u @ P[layer_name(i, "router/gate_w")].T, None
    pre = "router/" if cfg.router_shared_proj else layer_name(i, "router/")
    proj = u @ P[pre + "proj_w"].T + P[pre + "proj_b"]
    if rt != "gru-xmoe":
        gate_w = P[layer_name(i, "router/gate_w")]
        gate_b = P[layer_name(i, "router/gate_b")]
    if rt == "mlp":  # the paper's SMoE-MLP: exact (erf) GELU
        return torch.nn.functional.gelu(proj) @ gate_w.T + gate_b, None
    if rt == "mlp-tanh":
        return torch.tanh(proj) @ gate_w.T + gate_b, None
    if rt == "gru-np":
        h_prev = torch.zeros_like(proj)  # "NP": every layer starts from 0
    if rt == "lstm":
        h, c = h_prev
        if cfg.router_detach:  # cuts both h_{i-1} and c_{i-1}
            h, c = h.detach(), c.detach()
        h, c = lstm_cell(proj, h, c, P["router/cell/w_ih"], P["router/cell/w_hh"],
                         P["router/cell/b_ih"], P["router/cell/b_hh"])
        return h @ gate_w.T + gate_b, (h, c)
    if cfg.router_detach:
        h_prev = h_prev.detach()
    cell = gru_cell if rt in ("gru", "gru-np", "gru-xmoe") else rnn_cell
    h = cell(proj, h_prev, P["router/cell/w_ih"], P["router/cell/w_hh"],
             P["router/cell/b_ih"], P["router/cell/b_hh"])
    if rt == "gru-xmoe":
        return cosine_head(h, P, i, cfg), h
    return h @ gate_w.T + gate_b, h


def topk_select(prob, k):
    """k largest probs per row, ties to the lower expert index, descending."""
    # stable descending sort keeps the lower index first among equal values
    _, order = torch.sort(prob.detach(), dim=-1, descending=True, stable=True)
    return order[:, :k]


def expert(u, w1, w2, w3):
    """SwiGLU: W2 (silu(W1 u) * (W3 u)). u: [n, d]; w1, w3: [f, d]; w2: [d, f]."""
    return (torch.nn.functional.silu(u @ w1.T) * (u @ w3.T)) @ w2.T


def capacity_keep(prob, idx, cfg):
    """[T, k] bool, all True when dropless. With a capacity factor C, each
    expert keeps its ceil(T k / E * C) slots of highest probability; among
    equal probabilities the earlier slot (token t, then choice j) wins."""
    T, k, E = idx.shape[0], cfg.topk, cfg.num_experts
    keep = torch.ones(T * k, dtype=torch.bool)
    if cfg.capacity_factor <= 0:
        return keep.reshape(T, k)
    cap = math.ceil(T * k / E * cfg.capacity_factor)
    flat_e = idx.reshape(-1).tolist()
    flat_p = prob.detach().gather(1, idx).reshape(-1).tolist()
    for e in range(E):
        slots = [s for s in range(T * k) if flat_e[s] == e]
        ranked = sorted(slots, key=lambda s: (-flat_p[s], s))
        for s in ranked[cap:]:
            keep[s] = False
    return keep.reshape(T, k)


def moe(u, prob, idx, P, i, cfg, keep):
    """sum_j g_j * Expert_{e_j}(u) over the kept slots, g_j = prob_j / sum of
    the k chosen probs (dropped ones included: a dropped slot only loses its
    term)."""
    chosen = prob.gather(1, idx)                            # [T, k]
    g = chosen / chosen.sum(dim=1, keepdim=True)
    w1 = P[layer_name(i, "experts/w1")]
    w2 = P[layer_name(i, "experts/w2")]
    w3 = P[layer_name(i, "experts/w3")]
    out = torch.zeros_like(u)
    for j in range(cfg.topk):
        for e in range(cfg.num_experts):
            rows = ((idx[:, j] == e) & keep[:, j]).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            y = expert(u[rows], w1[e], w2[e], w3[e])
            out = out.index_add(0, rows, g[rows, j:j + 1] * y)
    return out


def load_balance(prob, idx, cfg):
    """E * sum_e f_e P_e; f_e = count_e / (T k) without gradient."""
    T, E, k = prob.shape[0], cfg.num_experts, cfg.topk
    counts = torch.bincount(idx.reshape(-1), minlength=E).to(prob.dtype)
    f = (counts / (T * k)).detach()
    Pm = prob.mean(dim=0)
    return E * (f * Pm).sum()


def z_loss(logit):
    """mean_t logsumexp(logit_t)^2."""
    return (torch.logsumexp(logit, dim=-1) ** 2).mean()


# --------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------

def forward(P, tokens, targets, cfg):
    """tokens, targets: int64 [B, S]. Returns a dict with logits, ce, lb, z,
    total, topk_idx (list per layer, [T, k]) and prob (list per layer)."""
    T = cfg.batch_size * cfg.seq_length
    wte = P["embed/wte"]
    x = wte[tokens.reshape(-1)]                             # [T, d]
    h = None
    if cfg.router_type in ("gru", "gru-np", "rnn", "gru-xmoe"):
        h = torch.zeros(T, cfg.router_dim, dtype=x.dtype)   # h_0 = 0
    if cfg.router_type == "lstm":
        zero = torch.zeros(T, cfg.router_dim, dtype=x.dtype)
        h = (zero, zero)                                    # h_0 = c_0 = 0
    lbs, zs, idxs, probs, keeps = [], [], [], [], []
    for i in range(cfg.num_layers):
        a = rms_norm(x, P[layer_name(i, "attn_norm")], cfg.rms_eps)
        x = x + attention(a, P, i, cfg)
        u = rms_norm(x, P[layer_name(i, "moe_norm")], cfg.rms_eps)
        logit, h_new = router(u, h, P, i, cfg)
        if h_new is not None:
            h = h_new
        if cfg.router_logit_residual != 0 and i > 0:
            prev = prev_logit.detach() if cfg.router_logit_residual_detach else prev_logit
            logit = logit + cfg.router_logit_residual * prev     # before softmax, top-k, z-loss
        prev_logit = logit                                       # layer i's final logits
        prob = torch.softmax(logit, dim=-1)
        idx = topk_select(prob, cfg.topk)
        keep = capacity_keep(prob, idx, cfg)
        x = x + moe(u, prob, idx, P, i, cfg, keep)
        lbs.append(load_balance(prob, idx, cfg))
        zs.append(z_loss(logit))
        idxs.append(idx)
        probs.append(prob)
        keeps.append(keep)
    head = wte if cfg.tie_embeddings else P["head"]
    logits = rms_norm(x, P["final_norm"], cfg.rms_eps) @ head.T
    ce = torch.nn.functional.cross_entropy(logits, targets.reshape(-1))
    lb = torch.stack(lbs).mean()
    z = torch.stack(zs).mean()
    total = ce + cfg.aux_loss_coeff * lb + cfg.z_loss_coeff * z
    return {"logits": logits, "ce": ce, "lb": lb, "z": z, "total": total,
            "topk_idx": idxs, "prob": probs, "keep": keeps}
