// ops.h — the one op interface of rmoe: forward and backward of every layer's
// math, over tensor views, declared once in the op table RMOE_OPS below.
//
// Legend: N rows (tokens or token slots), d width, f expert FFN width,
// E experts, k top-k, V vocabulary, B sequences, S sequence length, H heads,
// D head dim (d = H*D), p router width.
//
// Conventions, shared by every backend:
//  - Row-major. Linear weights are [out, in] (y = x W^T + b), as in PyTorch.
//  - Forward functions OVERWRITE their outputs (Tensor<T>).
//  - Backward functions ACCUMULATE (+=) into every gradient output (Grad<T>),
//    inputs and parameters alike, so a caller zeroes gradients once per step
//    and a residual stream's gradient is simply added to. Any gradient output
//    may be a null view (Tensor{}, is_null()), meaning "not needed": the op
//    skips it. Some inputs may be null too, as their comment says
//    (router_topk_backward: dgate and dprobs_extra null = zero; lse null when
//    dlse_scale = 0).
//  - Integer index inputs (token ids, targets, expert ids, slots, offsets) are
//    checked: an index outside its range throws rmoe::Error naming the op, the
//    index and the bound (never a read or write out of bounds).
//  - Everything is deterministic: no atomics, reductions in a fixed order.
//
// The same signatures are declared in:
//   rmoe::ops  — dispatch on the views' device (ops_dispatch.cpp); model code
//                calls only these
//   rmoe::cpu  — OpenBLAS + OpenMP fast path (src/kernels/cpu)
//   rmoe::ref  — plain loops, double accumulation; the oracle of the tests
//                (src/kernels/ref)
//   rmoe::cuda — the ops whose cuda column says yes (cuda_ops.h,
//                src/kernels/cuda; built with RMOE_WITH_CUDA)
//
// ---- The op table ---------------------------------------------------------
// One row per op:
//   X(kind, name, cuda, (device view...), (parameters...), (arguments...))
// kind    real:  template <class T>, instantiated for T = float and double;
//         any:   the same, and also for T = int32_t and int64_t (copies);
//         index: a plain function of integer views (no element type).
// cuda    yes if the CUDA backend has the op (this column is its whole list),
//         no otherwise (a cuda view then throws, naming the op).
// device view  the view(s) whose device picks the backend (op_device below):
//         a view the op always needs, never a gradient output that may be null.
// parameters   the signature. Tensor<T> is an output the op overwrites,
//         Grad<T> a gradient output it adds into (may be null), In<T> an
//         input; Tensor<const int32_t> / Tensor<const int64_t> index inputs.
// arguments    the parameter names again, in order (for the dispatch).
// An op whose element type T appears only in its inputs is called with T
// given: ops::sum<T>(out, x).
//
// From the table follow: the declarations in every namespace above, the
// dispatch wrappers (ops_dispatch.cpp), each backend's explicit
// instantiations (RMOE_INSTANTIATE_OPS, src/kernels/instantiate.h, at the end
// of each backend file, per section), and the conformance test's list of ops
// (tests/test_ops.cpp fails for an op without its cases).
//
// TO ADD AN OP:
//   1. a row in the section of the cpu file that implements it (sections:
//      RMOE_OPS_BASIC = cpu_basic.cpp, RMOE_OPS_DENSE = cpu_dense.cpp,
//      RMOE_OPS_ATTENTION = cpu_attention.cpp, RMOE_OPS_MOE = cpu_moe.cpp);
//   2. the function in that cpu file, in src/kernels/ref/ref_ops.cpp (and in
//      src/kernels/cuda/ if its cuda column says yes); nothing else to
//      register: each file's RMOE_INSTANTIATE_OPS / RMOE_INSTANTIATE_CUDA_OPS
//      line already covers its section;
//   3. its cases in tests/test_ops.cpp, registered with OP_CASE(...) naming
//      the op and what they check (ref, fd, null:<grad>, index:<input>); the
//      test OpTable.EveryOpHasItsCases lists what an op still lacks (and,
//      for cuda = yes, a CUDA_CASE in tests/test_cuda.cpp: Cuda.EveryCudaOpHasACase).
#pragma once
#include <cstdint>
#include <type_traits>

