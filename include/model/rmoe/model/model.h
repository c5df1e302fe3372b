// model.h — the RMoE decoder: explicit forward and backward, no autograd.
//
// Legend: B sequences per micro-batch, S sequence length, T = B*S tokens,
// Tk = T*k token slots, d width, H heads, D head dim, E experts, k top-k,
// f expert FFN width, p router width, r cosine-head width (xmoe_dim, or d for
// cosine), V vocabulary, L layers. (These letters name sizes in shape
// comments only; in code T is the element type, and the counts are
// num_tokens_ / n_tok and n_slots.)
//
// One member-function file per layer: attention_layer.cpp, router.cpp,
// moe_layer.cpp, lm_head.cpp; model.cpp walks them (forward in order, backward
// in reverse). Activations live in one arena sized at construction for
// max_batch sequences; a step allocates nothing. Backward ACCUMULATES into the
// gradient store (zero it once per optimizer step). Backward reads the
// activations of the last forward and never writes them, so any number of
// backwards may follow one forward (e.g. one per loss term, LossTerms).
// The model computes only through ops (rmoe/kernels/ops.h) on views: it never
// reads or writes an activation, index or statistic itself, so the views may
// live on any device. What reaches the host: per MoE layer its expert offsets
// (ExpertDispatcher::forward), and per forward the statistics and the CE sum
// (the end of forward()).
// Tested by tests/test_model.cpp (finite differences in double, determinism)
// and tests/test_golden.cpp (against the PyTorch reference).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "rmoe/core/arena.h"
#include "rmoe/model/config.h"
#include "rmoe/model/expert_dispatcher.h"
#include "rmoe/model/params.h"

namespace rmoe {

// What one forward pass measured. Loss terms are means over the micro-batch.
struct ForwardResult {
  double ce = 0;     // mean cross-entropy over this rank's T tokens (nats)
  double lb = 0;     // load-balance loss over all ranks' tokens, mean over layers (1 = balanced)
  double z = 0;      // router z-loss over all ranks' tokens, mean over layers
  double total = 0;  // ce + aux_coeff * lb + z_coeff * z
  // Expert load over all ranks: counts[l * E + e] = slots routed to expert e in layer l
  // (the router's choice, before any capacity drop).
  std::vector<int64_t> expert_counts;
  // [L] slots the capacity dropped in each layer over all ranks (0 when dropless),
  // out of slots_global = the micro-step's tokens over all ranks x k.
  std::vector<int64_t> dropped_slots;
  int64_t slots_global = 0;
};

// Sums the forward statistics of every layer, stats [L, 2E+2] (router_stats
// rows), over all data-parallel ranks in place, so the aux losses see every
// rank's tokens. Called once per forward on every rank (a collective). Empty:
// one process, nothing to sum. parallel/grad_sync.h has the MPI one.
using StatsReducer = std::function<void(Tensor<double> stats)>;

// The capacity's exchange (--moe-expert-capacity-factor): concatenates every
// data-parallel rank's slot keys of one layer (moe_slot_keys rows [n, 2]) in
// rank order into `all` and returns the row where this rank's keys start. A
// collective: every rank calls it once per layer per forward when the
// capacity is on. Empty: one process (all = mine). parallel/grad_sync.h has
// the MPI one.
using SlotGatherer = std::function<int64_t(Tensor<const double> mine, std::vector<double>& all)>;
// The loss terms a backward differentiates (docs/MODEL.md "Losses"). The
// gradient is linear in them, so backwards of disjoint terms on one forward
// add up to the backward of all of them.
struct LossTerms {
  bool ce = true;  // the cross-entropy
  bool lb = true;  // aux_coeff * mean_i lb_i
  bool z = true;   // z_coeff * mean_i z_i
};

template <class T>
class Model {
 public:
  // dispatcher: where the experts live (null = all experts in this process);
  // reduce_stats, gather_slots: see StatsReducer, SlotGatherer.
  Model(const ModelConfig& cfg, int max_batch, std::shared_ptr<ExpertDispatcher<T>> dispatcher = nullptr,
        StatsReducer reduce_stats = {}, SlotGatherer gather_slots = {});

  const ModelConfig& config() const { return cfg_; }
  ParamStore<T>& params() { return params_; }
  ParamStore<T>& grads() { return grads_; }
  int64_t activation_bytes() const { return arena_.bytes(); }
  ExpertDispatcher<T>& dispatcher() { return *dispatcher_; }

