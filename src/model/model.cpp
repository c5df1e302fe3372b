// model.cpp — constructs the model (parameters, arena) and walks the layers:
// forward in order, backward in reverse. Layer math: attention_layer.cpp,
// router.cpp, moe_layer.cpp, lm_head.cpp.
#include "rmoe/model/model.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "model_util.h"
#include "rmoe/core/error.h"
#include "rmoe/core/profile.h"
#include "rmoe/kernels/flash_attention.h"  // the attention backward scratch
#include "rmoe/kernels/ops.h"

namespace rmoe {

template <class T>
Model<T>::Model(const ModelConfig& cfg, int max_batch, std::shared_ptr<ExpertDispatcher<T>> dispatcher,
                StatsReducer reduce_stats, SlotGatherer gather_slots)
    : cfg_(cfg),
      max_batch_(max_batch),
      dispatcher_(dispatcher ? std::move(dispatcher)
                             : std::make_shared<ExpertDispatcher<T>>(cfg.num_layers, cfg.num_experts, 0,
                                                                     cfg.num_experts)),
      reduce_stats_(std::move(reduce_stats)),
      gather_slots_(std::move(gather_slots)),
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
void Model<T>::bind(ParamStore<T>& st, std::vector<LayerWeights>& lw, GlobalWeights& gw, bool missing_ok) {
  // Each view of the list = the parameter of that name (docs/MODEL.md).
  auto get = [&st, missing_ok](std::initializer_list<std::pair<Tensor<T>*, std::string>> views) {
    for (const auto& [view, name] : views) *view = missing_ok && !st.find(name) ? Tensor<T>{} : st.get(name);
  };
  get({{&gw.wte, "embed/wte"}, {&gw.final_norm, "final_norm"}});
  if (cfg_.tie_embeddings)
    gw.head = gw.wte;
  else
    get({{&gw.head, "head"}});
  if (router_has_cell(cfg_.router_type))
    get({{&gw.w_ih, "router/cell/w_ih"}, {&gw.w_hh, "router/cell/w_hh"}, {&gw.b_ih, "router/cell/b_ih"},
         {&gw.b_hh, "router/cell/b_hh"}});
  lw.resize(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    char pre[32];
    std::snprintf(pre, sizeof pre, "layers/%02d/", l);
    const std::string P(pre);
    auto& w = lw[l];
    get({{&w.attn_norm, P + "attn_norm"}, {&w.wq, P + "attn/wq"}, {&w.wk, P + "attn/wk"}, {&w.wv, P + "attn/wv"},
         {&w.wo, P + "attn/wo"}, {&w.moe_norm, P + "moe_norm"},
         {&w.w1, P + "experts/w1"}, {&w.w3, P + "experts/w3"}, {&w.w2, P + "experts/w2"}});
    if (!router_has_cosine_head(cfg_.router_type)) get({{&w.gate_w, P + "router/gate_w"}});
    if (router_has_projection(cfg_.router_type) && !router_has_cosine_head(cfg_.router_type))
      get({{&w.gate_b, P + "router/gate_b"}});
    if (router_has_projection(cfg_.router_type)) {
      // --router-shared-proj: every layer's view is the one shared tensor, so
      // each layer's backward adds its part into the same gradient.
      const std::string proj = cfg_.router_shared_proj ? "router/" : P + "router/";
      get({{&w.proj_w, proj + "proj_w"}, {&w.proj_b, proj + "proj_b"}});
    }
    if (router_has_cosine_head(cfg_.router_type))
      get({{&w.expert_emb, P + "router/expert_emb"}, {&w.log_scale, P + "router/log_scale"}});
    if (router_has_xmoe_proj(cfg_.router_type)) get({{&w.xmoe_proj, P + "router/xmoe_proj"}});
  }
}

template <class T>
void Model<T>::carve(Arena<T>& a) {
  const int64_t max_seqs = max_batch_, S = cfg_.seq_length, max_tok = max_seqs * S, d = cfg_.hidden_size,
                H = cfg_.num_heads, E = cfg_.num_experts, K = cfg_.topk, p = cfg_.router_dim, V = cfg_.vocab_size,
                max_slots = max_tok * K;
  const int64_t g = router_cell_gates(cfg_.router_type) * p;  // cell gate rows
  const bool has_h = router_has_projection(cfg_.router_type);
  const bool has_cell = router_has_cell(cfg_.router_type);
  const bool has_cos = router_has_cosine_head(cfg_.router_type), has_xproj = router_has_xmoe_proj(cfg_.router_type);
  const int64_t r = cfg_.cosine_dim();  // the cosine head's width
  const bool has_c = router_has_cell_memory(cfg_.router_type);
  // Every view gets `dims`; the shapes of model.h, grouped.
  auto take = [&a](std::initializer_list<Tensor<T>*> views, std::initializer_list<int64_t> dims) {
    for (Tensor<T>* v : views) *v = a.take(dims);
  };
  for (auto& L : layers_) {
    take({&L.x_in, &L.a, &L.q, &L.k, &L.v, &L.o, &L.x_mid, &L.u, &L.moe_out}, {max_tok, d});
    take({&L.rstd1, &L.rstd2, &L.lse}, {max_tok});
    take({&L.lse_att}, {max_seqs, H, S});
    if (has_h) take({&L.up, &L.h}, {max_tok, p});
    if (has_cell) take({&L.gi, &L.gh, &L.gates}, {max_tok, g});
    if (has_c) take({&L.c}, {max_tok, p});
    take({&L.logits, &L.probs}, {max_tok, E});
    if (has_xproj) take({&L.xz}, {max_tok, r});
    if (has_cos) {
      take({&L.zn}, {max_tok, r});
      take({&L.znorm}, {max_tok});
      take({&L.en}, {E, r});
      take({&L.enorm}, {E});
    }
    take({&L.gate}, {max_tok, K});
    take({&L.xs, &L.ys}, {max_slots, d});
  }
  take({&x_final_, &xf_}, {max_tok, d});
  take({&rstd_f_, &losses_}, {max_tok});
  head_chunk_ = head_chunk_rows_for(cfg_, max_tok);  // [chunk, V], never [T, V] for a large vocabulary
  take({&logits_}, {head_chunk_, V});
  take({&h0_}, {max_tok, has_h ? p : 1});
  Scratch& s = scratch_;
  take({&s.dx, &s.da, &s.dq, &s.dk, &s.dv, &s.d_o, &s.du, &s.dxf}, {max_tok, d});
  take({&s.att}, {flash::cpu_scratch_elements(S, flash::kCpuScratchWorkers)});
  take({&s.dlogits_r}, {max_tok, E});
  if (cfg_.router_logit_residual != 0) take({&s.dlogits_res}, {max_tok, E});
  take({&s.dgate}, {max_tok, K});
  take({&s.dprobs_extra}, {E});
  if (has_h) take({&s.dh, &s.dh_prev, &s.dup}, {max_tok, p});
  if (has_cell) take({&s.dgi, &s.dgh}, {max_tok, g});
  if (has_cos) {
    take({&s.dcos}, {max_tok, E});
    take({&s.dzn}, {max_tok, r});
    if (has_xproj) take({&s.dz}, {max_tok, r});
    take({&s.den}, {E, r});
  }
  if (has_c) take({&s.dc, &s.dc_prev}, {max_tok, p});
  take({&s.dxs, &s.dys}, {max_slots, d});
  take({&s.dlogits}, {head_chunk_, V});
}

template <class T>
void Model<T>::carve_indices() {
  const int64_t max_tok = int64_t(max_batch_) * cfg_.seq_length, K = cfg_.topk, E = cfg_.num_experts,
                NL = cfg_.num_layers;
  index_mem_.assign(size_t((4 * NL + 1) * max_tok * K + 2 * max_tok), 0);
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
    L.keep = take({max_tok, K});
    L.offsets = Tensor<int64_t>(offset_mem_.data() + l * (E + 1), {E + 1});
  }
  idx_frozen_ = take({max_tok, K});
  tokens_ = take({max_tok});
  targets_ = take({max_tok});
  scalars_ = Tensor<double>(scalar_mem_.data(), {int64_t(scalar_mem_.size())});
  stats_ = Tensor<double>(scalars_.data, {NL, 2 * E + 2});
  ce_sum_ = Tensor<double>(scalars_.data + NL * (2 * E + 2), {1});
  kept_slots_.assign(size_t(NL), 0);
  dropped_slots_.assign(size_t(NL), 0);
  if (cfg_.capacity_factor > 0) {
    slot_key_mem_.assign(size_t(2 * max_tok * K), 0.0);
    slot_keys_ = Tensor<double>(slot_key_mem_.data(), {max_tok * K, 2});
  }
}

