// test_cuda.cpp — the CUDA backend against the cpu backend (same inputs, same
// pw:: formulas). Skips with a message where the build has no CUDA or the
// machine has no GPU. Cuda.EveryCudaOpHasACase (runs everywhere) fails for an
// op of the table's cuda column without a CUDA_CASE here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "rmoe/core/rng.h"
#include "rmoe/kernels/ops.h"
#ifdef RMOE_WITH_CUDA
#include "rmoe/core/error.h"
#include "rmoe/kernels/bf16.h"
#include "rmoe/kernels/cuda_ops.h"
#include "rmoe/kernels/flash_attention.h"
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

// ---- GEMMs and bf16 (cuda_gemm.cu) -----------------------------------------
// Not ops of the table, so plain TESTs (Cuda.EveryCudaOpHasACase counts the
// table's cuda column only). The reference is a row-major product in double
// on the host; the tolerance, 1e-5 of sum_l |a b| (+ |beta c|), is above
// fp32 accumulation's error and far below TF32's (~5e-4): a GEMM that
// silently ran in TF32 fails.
#ifdef RMOE_WITH_CUDA
namespace {
// n elements of T in device memory.
template <class T>
struct DeviceArray {
  T* p;
  size_t n;
  explicit DeviceArray(size_t n_) : p(static_cast<T*>(cuda::device_alloc(n_ * sizeof(T)))), n(n_) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    cuda::copy_to_device(p, host.data(), n * sizeof(T));
  }
  ~DeviceArray() { cuda::device_free(p); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    cuda::copy_to_host(h.data(), p, n * sizeof(T));
    return h;
  }
};

// Expects C (row-major [M,N], ldc, padding = guard) to equal
// alpha op(A) op(B) + beta C0 within the tolerance above.
void expect_gemm(const char* what, bool tA, bool tB, int64_t M, int64_t N, int64_t K, double alpha,
                 const std::vector<double>& A, int64_t lda, const std::vector<double>& B, int64_t ldb, double beta,
                 const std::vector<float>& C0, const std::vector<float>& C, int64_t ldc, float guard) {
  int bad = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = C[size_t(i * ldc + j)];
      if (j >= N) {
        if (got != guard && bad++ < 5) ADD_FAILURE() << what << ": wrote C's padding at [" << i << "," << j << "]";
        continue;
      }
      double s = 0, mag = 0;
      for (int64_t l = 0; l < K; ++l) {
        const double p = (tA ? A[size_t(l * lda + i)] : A[size_t(i * lda + l)]) *
                         (tB ? B[size_t(j * ldb + l)] : B[size_t(l * ldb + j)]);
        s += p;
        mag += std::abs(p);
      }
      const double c0 = C0[size_t(i * ldc + j)];
      const double want = alpha * s + (beta == 0 ? 0.0 : beta * c0);
      const double tol = 1e-5 * (std::abs(alpha) * mag + std::abs(beta * c0)) + 1e-30;
      if (!(std::abs(got - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << what << ": C[" << i << "," << j << "] = " << got << ", want " << want << " (tol " << tol
                      << ")";
    }
  EXPECT_EQ(bad, 0) << what;
}

struct GemmShape {
  int64_t M, N, K, pad;
};
// Non-square, odd, a long K (accumulation error), N = 1 and M = 1, padding.
const GemmShape kGemmShapes[] = {{37, 19, 23, 0}, {19, 37, 23, 3}, {1, 64, 5, 1}, {130, 1, 257, 2}, {64, 48, 512, 0}};

std::vector<double> widen(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }
}  // namespace
#endif

TEST(Cuda, GemmF32MatchesCpuEveryTranspose) {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  const float guard = 777.0f;
  for (bool tA : {false, true})
    for (bool tB : {false, true})
      for (const GemmShape& s : kGemmShapes)
        for (float beta : {0.0f, 1.0f}) {
          const int64_t M = s.M, N = s.N, K = s.K;
          const int64_t lda = (tA ? M : K) + s.pad, ldb = (tB ? K : N) + s.pad, ldc = N + s.pad;
          const auto a = rnd((tA ? K : M) * lda, 31), b = rnd((tB ? N : K) * ldb, 32);
          auto c0 = rnd(M * ldc, 33);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = N; j < ldc; ++j) c0[size_t(i * ldc + j)] = guard;
          DeviceArray<float> A(a), B(b), C(c0);
          const float alpha = -0.5f;
          cuda::gemm_f32(tA, tB, M, N, K, alpha, A.p, lda, B.p, ldb, beta, C.p, ldc);
          const std::string what = "gemm_f32 transA=" + std::to_string(tA) + " transB=" + std::to_string(tB) +
                                   " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                   " beta=" + std::to_string(beta);
          expect_gemm(what.c_str(), tA, tB, M, N, K, alpha, widen(a), lda, widen(b), ldb, beta, c0, C.get(), ldc, guard);
        }
#endif
}

