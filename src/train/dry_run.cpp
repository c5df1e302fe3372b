// dry_run.cpp — parameter counts, FLOPs and memory of a configuration, and
// the memory check (definitions in include/rmoe/train/dry_run.h; shapes from
// docs/MODEL.md; the arena from src/model/model.cpp's Model::carve).
// Tested by tests/test_dry_run.cpp.
#include "rmoe/train/dry_run.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "rmoe/core/error.h"
#include "rmoe/core/format.h"  // shortest_text
#include "rmoe/kernels/flash_attention.h"  // the attention backward scratch
#include "rmoe/model/model.h"               // the head chunk

namespace rmoe {

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// Matrix weights one token meets per layer in the router (cell included), and
// the router's own per-layer parameters; in double (FLOPs only).
double router_matmul_per_layer(const ModelConfig& m) {
  const double d = m.hidden_size, E = m.num_experts, p = m.router_dim, r = m.xmoe_dim;
  switch (m.router_type) {
    case RouterType::linear:
    case RouterType::random: return E * d;                            // gate_w [E, d]
    case RouterType::mlp:
    case RouterType::mlp_tanh: return p * d + E * p;                  // proj_w [p, d], gate_w [E, p]
    case RouterType::gru:
    case RouterType::gru_np: return p * d + E * p + 2 * (3 * p * p);  // + cell w_ih, w_hh [3p, p]
    case RouterType::rnn: return p * d + E * p + 2 * (p * p);         // + cell w_ih, w_hh [p, p]
    // The cosine head: the cosines with the normalised expert_emb [E, r]
    // (r = d for cosine); the row norms are O(r) per token, not counted.
    case RouterType::cosine: return E * d;                                     // expert_emb [E, d]
    case RouterType::xmoe: return r * d + E * r;                               // xmoe_proj [r, d], expert_emb [E, r]
    case RouterType::gru_xmoe: return p * d + 2 * (3 * p * p) + r * p + E * r;  // gru's, xmoe_proj [r, p], expert_emb
    case RouterType::lstm: return p * d + E * p + 2 * (4 * p * p);    // + cell w_ih, w_hh [4p, p]
  }
  return 0;
}

// Sums the views Model::carve takes from its arena, each rounded up to 16
// elements as Arena::take does, in 64-bit checked arithmetic.
class ArenaCount {
 public:
  explicit ArenaCount(std::string what) : what_(std::move(what)) {}
  void take(std::initializer_list<int64_t> dims) { take_n(1, dims); }
  void take_n(int64_t count, std::initializer_list<int64_t> dims) {  // `count` views of that shape
    const int64_t n = shape_product(dims, what_, kAdvice);
    add(shape_product({count, shape_sum({n, 15}, what_, kAdvice) / 16 * 16}, what_, kAdvice));
  }
  void add_count(const ArenaCount& other, int64_t times) { add(shape_product({times, other.elements_}, what_, kAdvice)); }
  int64_t elements() const { return elements_; }

  static constexpr const char* kAdvice = "lower --micro-batch-size or --seq-length";

