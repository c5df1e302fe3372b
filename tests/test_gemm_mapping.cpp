// test_gemm_mapping.cpp — the host side of the CUDA GEMMs, run everywhere:
//  - GemmMapping.*: map_row_major_gemm (gemm_mapping.h) executed by a plain
//    column-major executor (what cuBLAS computes, written from its
//    definition) equals a direct row-major product, for every transpose
//    pair, non-square shapes, padded leading dimensions, alpha and beta
//    (beta = 1 accumulates); bad arguments throw naming the argument.
//  - Bf16.*: bf16::from_float / to_float (bf16.h), which the CUDA kernel of
//    cuda::to_bf16 calls, against an independent nearest-even rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/kernels/bf16.h"
#include "rmoe/kernels/gemm_mapping.h"

using namespace rmoe;

namespace {

// C = alpha * op(first) op(second) + beta * C, column-major, as the BLAS
// reference defines gemm: X(i, j) is X[i + j * ld]; op(first) [m,k] is first
// [m,k] or, transposed, first^T of [k,m]; beta = 0 does not read C. Every
// access is bounds-checked (.at), so a wrong size or leading dimension in the
// mapping throws std::out_of_range instead of corrupting memory.
void exec_col_major(const ColMajorGemm& g, double alpha, const std::vector<double>& A, const std::vector<double>& B,
                    double beta, std::vector<double>& C) {
  const std::vector<double>& P = *gemm_operand(g.first, &A, &B);
  const std::vector<double>& Q = *gemm_operand(g.second, &A, &B);
  for (int64_t j = 0; j < g.n; ++j)
    for (int64_t i = 0; i < g.m; ++i) {
      double s = 0;
      for (int64_t l = 0; l < g.k; ++l) {
        const double p = g.transa ? P.at(size_t(l + i * g.lda)) : P.at(size_t(i + l * g.lda));
        const double q = g.transb ? Q.at(size_t(j + l * g.ldb)) : Q.at(size_t(l + j * g.ldb));
        s += p * q;
      }
      double& c = C.at(size_t(i + j * g.ldc));
      c = beta == 0 ? alpha * s : alpha * s + beta * c;
    }
}

// The same request computed directly on the row-major matrices.
void ref_row_major(bool tA, bool tB, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t l = 0; l < K; ++l) s += (tA ? A[l * lda + i] : A[i * lda + l]) * (tB ? B[j * ldb + l] : B[l * ldb + j]);
      double& c = C[i * ldc + j];
      c = beta == 0 ? alpha * s : alpha * s + beta * c;
    }
}

// A row-major [rows, cols] matrix in a buffer of leading dimension ld: the
// padding holds `pad` (NaN in inputs, so reading it poisons the result).
std::vector<double> matrix(int64_t rows, int64_t cols, int64_t ld, uint64_t seed, double pad) {
  std::vector<double> v(size_t(std::max<int64_t>(rows * ld, 1)), pad);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v[size_t(r * ld + c)] = random_normal(seed, 1, r * cols + c);
  return v;
}

std::string what(bool tA, bool tB, int64_t M, int64_t N, int64_t K, int64_t pad, double alpha, double beta) {
  return "transA=" + std::to_string(tA) + " transB=" + std::to_string(tB) + " M=" + std::to_string(M) +
         " N=" + std::to_string(N) + " K=" + std::to_string(K) + " pad=" + std::to_string(pad) +
         " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
}