// bf16 inputs converted on the device by to_bf16; the reference multiplies
// the same rounded values (bf16::from_float on the host) in double.
TEST(Cuda, GemmBf16MatchesCpuEveryTranspose) {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  const float guard = 777.0f;
  auto rounded = [](const std::vector<float>& v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = bf16::to_float(bf16::from_float(v[i]));
    return r;
  };
  for (bool tA : {false, true})
    for (bool tB : {false, true})
      for (const GemmShape& s : kGemmShapes)
        for (float beta : {0.0f, 1.0f}) {
          const int64_t M = s.M, N = s.N, K = s.K;
          const int64_t lda = (tA ? M : K) + s.pad, ldb = (tB ? K : N) + s.pad, ldc = N + s.pad;
          const auto a = rnd((tA ? K : M) * lda, 41), b = rnd((tB ? N : K) * ldb, 42);
          auto c0 = rnd(M * ldc, 43);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = N; j < ldc; ++j) c0[size_t(i * ldc + j)] = guard;
          DeviceArray<float> Af(a), Bf(b), C(c0);
          DeviceArray<uint16_t> A(a.size()), B(b.size());
          cuda::to_bf16(A.p, Af.p, int64_t(a.size()));
          cuda::to_bf16(B.p, Bf.p, int64_t(b.size()));
          const float alpha = 1.25f;
          cuda::gemm_bf16(tA, tB, M, N, K, alpha, A.p, lda, B.p, ldb, beta, C.p, ldc);
          const std::string what = "gemm_bf16 transA=" + std::to_string(tA) + " transB=" + std::to_string(tB) +
                                   " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                   " beta=" + std::to_string(beta);
          expect_gemm(what.c_str(), tA, tB, M, N, K, alpha, rounded(a), lda, rounded(b), ldb, beta, c0, C.get(), ldc,
                      guard);
        }
  // Weight-gradient accumulation: dW[out,in] += dy^T x over two micro-batches
  // equals one product over both.
  const int64_t T = 33, out = 12, in = 20;
  const auto dy = rnd(2 * T * out, 44), x = rnd(2 * T * in, 45);
  std::vector<float> dw0 = rnd(out * in, 46);
  DeviceArray<float> DYf(dy), Xf(x), DW(dw0);
  DeviceArray<uint16_t> DY(dy.size()), X(x.size());
  cuda::to_bf16(DY.p, DYf.p, int64_t(dy.size()));
  cuda::to_bf16(X.p, Xf.p, int64_t(x.size()));
  for (int mb = 0; mb < 2; ++mb)
    cuda::gemm_bf16(true, false, out, in, T, 1.0f, static_cast<const uint16_t*>(DY.p) + mb * T * out, out,
                    static_cast<const uint16_t*>(X.p) + mb * T * in, in, 1.0f, DW.p, in);
  expect_gemm("gemm_bf16 beta=1 over two micro-batches", true, false, out, in, 2 * T, 1.0, rounded(dy), out,
              rounded(x), in, 1.0, dw0, DW.get(), in, 0.0f);
#endif
}

TEST(Cuda, ToBf16MatchesHostRounding) {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  // Special values (ties, NaN with low payload only, inf, overflow, denormals)
  // then random ones: more than one grid's worth (the kernel strides).
  std::vector<uint32_t> special = {0x3f808000u, 0x3f818000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu, 0x7f800000u,
                                   0xff800000u, 0x7f7fffffu, 0x7f7f7fffu, 0x00000001u, 0x00008000u, 0x00018000u,
                                   0x007fffffu, 0x80000000u, 0x00000000u};
  std::vector<float> src;
  for (uint32_t u : special) {
    float f;
    std::memcpy(&f, &u, 4);
    src.push_back(f);
  }
  const auto r = rnd(int64_t(65535) * 256 + 1001, 51);
  src.insert(src.end(), r.begin(), r.end());
  DeviceArray<float> S(src);
  DeviceArray<uint16_t> D(src.size());
  cuda::to_bf16(D.p, S.p, int64_t(src.size()));
  const auto got = D.get();
  int bad = 0;
  for (size_t i = 0; i < src.size(); ++i)
    if (got[i] != bf16::from_float(src[i]) && bad++ < 5)
      ADD_FAILURE() << "element " << i << ": device 0x" << std::hex << got[i] << ", host 0x"
                    << bf16::from_float(src[i]);
  EXPECT_EQ(bad, 0);
#endif
}

