// adamw.h — AdamW over one flat (pointer, length) buffer, with the gradient
// clipping factor and the check of its results folded into the same pass
// (the step is memory-bound: each extra pass over the gradients or the
// state costs as much as a tenth of the update). The gradient norm's sum of
// squares is the op ops::sum_squares (kernels/ops.h).
//
// adamw_step, with t = step (1-based), g = grad_scale * grad and every
// operation elementwise:
//   m     = beta1 * m + (1 - beta1) * g
//   v     = beta2 * v + (1 - beta2) * g^2
//   param = param - lr * weight_decay * param             (decoupled decay)
//   param = param - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// (PyTorch's torch.optim.AdamW, foreach=False; grad_scale is clipping's
// clip / norm, 1 without.) Elementwise, so the result is the same for any
// thread count. Call it once per range with its own weight decay (0 for
// norms and biases).

// Tested by tests/test_schedule_adamw.cpp.
#pragma once
#include <cstdint>

namespace rmoe {

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

// param, grad, m, v: [n]. m and v start at 0 and are updated in place; grad
// is only read. Returns how many of the values it wrote (param, m and v) are
// not finite: 0 on a healthy step.
int64_t adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& h,
                   int64_t step /*1-based*/, float lr, float weight_decay, float grad_scale = 1.0f);

}  // namespace rmoe
