// config.h — the model's shape and router choice (one typed struct, validated
// once by validate(); the CLI in train/config.h fills it), its parameter
// count by part, and the 64-bit size arithmetic every count of a shape uses.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

namespace rmoe {

// gru_np: the gru cell with h_{l-1} = 0 in every layer (the paper's "NP").
// mlp: the paper's SMoE-MLP, G gelu(P u + b) + c; mlp_tanh: G tanh(P u + b) + c,
// what "mlp" meant before (same parameters, so old checkpoints name it).
// random: logit = G u like linear, but G keeps its random init (frozen: no
// gradient, the optimizer skips it; ParamSpec::frozen).
// cosine, xmoe, gru_xmoe: the cosine-similarity head (X-MoE): logit =
// exp(s) cos(x, e_j) with learned expert embeddings e and log inverse
// temperature s; x = u (cosine), u projected to r = xmoe_dim (xmoe), or the
// gru router's h_l projected to r (gru_xmoe).
// lstm: one LSTM cell (PyTorch LSTMCell) shared by all layers, like gru, with
// a second state c passed from layer to layer next to h.
enum class RouterType {
  linear, mlp, gru, rnn, gru_np, mlp_tanh, random,
  cosine, xmoe, gru_xmoe,
  lstm,
};

RouterType parse_router_type(const std::string& s);  // throws UsageError
const char* router_type_name(RouterType r);

// How the router's tensors (router/* and router/cell/*) are initialised.
// normal: matrices normal(0, init_std), biases 0 (like every other matrix).
// torch: PyTorch's defaults: nn.Linear weight and bias uniform in
// +-1/sqrt(fan_in), nn.GRUCell's every tensor in +-1/sqrt(p).
enum class RouterInit { normal, torch };
RouterInit parse_router_init(const std::string& s);  // throws UsageError
const char* router_init_name(RouterInit r);
// Which parts a router has (docs/MODEL.md "Parameters").
bool router_has_projection(RouterType r);  // proj_w/b and h [T, p]: all but linear, random, cosine, xmoe
bool router_has_cell(RouterType r);        // the shared router/cell/*: gru, gru_np, rnn, gru_xmoe, lstm
int router_cell_gates(RouterType r);       // cell rows per p: 3 (gru, gru_np, gru_xmoe), 1 (rnn), 4 (lstm), 0
bool router_carries_state(RouterType r);   // h passes from layer to layer: gru, rnn, gru_xmoe, lstm
bool router_has_cell_memory(RouterType r); // the LSTM's c passes from layer to layer too: lstm
// The cosine head (expert_emb [E, r], log_scale [1]) instead of gate_w/gate_b: cosine, xmoe, gru_xmoe.
bool router_has_cosine_head(RouterType r);
bool router_has_xmoe_proj(RouterType r);   // xmoe_proj [r, d] (xmoe) or [r, p] (gru_xmoe) before the cosine

// The cosine head's constants (docs/MODEL.md). logit = exp(min(s, kMaxLogScale)) cos:
// s = log(1/tau) keeps tau > 0; the clamp (CLIP's) keeps tau >= 0.01, so the
// logits stay within +-100 however far s runs.
inline constexpr double kCosineNormEps = 1e-12;             // max(||x||, eps), F.normalize's default
inline constexpr double kMaxLogScale = 4.605170185988092;   // log(100)
inline constexpr double kInitLogScale = 2.659260036932778;  // log(1/0.07): tau = 0.07, X-MoE's init

struct ModelConfig {
  int num_layers = 4;          // L
  int hidden_size = 128;       // d
  int num_heads = 4;           // H (D = d / H, must be even for RoPE)
  int num_experts = 8;         // E
  int topk = 2;                // k
  int ffn_hidden_size = 128;   // f (each expert's SwiGLU width)
  int router_dim = 128;        // p (all routers but linear, random, cosine, xmoe)
  int xmoe_dim = 16;           // r: the cosine head's width (xmoe, gru_xmoe)
  int vocab_size = 256;        // V
  int seq_length = 128;        // S
  RouterType router_type = RouterType::gru;
  RouterInit router_init = RouterInit::normal;
  bool router_detach = false;  // cut the gradient through h_{i-1} (and lstm's c_{i-1}) (ablation)
  // One projection router/proj_w [p, d], proj_b [p] for every layer instead of
  // layers/LL/router/proj_* (the paper's "S-proj"); routers with a projection only.
  bool router_shared_proj = false;
  // Logit residual (the paper's "r-A"): for layers i >= 1, before softmax and
  // top-k, logits_i += A * logits_{i-1} (layer i-1's final, residual logits);
  // 0 = off. With the detach switch the residual term carries no gradient
  // into layer i-1. Every router type.
  double router_logit_residual = 0.0;
  bool router_logit_residual_detach = false;
  bool tie_embeddings = false; // head shares the embedding matrix
  // C of --moe-expert-capacity-factor: each expert keeps at most
  // expert_capacity() token slots per micro-step over all ranks; 0 = dropless.
  double capacity_factor = 0.0;
  double aux_loss_coeff = 0.01;
  double z_loss_coeff = 0.0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  double init_std = 0.02;
  // Logits the LM head holds at once (lm_head.cpp computes them by chunks of
  // head_chunk_elements / V token rows); not an option, tests make it small.
  int64_t head_chunk_elements = int64_t(1) << 24;  // 64 MB of fp32

