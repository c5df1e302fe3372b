// router.cpp — the four routers (docs/MODEL.md):
//   linear: logit = G u
//   mlp:    logit = G tanh(P u + b) + c
//   rnn:    h_l = tanh(W_ih u' + b_ih + W_hh h_{l-1} + b_hh), logit = G h_l + c
//   gru:    h_l = GRUCell(u', h_{l-1}),                    logit = G h_l + c
// with u' = P u + b. The cell is shared by all layers; h_{-1} = 0. The
// gradient reaches h_{l-1} unless router_detach (the paper's ablation).
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::router_forward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  const int64_t Tn = T_;
  Tensor<T> u = rows(L.u, Tn), logits = rows(L.logits, Tn);
  if (cfg_.router_type == RouterType::linear) {
    ops::linear_forward(logits, u, w.gate_w, {});
    return;
  }
  Tensor<T> up = rows(L.up, Tn), h = rows(L.h, Tn);
  ops::linear_forward(up, u, w.proj_w, w.proj_b);
  Tensor<T> h_prev = l == 0 ? rows(h0_, Tn) : rows(layers_[l - 1].h, Tn);
  switch (cfg_.router_type) {
    case RouterType::mlp:
      ops::tanh_forward(h, up);
      break;
    case RouterType::rnn: {
      Tensor<T> gi = rows(L.gi, Tn), gh = rows(L.gh, Tn);
      ops::linear_forward(gi, up, gw_.w_ih, gw_.b_ih);
      ops::linear_forward(gh, h_prev, gw_.w_hh, gw_.b_hh);
      ops::add(gi, gi, gh);  // pre-activation
      ops::tanh_forward(h, gi);
      break;
    }
    case RouterType::gru: {
      Tensor<T> gi = rows(L.gi, Tn), gh = rows(L.gh, Tn);
      ops::linear_forward(gi, up, gw_.w_ih, gw_.b_ih);
      ops::linear_forward(gh, h_prev, gw_.w_hh, gw_.b_hh);
      ops::gru_forward(h, rows(L.gates, Tn), gi, gh, h_prev);
      break;
    }
    case RouterType::linear:
      break;
  }
  ops::linear_forward(logits, h, w.gate_w, w.gate_b);
}

// In: s_.dlogits_r (d/dlogits), s_.dh (d/dh_l from layer l+1's cell).
// Out: s_.du += d/du; s_.dh_prev = d/dh_{l-1} (cell routers, zero if detached).
template <class T>
void Model<T>::router_backward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  auto& g = g_[l];
  const int64_t Tn = T_;
  Tensor<T> u = rows(L.u, Tn), du = rows(s_.du, Tn), dlogits = rows(s_.dlogits_r, Tn);
  if (cfg_.router_type == RouterType::linear) {
    ops::linear_backward(du, g.gate_w, Tensor<T>{}, dlogits, u, w.gate_w);
    return;
  }
  Tensor<T> h = rows(L.h, Tn), dh = rows(s_.dh, Tn), dup = rows(s_.dup, Tn), dh_prev = rows(s_.dh_prev, Tn);
  ops::linear_backward(dh, g.gate_w, g.gate_b, dlogits, h, w.gate_w);  // dh += G^T dlogits
  zero(dup);
  zero(dh_prev);
  Tensor<T> h_prev = l == 0 ? rows(h0_, Tn) : rows(layers_[l - 1].h, Tn);
  // The gradient stops at h_{-1} = 0 and, with router_detach, at every h_{l-1}.
  Tensor<T> dh_prev_or_none = (l == 0 || cfg_.router_detach) ? Tensor<T>{} : dh_prev;
  switch (cfg_.router_type) {
    case RouterType::mlp:
      ops::tanh_backward(dup, dh, h);
      break;
    case RouterType::rnn: {
      Tensor<T> dpre = rows(s_.dgi, Tn);
      zero(dpre);
      ops::tanh_backward(dpre, dh, h);
      ops::linear_backward(dup, gg_.w_ih, gg_.b_ih, dpre, rows(L.up, Tn), gw_.w_ih);
      ops::linear_backward(dh_prev_or_none, gg_.w_hh, gg_.b_hh, dpre, h_prev, gw_.w_hh);
      break;
    }
    case RouterType::gru: {
      Tensor<T> dgi = rows(s_.dgi, Tn), dgh = rows(s_.dgh, Tn);
      zero(dgi);
      zero(dgh);
      ops::gru_backward(dgi, dgh, dh_prev_or_none, dh, rows(L.gates, Tn), rows(L.gh, Tn), h_prev);
      ops::linear_backward(dup, gg_.w_ih, gg_.b_ih, dgi, rows(L.up, Tn), gw_.w_ih);
      ops::linear_backward(dh_prev_or_none, gg_.w_hh, gg_.b_hh, dgh, h_prev, gw_.w_hh);
      break;
    }
    case RouterType::linear:
      break;
  }
  ops::linear_backward(du, g.proj_w, g.proj_b, dup, u, w.proj_w);
  std::swap(s_.dh, s_.dh_prev);  // the next (lower) layer's incoming dh
}

template void Model<float>::router_forward(int);
template void Model<double>::router_forward(int);
template void Model<float>::router_backward(int);
template void Model<double>::router_backward(int);

}  // namespace rmoe
