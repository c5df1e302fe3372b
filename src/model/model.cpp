// model.cpp — constructs the model (parameters, arena) and walks the layers:
// forward in order, backward in reverse. Layer math: attention_layer.cpp,
// router.cpp, moe_layer.cpp, lm_head.cpp.
#include "rmoe/model/model.h"

#include <cstdio>

#include "model_util.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

template <class T>
Model<T>::Model(const ModelConfig& cfg, int max_batch, std::shared_ptr<ExpertDispatcher<T>> dispatcher,
                StatsReducer reduce_stats)
    : cfg_(cfg),
      max_batch_(max_batch),
      dispatcher_(dispatcher ? std::move(dispatcher)
                             : std::make_shared<ExpertDispatcher<T>>(cfg.num_layers, cfg.num_experts, 0,
                                                                     cfg.num_experts)),
      reduce_stats_(std::move(reduce_stats)),
      params_(model_param_specs(cfg, dispatcher_->first_local_expert(), dispatcher_->num_local_experts())),
      grads_(params_.specs()) {
  cfg_.validate();
  RMOE_CHECK(max_batch >= 1, "max_batch must be >= 1, got " << max_batch);
  bind(params_, layer_weights_, global_weights_);
  bind(grads_, layer_grads_, global_grads_);
  layers_.resize(cfg.num_layers);
  Arena<T> counting;
  carve(counting);
  arena_ = Arena<T>(counting.used());
  carve(arena_);
  carve_indices();
  zero(h0_);
}

template <class T>
void Model<T>::bind(ParamStore<T>& st, std::vector<LayerWeights>& lw, GlobalWeights& gw) {
  gw.wte = st.get("embed/wte");
  gw.final_norm = st.get("final_norm");
  gw.head = cfg_.tie_embeddings ? gw.wte : st.get("head");
  if (st.find("router/cell/w_ih")) {
    gw.w_ih = st.get("router/cell/w_ih");
    gw.w_hh = st.get("router/cell/w_hh");
    gw.b_ih = st.get("router/cell/b_ih");
    gw.b_hh = st.get("router/cell/b_hh");
  }
  lw.resize(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    char pre[32];
    std::snprintf(pre, sizeof pre, "layers/%02d/", l);
    const std::string P(pre);
    auto& w = lw[l];
    w.attn_norm = st.get(P + "attn_norm");
    w.wq = st.get(P + "attn/wq");
    w.wk = st.get(P + "attn/wk");
    w.wv = st.get(P + "attn/wv");
    w.wo = st.get(P + "attn/wo");
    w.moe_norm = st.get(P + "moe_norm");
    w.gate_w = st.get(P + "router/gate_w");
    if (cfg_.router_type != RouterType::linear) {
      w.gate_b = st.get(P + "router/gate_b");
      w.proj_w = st.get(P + "router/proj_w");
      w.proj_b = st.get(P + "router/proj_b");
    }
    w.w1 = st.get(P + "experts/w1");
    w.w3 = st.get(P + "experts/w3");
    w.w2 = st.get(P + "experts/w2");
  }
}