#include "rmoe/core/tensor.h"

namespace rmoe {
// Input views: a non-deduced context, so T is deduced from the output view and
// a Tensor<T> converts implicitly to the const view.
template <class T>
using In = std::type_identity_t<Tensor<const T>>;
// A gradient output: accumulated into (+=); a null view means "not needed".
template <class T>
using Grad = Tensor<T>;

// The device that runs an op: that of its device view, or for an op given two
// views (a copy between devices) the one that is not the host's.
template <class U>
Device op_device(const Tensor<U>& v) {
  return v.device;
}
template <class U, class V>
Device op_device(const Tensor<U>& a, const Tensor<V>& b) {
  return a.device != Device::cpu ? a.device : b.device;
}
}  // namespace rmoe

// clang-format off
// ---- cpu_basic.cpp: memory and reductions, any shape ------------------------------------
#define RMOE_OPS_BASIC(X)                                                                              \
  /* y = value, every element. */                                                                      \
  X(real, fill, no, (y), (Tensor<T> y, double value), (y, value))                                      \
  /* dst = src, the same number of elements, not overlapping; between devices too */                   \
  /* (run by the backend of the device that is not the host's). */                                     \
  X(any, copy, no, (dst, src), (Tensor<T> dst, In<T> src), (dst, src))                                 \
  /* y = a + b elementwise; y may be a or b (in place). */                                             \
  X(real, add, no, (y), (Tensor<T> y, In<T> a, In<T> b), (y, a, b))                                    \
  /* y = a + alpha * b elementwise; y may be a or b (in place). The router logit */                   \
  /* residual, forward and backward. */                                                                \
  X(real, add_scaled, no, (y), (Tensor<T> y, In<T> a, In<T> b, double alpha), (y, a, b, alpha))         \
  /* out[0] = sum_i x[i], accumulated in double in index order. */                                     \
  X(real, sum, no, (x), (Tensor<double> out, In<T> x), (out, x))                                       \
  /* out[0] = sum_i x[i]^2 in double over fixed blocks of 4096 elements, the block */                  \
  /* sums added in order: the same for any thread count. */                                            \
  X(real, sum_squares, no, (x), (Tensor<double> out, In<T> x), (out, x))

