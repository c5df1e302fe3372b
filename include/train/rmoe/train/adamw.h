// adamw.h — AdamW and gradient scaling (clipping), each over one flat
// (pointer, length) buffer. The gradient norm's sum of squares is the op
// ops::sum_squares (kernels/ops.h).
//
// adamw_step, with t = step (1-based) and every operation elementwise:
//   m     = beta1 * m + (1 - beta1) * g
//   v     = beta2 * v + (1 - beta2) * g^2
//   param = param - lr * weight_decay * param             (decoupled decay)
//   param = param - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// (PyTorch's torch.optim.AdamW, foreach=False.) Elementwise, so the result is
// the same for any thread count. Call it once per range with its own weight
// decay (0 for norms and biases).

// Tested by tests/test_schedule_adamw.cpp.
#pragma once
#include <cstdint>

namespace rmoe {

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

// param, grad, m, v: [n]. m and v start at 0 and are updated in place.
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& h,
                int64_t step /*1-based*/, float lr, float weight_decay);

// x *= s.
void scale(float* x, int64_t n, float s);

}  // namespace rmoe
