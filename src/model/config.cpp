// config.cpp — ModelConfig::validate, the router-type names, the parameter
// count by part and the 64-bit size arithmetic of shapes.
//
// Messages use the CLI flag names (train/config.h maps flags to fields), so a
// user sees e.g. "--moe-router-topk=5 must be <= --num-experts=4".
// Tested by tests/test_config.cpp.
#include "rmoe/model/config.h"

#include <cfloat>
#include <cmath>
#include <limits>

#include "rmoe/core/error.h"
#include "rmoe/core/format.h"

namespace rmoe {

namespace {

void require_at_least(const char* flag, int64_t value, int64_t min) {
  if (value < min)
    usage_fail(std::string(flag) + "=" + std::to_string(value) + " must be >= " + std::to_string(min));
}

void require_nonneg(const char* flag, double value) {
  if (!std::isfinite(value) || value < 0)
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be a finite number >= 0");
}

void require_positive(const char* flag, double value) {
  if (!std::isfinite(value) || value <= 0)
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be a finite number > 0");
}

std::string joined(std::initializer_list<int64_t> xs, const char* sep) {
  std::string t;
  for (int64_t x : xs) t += (t.empty() ? "" : sep) + std::to_string(x);
  return t;
}

}  // namespace

int64_t shape_product(std::initializer_list<int64_t> factors, const std::string& what, const std::string& advice) {
  int64_t r = 1;
  for (int64_t f : factors)
    if (f < 0 || __builtin_mul_overflow(r, f, &r))
      usage_fail(what + " = " + joined(factors, " x ") + " does not fit in 64-bit integers; " + advice);
  return r;
}

int64_t shape_sum(std::initializer_list<int64_t> terms, const std::string& what, const std::string& advice) {
  int64_t r = 0;
  for (int64_t t : terms)
    if (t < 0 || __builtin_add_overflow(r, t, &r))
      usage_fail(what + " = " + joined(terms, " + ") + " does not fit in 64-bit integers; " + advice);
  return r;
}

void check_float_range(const char* flag, double value) {
  const double a = std::fabs(value);
  if (value == 0 || (a >= double(FLT_MIN) && a <= double(FLT_MAX))) return;
  usage_fail(std::string(flag) + "=" + shortest_text(value) + " is outside the range of 32-bit float, which rmoe " +
             "computes in (it would be " + (a > double(FLT_MAX) ? "inf" : "0") +
             "): give 0 or a magnitude from 1.1755e-38 to 3.4028e+38");
}

ModelParamCounts model_param_counts(const ModelConfig& c) {
  const int64_t L = c.num_layers, d = c.hidden_size, V = c.vocab_size, p = c.router_dim, E = c.num_experts,
                f = c.ffn_hidden_size;
  const std::string shape = "lower --num-layers, --hidden-size, --num-experts, --ffn-hidden-size or --vocab-size";
  ModelParamCounts n;
  n.embedding = shape_product({V, d}, "the embedding (--vocab-size x --hidden-size)", "lower --vocab-size or --hidden-size");
  n.head = c.tie_embeddings ? 0 : n.embedding;  // head [V, d]
  n.attention = shape_product({L, 4, d, d}, "the attention parameters (--num-layers x 4 x --hidden-size^2)",
                              "lower --hidden-size or --num-layers");
  n.norms = shape_product({2 * L + 1, d}, "the norm parameters ((2 x --num-layers + 1) x --hidden-size)", shape);
  int64_t per_layer = 0;  // one layer's router tensors
  const std::string router = "the router parameters of one layer (--router-dim, --hidden-size, --num-experts)";
  const std::string lower_router = "lower --router-dim, --hidden-size or --num-experts";
  if (router_has_cosine_head(c.router_type)) {
    // [proj_w [p, d], proj_b [p] (gru_xmoe)] + [xmoe_proj [r, d or p]] + expert_emb [E, r] + log_scale [1]
    const int64_t r = c.cosine_dim(), in = router_has_projection(c.router_type) ? p : d;
    const std::string cos = "the router parameters of one layer (--xmoe-dim, --router-dim, --hidden-size, --num-experts)";
    const std::string lower_cos = "lower --xmoe-dim, --router-dim, --hidden-size or --num-experts";
    const int64_t body = router_has_projection(c.router_type) ? shape_sum({shape_product({p, d}, cos, lower_cos), p}, cos, lower_cos) : 0;
    const int64_t xproj = router_has_xmoe_proj(c.router_type) ? shape_product({r, in}, cos, lower_cos) : 0;
    per_layer = shape_sum({body, xproj, shape_product({E, r}, cos, lower_cos), 1}, cos, lower_cos);
  } else if (!router_has_projection(c.router_type)) {
    per_layer = shape_product({E, d}, "the router parameters of one layer (--num-experts x --hidden-size)",
                              "lower --num-experts or --hidden-size");  // gate_w [E, d]
  } else {  // proj_w [p, d], proj_b [p], gate_w [E, p], gate_b [E]
    const int64_t proj = shape_sum({shape_product({p, d}, router, lower_router), p}, router, lower_router);
    per_layer = shape_sum({c.router_shared_proj ? 0 : proj, shape_product({E, p}, router, lower_router), E}, router,
                          lower_router);
    if (c.router_shared_proj) n.router_shared_proj = proj;  // router/proj_w, proj_b once
  }
  if (router_has_cell(c.router_type)) {
    const int64_t g = router_cell_gates(c.router_type) * p;  // w_ih, w_hh [g, p]; b_ih, b_hh [g]
    const std::string cell = "the shared router cell (--router-dim^2)";
    n.router_cell = shape_sum({shape_product({2, g, p}, cell, "lower --router-dim"), 2 * g}, cell, "lower --router-dim");
  }
  n.router = shape_sum({shape_product({L, per_layer}, "the router parameters (--num-layers x one layer's)", shape),
                        n.router_cell, n.router_shared_proj},
                       "the router parameters", shape);
  n.experts = shape_product({L, E, 3, f, d},
                            "the expert parameters (--num-layers x --num-experts x 3 x --ffn-hidden-size x --hidden-size)",
                            "lower --num-experts, --ffn-hidden-size, --hidden-size or --num-layers");
  n.total = shape_sum({n.embedding, n.head, n.attention, n.norms, n.router, n.experts},
                      "the parameter count (embedding + head + attention + norms + router + experts)", shape);
  return n;
}

namespace {
constexpr RouterType kRouterTypes[] = {RouterType::linear, RouterType::random, RouterType::mlp, RouterType::mlp_tanh,
                                       RouterType::gru,    RouterType::gru_np, RouterType::rnn,
                                       RouterType::cosine, RouterType::xmoe,   RouterType::gru_xmoe,
                                       RouterType::lstm};
const char* const kRouterTypeList = "linear, random, mlp, mlp-tanh, gru, gru-np, rnn"
                                    ", cosine, xmoe, gru-xmoe"
                                    ", lstm";
}  // namespace

RouterType parse_router_type(const std::string& s) {
  for (RouterType r : kRouterTypes)
    if (s == router_type_name(r)) return r;
  usage_fail("--moe-router-type=" + s + ": unknown router type; allowed: " + kRouterTypeList);
}

const char* router_type_name(RouterType r) {
  switch (r) {
    case RouterType::linear: return "linear";
    case RouterType::mlp: return "mlp";
    case RouterType::mlp_tanh: return "mlp-tanh";
    case RouterType::random: return "random";
    case RouterType::gru: return "gru";
    case RouterType::gru_np: return "gru-np";
    case RouterType::rnn: return "rnn";
    case RouterType::cosine: return "cosine";
    case RouterType::xmoe: return "xmoe";
    case RouterType::gru_xmoe: return "gru-xmoe";
    case RouterType::lstm: return "lstm";
  }
  return "unknown";
}

RouterInit parse_router_init(const std::string& s) {
  if (s == "normal") return RouterInit::normal;
  if (s == "torch") return RouterInit::torch;
  usage_fail("--router-init=" + s + ": unknown router init; allowed: normal, torch");
}

const char* router_init_name(RouterInit r) {
  switch (r) {
    case RouterInit::normal: return "normal";
    case RouterInit::torch: return "torch";
  }
  return "unknown";
}

bool router_has_projection(RouterType r) {
  return r != RouterType::linear && r != RouterType::random && r != RouterType::cosine && r != RouterType::xmoe;
}
bool router_has_cell(RouterType r) { return router_cell_gates(r) > 0; }
int router_cell_gates(RouterType r) {
  switch (r) {
    case RouterType::gru:
    case RouterType::gru_xmoe:
    case RouterType::gru_np: return 3;
    case RouterType::rnn: return 1;
    case RouterType::lstm: return 4;  // (i, f, g, o)
    default: return 0;
  }
}
bool router_carries_state(RouterType r) {
  return r == RouterType::gru || r == RouterType::rnn || r == RouterType::gru_xmoe || r == RouterType::lstm;
}
bool router_has_cell_memory(RouterType r) { return r == RouterType::lstm; }
bool router_has_cosine_head(RouterType r) {
  return r == RouterType::cosine || r == RouterType::xmoe || r == RouterType::gru_xmoe;
}
bool router_has_xmoe_proj(RouterType r) { return r == RouterType::xmoe || r == RouterType::gru_xmoe; }

int64_t expert_capacity(double capacity_factor, int64_t tokens, int topk, int num_experts) {
  return int64_t(std::ceil(double(tokens) * double(topk) / double(num_experts) * capacity_factor));
}

void ModelConfig::validate() const {
  require_at_least("--num-layers", num_layers, 1);
  require_at_least("--hidden-size", hidden_size, 1);
  require_at_least("--num-attention-heads", num_heads, 1);
  if (hidden_size % num_heads != 0)
    usage_fail("--hidden-size=" + std::to_string(hidden_size) + " must be a multiple of --num-attention-heads=" +
               std::to_string(num_heads));
  if (head_dim() % 2 != 0)
    usage_fail("--hidden-size=" + std::to_string(hidden_size) + " / --num-attention-heads=" +
               std::to_string(num_heads) + " gives head dim " + std::to_string(head_dim()) +
               "; it must be even (RoPE rotates pairs)");
  require_at_least("--ffn-hidden-size", ffn_hidden_size, 1);
  require_at_least("--num-experts", num_experts, 1);
  require_at_least("--moe-router-topk", topk, 1);
  if (topk > num_experts)
    usage_fail("--moe-router-topk=" + std::to_string(topk) + " must be <= --num-experts=" +
               std::to_string(num_experts));
  require_at_least("--router-dim", router_dim, 1);
  require_at_least("--xmoe-dim", xmoe_dim, 1);
  require_at_least("--vocab-size", vocab_size, 2);
  require_at_least("--seq-length", seq_length, 1);
  if (std::string(router_type_name(router_type)) == "unknown")
    usage_fail("--moe-router-type=" + std::to_string(static_cast<int>(router_type)) +
               ": unknown router type; allowed: " + kRouterTypeList);
  if (std::string(router_init_name(router_init)) == "unknown")
    usage_fail("--router-init=" + std::to_string(static_cast<int>(router_init)) +
               ": unknown router init; allowed: normal, torch");
  require_nonneg("--moe-expert-capacity-factor", capacity_factor);
  if (head_chunk_elements < 1) usage_fail("head_chunk_elements=" + std::to_string(head_chunk_elements) + " must be >= 1");
  if (router_shared_proj && !router_has_projection(router_type))
    usage_fail(std::string("--router-shared-proj needs a router with a projection; --moe-router-type=") +
               router_type_name(router_type) + " has none (allowed: mlp, mlp-tanh, gru, gru-np, rnn, lstm, gru-xmoe)");
  if (!std::isfinite(router_logit_residual))
    usage_fail("--router-logit-residual=" + shortest_text(router_logit_residual) + " must be a finite number");
  if (router_logit_residual_detach && router_logit_residual == 0)
    usage_fail("--router-logit-residual-detach needs --router-logit-residual=A with A != 0 (it is 0: no residual "
               "to detach)");
  require_nonneg("--moe-aux-loss-coeff", aux_loss_coeff);
  require_nonneg("--moe-z-loss-coeff", z_loss_coeff);
  require_positive("--init-method-std", init_std);
  require_positive("rms_eps", rms_eps);        // not a flag: fixed by MODEL.md
  require_positive("rope_theta", rope_theta);  // not a flag: fixed by MODEL.md
  // The GEMMs take 32-bit dimensions; every other matrix side is one of the
  // 32-bit fields above, the GRU cell's gate rows are 3p (the LSTM's 4p).
  if (router_cell_gates(router_type) > 1 && int64_t(router_cell_gates(router_type)) * router_dim > std::numeric_limits<int32_t>::max())
    usage_fail("--router-dim=" + std::to_string(router_dim) + ": the " +
               (router_type == RouterType::lstm ? "LSTM" : "GRU") + " cell's " +
               std::to_string(router_cell_gates(router_type)) + " x --router-dim rows must fit " +
               "32-bit matrix dimensions; give at most " +
               std::to_string(std::numeric_limits<int32_t>::max() / router_cell_gates(router_type)));
  check_float_range("--moe-expert-capacity-factor", capacity_factor);
  check_float_range("--moe-aux-loss-coeff", aux_loss_coeff);
  check_float_range("--moe-z-loss-coeff", z_loss_coeff);
  check_float_range("--init-method-std", init_std);
  check_float_range("--router-logit-residual", router_logit_residual);
  check_float_range("rms_eps", rms_eps);
  check_float_range("rope_theta", rope_theta);
  (void)model_param_counts(*this);  // every parameter count fits in 64 bits
}

}  // namespace rmoe
