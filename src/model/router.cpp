// router.cpp — the routers (docs/MODEL.md):
//   linear: logit = G u
//   random: logit = G u, G frozen at its random init (no gradient for G)
//   mlp:    logit = G gelu(P u + b) + c      (exact erf GELU, the paper's SMoE-MLP)
//   mlp-tanh: logit = G tanh(P u + b) + c    (what "mlp" was before)
//   rnn:    h_l = tanh(W_ih u' + b_ih + W_hh h_{l-1} + b_hh), logit = G h_l + c
//   gru:    h_l = GRUCell(u', h_{l-1}),                    logit = G h_l + c
//   gru-np: h_l = GRUCell(u', 0),                          logit = G h_l + c
//   lstm:   (h_l, c_l) = LSTMCell(u', (h_{l-1}, c_{l-1})), logit = G h_l + c
// The cosine head (X-MoE), instead of G x + c, on x = u (cosine, xmoe) or
// x = h_l of the gru router (gru-xmoe):
//   logit = exp(min(s, log 100)) normalize(W_x x) . normalize(e_j)   (xmoe, gru-xmoe; W_x: xmoe_proj)
//   logit = exp(min(s, log 100)) normalize(u) . normalize(e_j)       (cosine)
// with u' = P u + b. The cell is shared by all layers; h_{-1} = 0 (and
// c_{-1} = 0). The gradient reaches h_{l-1} (and c_{l-1}) unless
// router_detach (the paper's ablation).
// gru-np passes no state between layers (the paper's "NP" baseline): every
// layer's h_prev is h0_ = 0, so no gradient crosses layers either.
#include "model_util.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

// The state layer l's cell starts from [T, p]: layer l-1's h, or zeros for
// the first layer and for routers that carry no state.
template <class T>
Tensor<T> Model<T>::h_prev_of(int l) const {
  const int64_t n_tok = num_tokens_;
  if (l == 0 || !router_carries_state(cfg_.router_type)) return first_rows(h0_, n_tok);
  if (!h_frozen_.is_null()) {  // layer l-1's held state: rows [(l-1) T, l T) of [L T, p]
    RMOE_CHECK(h_frozen_.rows() == cfg_.num_layers * n_tok,
               "the router state was held for another micro-batch size than this forward's " << n_tok << " tokens");
    return Tensor<T>(h_frozen_.data + (l - 1) * n_tok * h_frozen_.cols(), {n_tok, h_frozen_.cols()}, h_frozen_.device);
  }
  return first_rows(layers_[l - 1].h, n_tok);
}

// lstm's incoming cell state [T, p]: layer l-1's c, or zeros for the first layer.
template <class T>
Tensor<T> Model<T>::c_prev_of(int l) const {
  const int64_t n_tok = num_tokens_;
  if (l == 0) return first_rows(h0_, n_tok);
  return first_rows(layers_[l - 1].c, n_tok);
}

template <class T>
void Model<T>::set_freeze_router_state(bool on) {
  h_frozen_ = Tensor<T>{};
  h_frozen_mem_.clear();
  if (!on || !router_carries_state(cfg_.router_type) || num_tokens_ == 0) return;
  const int64_t n_tok = num_tokens_, p = cfg_.router_dim;
  h_frozen_mem_.assign(size_t(cfg_.num_layers * n_tok * p), T(0));
  h_frozen_ = Tensor<T>(h_frozen_mem_.data(), {cfg_.num_layers * n_tok, p});
  for (int l = 0; l < cfg_.num_layers; ++l)
    ops::copy(Tensor<T>(h_frozen_.data + l * n_tok * p, {n_tok, p}), first_rows(layers_[l].h, n_tok));
}

template <class T>
void Model<T>::router_forward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  const int64_t n_tok = num_tokens_;
  Tensor<T> u = first_rows(L.u, n_tok), logits = first_rows(L.logits, n_tok);
  if (router_has_cosine_head(cfg_.router_type) && !router_has_projection(cfg_.router_type)) {  // cosine, xmoe
    cosine_head_forward(l, u);
    return;
  }
  if (!router_has_projection(cfg_.router_type)) {  // linear, random
    ops::linear_forward(logits, u, w.gate_w, {});
    return;
  }
  Tensor<T> up = first_rows(L.up, n_tok), h = first_rows(L.h, n_tok);
  ops::linear_forward(up, u, w.proj_w, w.proj_b);
  Tensor<T> h_prev = h_prev_of(l);
  if (cfg_.router_type == RouterType::mlp) {
    ops::gelu_forward(h, up);
  } else if (cfg_.router_type == RouterType::mlp_tanh) {
    ops::tanh_forward(h, up);
  } else {  // the shared cell (rnn, gru, lstm): gi = W_ih u' + b_ih, gh = W_hh h_{l-1} + b_hh
    Tensor<T> gi = first_rows(L.gi, n_tok), gh = first_rows(L.gh, n_tok);
    ops::linear_forward(gi, up, global_weights_.w_ih, global_weights_.b_ih);
    ops::linear_forward(gh, h_prev, global_weights_.w_hh, global_weights_.b_hh);
    if (cfg_.router_type == RouterType::rnn) {
      ops::add(gi, gi, gh);  // pre-activation
      ops::tanh_forward(h, gi);
    } else if (cfg_.router_type == RouterType::lstm) {
      ops::lstm_forward(h, first_rows(L.c, n_tok), first_rows(L.gates, n_tok), gi, gh, c_prev_of(l));
    } else {
      ops::gru_forward(h, first_rows(L.gates, n_tok), gi, gh, h_prev);
    }
  }
  if (router_has_cosine_head(cfg_.router_type)) {  // gru_xmoe
    cosine_head_forward(l, h);
    return;
  }
  ops::linear_forward(logits, h, w.gate_w, w.gate_b);
}

