// cuda_gemm.cu — row-major GEMMs on cuBLAS (bf16 or fp32 in, fp32 compute,
// fp32 out; beta = 1 accumulates, as the weight gradients do) and the
// float -> bf16 conversion of their inputs. The row-major request is mapped to
// cuBLAS's column-major arguments by map_row_major_gemm (gemm_mapping.h), the
// code tests/test_gemm_mapping.cpp checks on the host; the bf16 rounding is
// bf16::from_float (bf16.h), checked there too.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>

#include "cuda_check.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/bf16.h"
#include "rmoe/kernels/cuda_ops.h"
#include "rmoe/kernels/gemm_mapping.h"

namespace rmoe::cuda {

namespace {

// One cuBLAS handle per (thread, device), created on first use: a handle is
// bound to the device current at its creation and must not be shared by
// threads that run GEMMs at the same time. Destroyed when the thread ends
// (the main thread's thread_locals go before the CUDA runtime's teardown).
class Handles {
 public:
  ~Handles() {
    for (auto& [dev, h] : handles_) cublasDestroy(h);  // at exit: nothing left to report to
  }
  cublasHandle_t get() {
    int dev = 0;
    RMOE_CUDA_CHECK(cudaGetDevice(&dev));
    auto it = handles_.find(dev);
    if (it != handles_.end()) return it->second;
    cublasHandle_t h = nullptr;
    RMOE_CUBLAS_CHECK(cublasCreate(&h));
    // Default math, not pedantic: with CUBLAS_COMPUTE_32F, fp32 inputs still
    // get fp32 multiply-adds (TF32 needs CUBLAS_TF32_TENSOR_OP_MATH or the
    // FAST_TF32 compute type, neither set here; tests/test_cuda.cpp's
    // tolerance would catch it), and bf16 inputs get tensor cores with fp32
    // accumulation: their products are exact in fp32, so pedantic mode would
    // only give up fast kernels for no accuracy we need.
    RMOE_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    // ops.h: deterministic, no atomics (this is cuBLAS's default; said here so
    // that it stays so).
    RMOE_CUBLAS_CHECK(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
    RMOE_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));  // alpha, beta are host floats
    handles_.emplace(dev, h);
    return h;
  }

 private:
  std::map<int, cublasHandle_t> handles_;
};

cublasHandle_t handle() {
  thread_local Handles handles;
  return handles.get();
}

// The one executor of both variants: in_type is the element type of A and B.
void gemm_ex(cudaDataType_t in_type, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
             const void* A, int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const ColMajorGemm g = map_row_major_gemm(transA, transB, M, N, K, lda, ldb, ldc);  // throws on bad arguments
  if (M == 0 || N == 0) return;  // nothing to write (as blas.h's gemm)
  const void* first = gemm_operand(g.first, A, B);
  const void* second = gemm_operand(g.second, A, B);
  RMOE_CUBLAS_CHECK(cublasGemmEx(handle(), g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, g.transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 int(g.m), int(g.n), int(g.k), &alpha, first, in_type, int(g.lda), second, in_type,
                                 int(g.ldb), &beta, C, CUDA_R_32F, int(g.ldc), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

constexpr int kBlock = 256;

__global__ void to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  // Grid-stride: any n with a bounded grid.
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = bf16::from_float(src[i]);
}

}  // namespace

void gemm_bf16(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const void* A_bf16, int64_t lda,
               const void* B_bf16, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_ex(CUDA_R_16BF, transA, transB, M, N, K, alpha, A_bf16, lda, B_bf16, ldb, beta, C, ldc);
}

void gemm_f32(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_ex(CUDA_R_32F, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void to_bf16(void* dst, const float* src, int64_t n) {
  RMOE_CHECK(n >= 0, "to_bf16: n = " << n << " is negative");
  if (n == 0) return;
  const int64_t want = (n + kBlock - 1) / kBlock;
  const int grid = int(want < 65535 ? want : 65535);
  to_bf16_kernel<<<grid, kBlock>>>(static_cast<uint16_t*>(dst), src, n);
  RMOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace rmoe::cuda
