// test_schedule_adamw.cpp — lr_at (include/rmoe/train/schedule.h) at its key
// steps, and adamw_step / sum_squares (include/rmoe/train/adamw.h)
// against a plain double-precision reference written here, plus bitwise
// independence of the thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "rmoe/core/rng.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/schedule.h"

namespace rmoe {
namespace {

TrainConfig schedule_config() {
  TrainConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.lr_warmup_iters = 10;
  c.lr_decay_iters = 110;
  c.train_iters = 200;
  return c;
}

TEST(Schedule, KeySteps) {
  const TrainConfig c = schedule_config();
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.1);   // lr * 1/10
  EXPECT_DOUBLE_EQ(lr_at(c, 4), 0.5);   // lr * 5/10
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 1.0);   // warm-up ends at the peak
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1.0);  // cosine starts at the peak
  EXPECT_NEAR(lr_at(c, 60), 0.1 + 0.9 * 0.5, 1e-15);                                  // half way: cos(pi/2) = 0
  EXPECT_NEAR(lr_at(c, 35), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 4)), 1e-15);  // a quarter
  EXPECT_NEAR(lr_at(c, 109), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 99 / 100)), 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(c, 110), 0.1);  // decay reached
  EXPECT_DOUBLE_EQ(lr_at(c, 199), 0.1);  // floor until the end
  EXPECT_DOUBLE_EQ(lr_at(c, 5000), 0.1);
  for (int64_t s = 10; s < 110; ++s) EXPECT_LE(lr_at(c, s + 1), lr_at(c, s)) << s;  // non-increasing
}

TEST(Schedule, DefaultsAndEdgeCases) {
  TrainConfig c = schedule_config();
  c.lr_warmup_iters = 0;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1.0);  // no warm-up: start at the peak
  c.lr_decay_iters = -1;               // unset: decays over train_iters
  EXPECT_NEAR(lr_at(c, 100), 0.55, 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(c, 200), 0.1);
  c = schedule_config();
  c.lr_decay_iters = 5;  // decay ends inside the warm-up: min-lr right after it
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 0.1);
  c = schedule_config();
  c.min_lr = c.lr;  // constant after warm-up
  EXPECT_DOUBLE_EQ(lr_at(c, 50), 1.0);
}

std::vector<float> random_vector(int64_t n, uint64_t stream, double scale) {
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(scale * random_normal(7, stream, i));
  return x;
}

// Plain AdamW in double, one element at a time (torch.optim.AdamW's formula).
void reference_adamw(std::vector<double>& p, const std::vector<float>& g, std::vector<double>& m,
                     std::vector<double>& v, const AdamWHyper& h, int64_t t, double lr, double wd) {
  for (size_t i = 0; i < p.size(); ++i) {
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * double(g[i]) * g[i];
    const double m_hat = m[i] / (1 - std::pow(h.beta1, double(t)));
    const double v_hat = v[i] / (1 - std::pow(h.beta2, double(t)));
    p[i] -= lr * wd * p[i];
    p[i] -= lr * m_hat / (std::sqrt(v_hat) + h.eps);
  }
}

TEST(AdamW, MatchesReferenceOverSeveralSteps) {
  const int64_t n = 10007;  // not a multiple of any vector width
  const AdamWHyper h{0.9, 0.95, 1e-8};
  std::vector<float> param = random_vector(n, 1, 1.0), m(n, 0.f), v(n, 0.f);
  std::vector<double> ref_p(param.begin(), param.end()), ref_m(n, 0.0), ref_v(n, 0.0);
  for (int64_t t = 1; t <= 6; ++t) {
    std::vector<float> grad = random_vector(n, 100 + t, t == 3 ? 1e-6 : 0.1);  // one tiny-gradient step
    const double lr = 1e-2 * t, wd = 0.1;
    adamw_step(param.data(), grad.data(), m.data(), v.data(), n, h, t, float(lr), float(wd));
    reference_adamw(ref_p, grad, ref_m, ref_v, h, t, lr, wd);
    double max_err = 0;
    for (int64_t i = 0; i < n; ++i) {
      // Float rounding of param (~6e-8 |p|) and of each update (~6e-8 lr) per step.
      max_err = std::max(max_err, std::abs(param[i] - ref_p[i]) / (0.1 + std::abs(ref_p[i])));
      ASSERT_NEAR(m[i], ref_m[i], 1e-6 * std::abs(ref_m[i]) + 1e-8) << "m, step " << t << " i " << i;
      ASSERT_NEAR(v[i], ref_v[i], 1e-5 * std::abs(ref_v[i]) + 1e-20) << "v, step " << t << " i " << i;
    }
    EXPECT_LT(max_err, 1e-6) << "step " << t;
  }
}

