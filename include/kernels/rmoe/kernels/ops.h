// ops.h — the one op interface of rmoe: forward and backward of every layer's
// math, over tensor views.
//
// Legend: N rows (tokens or token slots), d width, f expert FFN width,
// E experts, k top-k, V vocabulary, B sequences, S sequence length, H heads,
// D head dim (d = H*D), p router width.
//
// Conventions, shared by every backend:
//  - Row-major. Linear weights are [out, in] (y = x W^T + b), as in PyTorch.
//  - Forward functions OVERWRITE their outputs.
//  - Backward functions ACCUMULATE (+=) into every gradient output, inputs and
//    parameters alike, so a caller zeroes gradients once per step and a
//    residual stream's gradient is simply added to. Any gradient output may be
//    a null view (Tensor{}, is_null()), meaning "not needed" (router_topk_backward:
//    dgate and dprobs_extra may be null = zero; lse may be null when dlse_scale = 0).
//  - Everything is deterministic: no atomics, reductions in a fixed order.
//
// Three namespaces declare these same signatures:
//   rmoe::ops  — dispatch on the views' device (cpu now; cuda when built)
//   rmoe::cpu  — OpenBLAS + OpenMP fast path
//   rmoe::ref  — plain loops, double accumulation; the oracle, used by tests
// All are instantiated for T = float and T = double.
#pragma once
#include <cstdint>
#include <type_traits>

#include "rmoe/core/tensor.h"

namespace rmoe {
// Input views: a non-deduced context, so T is deduced from the output view and
// a Tensor<T> converts implicitly to the const view.
template <class T>
using In = std::type_identity_t<Tensor<const T>>;
}  // namespace rmoe

