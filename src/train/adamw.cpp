// adamw.cpp — AdamW and scale over flat buffers (formulas in
// include/rmoe/train/adamw.h). OpenMP over elements or fixed blocks; no
// reduction depends on the thread count.
// Tested by tests/test_schedule_adamw.cpp.
#include "rmoe/train/adamw.h"

#include <cmath>

#include "rmoe/core/error.h"
#include "rmoe/core/threads.h"

namespace rmoe {

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& h,
                int64_t step, float lr, float weight_decay) {
  RMOE_CHECK(step >= 1, "adamw_step: step is 1-based, got " << step);
  const float beta1 = static_cast<float>(h.beta1);
  const float beta2 = static_cast<float>(h.beta2);
  const float eps = static_cast<float>(h.eps);
  // Bias corrections in double, then folded into two float factors.
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  const float inv_bc1 = static_cast<float>(1.0 / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = mi * inv_bc1;
    const float denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
    param[i] = param[i] * decay - lr * m_hat / denom;
  }
}

void scale(float* x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace rmoe
