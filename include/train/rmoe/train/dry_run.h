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
// (and the GPU plan, GpuPlan.*, by hand counts and the 24-layer fit in 80 GB)
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

// ---- the GPU plan: `rmoe_train --dry-run --device cuda [--dry-run-ranks P]` ----
// What one GPU would hold and send under the CUDA backend's mixed-precision
// layout (docs/ARCHITECTURE.md §7), computed on any machine, with no GPU.
// Memory per GPU (EP splits the experts; everything else is replicated):
//   fp32 master weights 4 B, bf16 copies of every weight 2 B, fp32
//   gradients 4 B, AdamW's two fp32 moments 8 B per parameter; the
//   activations one micro-batch saves for backward (bf16 where a GEMM reads
//   them, fp32 for the residual stream, norms, the router, softmax and
//   losses); the workspace (backward's fp32 scratch, one head chunk of fp32
//   logits and their gradient, cuBLAS's workspace).
// Communication per step and GPU (balanced routing): every token slot that
// leaves its rank crosses the EP group four times (dispatch and combine, in
// forward and backward) as d bf16 values; the gradients take one ring
// all-reduce in fp32 (2 (n - 1) / n of their bytes over n ranks). The time
// the links alone impose uses an assumed bandwidth, stated in the report.
struct GpuMemoryPlan {
  int64_t params = 0;        // this GPU's parameters: replicated + 1/EP of the experts
  int64_t weights_fp32 = 0;  // 4 B per parameter
  int64_t weights_bf16 = 0;  // 2 B per parameter
  int64_t grads = 0;         // 4 B per parameter
  int64_t moments = 0;       // 8 B per parameter
  int64_t activations = 0;   // one micro-batch, every layer (balanced routing)
  int64_t workspace = 0;     // backward scratch + one head chunk + cuBLAS workspace
  int64_t total = 0;
};
GpuMemoryPlan plan_gpu_memory(const TrainConfig& cfg, int ep_size);

struct GpuCommPlan {
  int64_t micro_steps = 0;        // per GPU per optimizer step
  int64_t a2a_bytes = 0;          // all-to-all bytes one GPU sends per step
  int64_t allreduce_bytes = 0;    // gradient all-reduce bytes one GPU sends per step
  double a2a_gbps = 0;            // assumed bandwidth (GB/s per GPU and direction) of the EP group's links
  double allreduce_gbps = 0;      // the same for the data-parallel all-reduce
  double a2a_seconds = 0, allreduce_seconds = 0;
};
// P ranks of gpus_per_node GPUs per node: a group within one node uses
// NVLink (kNvlinkGBps), one that spans nodes InfiniBand (kInfinibandGBps).
GpuCommPlan plan_gpu_comm(const TrainConfig& cfg, int P, int ep_size, int gpus_per_node = 8);
constexpr double kNvlinkGBps = 300.0;     // A100 NVLink 3: 12 links x 25 GB/s per direction
constexpr double kInfinibandGBps = 25.0;  // HDR 200 Gb/s, one NIC per GPU
constexpr int64_t kCublasWorkspaceBytes = int64_t(32) << 20;

// The report's lines (after format_dry_run).
std::string format_gpu_plan(const TrainConfig& cfg, int P, int ep_size);

}  // namespace rmoe