// ---- cpu_dense.cpp: token-wise ops --------------------------------------------
#define RMOE_OPS_DENSE(X)                                                                              \
  /* y[N,out] = x[N,in] W[out,in]^T (+ b[out] if given). */                                            \
  X(real, linear_forward, no, (y), (Tensor<T> y, In<T> x, In<T> W, In<T> b), (y, x, W, b))             \
  /* dx[N,in] += dy W; dW[out,in] += dy^T x; db[out] += sum_rows dy. */                                \
  X(real, linear_backward, no, (dy),                                                                   \
    (Grad<T> dx, Grad<T> dW, Grad<T> db, In<T> dy, In<T> x, In<T> W), (dx, dW, db, dy, x, W))          \
  /* out[N,d] = W[tokens[n], :]; token ids in [0, V). */                                               \
  X(real, embedding_forward, no, (out), (Tensor<T> out, Tensor<const int32_t> tokens, In<T> W),        \
    (out, tokens, W))                                                                                  \
  /* dW[V,d] += scatter of dout rows, rows added in token order. */                                    \
  X(real, embedding_backward, no, (dout), (Grad<T> dW, Tensor<const int32_t> tokens, In<T> dout),      \
    (dW, tokens, dout))                                                                                \
  /* out = x * rstd * w, rstd[N] = 1/sqrt(mean(x^2) + eps) saved for backward. */                      \
  X(real, rmsnorm_forward, no, (out),                                                                  \
    (Tensor<T> out, Tensor<T> rstd, In<T> x, In<T> w, double eps), (out, rstd, x, w, eps))             \
  X(real, rmsnorm_backward, no, (dout),                                                                \
    (Grad<T> dx, Grad<T> dw, In<T> dout, In<T> x, In<T> w, In<T> rstd), (dx, dw, dout, x, w, rstd))    \
  /* Row L2 normalisation (the cosine routers, F.normalize): y[N,C] = x / norm, */                     \
  /* norm[N] = max(||x_n||_2, eps) saved for backward. */                                              \
  X(real, l2norm_forward, no, (y), (Tensor<T> y, Tensor<T> norm, In<T> x, double eps), (y, norm, x, eps)) \
  /* dx += (dy - y (y . dy)) / norm per row where norm > eps; dx += dy / eps where the norm */         \
  /* was clamped (norm = eps: the denominator is a constant there). From the output y. */              \
  X(real, l2norm_backward, no, (dy), (Grad<T> dx, In<T> dy, In<T> y, In<T> norm, double eps),          \
    (dx, dy, y, norm, eps))                                                                            \
  /* y = exp(min(s, max_log_scale)) x, s = log_scale[0] (a [1] tensor: the cosine routers' */          \
  /* learned inverse temperature); y may be x (in place). */                                           \
  X(real, exp_scale_forward, no, (y), (Tensor<T> y, In<T> x, In<T> log_scale, double max_log_scale),   \
    (y, x, log_scale, max_log_scale))                                                                  \
  /* dx += exp(min(s, max)) dy; dlog_scale[0] += sum_i dy_i y_i (= d/ds) if s <= max, */               \
  /* else nothing (clamped: y does not depend on s). From the output y; sum in double, in order. */    \
  X(real, exp_scale_backward, no, (dy),                                                                \
    (Grad<T> dx, Grad<T> dlog_scale, In<T> dy, In<T> y, In<T> log_scale, double max_log_scale),        \
    (dx, dlog_scale, dy, y, log_scale, max_log_scale))                                                 \
  /* Rotary embedding in place on x[B,S,H,D] (D even), positions 0..S-1, half-split */                 \
  /* pairing (i, i+D/2), freq_i = theta^(-2i/D). backward = the inverse rotation of */                 \
  /* the gradient, in place (the one backward that does not add). */                                   \
  X(real, rope_forward, no, (x), (Tensor<T> x, double theta), (x, theta))                              \
  X(real, rope_backward, no, (dx), (Tensor<T> dx, double theta), (dx, theta))                          \
  /* h[N,f] = silu(a) * b. */                                                                          \
  X(real, swiglu_forward, yes, (h), (Tensor<T> h, In<T> a, In<T> b), (h, a, b))                        \
  X(real, swiglu_backward, yes, (dh),                                                                  \
    (Grad<T> da, Grad<T> db, In<T> dh, In<T> a, In<T> b), (da, db, dh, a, b))                          \
  /* y = tanh(x) (the mlp router's and the rnn cell's nonlinearity). */                                \
  X(real, tanh_forward, no, (y), (Tensor<T> y, In<T> x), (y, x))                                       \
  /* dx += dy * (1 - y^2), from the saved output y. */                                                 \
  X(real, tanh_backward, no, (dy), (Grad<T> dx, In<T> dy, In<T> y), (dx, dy, y))                       \
  /* y = gelu(x) = x Phi(x) = x/2 (1 + erf(x/sqrt 2)), exact (torch.nn.GELU()): the mlp router's. */     \
  X(real, gelu_forward, no, (y), (Tensor<T> y, In<T> x), (y, x))                                       \
  /* dx += dy * (Phi(x) + x phi(x)), from the saved input x. */                                       \
  X(real, gelu_backward, no, (dy), (Grad<T> dx, In<T> dy, In<T> x), (dx, dy, x))                       \
  /* GRU pointwise: gi, gh [N,3p] (r,z,n thirds), h[N,p] -> hnew[N,p]; gates[N,3p] */                  \
  /* saves (r,z,n). */                                                                                 \
  X(real, gru_forward, yes, (hnew),                                                                    \
    (Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h), (hnew, gates, gi, gh, h))          \
  /* dgi, dgh [N,3p] and dh[N,p] +=, given dhnew (dh null: router_detach). */                          \
  X(real, gru_backward, no, (dhnew),                                                                   \
    (Grad<T> dgi, Grad<T> dgh, Grad<T> dh, In<T> dhnew, In<T> gates, In<T> gh, In<T> h),               \
    (dgi, dgh, dh, dhnew, gates, gh, h))                                                               \
  /* LSTM pointwise (PyTorch LSTMCell): gi, gh [N,4p] (i,f,g,o quarters), c[N,p] -> */                \
  /* cnew = f c + i g, hnew = o tanh(cnew) [N,p]; gates[N,4p] saves (i,f,g,o) activated. */             \
  X(real, lstm_forward, no, (hnew),                                                                    \
    (Tensor<T> hnew, Tensor<T> cnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> c),                    \
    (hnew, cnew, gates, gi, gh, c))                                                                    \
  /* dpre [N,4p] += d/d(gi + gh) (the one gradient of both gi and gh), dc[N,p] +=, */                  \
  /* given dhnew, dcnew (from the layer above) and the forward's gates, c, cnew */                     \
  /* (dc null: router_detach). */                                                                      \
  X(real, lstm_backward, no, (dhnew),                                                                  \
    (Grad<T> dpre, Grad<T> dc, In<T> dhnew, In<T> dcnew, In<T> gates, In<T> c, In<T> cnew),            \
    (dpre, dc, dhnew, dcnew, gates, c, cnew))                                                          \
  /* Cross-entropy over logits[N,V] with targets[N] in [0, V): losses[N] = lse - */                    \
  /* logit[target]; dlogits (if given) += (softmax - onehot) * dloss_scale. */                         \
  X(real, cross_entropy, no, (logits),                                                                 \
    (Tensor<T> losses, Grad<T> dlogits, In<T> logits, Tensor<const int32_t> targets,                   \
     double dloss_scale),                                                                              \
    (losses, dlogits, logits, targets, dloss_scale))

