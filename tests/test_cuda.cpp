// test_cuda.cpp — the CUDA backend against the cpu backend (same inputs, same
// pw:: formulas). Skips with a message where the build has no CUDA or the
// machine has no GPU. Cuda.EveryCudaOpHasACase (runs everywhere) fails for an
// op of the table's cuda column without a CUDA_CASE here.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "rmoe/core/rng.h"
#include "rmoe/kernels/ops.h"
#ifdef RMOE_WITH_CUDA
#include "rmoe/kernels/cuda_ops.h"
#endif

using namespace rmoe;

namespace {
// op -> the cases that check it; filled before any test runs.
std::map<std::string, std::vector<std::string>>& cuda_coverage() {
  static std::map<std::string, std::vector<std::string>> c;
  return c;
}
bool record(const char* test, std::initializer_list<const char*> ops) {
  for (const char* op : ops) cuda_coverage()[op].push_back(test);
  return true;
}
}  // namespace

// CUDA_CASE(Name, "op", ...) is TEST(Cuda, Name), recorded as checking those ops.
#define CUDA_CASE(test, ...)                                                            \
  [[maybe_unused]] static const bool cuda_##test##_recorded = record("Cuda." #test, {__VA_ARGS__}); \
  TEST(Cuda, test)

TEST(Cuda, EveryCudaOpHasACase) {
  std::set<std::string> cuda_ops;
#define RMOE_TEST_CUDA_ROW(kind, name, cuda, dev, params, args) RMOE_OP_IF_CUDA_##cuda(cuda_ops.insert(#name);)
  RMOE_OPS(RMOE_TEST_CUDA_ROW)
#undef RMOE_TEST_CUDA_ROW
  for (const std::string& op : cuda_ops)
    EXPECT_TRUE(cuda_coverage().count(op)) << op << " has cuda = yes in the op table but no CUDA_CASE here";
  for (const auto& [op, tests] : cuda_coverage())
    EXPECT_TRUE(cuda_ops.count(op)) << tests.front() << " checks " << op << ", which the cuda column does not list";
}

#ifdef RMOE_WITH_CUDA
namespace {
struct DeviceBuffer {
  float* p;
  int64_t n;
  explicit DeviceBuffer(const std::vector<float>& host) : n(int64_t(host.size())) {
    p = static_cast<float*>(cuda::device_alloc(host.size() * sizeof(float)));
    cuda::copy_to_device(p, host.data(), host.size() * sizeof(float));
  }
  ~DeviceBuffer() { cuda::device_free(p); }
  std::vector<float> get() const {
    std::vector<float> h(static_cast<size_t>(n));
    cuda::copy_to_host(h.data(), p, h.size() * sizeof(float));
    return h;
  }
  Tensor<float> view(int64_t rows, int64_t cols) const { return Tensor<float>(p, {rows, cols}, Device::cuda); }
};
std::vector<float> rnd(int64_t n, uint64_t s) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = float(random_normal(s, 1, i));
  return v;
}
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-6;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, double(std::abs(a[i] - b[i])));
    den = std::max(den, double(std::abs(b[i])));
  }
  return num / den;
}
}  // namespace
#endif

CUDA_CASE(PointwiseOpsMatchCpu, "swiglu_forward", "swiglu_backward", "gru_forward") {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  const int64_t N = 37, p = 19;
  auto a = rnd(N * p, 1), b = rnd(N * p, 2), dh = rnd(N * p, 3), gi = rnd(N * 3 * p, 4), gh = rnd(N * 3 * p, 5),
       h = rnd(N * p, 6);
  // SwiGLU forward and backward (backward accumulates onto existing values).
  std::vector<float> hc(N * p), dac = rnd(N * p, 7), dbc = rnd(N * p, 8);
  DeviceBuffer A(a), Bv(b), DH(dh), H(hc), DA(dac), DB(dbc);
  ops::swiglu_forward(Tensor<float>(hc.data(), {N, p}), Tensor<float>(a.data(), {N, p}), Tensor<float>(b.data(), {N, p}));
  ops::swiglu_forward(H.view(N, p), A.view(N, p), Bv.view(N, p));
  EXPECT_LT(max_rel(H.get(), hc), 1e-6);
  ops::swiglu_backward(Tensor<float>(dac.data(), {N, p}), Tensor<float>(dbc.data(), {N, p}),
                       Tensor<float>(dh.data(), {N, p}), Tensor<float>(a.data(), {N, p}),
                       Tensor<float>(b.data(), {N, p}));
  ops::swiglu_backward(DA.view(N, p), DB.view(N, p), DH.view(N, p), A.view(N, p), Bv.view(N, p));
  EXPECT_LT(max_rel(DA.get(), dac), 1e-6);
  EXPECT_LT(max_rel(DB.get(), dbc), 1e-6);
  // A null gradient output is not needed (ops.h): da null, db still accumulates.
  ops::swiglu_backward(Tensor<float>{}, Tensor<float>(dbc.data(), {N, p}), Tensor<float>(dh.data(), {N, p}),
                       Tensor<float>(a.data(), {N, p}), Tensor<float>(b.data(), {N, p}));
  ops::swiglu_backward(Tensor<float>(nullptr, {N, p}, Device::cuda), DB.view(N, p), DH.view(N, p), A.view(N, p),
                       Bv.view(N, p));
  EXPECT_LT(max_rel(DB.get(), dbc), 1e-6);
  // GRU cell.
  std::vector<float> hn(N * p), gates(N * 3 * p);
  DeviceBuffer GI(gi), GH(gh), HP(h), HN(hn), G(gates);
  ops::gru_forward(Tensor<float>(hn.data(), {N, p}), Tensor<float>(gates.data(), {N, 3 * p}),
                   Tensor<float>(gi.data(), {N, 3 * p}), Tensor<float>(gh.data(), {N, 3 * p}),
                   Tensor<float>(h.data(), {N, p}));
  ops::gru_forward(HN.view(N, p), G.view(N, 3 * p), GI.view(N, 3 * p), GH.view(N, 3 * p), HP.view(N, p));
  EXPECT_LT(max_rel(HN.get(), hn), 1e-6);
  EXPECT_LT(max_rel(G.get(), gates), 1e-6);
#endif
}