// x [T, in] -> logits [T, E] = exp(min(s, kMaxLogScale)) zn en^T, zn = rows of
// x xmoe_proj^T (or of x) normalised, en = expert_emb's rows normalised. Saves
// xz, zn, znorm, en, enorm; the logits themselves serve the scale's backward.
template <class T>
void Model<T>::cosine_head_forward(int l, Tensor<T> x) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  const int64_t n_tok = num_tokens_;
  Tensor<T> z = x, zn = first_rows(L.zn, n_tok), logits = first_rows(L.logits, n_tok);
  if (router_has_xmoe_proj(cfg_.router_type)) {
    z = first_rows(L.xz, n_tok);
    ops::linear_forward(z, x, w.xmoe_proj, {});  // [T, r]
  }
  ops::l2norm_forward(zn, first_rows(L.znorm, n_tok), z, kCosineNormEps);
  ops::l2norm_forward(L.en, L.enorm, w.expert_emb, kCosineNormEps);  // [E, r]
  ops::linear_forward(logits, zn, L.en, {});                         // cosines [T, E]
  ops::exp_scale_forward(logits, logits, w.log_scale, kMaxLogScale);
}

// In: scratch_.dlogits_r. Out: dx += d/dx (x as given to the forward), and the
// head's gradients (+=): log_scale, expert_emb, xmoe_proj.
template <class T>
void Model<T>::cosine_head_backward(int l, Tensor<T> x, Tensor<T> dx) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  auto& g = layer_grads_[l];
  const int64_t n_tok = num_tokens_;
  Tensor<T> dlogits = first_rows(scratch_.dlogits_r, n_tok), logits = first_rows(L.logits, n_tok),
            dcos = first_rows(scratch_.dcos, n_tok), zn = first_rows(L.zn, n_tok), dzn = first_rows(scratch_.dzn, n_tok);
  zero(dcos);
  zero(dzn);
  zero(scratch_.den);
  ops::exp_scale_backward(dcos, g.log_scale, dlogits, logits, w.log_scale, kMaxLogScale);
  ops::linear_backward(dzn, scratch_.den, Tensor<T>{}, dcos, zn, L.en);  // dzn += dcos en; den += dcos^T zn
  ops::l2norm_backward(g.expert_emb, scratch_.den, L.en, L.enorm, kCosineNormEps);
  if (!router_has_xmoe_proj(cfg_.router_type)) {  // cosine: zn = normalize(x)
    ops::l2norm_backward(dx, dzn, zn, first_rows(L.znorm, n_tok), kCosineNormEps);
    return;
  }
  Tensor<T> dz = first_rows(scratch_.dz, n_tok);
  zero(dz);
  ops::l2norm_backward(dz, dzn, zn, first_rows(L.znorm, n_tok), kCosineNormEps);
  ops::linear_backward(dx, g.xmoe_proj, Tensor<T>{}, dz, x, w.xmoe_proj);
}