// Host code of cuda_gemm.cu: arguments are checked before any CUDA call, so
// this needs no GPU (only a CUDA build).
TEST(Cuda, GemmRejectsBadLeadingDimensionBeforeTouchingTheDevice) {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  try {
    cuda::gemm_f32(false, false, 3, 5, 7, 1.0f, nullptr, 6, nullptr, 5, 0.0f, nullptr, 5);
    ADD_FAILURE() << "gemm_f32 accepted lda = 6 < K = 7";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lda = 6 is below 7"), std::string::npos) << e.what();
  }
  try {
    cuda::gemm_bf16(false, true, 3, 5, 7, 1.0f, nullptr, 7, nullptr, 7, 0.0f, nullptr, 4);
    ADD_FAILURE() << "gemm_bf16 accepted ldc = 4 < N = 5";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ldc = 4 is below 5"), std::string::npos) << e.what();
  }
#endif
}

TEST(Cuda, OutOfMemorySaysSizesAndWhatLowersIt) {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  try {
    void* p = cuda::device_alloc(size_t(1) << 52);  // 4 PiB
    cuda::device_free(p);
    ADD_FAILURE() << "a 4 PiB cudaMalloc succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* part : {"out of GPU memory", "4503599627370496 bytes", "free of", "--micro-batch-size",
                             "--seq-length", "rank "})
      EXPECT_NE(m.find(part), std::string::npos) << "no '" << part << "' in: " << m;
  }
  // The device still works after the failed allocation.
  DeviceArray<float> ok(std::vector<float>(16, 1.0f));
  EXPECT_EQ(ok.get()[15], 1.0f);
#endif
}

