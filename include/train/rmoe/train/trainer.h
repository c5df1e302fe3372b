// trainer.h — one optimizer step: micro-batches (forward, backward with
// gradient accumulation), global-norm clipping, AdamW, and evaluation.
//
// Non-finite steps. After the gradients and the loss are summed over the
// ranks, a step whose loss, aux terms or global gradient norm is not finite
// (the same verdict on every rank) is skipped: no clipping, no AdamW update
// (parameters and moments stay exactly as they were), but the step counts —
// step() advances, so the learning-rate schedule moves on and the next step
// reads the next batch (the bad batch is consumed, not retried forever), and
// --train-iters counts it, as Megatron-LM counts its skipped iterations.
// AdamW's bias correction counts only the updates applied (step - skipped).
// Such a step is reported in StepStats (skipped, skipped_in_a_row,
// skipped_steps). A non-finite step when cfg.max_skipped_steps steps in a
// row were skipped already throws rmoe::Error naming the step (counted from
// 1, as the log counts) without changing anything, so the caller saves
// nothing and the last checkpoint stays the newest. An update that makes a
// parameter or a moment non-finite from finite gradients (a learning rate
// too large for float) throws rmoe::Error at once, naming the step and the
// tensor.
//
// Router gradient by loss term (train_step(true), --log-router-grads;
// docs/MODEL.md): after each micro-step's backward, one more backward per
// loss term (CE; load balance; z-loss when its coefficient is not 0) on the
// same forward, each into its own store of the router tensors only, so the
// training gradient and update are exactly those of a step without it. The
// parts are summed over the step's micro-steps and over the ranks, as the
// training gradient is, and their norms reported with the norm of the step's
// whole router gradient (before clipping).
//
// Tested by tests/test_trainer.cpp (learns the synthetic source to near its
// entropy rate; two runs are bit-identical, experts included; accumulation
// equals one big batch; splitting the router gradient leaves training
// bit-identical; non-finite steps are skipped, counted and stop the
// run after max_skipped_steps in a row; the token count is a running sum).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rmoe/data/batch_source.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/model/model.h"
#include "rmoe/model/router_grads.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

namespace rmoe {

// The step's router gradient and its parts by loss term, as norms
// (router_grads.h): over every micro-step of the step and every rank,
// before clipping. full is the training gradient's router part.
struct RouterGradSplit {
  bool measured = false;  // train_step(true) took this step
  bool has_z = false;     // a z part: --moe-z-loss-coeff is not 0 (else z is empty)
  bool has_cell = false;  // the router has tensors shared by all layers (router/cell/*, router/proj_*)
  RouterGradNorms full, lm, lb, z;  // lm: from the CE; lb: the load-balance loss; z: the z-loss
};

struct StepStats {
  int64_t step = 0;      // 0-based index of the step just taken
  double loss = 0;       // mean CE over the global batch (nats/token)
  double lb = 0, z = 0;  // aux terms, mean over micro-batches and layers
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double seconds = 0;    // wall time of the step
  double max_load = 0;   // worst layer's max/mean expert share (1 = balanced)
  int worst_layer = 0;
  std::vector<double> layer_load;  // [L] each layer's max/mean expert share
  // --moe-expert-capacity-factor: [L] each layer's fraction of the step's
  // slots (all ranks, all micro-steps) that the capacity dropped, and their
  // mean over layers; empty / 0 when dropless.
  std::vector<double> layer_drop;
  double drop = 0;
  // Time breakdown of this rank (seconds): all-to-all inside the MoE layers,
  // gradient all-reduce, waiting for data; and all-to-all bytes sent.
  double a2a_seconds = 0, allreduce_seconds = 0, data_seconds = 0;
  int64_t a2a_bytes = 0;
  // Non-finite steps (see the file comment): this step was skipped (no
  // update); the skipped steps in a row ending with this one (0 when it was
  // applied); all skipped steps of the run so far, resumes included.
  bool skipped = false;
  int64_t skipped_in_a_row = 0, skipped_steps = 0;
  int64_t consumed_tokens = 0;  // tokens of all steps so far (this one included)
  RouterGradSplit router_grads;  // train_step(true) only
  double router_grads_seconds = 0;  // of `seconds`: the extra backwards, their reduction and norms
};

class Trainer {
 public:
  // groups: the parallel layout (null = one process). The global batch of a
  // step is the same for every layout; rank r trains on its 1/P share.
  explicit Trainer(const TrainConfig& cfg, std::shared_ptr<ProcessGroups> groups = nullptr);
  // Takes step number step(); with split_router_grads also measures
  // StepStats::router_grads (the file comment).
  StepStats train_step(bool split_router_grads = false);
  double evaluate(int64_t iters);          // mean CE on validation batches (all ranks)
  int64_t step() const { return step_; }
  // Views of everything a checkpoint holds (pointers into this trainer), and
  // the step to continue from after loading one.
  TrainState state();
  void set_step(int64_t step) { step_ = step; }
  // Continues a loaded checkpoint: its step, token count, skip counts and run id.
  void restore(const TrainState& loaded);
  // Drawn on rank 0 at construction (the same on every rank), replaced by restore().
  const std::string& run_id() const { return run_id_; }
  // What the token ids of this run's data mean (checkpoint.h, tokenizer_fingerprint_of).
  const std::string& tokenizer_fingerprint() const { return tokenizer_fingerprint_; }
  const std::string& tokenizer_description() const { return tokenizer_description_; }
  Model<float>& model() { return model_; }
  const BatchSource& source() const { return *source_; }
  const ProcessGroups& groups() const { return *groups_; }

 private:
  TrainConfig cfg_;
  std::shared_ptr<ProcessGroups> groups_;
  std::unique_ptr<BatchSource> source_;
  Model<float> model_;
  std::vector<float> m_rep_, v_rep_, m_exp_, v_exp_;  // AdamW moments, mirror the flat buffers
  std::vector<int32_t> tokens_, targets_;
  // The router gradient's parts (lm, lb, and z with a z coefficient), each a
  // store of router_param_specs; made by the first train_step(true).
  std::vector<ParamStore<float>> router_parts_;
  int64_t step_ = 0;
  int64_t consumed_tokens_ = 0;
  int64_t skipped_steps_ = 0, skipped_in_a_row_ = 0;
  std::string run_id_, tokenizer_fingerprint_, tokenizer_description_;
};

}  // namespace rmoe
