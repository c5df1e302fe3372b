// moe_layer.cpp — x_out = x_mid + sum_j g_j Expert_{e_j}(u), u = RMSNorm(x_mid).
//
// route (router.cpp) -> softmax/top-k -> this layer's routing statistics ->
// the plan (token slots ordered by expert) -> gather -> dispatcher (experts)
// -> combine in slot order. Dropless: every slot is computed; an expert with
// no slots is skipped. The load-balance and z-loss gradients enter through
// router_topk_backward.
#include "model_util.h"
#include "rmoe/core/profile.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::moe_forward(int l) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  const int64_t n_tok = num_tokens_, n_slots = n_tok * cfg_.topk;
  profile::RegionScope router_region(profile::Region::router);  // --profile: the norm and routing
  ops::rmsnorm_forward(first_rows(L.u, n_tok), first_rows(L.rstd2, n_tok), first_rows(L.x_mid, n_tok), w.moe_norm,
                       cfg_.rms_eps);
  router_forward(l);
  Tensor<int32_t> idx = first_rows(L.idx, n_tok);
  Tensor<T> probs = first_rows(L.probs, n_tok), gate = first_rows(L.gate, n_tok);
  if (!freeze_routing_) {
    ops::router_topk_forward(probs, idx, gate, first_rows(L.lse, n_tok), first_rows(L.logits, n_tok));
  } else {
    // Keep the previous choice idx; recompute probabilities, then the gates around it.
    ops::router_topk_forward(probs, first_rows(idx_frozen_, n_tok), gate, first_rows(L.lse, n_tok),
                             first_rows(L.logits, n_tok));
    ops::router_gates(gate, probs, idx);
  }
  ops::router_stats<T>(stats_.slice(l, 1), probs, first_rows(L.lse, n_tok), idx);
  profile::RegionScope experts_region(profile::Region::experts);  // nested: charged apart from routing
  // Order slots by expert, tokens in order within an expert (deterministic).
  Tensor<int32_t> slot_token = first_rows(L.slot_token, n_slots), slot_of = first_rows(L.slot_of, n_tok);
  ops::moe_route_plan(L.offsets, slot_token, slot_of, idx);
  ops::moe_gather(first_rows(L.xs, n_slots), first_rows(L.u, n_tok), slot_token);
  dispatcher_->forward(l, first_rows(L.xs, n_slots), L.offsets, first_rows(L.ys, n_slots), w.w1, w.w3, w.w2);
  ops::moe_combine(first_rows(L.moe_out, n_tok), first_rows(L.ys, n_slots), slot_of, gate);
}

template <class T>
void Model<T>::moe_backward(int l, double loss_scale, LossTerms terms) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  auto& g = layer_grads_[l];
  const int64_t n_tok = num_tokens_, K = cfg_.topk, E = cfg_.num_experts, n_slots = n_tok * K, NL = cfg_.num_layers;
  Tensor<T> dx = first_rows(scratch_.dx, n_tok);  // d/dx_out
  Tensor<const int32_t> slot_of = first_rows(L.slot_of, n_tok);
  Tensor<T> dys = first_rows(scratch_.dys, n_slots), dxs = first_rows(scratch_.dxs, n_slots),
            dgate = first_rows(scratch_.dgate, n_tok), du = first_rows(scratch_.du, n_tok);
  {
    profile::RegionScope experts_region(profile::Region::experts);
    zero(dys);
    zero(dgate);
    ops::moe_combine_backward(dys, dgate, dx, first_rows(L.ys, n_slots), slot_of, first_rows(L.gate, n_tok));
    zero(dxs);
    dispatcher_->backward(l, dys, dxs, g.w1, g.w3, g.w2, w.w1, w.w3, w.w2);
    zero(du);
    ops::moe_gather_backward(du, dxs, slot_of);
  }
  profile::RegionScope router_region(profile::Region::router);
  // total += aux/NL * E * sum_e f_e * P_e, P_e = mean over all ranks' tokens of p[t,e]
  //   =>  d/dp[t,e] = aux/NL * E * f_e / T_global for each of this rank's tokens
  // (terms.lb off: dprobs_extra stays 0; terms.z off: dlse_scale = 0.)
  zero(scratch_.dprobs_extra);
  if (terms.lb)
    ops::load_balance_backward(scratch_.dprobs_extra, stats_.slice(l, 1), K,
                               loss_scale * cfg_.aux_loss_coeff / NL * E);
  // total += z/NL * mean over all tokens of lse^2  =>  the kernel applies scale * 2 lse
  const double dlse_scale =
      terms.z ? loss_scale * cfg_.z_loss_coeff / (double(NL) * double(num_tokens_global_)) : 0.0;
  zero(first_rows(scratch_.dlogits_r, n_tok));
  ops::router_topk_backward(first_rows(scratch_.dlogits_r, n_tok), dgate, scratch_.dprobs_extra, dlse_scale,
                            first_rows(L.probs, n_tok), first_rows(L.idx, n_tok), first_rows(L.lse, n_tok));
  router_backward(l);  // du +=
  ops::rmsnorm_backward(dx, g.moe_norm, du, first_rows(L.x_mid, n_tok), w.moe_norm, first_rows(L.rstd2, n_tok));
}

template void Model<float>::moe_forward(int);
template void Model<double>::moe_forward(int);
template void Model<float>::moe_backward(int, double, LossTerms);
template void Model<double>::moe_backward(int, double, LossTerms);

}  // namespace rmoe