template <class T>
Tensor<int32_t> Model<T>::topk_idx(int l) const {
  return first_rows(layers_[l].idx, num_tokens_);
}

template <class T>
Tensor<T> Model<T>::router_probs(int l) const {
  return first_rows(layers_[l].probs, num_tokens_);
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
  {
    profile::RegionScope region(profile::Region::embedding);
    ops::embedding_forward(first_rows(layers_[0].x_in, n_tok), first_rows(tokens_, n_tok), global_weights_.wte);
  }
  for (int l = 0; l < cfg_.num_layers; ++l) {
    {
      profile::RegionScope region(profile::Region::attention);
      attention_forward(l);
    }
    moe_forward(l);  // also this layer's router statistics, stats_[l]
    auto& L = layers_[l];
    // x_out = x_mid + moe_out, written into the next layer's input (or x_final).
    Tensor<T> x_out = l + 1 < cfg_.num_layers ? layers_[l + 1].x_in : x_final_;
    ops::add(first_rows(x_out, n_tok), first_rows(L.x_mid, n_tok), first_rows(L.moe_out, n_tok));
  }
  {
    profile::RegionScope region(profile::Region::head);
    head_forward();
  }
  // Aux-loss statistics of every layer over every data-parallel rank (docs/MODEL.md
  // "Losses"): slot counts, probability sums, sum of lse^2, token count; one
  // collective for all layers.
  if (reduce_stats_) {
    profile::RegionScope region(profile::Region::communication);
    reduce_stats_(stats_);
  }
  // The host reads of a forward, here and nowhere else: the statistics and the
  // CE sum, in one copy, for the loss terms, the expert counts and the global
  // token count that scales the backward.
  ops::copy(Tensor<double>(host_scalars_.data(), {scalars_.numel()}), scalars_);
  const int E = cfg_.num_experts;
  const double* all = host_scalars_.data();
  num_tokens_global_ = int64_t(all[2 * E + 1]);
  ForwardResult r;
  r.expert_counts.assign(size_t(cfg_.num_layers) * E, 0);
  r.dropped_slots = dropped_slots_;
  r.slots_global = num_tokens_global_ * cfg_.topk;
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
void Model<T>::backward(double loss_scale, LossTerms terms, ParamStore<T>& into) {
  RMOE_CHECK(num_tokens_ > 0, "backward called before forward");
  if (&into == &grads_) {
    backward_terms(loss_scale, terms);
    return;
  }
  // Another store: each of its tensors must be the model's parameter of that
  // name (else its gradient would silently stay 0).
  for (const ParamSpec& s : into.specs()) {
    const ParamSpec* mine = params_.find(s.name);
    RMOE_CHECK(mine && mine->shape == s.shape && mine->expert == s.expert,
               "backward into a gradient store whose '" << s.name << "' is not a parameter of this model's shape");
  }
  // For this call the gradient views are `into`'s (null where it has no
  // tensor: those weight gradients are skipped); grads_'s are put back after.
  std::vector<LayerWeights> lw;
  GlobalWeights gw;
  bind(into, lw, gw, /*missing_ok=*/true);
  struct Swap {
    Model& m;
    std::vector<LayerWeights>& lw;
    GlobalWeights& gw;
    void swap() {
      std::swap(m.layer_grads_, lw);
      std::swap(m.global_grads_, gw);
    }
    ~Swap() { swap(); }
  } swapped{*this, lw, gw};
  swapped.swap();
  backward_terms(loss_scale, terms);
}

template <class T>
void Model<T>::backward_terms(double loss_scale, LossTerms terms) {
  {
    profile::RegionScope region(profile::Region::head);
    if (terms.ce)
      head_backward(loss_scale);  // scratch_.dx = d/dx_final
    else
      zero(first_rows(scratch_.dx, num_tokens_));  // no CE: nothing comes from the head
  }
  if (router_has_projection(cfg_.router_type))
    zero(first_rows(scratch_.dh, num_tokens_));  // no gradient into h_L from above
  if (router_has_cell_memory(cfg_.router_type))
    zero(first_rows(scratch_.dc, num_tokens_));  // nor into c_L
  for (int l = cfg_.num_layers - 1; l >= 0; --l) {
    moe_backward(l, loss_scale, terms);  // dx: d/dx_out -> d/dx_mid
    profile::RegionScope region(profile::Region::attention);
    attention_backward(l);  // dx: d/dx_mid -> d/dx_in
  }
  profile::RegionScope region(profile::Region::embedding);
  ops::embedding_backward(global_grads_.wte, first_rows(tokens_, num_tokens_), first_rows(scratch_.dx, num_tokens_));
}

template class Model<float>;
template class Model<double>;

}  // namespace rmoe