  int head_dim() const { return hidden_size / num_heads; }
  // The cosine head's width: xmoe_dim (xmoe, gru_xmoe), hidden_size (cosine).
  int cosine_dim() const { return router_has_xmoe_proj(router_type) ? xmoe_dim : hidden_size; }
  // Throws UsageError naming the first bad field, its value and what is
  // allowed: sizes, real values outside float's range (check_float_range),
  // and shapes whose parameter counts do not fit in 64 bits
  // (model_param_counts) or whose matrix sides do not fit the 32-bit GEMM
  // dimensions (the GRU cell's 3p rows, the LSTM's 4p).
  void validate() const;
};

// The slots one expert keeps per micro-step under a capacity factor C > 0:
// ceil(C * tokens * k / E), tokens = the micro-step's tokens over all
// data-parallel ranks (computed in double, as Megatron's capacity).
int64_t expert_capacity(double capacity_factor, int64_t tokens, int topk, int num_experts);

// The parameters of a shape by part (docs/MODEL.md's table, the tensors of
// model_param_specs in params.h), with every expert in this process.
struct ModelParamCounts {
  int64_t embedding = 0;    // embed/wte [V, d]
  int64_t head = 0;         // head [V, d]; 0 when tied
  int64_t attention = 0;    // L x wq, wk, wv, wo [d, d]
  int64_t norms = 0;        // L x attn_norm, moe_norm [d]; final_norm [d]
  int64_t router = 0;       // L x the router's own tensors + the shared cell (+ the shared projection)
  int64_t router_cell = 0;  // of which the shared cell (gru, gru-np, rnn, gru-xmoe, lstm; else 0)
  int64_t router_shared_proj = 0;  // of which the shared projection (--router-shared-proj; else 0)
  int64_t experts = 0;      // L x w1, w3 [E, f, d], w2 [E, d, f]
  int64_t total = 0;
};

// In 64-bit arithmetic; throws UsageError naming the options when a count
// does not fit (shape_product). Does not validate otherwise.
ModelParamCounts model_param_counts(const ModelConfig& c);

// 64-bit size arithmetic for the counts of a shape: the product / sum of
// non-negative counts, or UsageError "<what> = 4 x 2147483646 x ... does not
// fit in 64-bit integers; lower <advice>" (what: the count and the options
// that set it, e.g. "the attention parameters (--num-layers x 4 x
// --hidden-size^2)").
int64_t shape_product(std::initializer_list<int64_t> factors, const std::string& what, const std::string& advice);
int64_t shape_sum(std::initializer_list<int64_t> terms, const std::string& what, const std::string& advice);

// Real options are computed in 32-bit float (weights, gradients, AdamW):
// throws UsageError "<flag>=<value> is outside the range of 32-bit float ..."
// unless value is 0 or its magnitude lies in float's normal range
// [1.17549e-38, 3.40282e+38] (a smaller one flushes to 0, a larger one is inf).
void check_float_range(const char* flag, double value);

}  // namespace rmoe