constexpr double kGuard = 12345.0;  // C's padding: must come out untouched
const double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST(GemmMapping, ColumnMajorExecutionEqualsRowMajorReference) {
  // Non-square, all different (a swapped m/n or k shows), plus edge shapes.
  const int64_t shapes[][3] = {{3, 5, 7}, {7, 2, 4}, {5, 8, 1}, {1, 6, 3}, {6, 1, 9}, {4, 4, 4}, {2, 3, 0}, {1, 1, 1}};
  const double alphas[] = {1.0, -0.75};
  const double betas[] = {0.0, 1.0, 0.5};
  int cases = 0;
  for (bool tA : {false, true})
    for (bool tB : {false, true})
      for (const auto& s : shapes)
        for (int64_t pad : {0, 3})
          for (double alpha : alphas)
            for (double beta : betas) {
              const int64_t M = s[0], N = s[1], K = s[2];
              const int64_t a_rows = tA ? K : M, a_cols = tA ? M : K, b_rows = tB ? N : K, b_cols = tB ? K : N;
              const int64_t lda = std::max<int64_t>(a_cols, 1) + pad, ldb = std::max<int64_t>(b_cols, 1) + pad + 1,
                            ldc = N + 2 * pad;
              const auto A = matrix(a_rows, a_cols, lda, 11, kNaN), B = matrix(b_rows, b_cols, ldb, 12, kNaN);
              auto C_ref = matrix(M, N, ldc, 13, kGuard);
              auto C_map = C_ref;
              const std::string ctx = what(tA, tB, M, N, K, pad, alpha, beta);
              ref_row_major(tA, tB, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C_ref.data(), ldc);
              const ColMajorGemm g = map_row_major_gemm(tA, tB, M, N, K, lda, ldb, ldc);
              try {
                exec_col_major(g, alpha, A, B, beta, C_map);
              } catch (const std::out_of_range&) {
                FAIL() << ctx << ": the mapped call reads or writes outside the matrices";
              }
              for (int64_t i = 0; i < M; ++i)
                for (int64_t j = 0; j < ldc; ++j) {
                  const double r = C_ref[size_t(i * ldc + j)], m = C_map[size_t(i * ldc + j)];
                  if (j >= N) {
                    ASSERT_EQ(m, kGuard) << ctx << ": wrote C's padding at row " << i << ", column " << j;
                  } else {
                    ASSERT_TRUE(std::isfinite(m)) << ctx << ": C[" << i << "," << j << "] = " << m
                                                  << " (read padding or out of range)";
                    ASSERT_NEAR(m, r, 1e-12 * (1 + std::abs(r))) << ctx << ": C[" << i << "," << j << "]";
                  }
                }
              ++cases;
            }
  EXPECT_EQ(cases, 4 * 8 * 2 * 2 * 3);
}

// A hand-computed product: guards against the reference and the executor
// sharing a mistake. A = [[1,2,3],[4,5,6]], B = [[1,0],[2,1],[0,3]]:
// A B = [[5,11],[14,23]]; C starts at [[1,1],[1,1]], beta = 1, alpha = 2.
TEST(GemmMapping, KnownProductWithAccumulation) {
  const std::vector<double> A = {1, 2, 3, 4, 5, 6}, B = {1, 0, 2, 1, 0, 3};
  const std::vector<double> At = {1, 4, 2, 5, 3, 6}, Bt = {1, 2, 0, 0, 1, 3};  // the same, stored transposed
  const double want[] = {11, 23, 29, 47};
  for (bool tA : {false, true})
    for (bool tB : {false, true}) {
      std::vector<double> C = {1, 1, 1, 1};
      const ColMajorGemm g = map_row_major_gemm(tA, tB, 2, 2, 3, tA ? 2 : 3, tB ? 3 : 2, 2);
      exec_col_major(g, 2.0, tA ? At : A, tB ? Bt : B, 1.0, C);
      for (int i = 0; i < 4; ++i) EXPECT_EQ(C[i], want[i]) << "transA=" << tA << " transB=" << tB << " element " << i;
    }
}

// Weight gradients accumulate over micro-batches: dW += dy^T x twice equals
// dW0 + the product of the two batches stacked.
TEST(GemmMapping, BetaOneAccumulatesAcrossCalls) {
  const int64_t T = 5, out = 3, in = 4;  // dy [T,out], x [T,in], dW [out,in]: M=out, N=in, K=T, transA
  const auto dy1 = matrix(T, out, out, 21, kNaN), x1 = matrix(T, in, in, 22, kNaN);
  const auto dy2 = matrix(T, out, out, 23, kNaN), x2 = matrix(T, in, in, 24, kNaN);
  auto dW = matrix(out, in, in, 25, kGuard);
  auto want = dW;
  const ColMajorGemm g = map_row_major_gemm(true, false, out, in, T, out, in, in);
  exec_col_major(g, 1.0, dy1, x1, 1.0, dW);
  exec_col_major(g, 1.0, dy2, x2, 1.0, dW);
  std::vector<double> dy(dy1), x(x1);
  dy.insert(dy.end(), dy2.begin(), dy2.end());
  x.insert(x.end(), x2.begin(), x2.end());
  ref_row_major(true, false, out, in, 2 * T, 1.0, dy.data(), out, x.data(), in, 1.0, want.data(), in);
  for (size_t i = 0; i < dW.size(); ++i) EXPECT_NEAR(dW[i], want[i], 1e-12) << "element " << i;
}

