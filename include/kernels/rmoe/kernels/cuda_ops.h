// cuda_ops.h — the CUDA backend's entry points (declared without any CUDA
// header, so host code can call them; defined in src/kernels/cuda/*.cu, built
// only with RMOE_WITH_CUDA). The ops are those of the table (ops.h) whose cuda
// column says yes, with the table's signatures and semantics;
// ops_dispatch.cpp routes cuda views to them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "rmoe/kernels/ops.h"

#define RMOE_OP_DECLARE_CUDA(kind, name, cuda, dev, params, args) \
  RMOE_OP_IF_CUDA_##cuda(RMOE_OP_DECLARE(kind, name, cuda, dev, params, args))

namespace rmoe::cuda {

RMOE_OPS(RMOE_OP_DECLARE_CUDA)

// Device memory and the device count (0 when no GPU or no driver).
int device_count();
void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);

// Row-major GEMMs on cuBLAS (cuda_gemm.cu), device pointers:
//   C[M,N] = alpha * op(A) op(B) + beta * C, with the arguments of
//   rmoe::cpu::gemm (src/kernels/cpu/blas.h) and their checks
//   (gemm_mapping.h: bad leading dimensions or sizes beyond int32 throw).
// Computed in fp32 and written as fp32; beta = 1 accumulates into C.
// gemm_bf16: A and B are bf16 (uint16_t bit patterns, see bf16.h).
void gemm_bf16(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const void* A_bf16, int64_t lda,
               const void* B_bf16, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_f32(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// dst[i] = bf16 of src[i], round to nearest even (bf16::from_float), for
// i < n; device pointers, dst holds n uint16_t.
void to_bf16(void* dst, const float* src, int64_t n);

}  // namespace rmoe::cuda
