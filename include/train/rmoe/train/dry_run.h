// dry_run.h — what a configuration costs before anything is allocated:
// parameter counts by part, the router's extra parameters over a linear
// router, training FLOPs per token and a memory estimate (--dry-run), and the
// check that a run fits the machine's memory (check_memory_fits).
//
// Counts follow the parameter table of docs/MODEL.md (model_param_counts,
// model/config.h); every count is 64-bit and checked: a shape whose counts do
// not fit is a UsageError naming the options. Letters: L layers, d width, H
// heads, E experts, k top-k, f expert FFN width, p router width, V
// vocabulary, S sequence length, B micro-batch size.
// Tested by tests/test_dry_run.cpp: the parts against the parameter registry
// (model_param_specs), the activation figure against a built model's arena
// (Model<float>::activation_bytes), and the paper's 24-layer "0.91B"
// configuration, 1.069B parameters with these shapes (docs/MODEL.md), as an
// independent anchor.
#pragma once
#include <cstdint>
#include <string>

#include "rmoe/train/config.h"

namespace rmoe {

struct ModelStats {
  int64_t total_params = 0;             // every parameter, shared GRU/RNN/LSTM cell (and projection) once
  int64_t active_params_per_token = 0;  // total with k of E experts per layer
  int64_t router_params = 0;            // all router tensors (per-layer + shared cell)
  int64_t router_params_linear_equivalent = 0;  // L * E * d (what a linear router has)
  int64_t expert_params = 0;            // L * E * 3 f d
  int64_t embedding_params = 0;         // V * d (embed/wte)
  int64_t head_params = 0;              // V * d, or 0 when tied
  int64_t attention_params = 0;         // L * 4 d^2
  int64_t norm_params = 0;              // (2 L + 1) d
  // Training (forward + backward) FLOPs per token:
  //   6 * M + 6 * L * S * d
  // M = matmul weights applied to one token: L * (4 d^2 + 3 k f d + router
  // matmuls) + V d (the head, also when tied); a shared GRU/RNN/LSTM cell counts
  // once per layer because it runs at every layer (a shared projection too). 6 = 2 (multiply-add) * 3
  // (forward, input grad, weight grad). 6 L S d is causal attention:
  // q k^T and a v are 2 * 2 S d per token per layer at full S, halved by the
  // causal mask, times 3 for backward. Embedding lookup, norms, softmax and
  // pointwise ops are not counted.
  double flops_per_token = 0;
  // Memory of one process training in one process (format_layout splits the
  // experts over EP ranks):
  //   16 bytes per parameter (fp32 value, gradient, two AdamW moments)
  //   + activation_bytes_estimate + index_bytes_estimate.
  int64_t memory_bytes_estimate = 0;
  // The model's activation arena for one micro-batch of B sequences, exactly
  // Model<float>(cfg.model, B).activation_bytes(): what forward keeps for
  // backward and backward's scratch (the views of Model::carve, each rounded
  // up to 16 elements).
  int64_t activation_bytes_estimate = 0;
  // The model's other buffers for one micro-batch: routing indices (int32),
  // expert offsets (int64) and the aux-loss statistics (double, with their
  // host copy).
  int64_t index_bytes_estimate = 0;
};

// Throws UsageError naming the options when a count does not fit in 64 bits,
// or when the token slots of a micro-batch (B x S x k) exceed the model's
// 32-bit indices (2^31 - 1).
ModelStats compute_model_stats(const TrainConfig& cfg);

// A readable multi-line report: the shape, a table of parameters by part, what
// the router adds over a linear router, FLOPs per token and per step, memory.
std::string format_dry_run(const TrainConfig& cfg, const ModelStats& stats);

// The layout on P ranks with expert-parallel size EP (already validated):
// experts and sequences per rank, accumulation steps, and per-rank memory
// (replicated weights and optimizer + 1/EP of the experts', plus the
// micro-batch's activations). Throws UsageError when the global batch cannot
// be split over P ranks in micro-batches.
std::string format_layout(const TrainConfig& cfg, const ModelStats& stats, int P, int EP);

// The bytes one process of `use` needs, its experts split over ep_size ranks.
struct MemoryNeed {
  int64_t weights = 0;      // parameters (+ gradients, + moments when training)
  int64_t activations = 0;  // the activation arena
  int64_t indices = 0;      // routing indices and statistics
  int64_t total = 0;
};
MemoryNeed memory_need(const TrainConfig& cfg, MemoryUse use = MemoryUse::training, int ep_size = 1);

// The memory this process may still use, in bytes: /proc/meminfo's
// MemAvailable (else the physical memory, sysconf(_SC_PHYS_PAGES) x page
// size), lowered to what the cgroup's memory.max leaves when one is set;
// -1 when none of them can be read.
int64_t available_memory_bytes();

// check_memory_fits (config.h) against `available` bytes (< 0: no check).
void check_memory_fits_in(int64_t available, const TrainConfig& cfg, int ranks_on_node, int ep_size, MemoryUse use);

}  // namespace rmoe