  // tokens, targets: [B, S] int32, B <= max_batch.
  ForwardResult forward(const int32_t* tokens, const int32_t* targets, int B);
  // Adds into grads() this rank's part of the gradient of loss_scale * the
  // GLOBAL total (CE averaged over every rank's tokens, aux terms over all
  // ranks); summed over data-parallel ranks it is the whole gradient. In one
  // process that is simply the gradient of loss_scale * total.
  void backward(double loss_scale) { backward(loss_scale, LossTerms{}, grads_); }
  // The same for the loss terms `terms` only, and only for the parameters
  // `into` holds: a ParamStore of some of params().specs() (same names and
  // shapes, e.g. router_param_specs in router_grads.h) or grads() itself; the
  // weight gradients of the parameters it lacks are not computed. Adds into
  // `into`, nothing else changes: a collective on every rank, as backward().
  void backward(double loss_scale, LossTerms terms, ParamStore<T>& into);
  // Logits of rows [first, first + n) of the last forward, [n, V], n <=
  // head_chunk_rows(): a view of the rows the head still holds, or recomputed
  // into its buffer (which ends earlier views). The head never holds all
  // [T, V] logits when T > head_chunk_rows() (see head_forward).
  Tensor<T> logits(int64_t first, int64_t n);
  // Token rows of one head chunk: all of a micro-batch when its [T, V]
  // logits fit cfg.head_chunk_elements, else head_chunk_elements / V (>= 1).
  int64_t head_chunk_rows() const { return head_chunk_; }
  static int64_t head_chunk_rows_for(const ModelConfig& c, int64_t max_tokens) {
    return std::clamp<int64_t>(c.head_chunk_elements / c.vocab_size, 1, max_tokens);
  }
  // Top-k expert choice of layer l in the last forward: [T, k].
  Tensor<int32_t> topk_idx(int l) const;
  // Router probabilities of layer l in the last forward, the full softmax over
  // all E experts (before top-k): [T, E].
  Tensor<T> router_probs(int l) const;
  // Hold routing fixed: when set, forward reuses the last top-k choice instead
  // of recomputing it (finite-difference tests need a piecewise-smooth loss).
  void set_freeze_routing(bool on) { freeze_routing_ = on; }
  // Hold the router state fixed: when set, every layer's cell takes as h_{l-1}
  // the state of the forward run last before this call, whatever the weights
  // are now. With router_detach the backward treats h_{l-1} as a constant, so
  // finite differences of such forwards check the detached gradient (tests).
  void set_freeze_router_state(bool on);

 private:
  struct LayerWeights {  // views into a ParamStore (weights or gradients)
    Tensor<T> attn_norm, wq, wk, wv, wo, moe_norm;
    Tensor<T> gate_w, gate_b, proj_w, proj_b;  // router (gate_b, proj_* null for linear)
    Tensor<T> xmoe_proj, expert_emb, log_scale;  // cosine head: [r, d or p], [E, r], [1] (null otherwise)
    Tensor<T> w1, w3, w2;                      // experts [E,f,d], [E,f,d], [E,d,f]
  };
  struct GlobalWeights {
    Tensor<T> wte, final_norm, head;           // head aliases wte when tied
    Tensor<T> w_ih, w_hh, b_ih, b_hh;          // shared router cell (gru/rnn/lstm)
  };
  struct LayerActs {
    Tensor<T> x_in, rstd1, a, q, k, v, o;      // attention: x_in, a, q, k, v, o [T,d]
    Tensor<T> lse_att;                         // attention's row log-sum-exp [B,H,S]
    Tensor<T> x_mid, rstd2, u;                 // after attention; u = moe_norm(x_mid)
    Tensor<T> up, gi, gh, gates, h;            // router: up, h [T,p]; gi, gh, gates [T,3p] ([T,4p] lstm, [T,p] rnn)
    Tensor<T> c;                               // lstm's cell state c_l [T,p]
    Tensor<T> logits, probs, gate, lse;        // [T,E], [T,E], [T,k], [T]
    Tensor<T> xz, zn, znorm, en, enorm;        // cosine head: xz, zn [T,r]; znorm [T]; en [E,r]; enorm [E]
    Tensor<T> xs, ys;                          // token slots sorted by expert [Tk,d]
    Tensor<T> moe_out;                         // [T,d]
    Tensor<int32_t> idx, slot_token, slot_of;  // routing: [T,k], [Tk], [T,k] (slot_of -1: dropped)
    Tensor<int32_t> keep;                      // [T,k] 1 = kept by the capacity (capacity on only)
    Tensor<int64_t> offsets;                   // [E+1] each expert's slots
  };
  struct Scratch {  // backward buffers, shared by all layers
    Tensor<T> dx, da, dq, dk, dv, d_o, du, att;      // [T,d] ..., att: attention_backward's blocks
    Tensor<T> dlogits_r, dgate, dprobs_extra;       // [T,E], [T,k], [E]
    Tensor<T> dlogits_res;                          // logit residual: d/dlogits_l, for layer l-1 [T,E]
    Tensor<T> dh, dh_prev, dup, dgi, dgh;           // [T,p] x3, [T,3p] x2 (lstm: dgi = d(gi + gh) [T,4p])
    Tensor<T> dc, dc_prev;                          // lstm: d/dc_l from above, d/dc_{l-1} [T,p]
    Tensor<T> dcos, dzn, dz, den;                   // cosine head: [T,E], [T,r] x2, [E,r]
    Tensor<T> dxs, dys;                             // [Tk,d] x2
    Tensor<T> dxf, dlogits;                         // [T,d], [head chunk,V]
  };

