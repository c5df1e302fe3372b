// params.cpp — builds the parameter table of docs/MODEL.md and owns the flat
// buffers. Tested by tests/test_model.cpp (init independence, names).
#include "rmoe/model/params.h"

#include <cmath>
#include <cstdio>

#include "rmoe/core/error.h"
#include "rmoe/core/format.h"
#include "rmoe/core/rng.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    RMOE_CHECK(d >= 0 && !__builtin_mul_overflow(n, d, &n),
               "parameter " << name << " of shape " << shape_text(shape) << " has more elements than 64-bit counts hold");
  return n;
}

std::vector<ParamSpec> model_param_specs(const ModelConfig& c, int first_expert, int num_local_experts) {
  const int64_t d = c.hidden_size, V = c.vocab_size, p = c.router_dim, E = c.num_experts, f = c.ffn_hidden_size;
  const int64_t El = num_local_experts < 0 ? E : num_local_experts;
  (void)first_expert;
  std::vector<ParamSpec> s;
  auto add = [&](std::string name, std::vector<int64_t> shape, Init init, bool expert = false, bool frozen = false,
                 double bound = 0) {
    const bool decay = shape.size() >= 2 && !frozen;  // matrices; norms, biases and frozen tensors are not decayed
    s.push_back(ParamSpec{std::move(name), std::move(shape), init, decay, expert, 0, frozen, bound});
  };
  // A router tensor: `init` (normal or zeros) under --router-init normal;
  // uniform in +-1/sqrt(fan_in) under torch (PyTorch's nn.Linear / nn.GRUCell).
  const bool torch_init = c.router_init == RouterInit::torch;
  auto add_router = [&](std::string name, std::vector<int64_t> shape, Init init, int64_t fan_in, bool frozen = false) {
    if (torch_init)
      add(std::move(name), std::move(shape), Init::uniform, false, frozen, 1.0 / std::sqrt(double(fan_in)));
    else
      add(std::move(name), std::move(shape), init, false, frozen);
  };
  // The cosine head's tensors on an input of width `in`: xmoe_proj and
  // expert_emb are not decayed (the logits do not depend on their norms, so
  // decay would only shrink them and raise their effective learning rate,
  // never regularise the routing); log_scale starts at log(1/0.07) under
  // either init and is not decayed (X-MoE does not decay the temperature).
  auto add_cosine_head = [&](const std::string& L, int64_t in) {
    const int64_t r = c.cosine_dim();
    if (router_has_xmoe_proj(c.router_type)) {
      add_router(L + "router/xmoe_proj", {r, in}, Init::normal, in);  // nn.Linear(in, r, bias=False)
      s.back().decay = false;
    }
    add_router(L + "router/expert_emb", {E, r}, Init::normal, r);  // torch: as nn.Linear(r, E)'s weight
    s.back().decay = false;
    add(L + "router/log_scale", {1}, Init::constant);
    s.back().value = kInitLogScale;
  };
  add("embed/wte", {V, d}, Init::normal);
  if (router_has_cell(c.router_type)) {
    const int64_t g = router_cell_gates(c.router_type) * p;
    add_router("router/cell/w_ih", {g, p}, Init::normal, p);  // GRUCell: +-1/sqrt(hidden) = +-1/sqrt(p)
    add_router("router/cell/w_hh", {g, p}, Init::normal, p);
    add_router("router/cell/b_ih", {g}, Init::zeros, p);
    add_router("router/cell/b_hh", {g}, Init::zeros, p);
  }
  if (c.router_shared_proj && router_has_projection(c.router_type)) {  // "S-proj": one projection for every layer
    add_router("router/proj_w", {p, d}, Init::normal, d);
    add_router("router/proj_b", {p}, Init::zeros, d);
  }
  for (int i = 0; i < c.num_layers; ++i) {
    char pre[32];
    std::snprintf(pre, sizeof pre, "layers/%02d/", i);
    const std::string L(pre);
    add(L + "attn_norm", {d}, Init::ones);
    for (const char* w : {"wq", "wk", "wv", "wo"}) add(L + "attn/" + w, {d, d}, Init::normal);
    add(L + "moe_norm", {d}, Init::ones);
    if (router_has_cosine_head(c.router_type)) {
      if (router_has_projection(c.router_type)) {  // gru_xmoe: the gru router's projection, then the head on h
        add_router(L + "router/proj_w", {p, d}, Init::normal, d);
        add_router(L + "router/proj_b", {p}, Init::zeros, d);
      }
      add_cosine_head(L, router_has_projection(c.router_type) ? p : d);
    } else if (!router_has_projection(c.router_type)) {
      add_router(L + "router/gate_w", {E, d}, Init::normal, d, c.router_type == RouterType::random);
    } else {
      if (!c.router_shared_proj) {
        add_router(L + "router/proj_w", {p, d}, Init::normal, d);
        add_router(L + "router/proj_b", {p}, Init::zeros, d);
      }
      add_router(L + "router/gate_w", {E, p}, Init::normal, p);
      add_router(L + "router/gate_b", {E}, Init::zeros, p);
    }
    add(L + "experts/w1", {El, f, d}, Init::normal, true);
    add(L + "experts/w3", {El, f, d}, Init::normal, true);
    add(L + "experts/w2", {El, d, f}, Init::normal, true);
  }
  add("final_norm", {d}, Init::ones);
  if (!c.tie_embeddings) add("head", {V, d}, Init::normal);
  return s;
}

template <class T>
ParamStore<T>::ParamStore(std::vector<ParamSpec> specs) : specs_(std::move(specs)) {
  int64_t nr = 0, ne = 0;
  for (auto& s : specs_) {
    int64_t& n = s.expert ? ne : nr;
    s.offset = n;
    RMOE_CHECK(!__builtin_add_overflow(n, s.numel(), &n),
               "the parameters up to " << s.name << " are more than 64-bit counts hold");
  }
  replicated_.assign(nr, T(0));
  expert_.assign(ne, T(0));
}

template <class T>
const ParamSpec* ParamStore<T>::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

template <class T>
Tensor<T> ParamStore<T>::get(const std::string& name) {
  const ParamSpec* s = find(name);
  RMOE_CHECK(s, "no parameter named '" << name << "'");
  Tensor<T> t;
  t.data = data_of(*s);
  for (int64_t d : s->shape) t.shape[t.ndim++] = d;
  return t;
}

template <class T>
void ParamStore<T>::zero() {
  ops::fill(Tensor<T>(replicated_.data(), {int64_t(replicated_.size())}), 0.0);
  ops::fill(Tensor<T>(expert_.data(), {int64_t(expert_.size())}), 0.0);
}

template <class T>
void ParamStore<T>::init(uint64_t seed, double std, int first_expert) {
  for (const auto& s : specs_) {
    T* p = data_of(s);
    const int64_t n = s.numel();
    const uint64_t stream = hash_name(s.name);
    const int64_t base = s.expert ? int64_t(first_expert) * (n / s.shape[0]) : 0;
    for (int64_t i = 0; i < n; ++i) {
      switch (s.init) {
        case Init::ones: p[i] = T(1); break;
        case Init::zeros: p[i] = T(0); break;
        case Init::normal: p[i] = T(std * random_normal(seed, stream, uint64_t(base + i))); break;
        case Init::uniform: p[i] = T(s.bound * (2 * random_uniform(seed, stream, uint64_t(base + i)) - 1)); break;
        case Init::constant: p[i] = T(s.value); break;
      }
    }
  }
}

template class ParamStore<float>;
template class ParamStore<double>;

}  // namespace rmoe