// ---- attention (cuda_attention.cu) -------------------------------------------
// Against the cpu backend (same flash_attention.h formulas, different tiles and
// summation order): out and lse, then dq, dk, dv accumulated onto random
// values, each within 1e-4 of the largest cpu value (float; 1e-10 double).
// Shapes: S below one tile, partial last tiles, D = 44 (the medium config),
// 128 (the largest), 1, and several heads and sequences. A null gradient is
// skipped, and a second run gives the same bits.
#ifdef RMOE_WITH_CUDA
namespace {
template <class T>
std::vector<T> rnd_t(int64_t n, uint64_t s) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = T(random_normal(s, 1, i));
  return v;
}
template <class T>
double max_rel_t(const std::vector<T>& a, const std::vector<T>& b) {
  double num = 0, den = 1e-6;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

template <class T>
void attention_cuda_vs_cpu(int64_t B, int64_t S, int64_t H, int64_t D, double tol) {
  SCOPED_TRACE(::testing::Message() << (sizeof(T) == 4 ? "float" : "double") << " B=" << B << " S=" << S
                                    << " H=" << H << " D=" << D);
  const int64_t n = B * S * H * D, nl = B * H * S;
  auto q = rnd_t<T>(n, 61), k = rnd_t<T>(n, 62), v = rnd_t<T>(n, 63), dout = rnd_t<T>(n, 64), g0 = rnd_t<T>(n, 65);
  auto cpu = [&](std::vector<T>& x) { return Tensor<T>(x.data(), {B, S, H, D}); };
  auto gpu = [&](DeviceArray<T>& x) { return Tensor<T>(x.p, {B, S, H, D}, Device::cuda); };
  // cpu
  std::vector<T> out(n), lse(nl), dq = g0, dk = g0, dv = g0;
  std::vector<T> scratch(size_t(flash::cpu_scratch_elements(S, 2)));
  cpu::attention_forward(cpu(out), Tensor<T>(lse.data(), {B, H, S}), cpu(q), cpu(k), cpu(v));
  cpu::attention_backward(cpu(dq), cpu(dk), cpu(dv), Tensor<T>(scratch.data(), {int64_t(scratch.size())}), cpu(dout),
                          cpu(out), Tensor<T>(lse.data(), {B, H, S}), cpu(q), cpu(k), cpu(v));
  // cuda
  DeviceArray<T> Q(q), K(k), V(v), DO(dout), O{size_t(n)}, L{size_t(nl)}, DQ(g0), DK(g0), DV(g0);
  const Tensor<T> Lv(L.p, {B, H, S}, Device::cuda);
  ops::attention_forward(gpu(O), Lv, gpu(Q), gpu(K), gpu(V));
  EXPECT_LT(max_rel_t(O.get(), out), tol) << "out";
  EXPECT_LT(max_rel_t(L.get(), lse), tol) << "lse";
  ops::attention_backward(gpu(DQ), gpu(DK), gpu(DV), Tensor<T>{}, gpu(DO), gpu(O), Lv, gpu(Q), gpu(K), gpu(V));
  const auto dq1 = DQ.get(), dk1 = DK.get(), dv1 = DV.get();
  EXPECT_LT(max_rel_t(dq1, dq), tol) << "dq";
  EXPECT_LT(max_rel_t(dk1, dk), tol) << "dk";
  EXPECT_LT(max_rel_t(dv1, dv), tol) << "dv";
  // Repeatable: the same inputs give the same bits (fresh outputs).
  DeviceArray<T> O2{size_t(n)}, L2{size_t(nl)}, DQ2(g0), DK2(g0), DV2(g0);
  const Tensor<T> L2v(L2.p, {B, H, S}, Device::cuda);
  ops::attention_forward(gpu(O2), L2v, gpu(Q), gpu(K), gpu(V));
  EXPECT_TRUE(O2.get() == O.get() && L2.get() == L.get()) << "forward not repeatable";
  ops::attention_backward(gpu(DQ2), gpu(DK2), gpu(DV2), Tensor<T>{}, gpu(DO), gpu(O), Lv, gpu(Q), gpu(K), gpu(V));
  EXPECT_TRUE(DQ2.get() == dq1 && DK2.get() == dk1 && DV2.get() == dv1) << "backward not repeatable";
  // Null gradients are skipped: dq and dk null, dv alone; then dv null.
  DeviceArray<T> DV3(g0), DQ3(g0);
  ops::attention_backward(Tensor<T>(nullptr, {B, S, H, D}, Device::cuda), Tensor<T>(nullptr, {B, S, H, D}, Device::cuda),
                          gpu(DV3), Tensor<T>{}, gpu(DO), gpu(O), Lv, gpu(Q), gpu(K), gpu(V));
  EXPECT_TRUE(DV3.get() == dv1) << "dv alone differs from dv with dq, dk";
  ops::attention_backward(gpu(DQ3), Tensor<T>(nullptr, {B, S, H, D}, Device::cuda),
                          Tensor<T>(nullptr, {B, S, H, D}, Device::cuda), Tensor<T>{}, gpu(DO), gpu(O), Lv, gpu(Q),
                          gpu(K), gpu(V));
  EXPECT_TRUE(DQ3.get() == dq1) << "dq alone differs from dq with dk, dv";
}
}  // namespace
#endif

CUDA_CASE(AttentionMatchesCpu, "attention_forward", "attention_backward") {
#ifndef RMOE_WITH_CUDA
  GTEST_SKIP() << "built without CUDA (-DRMOE_CUDA=OFF or no toolkit)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  struct Shape {
    int64_t B, S, H, D;
  };
  for (Shape s : {Shape{1, 1, 1, 1}, Shape{2, 5, 3, 4}, Shape{1, 64, 2, 16}, Shape{2, 100, 2, 44}, Shape{1, 130, 3, 20},
                  Shape{1, 257, 1, 128}, Shape{3, 33, 2, 64}}) {
    attention_cuda_vs_cpu<float>(s.B, s.S, s.H, s.D, 1e-4);
    attention_cuda_vs_cpu<double>(s.B, s.S, s.H, s.D, 1e-10);
  }
  // Bad shapes are refused before any launch.
  DeviceArray<float> X{size_t(4 * 130)}, L{size_t(4)};
  EXPECT_THROW(ops::attention_forward(Tensor<float>(X.p, {1, 4, 1, 130}, Device::cuda),
                                      Tensor<float>(L.p, {1, 1, 4}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 130}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 130}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 130}, Device::cuda)),
               Error);  // D = 130 > 128
  EXPECT_THROW(ops::attention_forward(Tensor<float>(X.p, {1, 4, 1, 8}, Device::cuda),
                                      Tensor<float>(L.p, {1, 1, 3}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 8}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 8}, Device::cuda),
                                      Tensor<float>(X.p, {1, 4, 1, 8}, Device::cuda)),
               Error);  // lse [1, 1, 3] for S = 4
#endif
}
