// checkpoint_test_util.h — what tests/test_checkpoint.cpp (one process) and
// tests/mpi_test_checkpoint.cpp (rank layouts) share: a tiny model with
// E = 4 experts, buffer values that are a function of (seed, tensor name,
// global element index) so a slice of experts holds exactly those rows of the
// whole, a ParamStore with its AdamW moments, bitwise comparison, and a toy
// AdamW step that every layout computes alike for the same rows.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "rmoe/core/rng.h"
#include "rmoe/model/config.h"
#include "rmoe/model/params.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/checkpoint.h"

namespace rmoe::testutil {

// L = 2, d = 16, H = 2, E = 4 (top-2), f = 8, p = 8, V = 32, S = 16, GRU router.
inline ModelConfig tiny_model() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_heads = 2;
  c.num_experts = 4;
  c.topk = 2;
  c.ffn_hidden_size = 8;
  c.router_dim = 8;
  c.vocab_size = 32;
  c.seq_length = 16;
  c.router_type = RouterType::gru;
  return c;
}

// Every value of a buffer (layout `specs`; the expert or the replicated one)
// from (seed, tensor name, global element index): a slice of experts holds the
// same values as those rows of the whole, and no two tensors or buffers look alike.
inline void fill(std::vector<float>& buf, const std::vector<ParamSpec>& specs, bool expert_buffer, uint64_t seed,
                 int first_expert) {
  for (const ParamSpec& s : specs) {
    if (s.expert != expert_buffer) continue;
    const int64_t n = s.numel(), base = s.expert ? int64_t(first_expert) * (n / s.shape[0]) : 0;
    for (int64_t i = 0; i < n; ++i)
      buf[size_t(s.offset + i)] = float(random_normal(seed, hash_name(s.name), uint64_t(base + i)));
  }
}

// A ParamStore with its moments; view() points a TrainState at them.
struct OwnedState {
  ParamStore<float> params;
  std::vector<float> m_rep, v_rep, m_exp, v_exp;
  TrainState view() {
    TrainState s;
    s.params = &params;
    s.m_rep = &m_rep;
    s.v_rep = &v_rep;
    s.m_exp = &m_exp;
    s.v_exp = &v_exp;
    return s;
  }
};

// All zeros, for experts [first, first + local) of cfg (local < 0: all).
inline OwnedState zero_state(const ModelConfig& cfg, int first = 0, int local = -1) {
  OwnedState o{ParamStore<float>(model_param_specs(cfg, first, local)), {}, {}, {}, {}};
  o.m_rep.assign(o.params.replicated().size(), 0.f);
  o.v_rep = o.m_rep;
  o.m_exp.assign(o.params.expert().size(), 0.f);
  o.v_exp = o.m_exp;
  return o;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Elements that differ bitwise between two states of the same layout (a
// buffer of another size counts 2^40).
inline int64_t mismatches(OwnedState& a, OwnedState& b) {
  auto count = [](const std::vector<float>& x, const std::vector<float>& y) {
    if (x.size() != y.size()) return int64_t(1) << 40;
    int64_t n = 0;
    for (size_t i = 0; i < x.size(); ++i) n += std::memcmp(&x[i], &y[i], sizeof(float)) != 0;
    return n;
  };
  return count(a.params.replicated(), b.params.replicated()) + count(a.params.expert(), b.params.expert()) +
         count(a.m_rep, b.m_rep) + count(a.v_rep, b.v_rep) + count(a.m_exp, b.m_exp) + count(a.v_exp, b.v_exp);
}

inline bool same_state(OwnedState& a, OwnedState& b) { return mismatches(a, b) == 0; }

// One AdamW step with a synthetic gradient that depends on the parameters and
// on (seed, step, tensor, global element index), as a real gradient depends on
// the state and on the batch of (seed, step): every layout computes the same
// update for the same rows.
inline void toy_step(TrainState& s, int first_expert) {
  ParamStore<float>& p = *s.params;
  std::vector<float> grad;
  const AdamWHyper h;
  for (const ParamSpec& spec : p.specs()) {
    const int64_t n = spec.numel(), base = spec.expert ? int64_t(first_expert) * (n / spec.shape[0]) : 0;
    float* w = p.data_of(spec);
    grad.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i)
      grad[size_t(i)] =
          float(0.5 * w[i] + random_normal(s.seed, hash_name(spec.name) + uint64_t(s.step), uint64_t(base + i)));
    float* m = (spec.expert ? s.m_exp : s.m_rep)->data() + spec.offset;
    float* v = (spec.expert ? s.v_exp : s.v_rep)->data() + spec.offset;
    adamw_step(w, grad.data(), m, v, n, h, s.step + 1, 1e-3f, spec.decay ? 0.1f : 0.f);
  }
  ++s.step;
  s.consumed_tokens += 4096;
}

}  // namespace rmoe::testutil
