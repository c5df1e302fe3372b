// trainer.h — one optimizer step: micro-batches (forward, backward with
// gradient accumulation), global-norm clipping, AdamW, and evaluation.
//
// Tested by tests/test_trainer.cpp (learns the synthetic source to near its
// entropy rate; two runs are bit-identical; accumulation equals one big batch).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "rmoe/data/batch_source.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/model/model.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

namespace rmoe {

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
  // Time breakdown of this rank (seconds): all-to-all inside the MoE layers,
  // gradient all-reduce, waiting for data; and all-to-all bytes sent.
  double a2a_seconds = 0, allreduce_seconds = 0, data_seconds = 0;
  int64_t a2a_bytes = 0;
};

class Trainer {
 public:
  // groups: the parallel layout (null = one process). The global batch of a
  // step is the same for every layout; rank r trains on its 1/P share.
  explicit Trainer(const TrainConfig& cfg, std::shared_ptr<ProcessGroups> groups = nullptr);
  StepStats train_step();                  // takes step number step()
  double evaluate(int64_t iters);          // mean CE on validation batches (all ranks)
  int64_t step() const { return step_; }
  // Views of everything a checkpoint holds (pointers into this trainer), and
  // the step to continue from after loading one.
  TrainState state();
  void set_step(int64_t step) { step_ = step; }
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
  int64_t step_ = 0;
};

}  // namespace rmoe