  void carve(Arena<T>& a);  // lays out activations and scratch (twice: count, then real)
  void carve_indices();     // lays out the integer and statistics views
  // Views of `store`'s tensors; with missing_ok a parameter it lacks gets a
  // null view (a gradient target of some parameters only), else it throws.
  void bind(ParamStore<T>& store, std::vector<LayerWeights>& lw, GlobalWeights& gw, bool missing_ok = false);
  void backward_terms(double loss_scale, LossTerms terms);  // into layer_grads_, global_grads_

  // Per-layer pieces (one file each).
  void attention_forward(int l);
  void attention_backward(int l);            // scratch.dx: d/dx_mid in, d/dx_in out
  void router_forward(int l);                // u -> logits (and h for gru/rnn/mlp)
  void router_backward(int l);               // dlogits_r, dh -> du (+=), dh_prev
  Tensor<T> h_prev_of(int l) const;          // the cell's incoming state [T,p] (router.cpp)
  void cosine_head_forward(int l, Tensor<T> x);                 // x [T, d or p] -> logits (router.cpp)
  void cosine_head_backward(int l, Tensor<T> x, Tensor<T> dx);  // dlogits_r -> dx (+=), head grads
  Tensor<T> c_prev_of(int l) const;          // lstm's incoming c [T,p] (router.cpp)
  void moe_forward(int l);                   // u -> moe_out; routing, experts, combine
  void capacity_drop(int l);                 // L.keep and the layer's drop counts (moe_layer.cpp)
  void moe_backward(int l, double loss_scale, LossTerms terms);  // scratch.dx: d/dx_out in, d/dx_mid out
  void head_forward();                       // final norm, logits, CE by chunks; ce_sum_ = sum of the CE
  void head_backward(double loss_scale);     // scratch.dx = d/dx_L

  ModelConfig cfg_;
  int max_batch_, B_ = 0, num_tokens_ = 0;  // sequences, tokens (B_ * S) of the last forward
  int64_t num_tokens_global_ = 0;  // tokens of this micro-step over all data-parallel ranks
  std::shared_ptr<ExpertDispatcher<T>> dispatcher_;
  StatsReducer reduce_stats_;
  SlotGatherer gather_slots_;
  ParamStore<T> params_, grads_;
  // Per layer: views of params_, and of the store backward writes into
  // (grads_, or for one call another store: backward(scale, terms, into)).
  std::vector<LayerWeights> layer_weights_, layer_grads_;
  GlobalWeights global_weights_, global_grads_;  // the rest (and the shared router cell), the same two ways
  Arena<T> arena_;
  std::vector<LayerActs> layers_;
  Tensor<T> x_final_, rstd_f_, xf_, logits_, losses_, h0_;  // logits_ [head chunk, V]; h0_ = 0 [T,p] (also lstm's c_{-1})
  int64_t head_chunk_ = 0;                  // rows of logits_ (head_chunk_rows)
  int64_t held_first_ = 0, held_rows_ = 0;  // which rows of the last forward logits_ holds
  Scratch scratch_;  // backward buffers
  Tensor<int32_t> tokens_, targets_, idx_frozen_;  // [T] x2; [T,k] top-k scratch of frozen routing
  // Per forward: router_stats of every layer [L, 2E+2] (summed over ranks)
  // and the sum of this rank's CE [1], the two parts of scalars_, which
  // forward() copies to the host once.
  Tensor<double> scalars_, stats_, ce_sum_;
  // Backing of the non-T views above (host memory for now).
  std::vector<int32_t> index_mem_;
  std::vector<int64_t> offset_mem_;
  std::vector<double> scalar_mem_, host_scalars_;  // host_scalars_: the host copy of scalar_mem_
  // The capacity, per layer of the last forward: this rank's kept slots (the
  // rows its experts see; n_tok * k when dropless) and all ranks' dropped
  // slots. slot_keys_ [max T*k, 2] this rank's keys (host), all_keys_ every rank's.
  std::vector<int64_t> kept_slots_, dropped_slots_;
  std::vector<double> slot_key_mem_, all_keys_;
  Tensor<double> slot_keys_;
  bool freeze_routing_ = false;
  Tensor<T> h_frozen_;              // [L, T, p]: the states held by set_freeze_router_state (null: not held)
  std::vector<T> h_frozen_mem_;     // its backing (host; allocated only when a test holds the state)
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace rmoe