template <class T>
void Model<T>::carve(Arena<T>& a) {
  const int64_t max_seqs = max_batch_, S = cfg_.seq_length, max_tok = max_seqs * S, d = cfg_.hidden_size,
                H = cfg_.num_heads;
  const int64_t E = cfg_.num_experts, K = cfg_.topk, f = cfg_.ffn_hidden_size, p = cfg_.router_dim,
                V = cfg_.vocab_size, max_slots = max_tok * K;
  (void)f;
  const int64_t g = cfg_.router_type == RouterType::gru ? 3 * p : p;  // cell gate rows
  const bool has_h = cfg_.router_type != RouterType::linear;
  const bool has_cell = cfg_.router_type == RouterType::gru || cfg_.router_type == RouterType::rnn;
  for (auto& L : layers_) {
    L.x_in = a.take({max_tok, d});
    L.rstd1 = a.take({max_tok});
    L.a = a.take({max_tok, d});
    L.q = a.take({max_tok, d});
    L.k = a.take({max_tok, d});
    L.v = a.take({max_tok, d});
    L.P = a.take({max_seqs, H, S, S});
    L.o = a.take({max_tok, d});
    L.x_mid = a.take({max_tok, d});
    L.rstd2 = a.take({max_tok});
    L.u = a.take({max_tok, d});
    if (has_h) {
      L.up = a.take({max_tok, p});
      L.h = a.take({max_tok, p});
    }
    if (has_cell) {
      L.gi = a.take({max_tok, g});
      L.gh = a.take({max_tok, g});
      L.gates = a.take({max_tok, g});
    }
    L.logits = a.take({max_tok, E});
    L.probs = a.take({max_tok, E});
    L.gate = a.take({max_tok, K});
    L.lse = a.take({max_tok});
    L.xs = a.take({max_slots, d});
    L.ys = a.take({max_slots, d});
    L.moe_out = a.take({max_tok, d});
  }
  x_final_ = a.take({max_tok, d});
  rstd_f_ = a.take({max_tok});
  xf_ = a.take({max_tok, d});
  logits_ = a.take({max_tok, V});
  losses_ = a.take({max_tok});
  h0_ = a.take({max_tok, has_h ? p : 1});
  scratch_.dx = a.take({max_tok, d});
  scratch_.da = a.take({max_tok, d});
  scratch_.dq = a.take({max_tok, d});
  scratch_.dk = a.take({max_tok, d});
  scratch_.dv = a.take({max_tok, d});
  scratch_.d_o = a.take({max_tok, d});
  scratch_.du = a.take({max_tok, d});
  scratch_.att = a.take({S, S});
  scratch_.dlogits_r = a.take({max_tok, E});
  scratch_.dgate = a.take({max_tok, K});
  scratch_.dprobs_extra = a.take({E});
  if (has_h) {
    scratch_.dh = a.take({max_tok, p});
    scratch_.dh_prev = a.take({max_tok, p});
    scratch_.dup = a.take({max_tok, p});
  }
  if (has_cell) {
    scratch_.dgi = a.take({max_tok, g});
    scratch_.dgh = a.take({max_tok, g});
  }
  scratch_.dxs = a.take({max_slots, d});
  scratch_.dys = a.take({max_slots, d});
  scratch_.dxf = a.take({max_tok, d});
  scratch_.dlogits = a.take({max_tok, V});
}

template <class T>
void Model<T>::carve_indices() {
  const int64_t max_tok = int64_t(max_batch_) * cfg_.seq_length, K = cfg_.topk, E = cfg_.num_experts,
                NL = cfg_.num_layers;
  index_mem_.assign(size_t((3 * NL + 1) * max_tok * K + 2 * max_tok), 0);
  offset_mem_.assign(size_t(NL * (E + 1)), 0);
  scalar_mem_.assign(size_t(NL * (2 * E + 2) + 1), 0.0);
  host_scalars_ = scalar_mem_;
  int32_t* next = index_mem_.data();
  auto take = [&](std::initializer_list<int64_t> dims) {
    Tensor<int32_t> t(next, dims);
    next += t.numel();
    return t;
  };
  for (int64_t l = 0; l < NL; ++l) {
    auto& L = layers_[l];
    L.idx = take({max_tok, K});
    L.slot_token = take({max_tok * K});
    L.slot_of = take({max_tok, K});
    L.offsets = Tensor<int64_t>(offset_mem_.data() + l * (E + 1), {E + 1});
  }
  idx_frozen_ = take({max_tok, K});
  tokens_ = take({max_tok});
  targets_ = take({max_tok});
  scalars_ = Tensor<double>(scalar_mem_.data(), {int64_t(scalar_mem_.size())});
  stats_ = Tensor<double>(scalars_.data, {NL, 2 * E + 2});
  ce_sum_ = Tensor<double>(scalars_.data + NL * (2 * E + 2), {1});
}