// ---- cpu_attention.cpp ----------------------------------------------------------
// Blocked causal attention (rmoe/kernels/flash_attention.h, shared by cpu and cuda).
#define RMOE_OPS_ATTENTION(X)                                                                          \
  /* Causal softmax attention per (b,h): P = softmax(q k^T / sqrt(D)) masked to j <= i, */             \
  /* out = P v. q,k,v,out are [B,S,H,D]. P is never stored: lse[B,H,S] = log sum_j */                  \
  /* exp(s_ij) (row i's log-sum-exp of the scaled scores) is saved for the backward. */                \
  X(real, attention_forward, yes, (out),                                                               \
    (Tensor<T> out, Tensor<T> lse, In<T> q, In<T> k, In<T> v), (out, lse, q, k, v))                    \
  /* dq, dk, dv [B,S,H,D] +=, from dout, the forward's out and lse (P recomputed per */                \
  /* block). No atomics: dk/dv and dq are each summed over blocks in a fixed order. */                 \
  /* scratch, cpu: flash::cpu_scratch_elements(S, W) elements, per worker thread a P and */            \
  /* a dS block and D_i of a query block; the op uses at most W threads (W >= 1). */                   \
  /* cuda: unused (may be null; the blocks live in shared memory). */                                  \
  X(real, attention_backward, yes, (dout),                                                             \
    (Grad<T> dq, Grad<T> dk, Grad<T> dv, Tensor<T> scratch, In<T> dout, In<T> out, In<T> lse,          \
     In<T> q, In<T> k, In<T> v),                                                                       \
    (dq, dk, dv, scratch, dout, out, lse, q, k, v))

