// schedule.cpp — lr_at (formula in include/rmoe/train/schedule.h).
// Tested by tests/test_schedule_adamw.cpp.
#include "rmoe/train/schedule.h"

#include <cmath>
#include <numbers>

namespace rmoe {

double lr_at(const TrainConfig& cfg, int64_t step) {
  const int64_t warmup = cfg.lr_warmup_iters;
  const int64_t decay = cfg.resolved_lr_decay_iters();
  if (step < 0) step = 0;
  if (step < warmup) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= decay) return cfg.min_lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(decay - warmup);  // [0, 1)
  return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace rmoe
