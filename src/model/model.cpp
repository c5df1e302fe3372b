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
  bind(params_, w_, gw_);
  bind(grads_, g_, gg_);
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
  const int64_t Bm = max_batch_, S = cfg_.seq_length, Tm = Bm * S, d = cfg_.hidden_size, H = cfg_.num_heads;
  const int64_t E = cfg_.num_experts, K = cfg_.topk, f = cfg_.ffn_hidden_size, p = cfg_.router_dim,
                V = cfg_.vocab_size, Tk = Tm * K;
  (void)f;
  const int64_t g = cfg_.router_type == RouterType::gru ? 3 * p : p;  // cell gate rows
  const bool has_h = cfg_.router_type != RouterType::linear;
  const bool has_cell = cfg_.router_type == RouterType::gru || cfg_.router_type == RouterType::rnn;
  for (auto& L : layers_) {
    L.x_in = a.take({Tm, d});
    L.rstd1 = a.take({Tm});
    L.a = a.take({Tm, d});
    L.q = a.take({Tm, d});
    L.k = a.take({Tm, d});
    L.v = a.take({Tm, d});
    L.P = a.take({Bm, H, S, S});
    L.o = a.take({Tm, d});
    L.x_mid = a.take({Tm, d});
    L.rstd2 = a.take({Tm});
    L.u = a.take({Tm, d});
    if (has_h) {
      L.up = a.take({Tm, p});
      L.h = a.take({Tm, p});
    }
    if (has_cell) {
      L.gi = a.take({Tm, g});
      L.gh = a.take({Tm, g});
      L.gates = a.take({Tm, g});
    }
    L.logits = a.take({Tm, E});
    L.probs = a.take({Tm, E});
    L.gate = a.take({Tm, K});
    L.lse = a.take({Tm});
    L.xs = a.take({Tk, d});
    L.ys = a.take({Tk, d});
    L.moe_out = a.take({Tm, d});
  }
  x_final_ = a.take({Tm, d});
  rstd_f_ = a.take({Tm});
  xf_ = a.take({Tm, d});
  logits_ = a.take({Tm, V});
  losses_ = a.take({Tm});
  h0_ = a.take({Tm, has_h ? p : 1});
  s_.dx = a.take({Tm, d});
  s_.da = a.take({Tm, d});
  s_.dq = a.take({Tm, d});
  s_.dk = a.take({Tm, d});
  s_.dv = a.take({Tm, d});
  s_.d_o = a.take({Tm, d});
  s_.du = a.take({Tm, d});
  s_.att = a.take({S, S});
  s_.dlogits_r = a.take({Tm, E});
  s_.dgate = a.take({Tm, K});
  s_.dprobs_extra = a.take({E});
  if (has_h) {
    s_.dh = a.take({Tm, p});
    s_.dh_prev = a.take({Tm, p});
    s_.dup = a.take({Tm, p});
  }
  if (has_cell) {
    s_.dgi = a.take({Tm, g});
    s_.dgh = a.take({Tm, g});
  }
  s_.dxs = a.take({Tk, d});
  s_.dys = a.take({Tk, d});
  s_.dxf = a.take({Tm, d});
  s_.dlogits = a.take({Tm, V});
}

template <class T>
void Model<T>::carve_indices() {
  const int64_t Tm = int64_t(max_batch_) * cfg_.seq_length, K = cfg_.topk, E = cfg_.num_experts,
                NL = cfg_.num_layers;
  index_mem_.assign(size_t((3 * NL + 1) * Tm * K + 2 * Tm), 0);
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
    L.idx = take({Tm, K});
    L.slot_token = take({Tm * K});
    L.slot_of = take({Tm, K});
    L.offsets = Tensor<int64_t>(offset_mem_.data() + l * (E + 1), {E + 1});
  }
  idx_frozen_ = take({Tm, K});
  tokens_ = take({Tm});
  targets_ = take({Tm});
  scalars_ = Tensor<double>(scalar_mem_.data(), {int64_t(scalar_mem_.size())});
  stats_ = Tensor<double>(scalars_.data, {NL, 2 * E + 2});
  ce_sum_ = Tensor<double>(scalars_.data + NL * (2 * E + 2), {1});
}

template <class T>
Tensor<int32_t> Model<T>::topk_idx(int l) const {
  return rows(layers_[l].idx, T_);
}

template <class T>
ForwardResult Model<T>::forward(const int32_t* tokens, const int32_t* targets, int B) {
  RMOE_CHECK(B >= 1 && B <= max_batch_, "micro-batch of " << B << " sequences; this model holds at most "
                                                           << max_batch_);
  B_ = B;
  T_ = B * cfg_.seq_length;
  const int64_t Tn = T_;
  ops::copy(rows(tokens_, Tn), Tensor<const int32_t>(tokens, {Tn}));
  ops::copy(rows(targets_, Tn), Tensor<const int32_t>(targets, {Tn}));
  ops::embedding_forward(rows(layers_[0].x_in, Tn), rows(tokens_, Tn), gw_.wte);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    attention_forward(l);
    moe_forward(l);  // also this layer's router statistics, stats_[l]
    auto& L = layers_[l];
    // x_out = x_mid + moe_out, written into the next layer's input (or x_final).
    Tensor<T> x_out = l + 1 < cfg_.num_layers ? layers_[l + 1].x_in : x_final_;
    ops::add(rows(x_out, Tn), rows(L.x_mid, Tn), rows(L.moe_out, Tn));
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
  T_global_ = int64_t(all[2 * E + 1]);
  ForwardResult r;
  r.expert_counts.assign(size_t(cfg_.num_layers) * E, 0);
  double lb_sum = 0, z_sum = 0;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const double* st = all + size_t(l) * (2 * E + 2);
    double lb = 0;
    for (int e = 0; e < E; ++e) {
      r.expert_counts[size_t(l) * E + e] = int64_t(st[e]);
      const double f_e = st[e] / (double(T_global_) * cfg_.topk);  // fraction of slots on e
      lb += f_e * st[E + e] / double(T_global_);
    }
    lb_sum += E * lb;
    z_sum += st[2 * E] / double(T_global_);
  }
  r.ce = all[size_t(cfg_.num_layers) * (2 * E + 2)] / Tn;
  r.lb = lb_sum / cfg_.num_layers;
  r.z = z_sum / cfg_.num_layers;
  r.total = r.ce + cfg_.aux_loss_coeff * r.lb + cfg_.z_loss_coeff * r.z;
  return r;
}

template <class T>
void Model<T>::backward(double loss_scale) {
  RMOE_CHECK(T_ > 0, "backward called before forward");
  head_backward(loss_scale);  // s_.dx = d/dx_final
  if (cfg_.router_type != RouterType::linear) zero(rows(s_.dh, T_));  // no gradient into h_L from above
  for (int l = cfg_.num_layers - 1; l >= 0; --l) {
    moe_backward(l, loss_scale);   // dx: d/dx_out -> d/dx_mid
    attention_backward(l);         // dx: d/dx_mid -> d/dx_in
  }
  ops::embedding_backward(gg_.wte, rows(tokens_, T_), rows(s_.dx, T_));
}

template class Model<float>;
template class Model<double>;

}  // namespace rmoe
