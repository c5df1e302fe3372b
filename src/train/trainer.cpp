// trainer.cpp — the training step (see trainer.h).
#include "rmoe/train/trainer.h"

#include <array>
#include <chrono>
#include <cmath>

#include "rmoe/parallel/grad_sync.h"
#include "rmoe/parallel/mpi_dispatcher.h"
#include "rmoe/core/error.h"
#include "rmoe/core/profile.h"
#include "rmoe/core/format.h"
#include "rmoe/core/timer.h"
#include "rmoe/train/schedule.h"

namespace rmoe {

namespace {

std::shared_ptr<ProcessGroups> one_process(const TrainConfig& cfg) {
  return std::make_shared<ProcessGroups>(make_process_groups(make_self_comm(), 0, cfg.model.num_experts));
}

std::shared_ptr<ExpertDispatcher<float>> dispatcher_for(const TrainConfig& cfg, ProcessGroups& g) {
  if (g.world->size() == 1) return nullptr;  // the model's own one-process dispatcher
  return std::make_shared<MpiExpertDispatcher<float>>(cfg.model.num_layers, cfg.model.num_experts, *g.ep);
}

}  // namespace

Trainer::Trainer(const TrainConfig& cfg, std::shared_ptr<ProcessGroups> groups)
    : cfg_(cfg),
      groups_(groups ? std::move(groups) : one_process(cfg)),
      source_(open_batch_source(cfg.data_path, cfg.model.vocab_size, cfg.seed, cfg.model.seq_length,
                                cfg.global_batch_size)),
      model_(cfg.model, cfg.micro_batch_size, dispatcher_for(cfg, *groups_), world_stats_reducer(*groups_->world),
             world_slot_gatherer(*groups_->world)) {
  check_batch_layout(cfg, groups_->world->size());
  RMOE_CHECK(source_->vocab_size() == cfg.model.vocab_size,
             "data source vocabulary " << source_->vocab_size() << " != --vocab-size " << cfg.model.vocab_size);
  model_.params().init(cfg.seed, cfg.model.init_std, groups_->first_local_expert);
  m_rep_.assign(model_.params().replicated().size(), 0.f);
  v_rep_ = m_rep_;
  m_exp_.assign(model_.params().expert().size(), 0.f);
  v_exp_ = m_exp_;
  const size_t n = size_t(cfg.micro_batch_size) * cfg.model.seq_length;
  tokens_.assign(n, 0);
  targets_.assign(n, 0);
  tokenizer_fingerprint_ = tokenizer_fingerprint_of(*source_, cfg.data_path, cfg.seed);
  tokenizer_description_ = tokenizer_description_of(*source_, cfg.data_path, cfg.seed);
  // One run id for all ranks: rank 0's.
  run_id_ = groups_->world->rank() == 0 ? new_run_id() : std::string(16, '0');
  groups_->world->broadcast(run_id_.data(), int64_t(run_id_.size()), 0);
}

void Trainer::restore(const TrainState& loaded) {
  step_ = loaded.step;
  consumed_tokens_ = loaded.consumed_tokens;
  skipped_steps_ = loaded.skipped_steps;
  skipped_in_a_row_ = loaded.skipped_in_a_row;
  if (!loaded.run_id.empty()) run_id_ = loaded.run_id;  // older files have none: this run's new id
}

StepStats Trainer::train_step(bool split_router_grads) {
  const auto t0 = std::chrono::steady_clock::now();
  const int mb = cfg_.micro_batch_size, S = cfg_.model.seq_length, E = cfg_.model.num_experts;
  const int P = groups_->world->size();
  const int accum = cfg_.accumulation_steps() / P;
  const int64_t first_seq = int64_t(groups_->world->rank()) * (cfg_.global_batch_size / P);
  StepStats st;
  st.step = step_;
  st.lr = lr_at(cfg_, step_);
  auto& params = model_.params();
  auto& grads = model_.grads();
  grads.zero();
  // The router gradient's parts by loss term (trainer.h): ce, lb, and z when it has a coefficient.
  const std::array<LossTerms, 3> part_terms = {LossTerms{true, false, false}, LossTerms{false, true, false},
                                               LossTerms{false, false, true}};
  const int n_parts = cfg_.model.z_loss_coeff != 0 ? 3 : 2;
  double router_seconds = 0;
  if (split_router_grads) {
    while (int(router_parts_.size()) < n_parts) router_parts_.emplace_back(router_param_specs(cfg_.model));
    for (int i = 0; i < n_parts; ++i) router_parts_[i].zero();
  }
  std::vector<int64_t> counts(size_t(cfg_.model.num_layers) * E, 0);
  std::vector<int64_t> dropped(size_t(cfg_.model.num_layers), 0);
  int64_t slots = 0;  // per layer, over the step's micro-steps and ranks
  model_.dispatcher().reset_counters();
  for (int a = 0; a < accum; ++a) {
    const auto td = std::chrono::steady_clock::now();
    {
      profile::RegionScope region(profile::Region::data);
      source_->fill(step_, first_seq + int64_t(a) * mb, mb, S, tokens_.data(), targets_.data());
    }
    st.data_seconds += seconds_since(td);
    ForwardResult r = model_.forward(tokens_.data(), targets_.data(), mb);
    // Backward even for a non-finite loss: every rank takes part in the same
    // collectives; the verdict comes once the ranks' sums are known.
    model_.backward(1.0 / accum);
    if (split_router_grads) {  // on the same forward; grads() stays as it is
      const auto tp = std::chrono::steady_clock::now();
      for (int i = 0; i < n_parts; ++i) model_.backward(1.0 / accum, part_terms[i], router_parts_[i]);
      router_seconds += seconds_since(tp);
    }
    st.loss += r.ce / (accum * P);
    st.lb += r.lb / accum;
    st.z += r.z / accum;
    for (size_t i = 0; i < counts.size(); ++i) counts[i] += r.expert_counts[i];
    for (size_t l = 0; l < dropped.size(); ++l) dropped[l] += r.dropped_slots[l];
    slots += r.slots_global;
  }
  if (cfg_.model.capacity_factor > 0) {
    for (int64_t d : dropped) st.layer_drop.push_back(slots > 0 ? double(d) / double(slots) : 0.0);
    for (double f : st.layer_drop) st.drop += f / double(st.layer_drop.size());
  }
  st.a2a_seconds = model_.dispatcher().comm_seconds();
  st.a2a_bytes = model_.dispatcher().bytes_sent();
  // Gradients and loss summed over the ranks, the global norm (grad_sync.h).
  // The loss is the mean of the ranks' means.
  const auto tr = std::chrono::steady_clock::now();
  {
    profile::RegionScope region(profile::Region::communication);
    allreduce_grads(*groups_, grads, st.loss);
  }
  st.allreduce_seconds = seconds_since(tr);
  if (split_router_grads) {
    // Each rank holds its part of each term's router gradient: the parts are
    // summed over the ranks (as the training gradient, whose router part is
    // `full`), then the norms taken.
    const auto tp = std::chrono::steady_clock::now();
    {
      profile::RegionScope region(profile::Region::communication);
      for (int i = 0; i < n_parts; ++i)
        groups_->world->allreduce_sum(router_parts_[i].replicated().data(),
                                      int64_t(router_parts_[i].replicated().size()));
    }
    RouterGradSplit& rg = st.router_grads;
    const int L = cfg_.model.num_layers;
    rg.measured = true;
    rg.has_z = n_parts == 3;
    rg.has_cell = router_has_cell(cfg_.model.router_type) || cfg_.model.router_shared_proj;
    rg.full = router_grad_norms(grads, L);
    rg.lm = router_grad_norms(router_parts_[0], L);
    rg.lb = router_grad_norms(router_parts_[1], L);
    if (rg.has_z) rg.z = router_grad_norms(router_parts_[2], L);
    router_seconds += seconds_since(tp);
    st.router_grads_seconds = router_seconds;
  }
  profile::RegionScope optimizer_region(profile::Region::optimizer);  // the norm, clipping, AdamW, the checks
  st.grad_norm = global_grad_norm(*groups_, grads);
  // Expert load: max share / mean share per layer; report the worst layer.
  for (int l = 0; l < cfg_.model.num_layers; ++l) {
    int64_t mx = 0, sum = 0;
    for (int e = 0; e < E; ++e) {
      mx = std::max(mx, counts[size_t(l) * E + e]);
      sum += counts[size_t(l) * E + e];
    }
    const double load = sum > 0 ? double(mx) * E / double(sum) : 0;
    st.layer_load.push_back(load);
    if (load > st.max_load) {
      st.max_load = load;
      st.worst_layer = l;
    }
  }
  const int64_t step_tokens = int64_t(cfg_.global_batch_size) * cfg_.model.seq_length;

  // A non-finite step: skipped, or the end of the run (trainer.h). Loss, aux
  // terms and the norm are global sums, so every rank decides alike.
  if (!(std::isfinite(st.loss) && std::isfinite(st.grad_norm) && std::isfinite(st.lb) && std::isfinite(st.z))) {
    if (skipped_in_a_row_ >= cfg_.max_skipped_steps)
      throw Error("step " + std::to_string(step_ + 1) + ": loss " + shortest_text(st.loss) + ", gradient norm " +
                  shortest_text(st.grad_norm) + " are not finite, and so were the " +
                  std::to_string(skipped_in_a_row_) + " step(s) before it (--max-skipped-steps=" +
                  std::to_string(cfg_.max_skipped_steps) + "): stopping without saving. The weights are those "
                  "of step " + std::to_string(step_ - skipped_in_a_row_) + ", the last update applied, as in "
                  "every checkpoint saved since; lower --lr or check the data, and resume from a checkpoint "
                  "saved before the loss diverged");
    ++skipped_steps_;
    ++skipped_in_a_row_;
    consumed_tokens_ += step_tokens;  // the batch is consumed: the next step reads the next one
    st.skipped = true;
    st.skipped_in_a_row = skipped_in_a_row_;
    st.skipped_steps = skipped_steps_;
    st.consumed_tokens = consumed_tokens_;
    ++step_;
    st.seconds = seconds_since(t0);
    return st;
  }

  // Clipping scales every gradient by clip / norm, inside AdamW's own pass.
  const float grad_scale =
      cfg_.clip_grad > 0 && st.grad_norm > cfg_.clip_grad ? float(cfg_.clip_grad / st.grad_norm) : 1.0f;
  AdamWHyper h;
  h.beta1 = cfg_.adam_beta1;
  h.beta2 = cfg_.adam_beta2;
  h.eps = cfg_.adam_eps;
  int64_t not_finite = 0;  // values AdamW wrote that are not finite
  for (const auto& s : params.specs()) {
    if (s.frozen) continue;  // the random router's gate: kept as initialised (its gradient is 0 too)
    float* m = (s.expert ? m_exp_.data() : m_rep_.data()) + s.offset;
    float* v = (s.expert ? v_exp_.data() : v_rep_.data()) + s.offset;
    // t counts the updates applied: a skipped step made none.
    not_finite += adamw_step(params.data_of(s), grads.data_of(s), m, v, s.numel(), h, step_ - skipped_steps_ + 1,
                             float(st.lr), s.decay ? float(cfg_.weight_decay) : 0.f, grad_scale);
  }
  // Finite gradients, yet a non-finite result: the learning rate is too large
  // for float. Nothing to skip back to, so the run ends here (every rank: the
  // replicated values are the same everywhere, expert ones are agreed on).
  // (Frozen values are never written, and were finite: the loss was.)
  double bad_anywhere = double(not_finite);
  groups_->world->allreduce_max(&bad_anywhere, 1);
  NonFiniteReport bad;
  if (not_finite > 0) bad = find_non_finite(state(), true);  // only now pay a pass over the state, for the message
  if (bad_anywhere > 0)
    throw Error("step " + std::to_string(step_ + 1) + ": the AdamW update (lr " + shortest_text(st.lr) +
                ") made parameters or moments non-finite although the loss and the gradient norm were finite" +
                (bad.values > 0 ? " (" + std::to_string(bad.values) + " values on this rank, the first in '" +
                                      bad.first_tensor + "')"
                                : std::string()) +
                "; stopping without saving this state. Lower --lr and resume from the newest checkpoint");
  skipped_in_a_row_ = 0;
  consumed_tokens_ += step_tokens;
  st.skipped_steps = skipped_steps_;
  st.consumed_tokens = consumed_tokens_;
  ++step_;
  st.seconds = seconds_since(t0);
  return st;
}

TrainState Trainer::state() {
  TrainState s;
  s.params = &model_.params();
  s.m_rep = &m_rep_;
  s.v_rep = &v_rep_;
  s.m_exp = &m_exp_;
  s.v_exp = &v_exp_;
  s.step = step_;
  s.consumed_tokens = consumed_tokens_;
  s.seed = cfg_.seed;
  s.config_ini = config_to_ini(cfg_);
  s.skipped_steps = skipped_steps_;
  s.skipped_in_a_row = skipped_in_a_row_;
  s.run_id = run_id_;
  s.tokenizer_fingerprint = tokenizer_fingerprint_;
  s.tokenizer = tokenizer_description_;
  return s;
}

double Trainer::evaluate(int64_t iters) {
  // Validation batch i has mb sequences per rank; ranks read disjoint ones.
  const int mb = cfg_.micro_batch_size, S = cfg_.model.seq_length, P = groups_->world->size();
  double sum = 0;
  for (int64_t i = 0; i < iters; ++i) {
    source_->fill_validation(i, int64_t(groups_->world->rank()) * mb, mb, S, tokens_.data(), targets_.data());
    sum += model_.forward(tokens_.data(), targets_.data(), mb).ce;
  }
  groups_->world->allreduce_sum(&sum, 1);
  return iters > 0 ? sum / (double(iters) * P) : 0;
}

}  // namespace rmoe