 private:
  void add(int64_t n) { elements_ = shape_sum({elements_, n}, what_, kAdvice); }
  std::string what_;
  int64_t elements_ = 0;
};

// Elements of Model<T>(m, B)'s arena: the views of Model::carve
// (src/model/model.cpp), grouped by shape as there.
int64_t arena_elements(const ModelConfig& m, int64_t B) {
  const int64_t S = m.seq_length, d = m.hidden_size, H = m.num_heads, E = m.num_experts, K = m.topk,
                p = m.router_dim, V = m.vocab_size, L = m.num_layers;
  const int64_t Tm = B * S, Tk = Tm * K;  // checked by compute_model_stats: Tk < 2^31
  const int64_t g = router_cell_gates(m.router_type) * p;  // cell gate rows
  const bool has_h = router_has_projection(m.router_type);
  const bool has_cell = router_has_cell(m.router_type);
  const bool has_cos = router_has_cosine_head(m.router_type), has_xproj = router_has_xmoe_proj(m.router_type);
  const int64_t r = m.cosine_dim();  // the cosine head's width
  const bool has_c = router_has_cell_memory(m.router_type);
  const std::string what = "the activations of one micro-batch (--micro-batch-size x --seq-length tokens x the widths)";
  ArenaCount layer(what);
  layer.take_n(9, {Tm, d});  // x_in, a, q, k, v, o, x_mid, u, moe_out
  layer.take_n(3, {Tm});     // rstd1, rstd2, lse
  layer.take({B, H, S});     // lse_att
  if (has_h) layer.take_n(2, {Tm, p});     // up, h
  if (has_cell) layer.take_n(3, {Tm, g});  // gi, gh, gates
  if (has_c) layer.take({Tm, p});          // c (lstm)
  layer.take_n(2, {Tm, E});  // logits, probs
  if (has_xproj) layer.take({Tm, r});  // xz
  if (has_cos) {
    layer.take({Tm, r});  // zn
    layer.take({Tm});     // znorm
    layer.take({E, r});   // en
    layer.take({E});      // enorm
  }
  layer.take({Tm, K});       // gate
  layer.take_n(2, {Tk, d});  // xs, ys
  ArenaCount all(what);
  all.add_count(layer, L);
  all.take_n(2, {Tm, d});    // x_final, xf
  all.take_n(2, {Tm});       // rstd_f, losses
  const int64_t Vc = Model<float>::head_chunk_rows_for(m, Tm);
  all.take({Vc, V});         // logits: one head chunk
  all.take({Tm, has_h ? p : 1});  // h0
  // backward scratch
  all.take_n(8, {Tm, d});    // dx, da, dq, dk, dv, d_o, du, dxf
  all.take({flash::cpu_scratch_elements(S, flash::kCpuScratchWorkers)});  // att
  all.take({Tm, E});         // dlogits_r
  if (m.router_logit_residual != 0) all.take({Tm, E});  // dlogits_res
  all.take({Tm, K});         // dgate
  all.take({E});             // dprobs_extra
  if (has_h) all.take_n(3, {Tm, p});     // dh, dh_prev, dup
  if (has_cell) all.take_n(2, {Tm, g});  // dgi, dgh
  if (has_cos) {
    all.take({Tm, E});                   // dcos
    all.take({Tm, r});                   // dzn
    if (has_xproj) all.take({Tm, r});    // dz
    all.take({E, r});                    // den
  }
  if (has_c) all.take_n(2, {Tm, p});     // dc, dc_prev (lstm)
  all.take_n(2, {Tk, d});    // dxs, dys
  all.take({Vc, V});         // dlogits
  return all.elements();
}

// Bytes of the model's other buffers (Model::carve_indices): int32 routing
// indices, int64 expert offsets, double statistics and their host copy, and
// with a capacity this rank's slot keys (every rank's keys, P times as many,
// are gathered per layer on top).
int64_t index_bytes(const ModelConfig& m, int64_t B) {
  const int64_t Tm = B * m.seq_length, K = m.topk, E = m.num_experts, L = m.num_layers;
  const std::string what = "the routing indices of one micro-batch";
  const int64_t ints = shape_sum({shape_product({4 * L + 1, Tm, K}, what, ArenaCount::kAdvice), 2 * Tm}, what,
                                 ArenaCount::kAdvice);
  const int64_t keys = m.capacity_factor > 0 ? shape_product({16, Tm, K}, what, ArenaCount::kAdvice) : 0;
  return shape_sum({shape_product({4, ints}, what, ArenaCount::kAdvice), 8 * L * (E + 1), 16 * (L * (2 * E + 2) + 1),
                    keys},
                   what, ArenaCount::kAdvice);
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

// For messages: "3.5 MiB", "812.0 GiB", "2.2 PiB" (MiB at least, EiB at most).
std::string size_text(double bytes) {
  const char* units[] = {"MiB", "GiB", "TiB", "PiB", "EiB"};
  double x = bytes / (1024.0 * 1024.0);
  int i = 0;
  while (x >= 1024.0 && i < 4) {
    x /= 1024.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s", x, units[i]);
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
  const int64_t L = m.num_layers, d = m.hidden_size, E = m.num_experts, k = m.topk, f = m.ffn_hidden_size,
                V = m.vocab_size, S = m.seq_length, B = cfg.micro_batch_size;
  // Token slots of a micro-batch are numbered with int32 (slot_token,
  // slot_of) and token counts are int: B S k must fit.
  const int64_t tokens = B * S;  // < 2^62: both are 32-bit
  if (tokens > kInt32Max || tokens * k > kInt32Max)
    usage_fail("--micro-batch-size=" + std::to_string(B) + " x --seq-length=" + std::to_string(S) +
               " x --moe-router-topk=" + std::to_string(k) + " = " + std::to_string(tokens) + " x " +
               std::to_string(k) + " token slots in a micro-batch, more than the model's 32-bit indices hold (" +
               std::to_string(kInt32Max) + "); lower --micro-batch-size or --seq-length");
  const ModelParamCounts n = model_param_counts(m);  // checked: UsageError naming the options

  ModelStats s;
  s.embedding_params = n.embedding;
  s.head_params = n.head;
  s.attention_params = n.attention;
  s.norm_params = n.norms;
  s.router_params = n.router;
  s.expert_params = n.experts;
  s.total_params = n.total;
  s.router_params_linear_equivalent =
      shape_product({L, E, d}, "a linear router's parameters (--num-layers x --num-experts x --hidden-size)",
                    "lower --num-experts or --hidden-size");
  // k <= E, so the active experts are at most the experts.
  s.active_params_per_token = s.total_params - s.expert_params + s.expert_params / E * k;

  const double matmul_per_token = double(L) * (4.0 * double(d) * double(d) + 3.0 * double(k) * double(f) * double(d) +
                                               router_matmul_per_layer(m)) +
                                  double(V) * double(d);
  s.flops_per_token = 6.0 * matmul_per_token + 6.0 * double(L) * double(S) * double(d);

  s.activation_bytes_estimate =
      shape_product({4, arena_elements(m, B)}, "the activation bytes of one micro-batch", ArenaCount::kAdvice);
  s.index_bytes_estimate = index_bytes(m, B);
  const std::string mem = "the memory estimate in bytes (16 per parameter of --num-layers, --hidden-size, "
                          "--num-experts, --ffn-hidden-size, --vocab-size; + activations)";
  const std::string lower = "lower --hidden-size, --ffn-hidden-size, --num-experts, --num-layers or --vocab-size";
  s.memory_bytes_estimate = shape_sum(
      {shape_product({16, s.total_params}, mem, lower), s.activation_bytes_estimate, s.index_bytes_estimate}, mem,
      lower);
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
  if (router_has_projection(m.router_type)) os << " p=" << m.router_dim;
  if (router_has_xmoe_proj(m.router_type)) os << " r=" << m.xmoe_dim;
  if (m.router_type == RouterType::random) os << " (frozen)";
  if (m.router_detach) os << " (detached)";
  if (m.router_shared_proj) os << " (shared projection)";
  if (m.router_logit_residual != 0)
    os << " (logit residual " << shortest_text(m.router_logit_residual)
       << (m.router_logit_residual_detach ? ", detached)" : ")");
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
  os << "\n  memory (fp32 params + grads + 2 Adam moments; the model's buffers for one micro-batch):\n";
  os << "    weights and optimizer     " << gib(s.memory_bytes_estimate - s.activation_bytes_estimate -
                                              s.index_bytes_estimate) << "\n";
  os << "    activations (arena)       " << gib(s.activation_bytes_estimate) << "\n";
  os << "    routing indices, stats    " << gib(s.index_bytes_estimate) << "\n";
  os << "    total estimate            " << gib(s.memory_bytes_estimate) << "\n";
  return os.str();
}

std::string format_layout(const TrainConfig& cfg, const ModelStats& s, int P, int EP) {
  check_batch_layout(cfg, P);
  const int E = cfg.model.num_experts;
  const int64_t per_rank_params = s.total_params - s.expert_params + s.expert_params / EP;
  const int64_t weights = 16 * per_rank_params;  // fp32 value, gradient, two AdamW moments (<= the checked total)
  const int64_t buffers = s.activation_bytes_estimate + s.index_bytes_estimate;
  std::ostringstream os;
  os << "\n  layout: " << P << " ranks, expert-parallel size " << EP << " (" << E / EP << " of " << E
     << " experts per rank, each expert on " << P / EP << " rank(s)), data-parallel over all " << P << " ranks\n";
  os << "    per rank per step        " << cfg.global_batch_size / P << " sequences, "
     << cfg.global_batch_size / (P * cfg.micro_batch_size) << " micro-batches of " << cfg.micro_batch_size << "\n";
  os << "    parameters per rank      " << with_commas(per_rank_params) << "\n";
  os << "    weights and optimizer    " << gib(weights) << " per rank\n";
  os << "    activations, indices     " << gib(buffers) << " per rank (balanced routing)\n";
  os << "    total estimate           " << gib(weights + buffers) << " per rank\n";
  return os.str();
}

// ---- the GPU plan ------------------------------------------------------------
GpuMemoryPlan plan_gpu_memory(const TrainConfig& cfg, int ep_size) {
  const ModelStats s = compute_model_stats(cfg);
  const ModelConfig& m = cfg.model;
  const double d = m.hidden_size, H = m.num_heads, E = m.num_experts, k = m.topk, f = m.ffn_hidden_size,
               p = router_has_projection(m.router_type) ? m.router_dim : 0, V = m.vocab_size, L = m.num_layers,
               g = router_cell_gates(m.router_type) * double(m.router_dim),
               c = router_has_cell_memory(m.router_type) ? m.router_dim : 0,
               r = router_has_cosine_head(m.router_type) ? m.cosine_dim() : 0,
               T = double(cfg.micro_batch_size) * m.seq_length;
  GpuMemoryPlan g_plan;
  g_plan.params = s.total_params - s.expert_params + s.expert_params / std::max(1, ep_size);
  g_plan.weights_fp32 = 4 * g_plan.params;
  g_plan.weights_bf16 = 2 * g_plan.params;
  g_plan.grads = 4 * g_plan.params;
  g_plan.moments = 8 * g_plan.params;
  // Saved for backward, bytes per token and layer: fp32 x_in, x_mid, u (the
  // residual stream, the router's input), the norms' rstd; bf16 a, q, k, v, o
  // (GEMM inputs); fp32 attention lse [H]; the fp32 router (up, h, the
  // cell's gi, gh, gates, lstm's c, the cosine head's [r] rows, logits and
  // probs [E], gates [k], lse); bf16 token slots xs, ys [k, d] and the
  // experts' a, b, h [k, f]; int32 routing indices (idx, slot_of,
  // slot_token, keep).
  const double per_token_layer = 4 * (3 * d + 2) + 2 * 5 * d + 4 * H + 4 * (2 * p + 3 * g + c + 3 * r + 2 * E + k + 1) +
                                 2 * (2 * k * d + 3 * k * f) + 4 * 4 * k;
  // Per micro-batch: fp32 x_final, bf16 xf, the head's rstd and losses.
  const double per_token = L * per_token_layer + 4 * d + 2 * d + 8;
  g_plan.activations = int64_t(T * per_token);
  // Backward's fp32 scratch per token (dx, da, dq, dk, dv, d_o, du, dxf [d];
  // dxs, dys [k, d]; the experts' two [k, f]; the router's), one head chunk
  // of fp32 logits and their gradient, and cuBLAS's workspace.
  const double chunk = double(Model<float>::head_chunk_rows_for(m, int64_t(T)));
  const double scratch_per_token = 4 * (8 * d + 2 * k * d + 2 * k * f + 3 * p + 2 * g + 2 * c + 2 * E + k);
  g_plan.workspace = int64_t(T * scratch_per_token + 2 * 4 * chunk * V) + kCublasWorkspaceBytes;
  g_plan.total = g_plan.weights_fp32 + g_plan.weights_bf16 + g_plan.grads + g_plan.moments + g_plan.activations +
                 g_plan.workspace;
  return g_plan;
}

GpuCommPlan plan_gpu_comm(const TrainConfig& cfg, int P, int ep_size, int gpus_per_node) {
  check_batch_layout(cfg, P);
  const ModelStats s = compute_model_stats(cfg);
  const ModelConfig& m = cfg.model;
  const int EP = std::max(1, ep_size);
  GpuCommPlan c;
  c.micro_steps = cfg.global_batch_size / (int64_t(P) * cfg.micro_batch_size);
  // Slots leaving their rank per micro-step and layer (balanced routing: the
  // (EP - 1) / EP of them owned elsewhere), d bf16 values each, four crossings.
  const double slots = double(cfg.micro_batch_size) * m.seq_length * m.topk;
  const double per_layer = 4.0 * slots * (double(EP - 1) / EP) * m.hidden_size * 2.0;
  c.a2a_bytes = int64_t(per_layer * m.num_layers * double(c.micro_steps));
  // fp32 gradients: the replicated ones over all P ranks, this GPU's experts over its P / EP replicas.
  const double replicated = double(s.total_params - s.expert_params), experts = double(s.expert_params) / EP;
  auto ring = [](double bytes, int n) { return n > 1 ? 2.0 * (n - 1) / n * bytes : 0.0; };
  c.allreduce_bytes = int64_t(ring(4 * replicated, P) + ring(4 * experts, P / EP));
  c.a2a_gbps = EP <= gpus_per_node ? kNvlinkGBps : kInfinibandGBps;
  c.allreduce_gbps = P <= gpus_per_node ? kNvlinkGBps : kInfinibandGBps;
  c.a2a_seconds = double(c.a2a_bytes) / (c.a2a_gbps * 1e9);
  c.allreduce_seconds = double(c.allreduce_bytes) / (c.allreduce_gbps * 1e9);
  return c;
}

std::string format_gpu_plan(const TrainConfig& cfg, int P, int ep_size) {
  const GpuMemoryPlan g = plan_gpu_memory(cfg, ep_size);
  const GpuCommPlan c = plan_gpu_comm(cfg, P, ep_size);
  std::ostringstream os;
  char line[200];
  os << "\n  per GPU (--device cuda plan: " << P << " GPU(s), expert-parallel size " << ep_size
     << ", micro-batch " << cfg.micro_batch_size << " x " << cfg.model.seq_length << " tokens):\n";
  auto row = [&](const char* what, int64_t bytes) {
    std::snprintf(line, sizeof line, "    %-40s %12s\n", what, gib(bytes).c_str());
    os << line;
  };
  row("fp32 master weights", g.weights_fp32);
  row("bf16 weight copies", g.weights_bf16);
  row("fp32 gradients", g.grads);
  row("AdamW moments (fp32 m, v)", g.moments);
  row("activations (one micro-batch)", g.activations);
  row("workspace (scratch, head chunk, cuBLAS)", g.workspace);
  row("total", g.total);
  for (const int gpu_gib : {40, 80}) {  // + 1 GiB for the CUDA context and the allocator's slack
    std::snprintf(line, sizeof line, "    fits a %d GB GPU (+1 GiB context): %s\n", gpu_gib,
                  g.total + (int64_t(1) << 30) <= (int64_t(gpu_gib) << 30)
                      ? "yes"
                      : "no (lower --micro-batch-size or --seq-length, or raise --expert-parallel-size)");
    os << line;
  }
  std::snprintf(line, sizeof line, "    all-to-all per step                      %12s sent per GPU (%ld micro-steps x %d layers, balanced routing)\n",
                size_text(double(c.a2a_bytes)).c_str(), long(c.micro_steps), cfg.model.num_layers);
  os << line;
  std::snprintf(line, sizeof line, "    gradient all-reduce per step             %12s sent per GPU (fp32 ring)\n",
                size_text(double(c.allreduce_bytes)).c_str());
  os << line;
  std::snprintf(line, sizeof line,
                "    step time the links impose               %.3f s all-to-all at %.0f GB/s + %.3f s all-reduce at %.0f GB/s\n",
                c.a2a_seconds, c.a2a_gbps, c.allreduce_seconds, c.allreduce_gbps);
  os << line;
  // For scale: the step's compute on one GPU at a stated MFU of the bf16 peak.
  const double step_flops = compute_model_stats(cfg).flops_per_token * double(cfg.global_batch_size) *
                            cfg.model.seq_length / P;
  std::snprintf(line, sizeof line,
                "    compute per step and GPU                 %.3f s at 35%% of an A100's 312 TFLOP/s bf16 (%s)\n",
                step_flops / (0.35 * 312e12), human(step_flops, "FLOP").c_str());
  os << line;
  os << "    (assumed: NVLink " << kNvlinkGBps << " GB/s per GPU and direction within a node of 8, InfiniBand "
     << kInfinibandGBps << " GB/s per GPU between nodes; no overlap with compute)\n";
  os << "  the CUDA backend cannot train yet (docs/ARCHITECTURE.md §7): this is its plan, not a measurement\n";
  return os.str();
}

MemoryNeed memory_need(const TrainConfig& cfg, MemoryUse use, int ep_size) {
  TrainConfig c = cfg;
  if (use == MemoryUse::generation) c.micro_batch_size = 1;  // one sequence at a time
  const ModelStats s = compute_model_stats(c);
  const int64_t ep = std::max(1, ep_size);
  const int64_t params = s.total_params - s.expert_params + s.expert_params / ep;
  MemoryNeed n;
  n.weights = (use == MemoryUse::training ? 16 : 8) * params;  // <= 16 x total: checked by compute_model_stats
  n.activations = s.activation_bytes_estimate;
  n.indices = s.index_bytes_estimate;
  n.total = n.weights + n.activations + n.indices;  // <= memory_bytes_estimate
  return n;
}

namespace {

// The number in the first line of `path` ("max" and unreadable: -1).
int64_t read_number_file(const std::string& path) {
  std::ifstream in(path);
  long long x = -1;
  if (!(in >> x)) return -1;
  return x;
}

// The value of "key N" (or "key: N kB" with scale 1024) in a stats file; -1 if absent.
int64_t read_keyed(const std::string& path, const std::string& key, int64_t scale) {
  std::ifstream in(path);
  std::string k;
  long long v = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (ls >> k >> v && (k == key || k == key + ":")) return int64_t(v) * scale;
  }
  return -1;
}

// This process's cgroup v2 directory ("0::/path" in /proc/self/cgroup).
std::string cgroup2_dir() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  return "/sys/fs/cgroup";
}

}  // namespace

int64_t available_memory_bytes() {
  int64_t avail = read_keyed("/proc/meminfo", "MemAvailable", 1024);
  if (avail < 0) {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) avail = int64_t(pages) * int64_t(page);
  }
  // A cgroup limit (a container, a Slurm job) lowers it: the limit minus what
  // the group's processes hold (anonymous memory; the page cache is reclaimed).
  constexpr int64_t kUnlimited = int64_t(1) << 60;
  auto lower_to = [&](int64_t limit, int64_t used) {
    if (limit <= 0 || limit >= kUnlimited) return;
    const int64_t left = std::max<int64_t>(0, limit - std::max<int64_t>(0, used));
    avail = avail < 0 ? left : std::min(avail, left);
  };
  for (const std::string& dir : {cgroup2_dir(), std::string("/sys/fs/cgroup")}) {  // v2
    const int64_t limit = read_number_file(dir + "/memory.max");
    if (limit > 0) {
      int64_t used = read_keyed(dir + "/memory.stat", "anon", 1);
      if (used < 0) used = read_number_file(dir + "/memory.current");
      lower_to(limit, used);
      break;
    }
  }
  const std::string v1 = "/sys/fs/cgroup/memory";  // v1
  const int64_t limit1 = read_number_file(v1 + "/memory.limit_in_bytes");
  if (limit1 > 0) {
    int64_t used = read_keyed(v1 + "/memory.stat", "total_rss", 1);
    if (used < 0) used = read_number_file(v1 + "/memory.usage_in_bytes");
    lower_to(limit1, used);
  }
  return avail;
}

