// schedule.h — the learning-rate schedule: linear warm-up, cosine decay, floor.
//
// With W = lr-warmup-iters, D = lr-decay-iters (train-iters when unset) and the
// step counted from 0:
//   step <  W        : lr * (step + 1) / W                 (reaches lr at step W-1)
//   W <= step < D    : min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / (D - W))) / 2
//   step >= max(W, D): min_lr
// (D <= W is allowed: the rate drops to min-lr right after the warm-up.)
// Tested by tests/test_schedule_adamw.cpp.
#pragma once
#include <cstdint>

#include "rmoe/train/config.h"

namespace rmoe {

double lr_at(const TrainConfig& cfg, int64_t step);

}  // namespace rmoe
