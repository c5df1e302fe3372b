// gemm_mapping.h — the one place where a row-major GEMM request becomes the
// arguments of a column-major BLAS call (cuBLAS). Plain C++, no CUDA header:
// the CUDA backend executes the result (src/kernels/cuda/cuda_gemm.cu) and
// tests/test_gemm_mapping.cpp executes it on the host with plain
// column-major loops and compares with a direct row-major product, so the
// mapping the GPU runs is the code the CPU tests check.
//
// Request (as rmoe::cpu::gemm in src/kernels/cpu/blas.h), all row-major:
//   C[M,N] = alpha * op(A) op(B) + beta * C,
//   op(A) [M,K] is A [M,K] (lda >= K) or, with transA, A^T of A [K,M] (lda >= M);
//   op(B) [K,N] is B [K,N] (ldb >= N) or, with transB, B^T of B [N,K] (ldb >= K);
//   C [M,N], ldc >= N. Leading dimensions in elements, each at least 1 (BLAS).
//
// Why the swap: a row-major matrix X[r,c] with leading dimension ld is, read
// column-major with the same ld, the matrix X^T [c,r]. So the row-major C is
// the column-major C^T [N,M], and C^T = op(B)^T op(A)^T: the column-major call
// takes B first and A second, m = N, n = M, and each operand keeps its own
// transpose flag (B read column-major is already B^T, so op(B)^T needs a
// transpose exactly when op(B) = B^T does).
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "rmoe/core/error.h"

namespace rmoe {

// The operands of the row-major request.
enum class GemmOperand : uint8_t { A, B };

// Arguments of a column-major C = alpha * op(first) op(second) + beta * C call
// (cublasGemmEx's A, B, C): op(first) [m,k], op(second) [k,n], C [m,n].
struct ColMajorGemm {
  bool transa, transb;        // op of the first / second operand
  int64_t m, n, k;
  GemmOperand first, second;  // which request operand is passed as the first / second
  int64_t lda, ldb, ldc;      // leading dimensions of first, second, C
};

// The pointer of the request operand that a ColMajorGemm passes as `which`.
template <class P>
P gemm_operand(GemmOperand which, P A, P B) {
  return which == GemmOperand::A ? A : B;
}

namespace detail {
[[noreturn]] inline void gemm_bad(const std::string& what) { throw Error("gemm: " + what); }
inline std::string gemm_flag(bool t) { return t ? "true" : "false"; }
// cuBLAS takes int for every size and leading dimension.
inline void gemm_check_int(const char* name, int64_t v) {
  if (v > std::numeric_limits<int32_t>::max())
    gemm_bad(std::string(name) + " = " + std::to_string(v) +
             " exceeds the int32 range of cuBLAS (2147483647); split the GEMM into smaller ones");
}
}  // namespace detail

// Validates a row-major request and maps it (see the top of this file).
// Throws rmoe::Error naming the bad argument.
inline ColMajorGemm map_row_major_gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, int64_t lda,
                                       int64_t ldb, int64_t ldc) {
  using detail::gemm_bad;
  using detail::gemm_flag;
  if (M < 0 || N < 0 || K < 0)
    gemm_bad("negative size M = " + std::to_string(M) + ", N = " + std::to_string(N) + ", K = " + std::to_string(K));
  // Row length of each stored row-major matrix: its leading dimension's minimum.
  const int64_t a_row = transA ? M : K, b_row = transB ? K : N, c_row = N;
  auto need = [](int64_t row) { return row > 1 ? row : int64_t(1); };
  if (lda < need(a_row))
    gemm_bad("lda = " + std::to_string(lda) + " is below " + std::to_string(need(a_row)) + ": A is row-major [" +
             (transA ? "K, M" : "M, K") + "] = [" + std::to_string(transA ? K : M) + ", " + std::to_string(a_row) +
             "] (transA = " + gemm_flag(transA) + ")");
  if (ldb < need(b_row))
    gemm_bad("ldb = " + std::to_string(ldb) + " is below " + std::to_string(need(b_row)) + ": B is row-major [" +
             (transB ? "N, K" : "K, N") + "] = [" + std::to_string(transB ? N : K) + ", " + std::to_string(b_row) +
             "] (transB = " + gemm_flag(transB) + ")");
  if (ldc < need(c_row))
    gemm_bad("ldc = " + std::to_string(ldc) + " is below " + std::to_string(need(c_row)) + ": C is row-major [M, N] = [" +
             std::to_string(M) + ", " + std::to_string(N) + "]");
  detail::gemm_check_int("M", M);
  detail::gemm_check_int("N", N);
  detail::gemm_check_int("K", K);
  detail::gemm_check_int("lda", lda);
  detail::gemm_check_int("ldb", ldb);
  detail::gemm_check_int("ldc", ldc);
  ColMajorGemm g;
  g.transa = transB;  // first = B: its column-major reading is B^T
  g.transb = transA;
  g.m = N;
  g.n = M;
  g.k = K;
  g.first = GemmOperand::B;
  g.second = GemmOperand::A;
  g.lda = ldb;
  g.ldb = lda;
  g.ldc = ldc;
  return g;
}

}  // namespace rmoe
