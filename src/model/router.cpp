// router.cpp — the routers (docs/MODEL.md):
//   linear: logit = G u
//   random: logit = G u, G frozen at its random init (no gradient for G)
//   mlp:    logit = G gelu(P u + b) + c      (exact erf GELU, the paper's SMoE-MLP)
//   mlp-tanh: logit = G tanh(P u + b) + c    (what "mlp" was before)
//   rnn:    h_l = tanh(W_ih u' + b_ih + W_hh h_{l-1} + b_hh), logit = G h_l + c
//   gru:    h_l = GRUCell(u', h_{l-1}),                    logit = G h_l + c
//   gru-np: h_l = GRUCell(u', 0),                          logit = G h_l + c
//   lstm:   (h_l, c_l) = LSTMCell(u', (h_{l-1}, c_{l-1})), logit = G h_l + c
// with u' = P u + b. The cell is shared by all layers; h_{-1} = 0 (and
// c_{-1} = 0). The gradient reaches h_{l-1} (and c_{l-1}) unless
// router_detach (the paper's ablation).
// gru-np passes no state between layers (the paper's "NP" baseline): every
// layer's h_prev is h0_ = 0, so no gradient crosses layers either.
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

// The state layer l's cell starts from [T, p]: layer l-1's h, or zeros for
// the first layer and for routers that carry no state.
template <class T>
Tensor<T> Model<T>::h_prev_of(int l) const {
  const int64_t n_tok = num_tokens_;
  if (l == 0 || !router_carries_state(cfg_.router_type)) return first_rows(h0_, n_tok);
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
void Model<T>::router_forward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  const int64_t n_tok = num_tokens_;
  Tensor<T> u = first_rows(L.u, n_tok), logits = first_rows(L.logits, n_tok);
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
  ops::linear_forward(logits, h, w.gate_w, w.gate_b);
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
  if (!router_has_projection(cfg_.router_type)) {
    // random: a null dW view, so the frozen gate's gradient stays 0.
    const Tensor<T> dgate_w = cfg_.router_type == RouterType::random ? Tensor<T>{} : g.gate_w;
    ops::linear_backward(du, dgate_w, Tensor<T>{}, dlogits, u, w.gate_w);
    return;
  }
  Tensor<T> h = first_rows(L.h, n_tok), dh = first_rows(scratch_.dh, n_tok), dup = first_rows(scratch_.dup, n_tok),
            dh_prev = first_rows(scratch_.dh_prev, n_tok);
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
      break;
  }
  ops::linear_backward(du, g.proj_w, g.proj_b, dup, u, w.proj_w);
  std::swap(scratch_.dh, scratch_.dh_prev);  // the next (lower) layer's incoming dh
}

template Tensor<float> Model<float>::h_prev_of(int) const;
template Tensor<double> Model<double>::h_prev_of(int) const;
template Tensor<float> Model<float>::c_prev_of(int) const;
template Tensor<double> Model<double>::c_prev_of(int) const;
template void Model<float>::router_forward(int);
template void Model<double>::router_forward(int);
template void Model<float>::router_backward(int);
template void Model<double>::router_backward(int);

}  // namespace rmoe
