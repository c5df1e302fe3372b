// attention_layer.cpp — x_mid = x_in + Wo · attn(RoPE(Wq a), RoPE(Wk a), Wv a),
// a = RMSNorm(x_in). Causal multi-head attention, no biases.
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::attention_forward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  const int64_t Tn = T_, S = cfg_.seq_length, H = cfg_.num_heads, D = cfg_.head_dim();
  ops::rmsnorm_forward(rows(L.a, Tn), rows(L.rstd1, Tn), rows(L.x_in, Tn), w.attn_norm, cfg_.rms_eps);
  ops::linear_forward(rows(L.q, Tn), rows(L.a, Tn), w.wq, {});
  ops::linear_forward(rows(L.k, Tn), rows(L.a, Tn), w.wk, {});
  ops::linear_forward(rows(L.v, Tn), rows(L.a, Tn), w.wv, {});
  ops::rope_forward(reshape(L.q, {B_, S, H, D}), cfg_.rope_theta);
  ops::rope_forward(reshape(L.k, {B_, S, H, D}), cfg_.rope_theta);
  ops::attention_forward(reshape(L.o, {B_, S, H, D}), rows(L.P, B_), reshape(L.q, {B_, S, H, D}),
                         reshape(L.k, {B_, S, H, D}), reshape(L.v, {B_, S, H, D}));
  // x_mid = x_in + o Wo^T
  ops::linear_forward(rows(L.x_mid, Tn), rows(L.o, Tn), w.wo, {});
  ops::add(rows(L.x_mid, Tn), rows(L.x_mid, Tn), rows(L.x_in, Tn));
}

template <class T>
void Model<T>::attention_backward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  auto& g = g_[l];
  const int64_t Tn = T_, S = cfg_.seq_length, H = cfg_.num_heads, D = cfg_.head_dim();
  Tensor<T> dx = rows(s_.dx, Tn);  // d/dx_mid; the residual path passes it through unchanged
  Tensor<T> d_o = rows(s_.d_o, Tn), dq = rows(s_.dq, Tn), dk = rows(s_.dk, Tn), dv = rows(s_.dv, Tn),
            da = rows(s_.da, Tn);
  zero(d_o);
  ops::linear_backward(d_o, g.wo, Tensor<T>{}, dx, rows(L.o, Tn), w.wo);
  zero(dq);
  zero(dk);
  zero(dv);
  ops::attention_backward(reshape(dq, {B_, S, H, D}), reshape(dk, {B_, S, H, D}), reshape(dv, {B_, S, H, D}),
                          s_.att, reshape(d_o, {B_, S, H, D}), rows(L.P, B_), reshape(L.q, {B_, S, H, D}),
                          reshape(L.k, {B_, S, H, D}), reshape(L.v, {B_, S, H, D}));
  ops::rope_backward(reshape(dq, {B_, S, H, D}), cfg_.rope_theta);
  ops::rope_backward(reshape(dk, {B_, S, H, D}), cfg_.rope_theta);
  zero(da);
  ops::linear_backward(da, g.wq, Tensor<T>{}, dq, rows(L.a, Tn), w.wq);
  ops::linear_backward(da, g.wk, Tensor<T>{}, dk, rows(L.a, Tn), w.wk);
  ops::linear_backward(da, g.wv, Tensor<T>{}, dv, rows(L.a, Tn), w.wv);
  ops::rmsnorm_backward(dx, g.attn_norm, da, rows(L.x_in, Tn), w.attn_norm, rows(L.rstd1, Tn));
}

template void Model<float>::attention_forward(int);
template void Model<double>::attention_forward(int);
template void Model<float>::attention_backward(int);
template void Model<double>::attention_backward(int);

}  // namespace rmoe