// In: scratch_.dlogits_r (d/dlogits), scratch_.dh (d/dh_l from layer l+1's cell),
// lstm: scratch_.dc (d/dc_l from layer l+1's cell).
// Out: scratch_.du += d/du; scratch_.dh = d/dh_{l-1} (cell routers, zero if
// detached), lstm: scratch_.dc = d/dc_{l-1} (zero if detached) - the next
// (lower) layer's incoming gradients.
template <class T>
void Model<T>::router_backward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  auto& g = layer_grads_[l];
  const int64_t n_tok = num_tokens_;
  Tensor<T> u = first_rows(L.u, n_tok), du = first_rows(scratch_.du, n_tok),
            dlogits = first_rows(scratch_.dlogits_r, n_tok);
  if (router_has_cosine_head(cfg_.router_type) && !router_has_projection(cfg_.router_type)) {  // cosine, xmoe
    cosine_head_backward(l, u, du);
    return;
  }
  if (!router_has_projection(cfg_.router_type)) {
    // random: a null dW view, so the frozen gate's gradient stays 0.
    const Tensor<T> dgate_w = cfg_.router_type == RouterType::random ? Tensor<T>{} : g.gate_w;
    ops::linear_backward(du, dgate_w, Tensor<T>{}, dlogits, u, w.gate_w);
    return;
  }
  Tensor<T> h = first_rows(L.h, n_tok), dh = first_rows(scratch_.dh, n_tok), dup = first_rows(scratch_.dup, n_tok),
            dh_prev = first_rows(scratch_.dh_prev, n_tok);
  if (router_has_cosine_head(cfg_.router_type))  // gru_xmoe
    cosine_head_backward(l, h, dh);
  else
    ops::linear_backward(dh, g.gate_w, g.gate_b, dlogits, h, w.gate_w);  // dh += G^T dlogits
  zero(dup);
  zero(dh_prev);
  Tensor<T> h_prev = h_prev_of(l);
  // The gradient stops at h_{-1} = 0 and, with router_detach or without a
  // carried state (gru-np), at every h_{l-1}.
  Tensor<T> dh_prev_or_none =
      (l == 0 || cfg_.router_detach || !router_carries_state(cfg_.router_type)) ? Tensor<T>{} : dh_prev;
  switch (cfg_.router_type) {
    case RouterType::mlp:
      ops::gelu_backward(dup, dh, first_rows(L.up, n_tok));  // from the pre-activation
      break;
    case RouterType::mlp_tanh:
      ops::tanh_backward(dup, dh, h);
      break;
    case RouterType::rnn: {
      Tensor<T> dpre = first_rows(scratch_.dgi, n_tok);
      zero(dpre);
      ops::tanh_backward(dpre, dh, h);
      ops::linear_backward(dup, global_grads_.w_ih, global_grads_.b_ih, dpre, first_rows(L.up, n_tok),
                           global_weights_.w_ih);
      ops::linear_backward(dh_prev_or_none, global_grads_.w_hh, global_grads_.b_hh, dpre, h_prev, global_weights_.w_hh);
      break;
    }
    case RouterType::gru:
    case RouterType::gru_xmoe:
    case RouterType::gru_np: {
      Tensor<T> dgi = first_rows(scratch_.dgi, n_tok), dgh = first_rows(scratch_.dgh, n_tok);
      zero(dgi);
      zero(dgh);
      ops::gru_backward(dgi, dgh, dh_prev_or_none, dh, first_rows(L.gates, n_tok), first_rows(L.gh, n_tok), h_prev);
      ops::linear_backward(dup, global_grads_.w_ih, global_grads_.b_ih, dgi, first_rows(L.up, n_tok),
                           global_weights_.w_ih);
      ops::linear_backward(dh_prev_or_none, global_grads_.w_hh, global_grads_.b_hh, dgh, h_prev, global_weights_.w_hh);
      break;
    }
    case RouterType::lstm: {
      // gi and gh enter only as gi + gh: one gradient dpre [T,4p] for both linears.
      Tensor<T> dpre = first_rows(scratch_.dgi, n_tok), dc = first_rows(scratch_.dc, n_tok),
                dc_prev = first_rows(scratch_.dc_prev, n_tok);
      zero(dpre);
      zero(dc_prev);
      const Tensor<T> dc_prev_or_none = dh_prev_or_none.is_null() ? Tensor<T>{} : dc_prev;
      ops::lstm_backward(dpre, dc_prev_or_none, dh, dc, first_rows(L.gates, n_tok), c_prev_of(l),
                         first_rows(L.c, n_tok));
      ops::linear_backward(dup, global_grads_.w_ih, global_grads_.b_ih, dpre, first_rows(L.up, n_tok),
                           global_weights_.w_ih);
      ops::linear_backward(dh_prev_or_none, global_grads_.w_hh, global_grads_.b_hh, dpre, h_prev, global_weights_.w_hh);
      std::swap(scratch_.dc, scratch_.dc_prev);  // the next (lower) layer's incoming dc
      break;
    }
    case RouterType::linear:
    case RouterType::random:
    case RouterType::cosine:
    case RouterType::xmoe:
      break;
  }
  ops::linear_backward(du, g.proj_w, g.proj_b, dup, u, w.proj_w);
  std::swap(scratch_.dh, scratch_.dh_prev);  // the next (lower) layer's incoming dh
}

template void Model<float>::set_freeze_router_state(bool);
template void Model<double>::set_freeze_router_state(bool);
template Tensor<float> Model<float>::h_prev_of(int) const;
template Tensor<double> Model<double>::h_prev_of(int) const;
template Tensor<float> Model<float>::c_prev_of(int) const;
template Tensor<double> Model<double>::c_prev_of(int) const;
template void Model<float>::router_forward(int);
template void Model<double>::router_forward(int);
template void Model<float>::router_backward(int);
template void Model<double>::router_backward(int);
template void Model<float>::cosine_head_forward(int, Tensor<float>);
template void Model<double>::cosine_head_forward(int, Tensor<double>);
template void Model<float>::cosine_head_backward(int, Tensor<float>, Tensor<float>);
template void Model<double>::cosine_head_backward(int, Tensor<double>, Tensor<double>);

}  // namespace rmoe