#define RMOE_OPS_DECLARE                                                                \
  /* y[N,out] = x[N,in] W[out,in]^T (+ b[out] if given). */                             \
  template <class T>                                                                    \
  void linear_forward(Tensor<T> y, In<T> x, In<T> W,                \
                      In<T> b);                                               \
  /* dx[N,in] += dy W; dW[out,in] += dy^T x; db[out] += sum_rows dy. */                \
  template <class T>                                                                    \
  void linear_backward(Tensor<T> dx, Tensor<T> dW, Tensor<T> db, In<T> dy,    \
                       In<T> x, In<T> W);                           \
                                                                                        \
  /* out[N,d] = W[tokens[n], :]. Token ids must be < V (checked). */                    \
  template <class T>                                                                    \
  void embedding_forward(Tensor<T> out, Tensor<const int32_t> tokens,                   \
                         In<T> W);                                            \
  /* dW[V,d] += scatter of dout rows; rows accumulated in token order. */               \
  template <class T>                                                                    \
  void embedding_backward(Tensor<T> dW, Tensor<const int32_t> tokens,                   \
                          In<T> dout);                                        \
                                                                                        \
  /* out = x * rstd * w, rstd[N] = 1/sqrt(mean(x^2) + eps) saved for backward. */      \
  template <class T>                                                                    \
  void rmsnorm_forward(Tensor<T> out, Tensor<T> rstd, In<T> x,                \
                       In<T> w, double eps);                                  \
  template <class T>                                                                    \
  void rmsnorm_backward(Tensor<T> dx, Tensor<T> dw, In<T> dout,               \
                        In<T> x, In<T> w, In<T> rstd);    \
                                                                                        \
  /* Rotary embedding in place on x[B,S,H,D] (D even), positions 0..S-1, */             \
  /* half-split pairing (i, i+D/2), freq_i = theta^(-2i/D). backward = inverse */      \
  /* rotation applied to the gradient, in place (the one op that does not add). */     \
  template <class T>                                                                    \
  void rope_forward(Tensor<T> x, double theta);                                         \
  template <class T>                                                                    \
  void rope_backward(Tensor<T> dx, double theta);                                       \
                                                                                        \
  /* Causal softmax attention per (b,h): P = softmax(q k^T / sqrt(D)) masked to */     \
  /* j <= i, out = P v. q,k,v,out are [B,S,H,D]; P[B,H,S,S] is saved (entries */       \
  /* above the diagonal are written as 0). */                                           \
  template <class T>                                                                    \
  void attention_forward(Tensor<T> out, Tensor<T> P, In<T> q,                 \
                         In<T> k, In<T> v);                         \
  /* scratch: [S,S] (heads are processed one after another). */                        \
  template <class T>                                                                    \
  void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> scratch,  \
                          In<T> dout, In<T> P, In<T> q,   \
                          In<T> k, In<T> v);                        \
                                                                                        \
  /* h[N,f] = silu(a) * b. */                                                           \
  template <class T>                                                                    \
  void swiglu_forward(Tensor<T> h, In<T> a, In<T> b);               \
  template <class T>                                                                    \
  void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh,                  \
                       In<T> a, In<T> b);                           \
                                                                                        \
  /* y = tanh(x) (the mlp router's and the rnn cell's nonlinearity). */                 \
  template <class T>                                                                    \
  void tanh_forward(Tensor<T> y, In<T> x);                                    \
  /* dx += dy * (1 - y^2), from the saved output y. */                                  \
  template <class T>                                                                    \
  void tanh_backward(Tensor<T> dx, In<T> dy, In<T> y);              \
                                                                                        \
  /* GRU pointwise: gi, gh [N,3p] (r,z,n thirds), h[N,p] -> hnew[N,p]; */               \
  /* gates[N,3p] saves (r,z,n). */                                                      \
  template <class T>                                                                    \
  void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi,                 \
                   In<T> gh, In<T> h);                              \
  /* dgi, dgh [N,3p] and dh[N,p] +=, given dhnew. dh may be null (detach).  */          \
  template <class T>                                                                    \
  void gru_backward(Tensor<T> dgi, Tensor<T> dgh, Tensor<T> dh, In<T> dhnew,  \
                    In<T> gates, In<T> gh, In<T> h);      \
                                                                                        \
  /* Router head: probs[N,E] = softmax(logits) (always computed in the view's */       \
  /* type, fp32 or better); top-k by the stored probabilities, ties to the lower */   \
  /* expert, */                                                                          \
  /* slots ordered by descending probability: idx[N,k], gate[N,k] = */                 \
  /* prob / sum of the k chosen probs; lse[N] = logsumexp(logits) (z-loss). */          \
  template <class T>                                                                    \
  void router_topk_forward(Tensor<T> probs, Tensor<int32_t> idx, Tensor<T> gate,        \
                           Tensor<T> lse, In<T> logits);                      \
  /* dlogits[N,E] += gradient through softmax and renormalised top-k of: */            \
  /*   dgate[N,k] (loss w.r.t. the renormalised gates), */                             \
  /*   dprobs_extra[E] broadcast to every row (the aux loss: d/dprob[n,e]), */          \
  /*   dlse scalar applied per row as dlse * 2 * lse[n] (z-loss). */                   \
  template <class T>                                                                    \
  void router_topk_backward(Tensor<T> dlogits, In<T> dgate,                   \
                            In<T> dprobs_extra, double dlse_scale,            \
                            In<T> probs, Tensor<const int32_t> idx,           \
                            In<T> lse);                                       \
                                                                                        \
  /* Experts (SwiGLU), grouped over experts: rows of xs[N,d] are token slots */        \
  /* sorted by expert; offsets[E+1] delimit each expert's rows (an expert may */       \
  /* own zero rows). W1, W3 [E,f,d], W2 [E,d,f]. Saves a, b, h [N,f]. */                \
  template <class T>                                                                    \
  void experts_forward(Tensor<T> ys, Tensor<T> a, Tensor<T> b, Tensor<T> h,             \
                       In<T> xs, Tensor<const int64_t> offsets,               \
                       In<T> W1, In<T> W3, In<T> W2);     \
  /* dxs[N,d] +=, dW1, dW3, dW2 +=. scratch: [N,f] x 2 (dh, then da/db). */            \
  template <class T>                                                                    \
  void experts_backward(Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2,     \
                        Tensor<T> scratch_da, Tensor<T> scratch_db,                     \
                        In<T> dys, In<T> xs,                        \
                        Tensor<const int64_t> offsets, In<T> a,               \
                        In<T> b, In<T> h, In<T> W1,       \
                        In<T> W3, In<T> W2);                        \
                                                                                        \
  /* Dispatch: xs[slot] = x[slot_token[slot]] for slot in [0, N). */                    \
  template <class T>                                                                    \
  void moe_gather(Tensor<T> xs, In<T> x, Tensor<const int32_t> slot_token);   \
  /* Combine: out[t] = sum_{j<k} gate[t,j] * ys[slot_of[t,j]], j in order. */           \
  template <class T>                                                                    \
  void moe_combine(Tensor<T> out, In<T> ys, Tensor<const int32_t> slot_of,    \
                   In<T> gate);                                               \
  /* Backward of combine: dys[slot_of[t,j]] += gate[t,j] * dout[t]; */                  \
  /* dgate[t,j] += <dout[t], ys[slot_of[t,j]]>. */                                      \
  template <class T>                                                                    \
  void moe_combine_backward(Tensor<T> dys, Tensor<T> dgate, In<T> dout,       \
                            In<T> ys, Tensor<const int32_t> slot_of,          \
                            In<T> gate);                                      \
  /* Backward of gather: dx[t] += sum_{j<k} dxs[slot_of[t,j]], j in order. */           \
  template <class T>                                                                    \
  void moe_gather_backward(Tensor<T> dx, In<T> dxs,                           \
                           Tensor<const int32_t> slot_of);                              \
                                                                                        \
  /* Cross-entropy over logits[N,V] with targets[N]: losses[N] = lse - logit[t]. */   \
  /* If dlogits is given: dlogits += (softmax - onehot) * dloss_scale. */               \
  template <class T>                                                                    \
  void cross_entropy(Tensor<T> losses, Tensor<T> dlogits, In<T> logits,       \
                     Tensor<const int32_t> targets, double dloss_scale);

namespace rmoe::ops { RMOE_OPS_DECLARE }
namespace rmoe::cpu { RMOE_OPS_DECLARE }
namespace rmoe::ref { RMOE_OPS_DECLARE }
