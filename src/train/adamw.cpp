// adamw.cpp — AdamW over a flat buffer (formulas in include/rmoe/train/adamw.h).
// OpenMP over elements; the count of non-finite results is an integer sum,
// so nothing depends on the thread count.
// Tested by tests/test_schedule_adamw.cpp.
#include "rmoe/train/adamw.h"

#include <cfloat>
#include <cmath>

#include "rmoe/core/error.h"
#include "rmoe/core/threads.h"

namespace rmoe {

int64_t adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& h,
                   int64_t step, float lr, float weight_decay, float grad_scale) {
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
  int64_t not_finite = 0;
  // |x| <= FLT_MAX is false for +-inf and NaN (and vectorises, unlike isfinite).
#pragma omp parallel for schedule(static) reduction(+ : not_finite) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = mi * inv_bc1;
    const float denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
    const float p = param[i] * decay - lr * m_hat / denom;
    param[i] = p;
    not_finite += int64_t(!(std::fabs(p) <= FLT_MAX)) + int64_t(!(std::fabs(mi) <= FLT_MAX)) +
                  int64_t(!(std::fabs(vi) <= FLT_MAX));
  }
  return not_finite;
}

}  // namespace rmoe