template <class T>
Tensor<int32_t> Model<T>::topk_idx(int l) const {
  return first_rows(layers_[l].idx, num_tokens_);
}

template <class T>
ForwardResult Model<T>::forward(const int32_t* tokens, const int32_t* targets, int B) {
  RMOE_CHECK(B >= 1 && B <= max_batch_, "micro-batch of " << B << " sequences; this model holds at most "
                                                           << max_batch_);
  B_ = B;
  num_tokens_ = B * cfg_.seq_length;
  const int64_t n_tok = num_tokens_;
  ops::copy(first_rows(tokens_, n_tok), Tensor<const int32_t>(tokens, {n_tok}));
  ops::copy(first_rows(targets_, n_tok), Tensor<const int32_t>(targets, {n_tok}));
  ops::embedding_forward(first_rows(layers_[0].x_in, n_tok), first_rows(tokens_, n_tok), global_weights_.wte);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    attention_forward(l);
    moe_forward(l);  // also this layer's router statistics, stats_[l]
    auto& L = layers_[l];
    // x_out = x_mid + moe_out, written into the next layer's input (or x_final).
    Tensor<T> x_out = l + 1 < cfg_.num_layers ? layers_[l + 1].x_in : x_final_;
    ops::add(first_rows(x_out, n_tok), first_rows(L.x_mid, n_tok), first_rows(L.moe_out, n_tok));
  }
  head_forward();
  // Aux-loss statistics of every layer over every data-parallel rank (DESIGN
  // §1): slot counts, probability sums, sum of lse^2, token count; one
  // collective for all layers.
  if (reduce_stats_) reduce_stats_(stats_);
  // The host reads of a forward, here and nowhere else: the statistics and the
  // CE sum, in one copy, for the loss terms, the expert counts and the global
  // token count that scales the backward.
  ops::copy(Tensor<double>(host_scalars_.data(), {scalars_.numel()}), scalars_);
  const int E = cfg_.num_experts;
  const double* all = host_scalars_.data();
  num_tokens_global_ = int64_t(all[2 * E + 1]);
  ForwardResult r;
  r.expert_counts.assign(size_t(cfg_.num_layers) * E, 0);
  double lb_sum = 0, z_sum = 0;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const double* st = all + size_t(l) * (2 * E + 2);
    double lb = 0;
    for (int e = 0; e < E; ++e) {
      r.expert_counts[size_t(l) * E + e] = int64_t(st[e]);
      const double f_e = st[e] / (double(num_tokens_global_) * cfg_.topk);  // fraction of slots on e
      lb += f_e * st[E + e] / double(num_tokens_global_);
    }
    lb_sum += E * lb;
    z_sum += st[2 * E] / double(num_tokens_global_);
  }
  r.ce = all[size_t(cfg_.num_layers) * (2 * E + 2)] / n_tok;
  r.lb = lb_sum / cfg_.num_layers;
  r.z = z_sum / cfg_.num_layers;
  r.total = r.ce + cfg_.aux_loss_coeff * r.lb + cfg_.z_loss_coeff * r.z;
  return r;
}

template <class T>
void Model<T>::backward(double loss_scale) {
  RMOE_CHECK(num_tokens_ > 0, "backward called before forward");
  head_backward(loss_scale);  // scratch_.dx = d/dx_final
  if (cfg_.router_type != RouterType::linear)
    zero(first_rows(scratch_.dh, num_tokens_));  // no gradient into h_L from above
  for (int l = cfg_.num_layers - 1; l >= 0; --l) {
    moe_backward(l, loss_scale);   // dx: d/dx_out -> d/dx_mid
    attention_backward(l);         // dx: d/dx_mid -> d/dx_in
  }
  ops::embedding_backward(global_grads_.wte, first_rows(tokens_, num_tokens_), first_rows(scratch_.dx, num_tokens_));
}

template class Model<float>;
template class Model<double>;

}  // namespace rmoe