// ---- cpu_moe.cpp: routing, dispatch and combine, experts --------------------------
#define RMOE_OPS_MOE(X)                                                                                \
  /* Gates over a given choice: gate[n,j] = probs[n, idx[n,j]] / sum_j probs[n, idx[n,j]] */           \
  /* (router_topk_forward's gates, for a top-k held fixed). idx in [0, E). */                          \
  X(real, router_gates, no, (gate), (Tensor<T> gate, In<T> probs, Tensor<const int32_t> idx),          \
    (gate, probs, idx))                                                                                \
  /* One layer's routing statistics for the aux losses (summed over ranks, they are the */             \
  /* global ones): stats[2E+2] = [slots routed to each expert e (E) | sum_n probs[n,e] */              \
  /* (E) | sum_n lse[n]^2 | N (tokens)], in double. idx[N,k] in [0, E). */                             \
  X(real, router_stats, no, (probs),                                                                   \
    (Tensor<double> stats, In<T> probs, In<T> lse, Tensor<const int32_t> idx),                         \
    (stats, probs, lse, idx))                                                                          \
  /* Gradient of the load-balance term scale * sum_e f_e P_e w.r.t. probs[n,e] of any */               \
  /* token n, from router_stats summed over ranks (tokens Tg = stats[2E+1], f_e = */                   \
  /* stats[e] / (Tg topk) held constant, P_e = sum_n probs[n,e] / Tg): */                              \
  /* dprobs[E] += scale * f_e / Tg (router_topk_backward broadcasts it to every row). */               \
  X(real, load_balance_backward, no, (stats),                                                          \
    (Grad<T> dprobs, Tensor<const double> stats, int64_t topk, double scale),                          \
    (dprobs, stats, topk, scale))                                                                      \
  /* The routing plan: token slots (t, j) of idx[N,k] (in [0, E)) sorted by expert, */                 \
  /* tokens in order within an expert (a stable counting sort): offsets[E+1] delimit */                \
  /* each expert's slots, slot_token[N*k] is each slot's token, slot_of[N,k] each */                   \
  /* (t, j)'s slot. keep[N,k] (0/1; null = all kept, dropless): a slot with keep 0 */                  \
  /* (dropped by the capacity) gets slot_of = -1 and no row, so offsets[E] = kept slots. */            \
  X(index, moe_route_plan, no, (idx),                                                                  \
    (Tensor<int64_t> offsets, Tensor<int32_t> slot_token, Tensor<int32_t> slot_of,                     \
     Tensor<const int32_t> idx, Tensor<const int32_t> keep),                                           \
    (offsets, slot_token, slot_of, idx, keep))                                                         \
  /* Capacity keys of this rank's slots: keys[N*k, 2] row s = (t, j) is (idx[t,j], */                  \
  /* probs[t, idx[t,j]]): the expert a slot asks for and its router probability. */                    \
  X(real, moe_slot_keys, no, (probs), (Tensor<double> keys, In<T> probs, Tensor<const int32_t> idx),   \
    (keys, probs, idx))                                                                                \
  /* The capacity decision, the same on every rank: keys[G, 2] are the slot keys of */                 \
  /* every rank in rank order (moe_slot_keys), expert ids in [0, E); each expert keeps */              \
  /* its `capacity` slots of highest probability, ties to the lower row (earlier rank, */              \
  /* token, j). keep[N,k] = 1 / 0 for this rank's slots, rows [first, first + N*k) of */               \
  /* keys; dropped[0] = dropped slots of all G. */                                                     \
  X(index, moe_capacity_keep, no, (keys),                                                              \
    (Tensor<int32_t> keep, Tensor<int64_t> dropped, Tensor<const double> keys, int64_t first,          \
     int64_t capacity, int64_t num_experts),                                                           \
    (keep, dropped, keys, first, capacity, num_experts))                                               \
  /* Router head: probs[N,E] = softmax(logits) (in the view's type, fp32 or better); */                \
  /* top-k by the stored probabilities, ties to the lower expert, slots ordered by */                  \
  /* descending probability: idx[N,k], gate[N,k] = prob / sum of the k chosen probs; */                \
  /* lse[N] = logsumexp(logits) (z-loss). */                                                           \
  X(real, router_topk_forward, no, (probs),                                                            \
    (Tensor<T> probs, Tensor<int32_t> idx, Tensor<T> gate, Tensor<T> lse, In<T> logits),               \
    (probs, idx, gate, lse, logits))                                                                   \
  /* dlogits[N,E] += gradient through softmax and renormalised top-k (idx in [0, E)) of: */            \
  /*   dgate[N,k] (loss w.r.t. the renormalised gates), */                                             \
  /*   dprobs_extra[E] broadcast to every row (the aux loss: d/dprob[n,e]), */                         \
  /*   dlse scalar applied per row as dlse * 2 * lse[n] (z-loss). */                                   \
  X(real, router_topk_backward, no, (probs),                                                           \
    (Grad<T> dlogits, In<T> dgate, In<T> dprobs_extra, double dlse_scale, In<T> probs,                 \
     Tensor<const int32_t> idx, In<T> lse),                                                            \
    (dlogits, dgate, dprobs_extra, dlse_scale, probs, idx, lse))                                       \
  /* Experts (SwiGLU), grouped over experts: rows of xs[N,d] are token slots sorted by */              \
  /* expert; offsets[E+1] (0 = offsets[0] <= ... <= offsets[E] = N) delimit each */                    \
  /* expert's rows (an expert may own none). W1, W3 [E,f,d], W2 [E,d,f]. Saves a, b, h */              \
  /* [N,f]. */                                                                                         \
  X(real, experts_forward, no, (ys),                                                                   \
    (Tensor<T> ys, Tensor<T> a, Tensor<T> b, Tensor<T> h, In<T> xs,                                    \
     Tensor<const int64_t> offsets, In<T> W1, In<T> W3, In<T> W2),                                     \
    (ys, a, b, h, xs, offsets, W1, W3, W2))                                                            \
  /* dxs[N,d] +=, dW1, dW3, dW2 +=. scratch: [N,f] x 2 (dh, then da/db). */                            \
  X(real, experts_backward, no, (dys),                                                                 \
    (Grad<T> dxs, Grad<T> dW1, Grad<T> dW3, Grad<T> dW2, Tensor<T> scratch_da,                         \
     Tensor<T> scratch_db, In<T> dys, In<T> xs, Tensor<const int64_t> offsets, In<T> a,                \
     In<T> b, In<T> h, In<T> W1, In<T> W3, In<T> W2),                                                  \
    (dxs, dW1, dW3, dW2, scratch_da, scratch_db, dys, xs, offsets, a, b, h, W1, W3, W2))               \
  /* Dispatch: xs[slot] = x[slot_token[slot]] for slot in [0, N), tokens in [0, rows of x). */         \
  X(real, moe_gather, no, (xs), (Tensor<T> xs, In<T> x, Tensor<const int32_t> slot_token),             \
    (xs, x, slot_token))                                                                               \
  /* Combine: out[t] = sum_{j<k} gate[t,j] * ys[slot_of[t,j]], j in order; a dropped */               \
  /* slot (slot_of = -1, moe_route_plan) adds nothing. */                                              \
  X(real, moe_combine, no, (out),                                                                      \
    (Tensor<T> out, In<T> ys, Tensor<const int32_t> slot_of, In<T> gate), (out, ys, slot_of, gate))    \
  /* Backward of combine: dys[slot_of[t,j]] += gate[t,j] * dout[t]; */                                 \
  /* dgate[t,j] += <dout[t], ys[slot_of[t,j]]>; dropped slots (slot_of = -1): nothing. */             \
  X(real, moe_combine_backward, no, (dout),                                                            \
    (Grad<T> dys, Grad<T> dgate, In<T> dout, In<T> ys, Tensor<const int32_t> slot_of,                  \
     In<T> gate),                                                                                      \
    (dys, dgate, dout, ys, slot_of, gate))                                                             \
  /* Backward of gather: dx[t] += sum_{j<k} dxs[slot_of[t,j]], j in order (-1: none). */             \
  X(real, moe_gather_backward, no, (dxs), (Grad<T> dx, In<T> dxs, Tensor<const int32_t> slot_of),      \
    (dx, dxs, slot_of))

// The whole table.
#define RMOE_OPS(X) RMOE_OPS_BASIC(X) RMOE_OPS_DENSE(X) RMOE_OPS_ATTENTION(X) RMOE_OPS_MOE(X)
// clang-format on

// ---- what the table's columns turn into ------------------------------------------
#define RMOE_OP_TEMPLATE_real template <class T>
#define RMOE_OP_TEMPLATE_any template <class T>
#define RMOE_OP_TEMPLATE_index
#define RMOE_OP_TARGS_real <T>
#define RMOE_OP_TARGS_any <T>
#define RMOE_OP_TARGS_index
#define RMOE_OP_IF_CUDA_yes(...) __VA_ARGS__
#define RMOE_OP_IF_CUDA_no(...)

#define RMOE_OP_DECLARE(kind, name, cuda, dev, params, args) RMOE_OP_TEMPLATE_##kind void name params;

namespace rmoe::ops { RMOE_OPS(RMOE_OP_DECLARE) }
namespace rmoe::cpu { RMOE_OPS(RMOE_OP_DECLARE) }
namespace rmoe::ref { RMOE_OPS(RMOE_OP_DECLARE) }
