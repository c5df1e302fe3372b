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
Model<T>::Model(const ModelConfig& cfg, int max_batch, std::shared_ptr<ExpertDispatcher<T>> dispatcher)
    : cfg_(cfg),
      max_batch_(max_batch),
      dispatcher_(dispatcher ? std::move(dispatcher)
                             : std::make_shared<ExpertDispatcher<T>>(cfg.num_layers, cfg.num_experts, 0,
                                                                     cfg.num_experts)),
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
  const int64_t Tmax = int64_t(max_batch) * cfg.seq_length, K = cfg.topk;
  for (auto& L : layers_) {
    L.idx.assign(Tmax * K, 0);
    L.slot_token.assign(Tmax * K, 0);
    L.slot_of.assign(Tmax * K, 0);
    L.offsets.assign(cfg.num_experts + 1, 0);
    L.f_e.assign(cfg.num_experts, 0.0);
  }
  tokens_.assign(Tmax, 0);
  targets_.assign(Tmax, 0);
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
ForwardResult Model<T>::forward(const int32_t* tokens, const int32_t* targets, int B) {
  RMOE_CHECK(B >= 1 && B <= max_batch_, "micro-batch of " << B << " sequences; this model holds at most "
                                                           << max_batch_);
  B_ = B;
  T_ = B * cfg_.seq_length;
  std::copy_n(tokens, T_, tokens_.data());
  std::copy_n(targets, T_, targets_.data());
  ops::embedding_forward(rows(layers_[0].x_in, T_), Tensor<const int32_t>(tokens_.data(), {T_}), gw_.wte);
  ForwardResult r;
  r.expert_counts.assign(size_t(cfg_.num_layers) * cfg_.num_experts, 0);
  double lb_sum = 0, z_sum = 0;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    attention_forward(l);
    moe_forward(l);
    auto& L = layers_[l];
    // x_out = x_mid + moe_out, written into the next layer's input (or x_final).
    Tensor<T> x_out = l + 1 < cfg_.num_layers ? layers_[l + 1].x_in : x_final_;
    const int64_t n = int64_t(T_) * cfg_.hidden_size;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) x_out.data[i] = L.x_mid.data[i] + L.moe_out.data[i];
    // Aux-loss statistics of this layer over every data-parallel rank (DESIGN
    // §1): slot counts, probability sums, sum of lse^2, token count.
    const int E = cfg_.num_experts;
    std::vector<double>& st = stats_;
    st.assign(2 * E + 2, 0.0);
    for (int e = 0; e < E; ++e) st[e] = double(L.offsets[e + 1] - L.offsets[e]);
    for (int64_t t = 0; t < T_; ++t) {
      for (int e = 0; e < E; ++e) st[E + e] += L.probs.data[t * E + e];
      st[2 * E] += double(L.lse.data[t]) * L.lse.data[t];
    }
    st[2 * E + 1] = double(T_);
    dispatcher_->allreduce_stats(st.data(), int64_t(st.size()));
    T_global_ = int64_t(st[2 * E + 1]);
    double lb = 0;
    for (int e = 0; e < E; ++e) {
      r.expert_counts[size_t(l) * E + e] = int64_t(st[e]);
      L.f_e[e] = st[e] / (double(T_global_) * cfg_.topk);
      lb += L.f_e[e] * st[E + e] / double(T_global_);
    }
    lb_sum += E * lb;
    z_sum += st[2 * E] / double(T_global_);
  }
  r.ce = head_forward();
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
  ops::embedding_backward(gg_.wte, Tensor<const int32_t>(tokens_.data(), {T_}), rows(s_.dx, T_));
}

template class Model<float>;
template class Model<double>;

}  // namespace rmoe