TEST(GemmMapping, IsTheOperandSwap) {
  const ColMajorGemm g = map_row_major_gemm(true, false, 3, 5, 7, 3, 5, 6);
  EXPECT_EQ(g.first, GemmOperand::B);
  EXPECT_EQ(g.second, GemmOperand::A);
  EXPECT_FALSE(g.transa);
  EXPECT_TRUE(g.transb);
  EXPECT_EQ(g.m, 5);
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.k, 7);
  EXPECT_EQ(g.lda, 5);
  EXPECT_EQ(g.ldb, 3);
  EXPECT_EQ(g.ldc, 6);
}

namespace {
// The message of the Error that map_row_major_gemm throws ("" if none).
std::string mapping_error(bool tA, bool tB, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  try {
    map_row_major_gemm(tA, tB, M, N, K, lda, ldb, ldc);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(GemmMapping, RejectsBadLeadingDimensionsNamingThem) {
  // M=3, N=5, K=7. Minimum lda: K (M with transA); ldb: N (K with transB); ldc: N.
  EXPECT_EQ(mapping_error(false, false, 3, 5, 7, 7, 5, 5), "");
  EXPECT_NE(mapping_error(false, false, 3, 5, 7, 6, 5, 5).find("lda = 6 is below 7"), std::string::npos);
  EXPECT_EQ(mapping_error(true, false, 3, 5, 7, 3, 5, 5), "");
  EXPECT_NE(mapping_error(true, false, 3, 5, 7, 2, 5, 5).find("lda = 2 is below 3"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, 3, 5, 7, 7, 4, 5).find("ldb = 4 is below 5"), std::string::npos);
  EXPECT_EQ(mapping_error(false, true, 3, 5, 7, 7, 7, 5), "");
  EXPECT_NE(mapping_error(false, true, 3, 5, 7, 7, 5, 5).find("ldb = 5 is below 7"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, 3, 5, 7, 7, 5, 4).find("ldc = 4 is below 5"), std::string::npos);
  // BLAS: a leading dimension is at least 1 even for an empty row.
  EXPECT_NE(mapping_error(false, false, 3, 5, 0, 0, 5, 5).find("lda = 0 is below 1"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, -1, 5, 7, 7, 5, 5).find("negative size"), std::string::npos);
}

TEST(GemmMapping, RejectsSizesBeyondInt32) {
  const int64_t big = int64_t(std::numeric_limits<int32_t>::max()) + 1;
  EXPECT_NE(mapping_error(false, false, big, 1, 1, 1, 1, 1).find("M = 2147483648 exceeds the int32 range"),
            std::string::npos);
  EXPECT_NE(mapping_error(false, false, 1, 1, big, big, 1, 1).find("K = 2147483648"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, 1, 1, 1, big, 1, 1).find("lda = 2147483648"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, 1, 1, 1, 1, big, 1).find("ldb = 2147483648"), std::string::npos);
  EXPECT_NE(mapping_error(false, false, 1, 1, 1, 1, 1, big).find("ldc = 2147483648"), std::string::npos);
  EXPECT_EQ(mapping_error(false, false, big - 1, 1, 1, 1, 1, 1), "");  // the largest int is fine
}

// ---- bf16 ----------------------------------------------------------------------

namespace {
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bool is_bf16_nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x007f) != 0; }

// Independent rounding of a finite float: the two bf16 neighbours by
// truncation, the nearer in exact (double) arithmetic, a tie to the even one.
// Above the largest bf16 the upper neighbour is 2^128 (IEEE rounds as if the
// exponent were unbounded, then overflows to inf).
uint16_t reference_round(float f) {
  const uint32_t u = bits(f);
  const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);  // same sign, magnitudes |lo| <= |f| < |hi|
  const double lo_v = std::abs(double(from_bits(uint32_t(lo) << 16)));
  const double hi_v = (hi & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128) : std::abs(double(from_bits(uint32_t(hi) << 16)));
  const double x = std::abs(double(f));
  const double dlo = x - lo_v, dhi = hi_v - x;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}
}  // namespace

TEST(Bf16, ExactValuesRoundTrip) {
  EXPECT_EQ(bf16::from_float(1.0f), 0x3f80);
  EXPECT_EQ(bf16::from_float(-2.0f), 0xc000);
  EXPECT_EQ(bf16::from_float(0.0f), 0x0000);
  EXPECT_EQ(bf16::from_float(-0.0f), 0x8000);
  EXPECT_EQ(bf16::to_float(0x3f80), 1.0f);
  EXPECT_EQ(bf16::to_float(0x4049), 3.140625f);
  // Every bf16 value that is not NaN converts to float and back unchanged.
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    if (is_bf16_nan(uint16_t(b))) continue;
    ASSERT_EQ(bf16::from_float(bf16::to_float(uint16_t(b))), b) << std::hex << "bf16 0x" << b;
  }
}

