// blas.h — row-major GEMM over OpenBLAS for float and double (cpu backend only).
#pragma once
#include <cblas.h>

#include <cstdint>
#include <type_traits>

namespace rmoe::cpu {

// C[M,N] = alpha * op(A) op(B) + beta * C. Leading dimensions in elements.
template <class T>
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm: float or double");
  if (M == 0 || N == 0) return;
  const CBLAS_TRANSPOSE opA = ta ? CblasTrans : CblasNoTrans, opB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opA, opB, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, opA, opB, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

// While alive, OpenBLAS runs every GEMM on the calling thread alone (for
// GEMMs issued from several OpenMP threads at once: OpenBLAS's own pool
// would otherwise be contended by all of them).
class OneBlasThread {
 public:
  OneBlasThread() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~OneBlasThread() { openblas_set_num_threads(saved_); }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int saved_;
};

}  // namespace rmoe::cpu
