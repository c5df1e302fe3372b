// attention_layer.cpp — x_mid = x_in + Wo · attn(RoPE(Wq a), RoPE(Wk a), Wv a),
// a = RMSNorm(x_in). Causal multi-head attention, no biases; the attention op
// saves lse [B,H,S] (not the probabilities), its backward recomputes P per
// block from q, k and lse, and D_i from dout and the saved o.
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::attention_forward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  const int64_t n_tok = num_tokens_, S = cfg_.seq_length, H = cfg_.num_heads, D = cfg_.head_dim();
  ops::rmsnorm_forward(first_rows(L.a, n_tok), first_rows(L.rstd1, n_tok), first_rows(L.x_in, n_tok), w.attn_norm,
                       cfg_.rms_eps);
  ops::linear_forward(first_rows(L.q, n_tok), first_rows(L.a, n_tok), w.wq, {});
  ops::linear_forward(first_rows(L.k, n_tok), first_rows(L.a, n_tok), w.wk, {});
  ops::linear_forward(first_rows(L.v, n_tok), first_rows(L.a, n_tok), w.wv, {});
  ops::rope_forward(reshape(L.q, {B_, S, H, D}), cfg_.rope_theta);
  ops::rope_forward(reshape(L.k, {B_, S, H, D}), cfg_.rope_theta);
  ops::attention_forward(reshape(L.o, {B_, S, H, D}), first_rows(L.lse_att, B_), reshape(L.q, {B_, S, H, D}),
                         reshape(L.k, {B_, S, H, D}), reshape(L.v, {B_, S, H, D}));
  // x_mid = x_in + o Wo^T
  ops::linear_forward(first_rows(L.x_mid, n_tok), first_rows(L.o, n_tok), w.wo, {});
  ops::add(first_rows(L.x_mid, n_tok), first_rows(L.x_mid, n_tok), first_rows(L.x_in, n_tok));
}

template <class T>
void Model<T>::attention_backward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  auto& g = layer_grads_[l];
  const int64_t n_tok = num_tokens_, S = cfg_.seq_length, H = cfg_.num_heads, D = cfg_.head_dim();
  Tensor<T> dx = first_rows(scratch_.dx, n_tok);  // d/dx_mid; the residual path passes it through unchanged
  Tensor<T> d_o = first_rows(scratch_.d_o, n_tok), dq = first_rows(scratch_.dq, n_tok),
            dk = first_rows(scratch_.dk, n_tok), dv = first_rows(scratch_.dv, n_tok),
            da = first_rows(scratch_.da, n_tok);
  zero(d_o);
  ops::linear_backward(d_o, g.wo, Tensor<T>{}, dx, first_rows(L.o, n_tok), w.wo);
  zero(dq);
  zero(dk);
  zero(dv);
  ops::attention_backward(reshape(dq, {B_, S, H, D}), reshape(dk, {B_, S, H, D}), reshape(dv, {B_, S, H, D}),
                          scratch_.att, reshape(d_o, {B_, S, H, D}), reshape(L.o, {B_, S, H, D}),
                          first_rows(L.lse_att, B_), reshape(L.q, {B_, S, H, D}), reshape(L.k, {B_, S, H, D}),
                          reshape(L.v, {B_, S, H, D}));
  ops::rope_backward(reshape(dq, {B_, S, H, D}), cfg_.rope_theta);
  ops::rope_backward(reshape(dk, {B_, S, H, D}), cfg_.rope_theta);
  zero(da);
  ops::linear_backward(da, g.wq, Tensor<T>{}, dq, first_rows(L.a, n_tok), w.wq);
  ops::linear_backward(da, g.wk, Tensor<T>{}, dk, first_rows(L.a, n_tok), w.wk);
  ops::linear_backward(da, g.wv, Tensor<T>{}, dv, first_rows(L.a, n_tok), w.wv);
  ops::rmsnorm_backward(dx, g.attn_norm, da, first_rows(L.x_in, n_tok), w.attn_norm, first_rows(L.rstd1, n_tok));
}

template void Model<float>::attention_forward(int);
template void Model<double>::attention_forward(int);
template void Model<float>::attention_backward(int);
template void Model<double>::attention_backward(int);

}  // namespace rmoe
