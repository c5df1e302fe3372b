// trainer.cpp — the training step (see trainer.h).
#include "rmoe/train/trainer.h"

#include <chrono>
#include <cmath>

#include "rmoe/parallel/grad_sync.h"
#include "rmoe/parallel/mpi_dispatcher.h"
#include "rmoe/core/error.h"
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
      model_(cfg.model, cfg.micro_batch_size, dispatcher_for(cfg, *groups_), world_stats_reducer(*groups_->world)) {
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
}

StepStats Trainer::train_step() {
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
  std::vector<int64_t> counts(size_t(cfg_.model.num_layers) * E, 0);
  model_.dispatcher().reset_counters();
  for (int a = 0; a < accum; ++a) {
    const auto td = std::chrono::steady_clock::now();
    source_->fill(step_, first_seq + int64_t(a) * mb, mb, S, tokens_.data(), targets_.data());
    st.data_seconds += seconds_since(td);
    ForwardResult r = model_.forward(tokens_.data(), targets_.data(), mb);
    RMOE_CHECK(std::isfinite(r.total), "loss is not finite (" << r.total << ") at step " << step_
                                           << "; lower --lr or check the data");
    model_.backward(1.0 / accum);
    st.loss += r.ce / (accum * P);
    st.lb += r.lb / accum;
    st.z += r.z / accum;
    for (size_t i = 0; i < counts.size(); ++i) counts[i] += r.expert_counts[i];
  }
  st.a2a_seconds = model_.dispatcher().comm_seconds();
  st.a2a_bytes = model_.dispatcher().bytes_sent();
  // Gradients and loss summed over the ranks, the global norm (grad_sync.h).
  // The loss is the mean of the ranks' means.
  auto& gr = grads.replicated();
  auto& ge = grads.expert();
  const auto tr = std::chrono::steady_clock::now();
  allreduce_grads(*groups_, grads, st.loss);
  st.allreduce_seconds = seconds_since(tr);
  st.grad_norm = global_grad_norm(*groups_, grads);
  RMOE_CHECK(std::isfinite(st.grad_norm), "gradient norm is not finite at step " << step_);
  if (cfg_.clip_grad > 0 && st.grad_norm > cfg_.clip_grad) {
    const float s = float(cfg_.clip_grad / st.grad_norm);
    scale(gr.data(), int64_t(gr.size()), s);
    scale(ge.data(), int64_t(ge.size()), s);
  }
  AdamWHyper h;
  h.beta1 = cfg_.adam_beta1;
  h.beta2 = cfg_.adam_beta2;
  h.eps = cfg_.adam_eps;
  for (const auto& s : params.specs()) {
    float* m = (s.expert ? m_exp_.data() : m_rep_.data()) + s.offset;
    float* v = (s.expert ? v_exp_.data() : v_rep_.data()) + s.offset;
    adamw_step(params.data_of(s), grads.data_of(s), m, v, s.numel(), h, step_ + 1, float(st.lr),
               s.decay ? float(cfg_.weight_decay) : 0.f);
  }
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
  s.consumed_tokens = step_ * int64_t(cfg_.global_batch_size) * cfg_.model.seq_length;
  s.seed = cfg_.seed;
  s.config_ini = config_to_ini(cfg_);
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