TEST(Bf16, RoundsToNearestTiesToEven) {
  // Around 1 the bf16 step is 2^-7.
  EXPECT_EQ(bf16::from_float(1.0f + 0x1p-8f), 0x3f80);                 // tie, 1.0 is even: down
  EXPECT_EQ(bf16::from_float(1.0f + 3 * 0x1p-8f), 0x3f82);             // tie, 0x3f81 odd: up to 0x3f82
  EXPECT_EQ(bf16::from_float(1.0f + 0x1p-8f + 0x1p-23f), 0x3f81);      // just above the tie: up
  EXPECT_EQ(bf16::from_float(1.0f + 0x1p-8f - 0x1p-23f), 0x3f80);      // just below: down
  EXPECT_EQ(bf16::from_float(-(1.0f + 3 * 0x1p-8f)), 0xbf82);          // sign symmetric
  EXPECT_EQ(bf16::from_float(from_bits(0x3fffffff)), 0x4000);          // carry into the exponent
  // Against the independent rounding over a spread of all float patterns
  // (every 4093rd pattern: odd, so the low halves vary) and every tie.
  for (uint64_t u = 0; u <= 0xffffffffull; u += 4093) {
    const float f = from_bits(uint32_t(u));
    if (std::isnan(f)) continue;
    ASSERT_EQ(bf16::from_float(f), reference_round(f)) << std::hex << "float bits 0x" << u;
  }
  for (uint32_t hi = 0; hi <= 0xffff; ++hi)
    for (uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) {
      const float f = from_bits((hi << 16) | low);
      if (std::isnan(f) || std::isinf(f)) continue;
      ASSERT_EQ(bf16::from_float(f), reference_round(f)) << std::hex << "float bits 0x" << ((hi << 16) | low);
    }
}

TEST(Bf16, InfinityAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bf16::from_float(inf), 0x7f80);
  EXPECT_EQ(bf16::from_float(-inf), 0xff80);
  EXPECT_EQ(bf16::from_float(std::numeric_limits<float>::max()), 0x7f80);  // beyond bf16 max + half a step
  EXPECT_EQ(bf16::from_float(-std::numeric_limits<float>::max()), 0xff80);
  EXPECT_EQ(bf16::from_float(from_bits(0x7f7f7fff)), 0x7f7f);  // just below the halfway point: the largest bf16
  EXPECT_EQ(bf16::from_float(from_bits(0x7f7f8000)), 0x7f80);  // the tie from an odd mantissa: up, to inf
  EXPECT_TRUE(std::isinf(bf16::to_float(0x7f80)));
}

TEST(Bf16, NaNStaysNaN) {
  // A naive carry turns 0x7f800001 into inf and 0x7fffffff into -0 / the sign.
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fffffffu, 0xff800001u, 0xffc00000u, 0xffffffffu}) {
    const uint16_t b = bf16::from_float(from_bits(u));
    EXPECT_TRUE(is_bf16_nan(b)) << std::hex << "float bits 0x" << u << " -> 0x" << b;
    EXPECT_EQ(b & 0x8000, (u >> 16) & 0x8000) << std::hex << "sign of 0x" << u;
    EXPECT_TRUE(std::isnan(bf16::to_float(b)));
  }
}

TEST(Bf16, DenormalsAreRoundedNotFlushed) {
  EXPECT_EQ(bf16::from_float(from_bits(0x00010000)), 0x0001);  // the smallest bf16 denormal: exact
  EXPECT_EQ(bf16::from_float(from_bits(0x00000001)), 0x0000);  // the smallest float denormal: down to 0
  EXPECT_EQ(bf16::from_float(from_bits(0x00008000)), 0x0000);  // tie, 0 is even
  EXPECT_EQ(bf16::from_float(from_bits(0x00008001)), 0x0001);  // above the tie
  EXPECT_EQ(bf16::from_float(from_bits(0x00018000)), 0x0002);  // tie from odd 0x0001: up
  EXPECT_EQ(bf16::from_float(from_bits(0x007fffff)), 0x0080);  // the largest float denormal: up to the smallest normal
  EXPECT_EQ(bf16::from_float(from_bits(0x807f8000)), 0x8080);  // negative, tie from odd 0x807f: up
  EXPECT_EQ(bf16::to_float(0x0001), from_bits(0x00010000));
  EXPECT_GT(bf16::to_float(0x0001), 0.0f);
}