void check_memory_fits(const TrainConfig& cfg, int ranks_on_node, int ep_size, MemoryUse use) {
  check_memory_fits_in(available_memory_bytes(), cfg, ranks_on_node, ep_size, use);
}

void check_memory_fits_in(int64_t available, const TrainConfig& cfg, int ranks_on_node, int ep_size, MemoryUse use) {
  const MemoryNeed need = memory_need(cfg, use, ep_size);  // compute_model_stats' checks first
  if (available < 0) return;
  const int ranks = std::max(1, ranks_on_node);
  const double node = double(need.total) * double(ranks);
  if (node <= double(available)) return;
  const ModelConfig& m = cfg.model;
  const int64_t ep = std::max(1, ep_size);
  const ModelStats s = compute_model_stats(cfg);
  const int64_t params = s.total_params - s.expert_params + s.expert_params / ep;
  std::string msg = "this run needs about " + size_text(double(need.total)) + (ranks > 1 ? " per process" : "") + " (";
  msg += std::string(use == MemoryUse::training ? "weights, gradients and AdamW moments " : "weights and gradients ") +
         size_text(double(need.weights)) + " for " + with_commas(params) + " parameters" +
         (ep > 1 ? " (1/" + std::to_string(ep) + " of the experts)" : "") +
         ": --num-layers=" + std::to_string(m.num_layers) + ", --hidden-size=" + std::to_string(m.hidden_size) +
         ", --num-experts=" + std::to_string(m.num_experts) + ", --ffn-hidden-size=" + std::to_string(m.ffn_hidden_size) +
         ", --vocab-size=" + std::to_string(m.vocab_size) + "; ";
  const std::string batch = use == MemoryUse::generation ? std::string("one sequence of ")
                                                         : "--micro-batch-size=" + std::to_string(cfg.micro_batch_size) + " x ";
  msg += "activations " + size_text(double(need.activations + need.indices)) + " for " + batch + "--seq-length=" +
         std::to_string(m.seq_length) + " tokens in " + std::to_string(m.num_layers) + " layers)";
  if (ranks > 1) msg += " x " + std::to_string(ranks) + " processes on this node = " + size_text(node);
  msg += ", but the machine has " + size_text(double(available)) + " available; ";
  const bool activations_larger = need.activations + need.indices >= need.weights;
  if (use == MemoryUse::generation) {
    msg += "this checkpoint's model needs a machine with more memory";
  } else if (activations_larger) {
    msg += "lower --micro-batch-size or --seq-length";
  } else if (use == MemoryUse::evaluation) {
    msg += "this checkpoint's model needs more memory: run on more nodes (the experts are split over "
           "--expert-parallel-size ranks)";
  } else {
    msg += "lower --num-experts, --ffn-hidden-size, --hidden-size, --num-layers or --vocab-size, or split the experts "
           "over ranks on more nodes (--expert-parallel-size)";
  }
  if (ranks > 1 && use != MemoryUse::generation) msg += ", or start fewer processes per node";
  usage_fail(msg);
}

}  // namespace rmoe
