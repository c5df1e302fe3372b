// moe_layer.cpp — x_out = x_mid + sum_j g_j Expert_{e_j}(u), u = RMSNorm(x_mid).
//
// route (router.cpp) -> softmax/top-k -> order token slots by expert ->
// gather -> grouped expert GEMMs -> combine in slot order. Dropless: every
// slot is computed; an expert with no slots is skipped. The load-balance and
// z-loss gradients enter through router_topk_backward.
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::moe_forward(int l) {
  auto& L = layers_[l];
  auto& w = w_[l];
  const int64_t Tn = T_, Tk = Tn * cfg_.topk;
  ops::rmsnorm_forward(rows(L.u, Tn), rows(L.rstd2, Tn), rows(L.x_mid, Tn), w.moe_norm, cfg_.rms_eps);
  router_forward(l);
  Tensor<int32_t> idx = rows(L.idx, Tn);
  Tensor<T> probs = rows(L.probs, Tn), gate = rows(L.gate, Tn);
  if (!freeze_routing_) {
    ops::router_topk_forward(probs, idx, gate, rows(L.lse, Tn), rows(L.logits, Tn));
  } else {
    // Keep the previous choice idx; recompute probabilities, then the gates around it.
    ops::router_topk_forward(probs, rows(idx_frozen_, Tn), gate, rows(L.lse, Tn), rows(L.logits, Tn));
    ops::router_gates(gate, probs, idx);
  }
  ops::router_stats<T>(stats_.slice(l, 1), probs, rows(L.lse, Tn), idx);
  // Order slots by expert, tokens in order within an expert (deterministic).
  Tensor<int32_t> slot_token = rows(L.slot_token, Tk), slot_of = rows(L.slot_of, Tn);
  ops::moe_route_plan(L.offsets, slot_token, slot_of, idx);
  ops::moe_gather(rows(L.xs, Tk), rows(L.u, Tn), slot_token);
  dispatcher_->forward(l, rows(L.xs, Tk), L.offsets, rows(L.ys, Tk), w.w1, w.w3, w.w2);
  ops::moe_combine(rows(L.moe_out, Tn), rows(L.ys, Tk), slot_of, gate);
}

template <class T>
void Model<T>::moe_backward(int l, double loss_scale) {
  auto& L = layers_[l];
  auto& w = w_[l];
  auto& g = g_[l];
  const int64_t Tn = T_, K = cfg_.topk, E = cfg_.num_experts, Tk = Tn * K, NL = cfg_.num_layers;
  Tensor<T> dx = rows(s_.dx, Tn);  // d/dx_out
  Tensor<const int32_t> slot_of = rows(L.slot_of, Tn);
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
  zero(s_.dprobs_extra);
  ops::load_balance_backward(s_.dprobs_extra, stats_.slice(l, 1), K, loss_scale * cfg_.aux_loss_coeff / NL * E);
  // total += z/NL * mean over all tokens of lse^2  =>  the kernel applies scale * 2 lse
  const double dlse_scale = loss_scale * cfg_.z_loss_coeff / (double(NL) * double(T_global_));
  zero(rows(s_.dlogits_r, Tn));
  ops::router_topk_backward(rows(s_.dlogits_r, Tn), dgate, s_.dprobs_extra, dlse_scale, rows(L.probs, Tn),
                            rows(L.idx, Tn), rows(L.lse, Tn));
  router_backward(l);  // du +=
  ops::rmsnorm_backward(dx, g.moe_norm, du, rows(L.x_mid, Tn), w.moe_norm, rows(L.rstd2, Tn));
}

template void Model<float>::moe_forward(int);
template void Model<double>::moe_forward(int);
template void Model<float>::moe_backward(int, double);
template void Model<double>::moe_backward(int, double);

}  // namespace rmoe
