// moe_layer.cpp — x_out = x_mid + sum_j g_j Expert_{e_j}(u), u = RMSNorm(x_mid).
//
// With --router-logit-residual A the router's logits of layer l >= 1 get
// A times layer l-1's (final) logits before softmax/top-k.
//
// route (router.cpp) -> softmax/top-k -> this layer's routing statistics ->
// the plan (token slots ordered by expert) -> gather -> dispatcher (experts)
// -> combine in slot order. Dropless: every slot is computed; an expert with
// no slots is skipped. The load-balance and z-loss gradients enter through
// router_topk_backward.
//
// With --moe-expert-capacity-factor C > 0 (capacity_drop): each expert keeps
// at most ceil(C * T_global * k / E) slots of the micro-step over all ranks,
// its most probable ones (ties to the earlier rank, token, choice); a dropped
// slot gets no row and adds nothing to its token's output. The surviving gates
// keep their top-k values (p_j / sum of the k chosen probabilities, dropped
// ones included): a token that loses a slot simply gets less expert output,
// as in Switch and GShard. The load-balance statistics count the router's
// choice before the drop.
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
  // Logit residual: logits_l += A logits_{l-1}, layer l-1's final logits (so
  // it recurs over depth), before softmax, top-k and the aux losses.
  if (cfg_.router_logit_residual != 0 && l > 0)
    ops::add_scaled(first_rows(L.logits, n_tok), first_rows(L.logits, n_tok), first_rows(layers_[l - 1].logits, n_tok),
                    cfg_.router_logit_residual);
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
  const bool capped = cfg_.capacity_factor > 0;
  if (!capped) dropped_slots_[l] = 0;
  if (capped && !freeze_routing_) capacity_drop(l);  // frozen: the last decision stays
  profile::RegionScope experts_region(profile::Region::experts);  // nested: charged apart from routing
  // Order the kept slots by expert, tokens in order within an expert (deterministic).
  Tensor<int32_t> slot_token = first_rows(L.slot_token, n_slots), slot_of = first_rows(L.slot_of, n_tok);
  const Tensor<const int32_t> keep = capped ? Tensor<const int32_t>(first_rows(L.keep, n_tok)) : Tensor<const int32_t>{};
  ops::moe_route_plan(L.offsets, slot_token, slot_of, idx, keep);
  ops::copy(Tensor<int64_t>(&kept_slots_[size_t(l)], {1}), L.offsets.slice(cfg_.num_experts, 1));
  const int64_t n_rows = kept_slots_[size_t(l)];  // the rows the experts see
  ops::moe_gather(first_rows(L.xs, n_rows), first_rows(L.u, n_tok), first_rows(slot_token, n_rows));
  dispatcher_->forward(l, first_rows(L.xs, n_rows), L.offsets, first_rows(L.ys, n_rows), w.w1, w.w3, w.w2);
  ops::moe_combine(first_rows(L.moe_out, n_tok), first_rows(L.ys, n_rows), slot_of, gate);
}

// This layer's capacity decision: every rank's slot keys meet (gather_slots_,
// a collective) and moe_capacity_keep makes the same choice on every rank.
// Sets L.keep [T,k] and dropped_slots_[l].
template <class T>
void Model<T>::capacity_drop(int l) {
  auto& L = layers_[l];
  const int64_t n_tok = num_tokens_, n_slots = n_tok * cfg_.topk;
  const Tensor<double> mine = first_rows(slot_keys_, n_slots);
  ops::moe_slot_keys<T>(mine, first_rows(L.probs, n_tok), first_rows(L.idx, n_tok));
  int64_t first = 0;
  if (gather_slots_) {
    profile::RegionScope region(profile::Region::communication);
    first = gather_slots_(mine, all_keys_);
  } else {
    all_keys_.resize(size_t(2 * n_slots));
    ops::copy(Tensor<double>(all_keys_.data(), {n_slots, 2}), mine);
  }
  const int64_t G = int64_t(all_keys_.size()) / 2;  // slots of all ranks
  const int64_t capacity = expert_capacity(cfg_.capacity_factor, G / cfg_.topk, cfg_.topk, cfg_.num_experts);
  ops::moe_capacity_keep(first_rows(L.keep, n_tok), Tensor<int64_t>(&dropped_slots_[size_t(l)], {1}),
                         Tensor<const double>(all_keys_.data(), {G, 2}), first, capacity, cfg_.num_experts);
}

template <class T>
void Model<T>::moe_backward(int l, double loss_scale, LossTerms terms) {
  auto& L = layers_[l];
  auto& w = layer_weights_[l];
  auto& g = layer_grads_[l];
  const int64_t n_tok = num_tokens_, K = cfg_.topk, E = cfg_.num_experts, NL = cfg_.num_layers;
  const int64_t n_slots = kept_slots_[size_t(l)];  // the kept slots' rows (all n_tok * K when dropless)
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
  // Logit residual: logits_{l+1} = own_{l+1} + A logits_l, so d/dlogits_l gains
  // A d/dlogits_{l+1} (kept in dlogits_res by layer l+1), unless detached. The
  // router's own logits get the whole d/dlogits_l.
  const bool residual_grad = cfg_.router_logit_residual != 0 && !cfg_.router_logit_residual_detach;
  if (residual_grad && l + 1 < NL)
    ops::add_scaled(first_rows(scratch_.dlogits_r, n_tok), first_rows(scratch_.dlogits_r, n_tok),
                    first_rows(scratch_.dlogits_res, n_tok), cfg_.router_logit_residual);
  if (residual_grad && l > 0) ops::copy(first_rows(scratch_.dlogits_res, n_tok), first_rows(scratch_.dlogits_r, n_tok));
  router_backward(l);  // du +=
  ops::rmsnorm_backward(dx, g.moe_norm, du, first_rows(L.x_mid, n_tok), w.moe_norm, first_rows(L.rstd2, n_tok));
}

template void Model<float>::moe_forward(int);
template void Model<double>::moe_forward(int);
template void Model<float>::capacity_drop(int);
template void Model<double>::capacity_drop(int);
template void Model<float>::moe_backward(int, double, LossTerms);
template void Model<double>::moe_backward(int, double, LossTerms);

}  // namespace rmoe