TEST(AdamW, DecoupledWeightDecayAlone) {
  // Zero gradient: the Adam update is 0, so only param *= (1 - lr * wd) remains.
  std::vector<float> param = {1.f, -2.f, 0.5f}, grad(3, 0.f), m(3, 0.f), v(3, 0.f);
  adamw_step(param.data(), grad.data(), m.data(), v.data(), 3, AdamWHyper{}, 1, 0.1f, 0.5f);
  EXPECT_FLOAT_EQ(param[0], 0.95f);
  EXPECT_FLOAT_EQ(param[1], -1.9f);
  EXPECT_FLOAT_EQ(param[2], 0.475f);
  // First step with no decay moves every element by about lr * sign(g).
  std::vector<float> p2 = {0.f, 0.f}, g2 = {3.f, -0.01f}, m2(2, 0.f), v2(2, 0.f);
  adamw_step(p2.data(), g2.data(), m2.data(), v2.data(), 2, AdamWHyper{}, 1, 0.01f, 0.f);
  EXPECT_NEAR(p2[0], -0.01f, 1e-7);
  EXPECT_NEAR(p2[1], 0.01f, 1e-7);
}

// The gradient norm's sum of squares (ops::sum_squares over a flat buffer).
double sum_squares(const float* x, int64_t n) {
  double out = 0;
  ops::sum_squares<float>(Tensor<double>(&out, {1}), Tensor<const float>(x, {n}));
  return out;
}

TEST(AdamW, ThreadCountDoesNotChangeBits) {
  const int64_t n = 100003;
  const std::vector<float> grad = random_vector(n, 5, 0.3), start = random_vector(n, 6, 1.0);
  std::vector<std::vector<float>> results;
  std::vector<double> sums;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3, 4}) {
    omp_set_num_threads(threads);
    std::vector<float> p = start, m(n, 0.f), v(n, 0.f);
    for (int64_t t = 1; t <= 3; ++t) adamw_step(p.data(), grad.data(), m.data(), v.data(), n, AdamWHyper{}, t, 1e-3f, 0.1f);
    results.push_back(p);
    sums.push_back(sum_squares(p.data(), n));
  }
  omp_set_num_threads(saved);
  for (size_t r = 1; r < results.size(); ++r) {
    EXPECT_EQ(std::memcmp(results[r].data(), results[0].data(), n * sizeof(float)), 0);
    EXPECT_EQ(sums[r], sums[0]);  // bitwise
  }
}

TEST(SumSquares, MatchesLongDoubleAndEdgeCases) {
  EXPECT_EQ(sum_squares(nullptr, 0), 0.0);
  const float three[] = {1.f, -2.f, 3.f};
  EXPECT_EQ(sum_squares(three, 3), 14.0);
  for (int64_t n : {1, 4095, 4096, 4097, 123457}) {
    const std::vector<float> x = random_vector(n, 9, 2.0);
    long double ref = 0;
    for (float xi : x) ref += static_cast<long double>(xi) * xi;
    EXPECT_NEAR(sum_squares(x.data(), n), static_cast<double>(ref), 1e-12 * static_cast<double>(ref)) << n;
  }
}

// grad_scale (clipping's clip / norm) gives exactly the step on the scaled
// gradient; the count of non-finite results is 0 on a healthy step and counts
// every non-finite param, m and v written.
TEST(AdamW, GradScaleAndNonFiniteCount) {
  const int64_t n = 5001;
  const std::vector<float> grad = random_vector(n, 11, 1.0), start = random_vector(n, 12, 1.0);
  std::vector<float> scaled(n);
  for (int64_t i = 0; i < n; ++i) scaled[i] = grad[i] * 0.25f;
  std::vector<float> p1 = start, m1(n, 0.f), v1(n, 0.f), p2 = start, m2(n, 0.f), v2(n, 0.f);
  for (int64_t t = 1; t <= 2; ++t) {
    EXPECT_EQ(adamw_step(p1.data(), grad.data(), m1.data(), v1.data(), n, AdamWHyper{}, t, 1e-2f, 0.1f, 0.25f), 0);
    EXPECT_EQ(adamw_step(p2.data(), scaled.data(), m2.data(), v2.data(), n, AdamWHyper{}, t, 1e-2f, 0.1f), 0);
  }
  EXPECT_EQ(std::memcmp(p1.data(), p2.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(m1.data(), m2.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(v1.data(), v2.data(), n * sizeof(float)), 0);
  // A NaN gradient poisons m, v and param of its element; an infinite one
  // (v = inf) leaves a NaN param (inf / inf) and infinite m and v; a huge
  // learning rate overflows param alone (where it pushes past FLT_MAX).
  std::vector<float> g = {1.f, NAN, INFINITY, 2.f}, p = {1.f, 1.f, 1.f, 1.f}, m(4, 0.f), v(4, 0.f);
  EXPECT_EQ(adamw_step(p.data(), g.data(), m.data(), v.data(), 4, AdamWHyper{}, 1, 1e-3f, 0.f), 6);
  std::vector<float> g2 = {-1.f, 1.f, 1.f}, q = {3e38f, -3e38f, 1.f}, m3(3, 0.f), v3(3, 0.f);
  EXPECT_EQ(adamw_step(q.data(), g2.data(), m3.data(), v3.data(), 3, AdamWHyper{}, 1, 3e38f, 0.f), 2);
  EXPECT_TRUE(std::isinf(q[0]) && std::isinf(q[1]) && std::isfinite(q[2]));
}

}  // namespace
}  // namespace rmoe
