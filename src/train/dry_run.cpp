// dry_run.cpp — parameter counts, FLOPs and memory of a configuration
// (definitions in include/rmoe/train/dry_run.h; shapes from docs/MODEL.md).
// Tested by tests/test_dry_run.cpp.
#include "rmoe/train/dry_run.h"

#include <cstdio>
#include <sstream>

namespace rmoe {

namespace {

struct RouterCounts {
  int64_t per_layer = 0;          // parameters of one layer's router tensors
  int64_t shared_cell = 0;        // the GRU/RNN cell, shared by all layers
  int64_t matmul_per_layer = 0;   // matrix weights one token meets per layer (cell included)
  int64_t activations_per_layer = 0;  // floats kept per token per layer for backward
};

RouterCounts router_counts(const ModelConfig& m) {
  const int64_t d = m.hidden_size, E = m.num_experts, p = m.router_dim;
  RouterCounts r;
  switch (m.router_type) {
    case RouterType::linear:  // gate_w [E, d]
      r.per_layer = E * d;
      r.matmul_per_layer = E * d;
      r.activations_per_layer = 2 * E;  // logits, probs
      break;
    case RouterType::mlp:  // proj_w [p, d], proj_b [p], gate_w [E, p], gate_b [E]
      r.per_layer = p * d + p + E * p + E;
      r.matmul_per_layer = p * d + E * p;
      r.activations_per_layer = 2 * p + 2 * E;  // pre-tanh, tanh; logits, probs
      break;
    case RouterType::gru:  // + cell w_ih, w_hh [3p, p], b_ih, b_hh [3p]
      r.per_layer = p * d + p + E * p + E;
      r.shared_cell = 2 * (3 * p * p) + 2 * (3 * p);
      r.matmul_per_layer = p * d + E * p + 2 * (3 * p * p);
      r.activations_per_layer = 7 * p + 2 * E;  // u', h_{i-1} side 3p, gates r z n, h; logits, probs
      break;
    case RouterType::rnn:  // + cell w_ih, w_hh [p, p], b_ih, b_hh [p]
      r.per_layer = p * d + p + E * p + E;
      r.shared_cell = 2 * (p * p) + 2 * p;
      r.matmul_per_layer = p * d + E * p + 2 * (p * p);
      r.activations_per_layer = 2 * p + 2 * E;  // u', h; logits, probs
      break;
  }
  return r;
}

// 1234567 -> "1,234,567"
std::string with_commas(int64_t x) {
  std::string s = std::to_string(x < 0 ? -x : x), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return x < 0 ? "-" + out : out;
}

// 1.23e9 -> "1.23 G" (decimal units)
std::string human(double x, const char* unit) {
  const char* prefixes[] = {"", " K", " M", " G", " T", " P", " E"};
  int i = 0;
  while (x >= 1000.0 && i < 6) {
    x /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g%s%s", x, prefixes[i], unit);
  return buf;
}

std::string gib(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string percent(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

}  // namespace

ModelStats compute_model_stats(const TrainConfig& cfg) {
  const ModelConfig& m = cfg.model;
  const int64_t L = m.num_layers, d = m.hidden_size, H = m.num_heads, E = m.num_experts, k = m.topk,
                f = m.ffn_hidden_size, V = m.vocab_size, S = m.seq_length, B = cfg.micro_batch_size;
  const RouterCounts r = router_counts(m);

  ModelStats s;
  s.embedding_params = V * d;                 // embed/wte [V, d]
  s.head_params = m.tie_embeddings ? 0 : V * d;  // head [V, d]
  s.attention_params = L * 4 * d * d;         // wq, wk, wv, wo [d, d]
  s.norm_params = (2 * L + 1) * d;            // attn_norm, moe_norm [d] per layer; final_norm [d]
  s.router_params = L * r.per_layer + r.shared_cell;
  s.router_params_linear_equivalent = L * E * d;
  s.expert_params = L * E * 3 * f * d;        // w1, w3 [E, f, d]; w2 [E, d, f]
  s.total_params = s.embedding_params + s.head_params + s.attention_params + s.norm_params + s.router_params +
                   s.expert_params;
  s.active_params_per_token = s.total_params - s.expert_params + L * k * 3 * f * d;

  const int64_t matmul_per_token = L * (4 * d * d + 3 * k * f * d + r.matmul_per_layer) + V * d;
  s.flops_per_token = 6.0 * static_cast<double>(matmul_per_token) + 6.0 * static_cast<double>(L * S * d);

  // Activations kept per token for the backward pass, in floats:
  //   per layer: x, attn-norm out, q, k, v, attention out, x after attention,
  //              u (8 d); attention probabilities H S; router (see RouterCounts);
  //              per chosen expert: gathered input and output (2 d), W1 u, W3 u
  //              and their SwiGLU product (3 f)
  //   after the layers: final-norm in and out (2 d), logits and their gradient (2 V)
  const int64_t floats_per_token = L * (8 * d + H * S + r.activations_per_layer + k * (2 * d + 3 * f)) + 2 * d + 2 * V;
  s.activation_bytes_estimate = 4 * floats_per_token * B * S;
  s.memory_bytes_estimate = 16 * s.total_params + s.activation_bytes_estimate;
  return s;
}

std::string format_dry_run(const TrainConfig& cfg, const ModelStats& s) {
  const ModelConfig& m = cfg.model;
  std::ostringstream os;
  os << "rmoe dry run\n";
  os << "  model: L=" << m.num_layers << " d=" << m.hidden_size << " H=" << m.num_heads << " (head dim "
     << m.head_dim() << ") E=" << m.num_experts << " k=" << m.topk << " f=" << m.ffn_hidden_size
     << " V=" << m.vocab_size << " S=" << m.seq_length << "\n";
  os << "  router: " << router_type_name(m.router_type);
  if (m.router_type != RouterType::linear) os << " p=" << m.router_dim;
  if (m.router_detach) os << " (detached)";
  os << ", embeddings " << (m.tie_embeddings ? "tied" : "untied") << "\n";
  const int64_t tokens_per_step = static_cast<int64_t>(cfg.global_batch_size) * m.seq_length;
  os << "  batch: micro " << cfg.micro_batch_size << ", global " << cfg.global_batch_size << " sequences ("
     << with_commas(tokens_per_step) << " tokens), " << cfg.accumulation_steps()
     << " accumulation steps on one process\n\n";

  char line[160];
  auto row = [&](const char* name, int64_t n) {
    std::snprintf(line, sizeof line, "  %-34s %16s  %8s\n", name, with_commas(n).c_str(),
                  percent(static_cast<double>(n), static_cast<double>(s.total_params)).c_str());
    os << line;
  };
  std::snprintf(line, sizeof line, "  %-34s %16s  %8s\n", "parameters", "count", "share");
  os << line;
  row("embedding [V, d]", s.embedding_params);
  row(m.tie_embeddings ? "head (tied to embedding)" : "head [V, d]", s.head_params);
  row("attention 4 [d, d] x L", s.attention_params);
  row("norms (2L + 1) [d]", s.norm_params);
  row("router (all layers + shared cell)", s.router_params);
  row("experts 3 [E, f, d] x L", s.expert_params);
  row("total", s.total_params);
  row("active per token (k of E experts)", s.active_params_per_token);

  const int64_t extra = s.router_params - s.router_params_linear_equivalent;
  os << "\n  what the router adds over a linear router:\n";
  std::snprintf(line, sizeof line, "  %-34s %16s\n", "linear router (L [E, d])",
                with_commas(s.router_params_linear_equivalent).c_str());
  os << line;
  std::snprintf(line, sizeof line, "  %-34s %16s\n", (std::string("this router (") + router_type_name(m.router_type) + ")").c_str(),
                with_commas(s.router_params).c_str());
  os << line;
  std::snprintf(line, sizeof line, "  %-34s %16s  %8s of total\n", "difference", with_commas(extra).c_str(),
                percent(static_cast<double>(extra), static_cast<double>(s.total_params)).c_str());
  os << line;

  os << "\n  compute (6 * matmul weights per token + 6 L S d attention):\n";
  os << "    training FLOPs per token  " << human(s.flops_per_token, "FLOP") << "\n";
  os << "    training FLOPs per step   " << human(s.flops_per_token * static_cast<double>(tokens_per_step), "FLOP")
     << "\n";
  os << "\n  memory (fp32 params + grads + 2 Adam moments, activations of one micro-batch):\n";
  os << "    weights and optimizer     " << gib(16 * s.total_params) << "\n";
  os << "    activations               " << gib(s.activation_bytes_estimate) << "\n";
  os << "    total estimate            " << gib(s.memory_bytes_estimate) << "\n";
  return os.str();
}

std::string format_layout(const TrainConfig& cfg, const ModelStats& s, int P, int EP) {
  check_batch_layout(cfg, P);
  const int E = cfg.model.num_experts;
  const int64_t per_rank_params = s.total_params - s.expert_params + s.expert_params / EP;
  const int64_t weights = 16 * per_rank_params;  // fp32 value, gradient, two AdamW moments
  std::ostringstream os;
  os << "\n  layout: " << P << " ranks, expert-parallel size " << EP << " (" << E / EP << " of " << E
     << " experts per rank, each expert on " << P / EP << " rank(s)), data-parallel over all " << P << " ranks\n";
  os << "    per rank per step        " << cfg.global_batch_size / P << " sequences, "
     << cfg.global_batch_size / (P * cfg.micro_batch_size) << " micro-batches of " << cfg.micro_batch_size << "\n";
  os << "    parameters per rank      " << with_commas(per_rank_params) << "\n";
  os << "    weights and optimizer    " << gib(weights) << " per rank\n";
  os << "    activations              " << gib(s.activation_bytes_estimate) << " per rank (balanced routing)\n";
  os << "    total estimate           " << gib(weights + s.activation_bytes_estimate) << " per rank\n";
  return os.str();
}

}  // namespace rmoe
