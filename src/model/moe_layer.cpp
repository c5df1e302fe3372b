// moe_layer.cpp — x_out = x_mid + sum_j g_j Expert_{e_j}(u), u = RMSNorm(x_mid).
//
// route (router.cpp) -> softmax/top-k -> order token slots by expert ->
// gather -> grouped expert GEMMs -> combine in slot order. Dropless: every
// slot is computed; an expert with no slots is skipped. The load-balance and
// z-loss gradients enter through router_topk_backward.
#include <algorithm>

#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::moe_forward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  const int64_t Tn = T_, K = cfg_.topk, E = cfg_.num_experts, Tk = Tn * K;
  ops::rmsnorm_forward(rows(L.u, Tn), rows(L.rstd2, Tn), rows(L.x_mid, Tn), w.moe_norm, cfg_.rms_eps);
  router_forward(l);
  Tensor<int32_t> idx(L.idx.data(), {Tn, K});
  if (!freeze_routing_) {
    ops::router_topk_forward(rows(L.probs, Tn), idx, rows(L.gate, Tn), rows(L.lse, Tn), rows(L.logits, Tn));
  } else {
    // Keep the previous choice; recompute probabilities and gates around it.
    std::vector<int32_t> keep(L.idx.begin(), L.idx.begin() + Tk);
    ops::router_topk_forward(rows(L.probs, Tn), idx, rows(L.gate, Tn), rows(L.lse, Tn), rows(L.logits, Tn));
    std::copy(keep.begin(), keep.end(), L.idx.begin());
    for (int64_t t = 0; t < Tn; ++t) {
      T s = 0;
      for (int64_t j = 0; j < K; ++j) s += L.probs.data[t * E + L.idx[t * K + j]];
      for (int64_t j = 0; j < K; ++j) L.gate.data[t * K + j] = L.probs.data[t * E + L.idx[t * K + j]] / s;
    }
  }
  // Order slots by expert, tokens in order within an expert (deterministic).
  std::fill(L.offsets.begin(), L.offsets.end(), 0);
  for (int64_t s = 0; s < Tk; ++s) L.offsets[L.idx[s] + 1]++;
  for (int64_t e = 0; e < E; ++e) L.offsets[e + 1] += L.offsets[e];
  std::vector<int64_t>& cursor = L.cursor;
  cursor.assign(L.offsets.begin(), L.offsets.end() - 1);
  for (int64_t t = 0; t < Tn; ++t)
    for (int64_t j = 0; j < K; ++j) {
      const int64_t slot = cursor[L.idx[t * K + j]]++;
      L.slot_token[slot] = int32_t(t);
      L.slot_of[t * K + j] = int32_t(slot);
    }
  Tensor<const int32_t> slot_token(L.slot_token.data(), {Tk}), slot_of(L.slot_of.data(), {Tn, K});
  ops::moe_gather(rows(L.xs, Tk), rows(L.u, Tn), slot_token);
  dispatcher_->forward(l, rows(L.xs, Tk), L.offsets.data(), rows(L.ys, Tk), w.w1, w.w3, w.w2);
  ops::moe_combine(rows(L.moe_out, Tn), rows(L.ys, Tk), slot_of, rows(L.gate, Tn));
}

template <class T>
void Model<T>::moe_backward(int l, double loss_scale) {
  auto& L = layers_[l];
  auto& w = w_[l];
  auto& g = g_[l];
  const int64_t Tn = T_, K = cfg_.topk, E = cfg_.num_experts, Tk = Tn * K, NL = cfg_.num_layers;
  Tensor<T> dx = rows(s_.dx, Tn);  // d/dx_out
  Tensor<const int32_t> slot_of(L.slot_of.data(), {Tn, K});
  Tensor<T> dys = rows(s_.dys, Tk), dxs = rows(s_.dxs, Tk), dgate = rows(s_.dgate, Tn), du = rows(s_.du, Tn);
  zero(dys);
  zero(dgate);
  ops::moe_combine_backward(dys, dgate, dx, rows(L.ys, Tk), slot_of, rows(L.gate, Tn));
  zero(dxs);
  dispatcher_->backward(l, dys, dxs, g.w1, g.w3, g.w2, w.w1, w.w3, w.w2);
  zero(du);
  ops::moe_gather_backward(du, dxs, slot_of);
  // total += aux/NL * E * sum_e f_e * P_e, P_e = mean over all ranks' tokens of p[t,e]
  //   =>  d/dp[t,e] = aux/NL * E * f_e / T_global for each of this rank's tokens
  const double Tg = double(T_global_);
  for (int64_t e = 0; e < E; ++e)
    s_.dprobs_extra.data[e] = T(loss_scale * cfg_.aux_loss_coeff / NL * E * L.f_e[e] / Tg);
  // total += z/NL * mean over all tokens of lse^2  =>  the kernel applies scale * 2 lse
  const double dlse_scale = loss_scale * cfg_.z_loss_coeff / (double(NL) * Tg);
  zero(rows(s_.dlogits_r, Tn));
  ops::router_topk_backward(rows(s_.dlogits_r, Tn), dgate, s_.dprobs_extra, dlse_scale, rows(L.probs, Tn),
                            Tensor<const int32_t>(L.idx.data(), {Tn, K}), rows(L.lse, Tn));
  router_backward(l);  // du +=
  ops::rmsnorm_backward(dx, g.moe_norm, du, rows(L.x_mid, Tn), w.moe_norm, rows(L.rstd2, Tn));
}

template void Model<float>::moe_forward(int);
template void Model<double>::moe_forward(int);
template void Model<float>::moe_backward(int, double);
template void Model<double>::moe_backward(int, double);

}  // namespace rmoe
