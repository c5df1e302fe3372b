// cuda_check.h — error checks of the CUDA backend, one macro per library
// (included only by the .cu files of src/kernels/cuda):
//   RMOE_CUDA_CHECK(call)    the CUDA runtime (cudaError_t)
//   RMOE_CUBLAS_CHECK(call)  cuBLAS (cublasStatus_t)
// A failure throws rmoe::Error naming the call, the decoded error, the rank
// and host it happened on, and file:line. device_malloc() is cudaMalloc whose
// out-of-memory error says how much was asked and is free, and what lowers it.
//
// The rank comes from the launcher's environment, not from the parallel layer
// (kernels sit below it, docs/ARCHITECTURE.md): on a multi-node run the one
// line a user sees must say which GPU failed.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "rmoe/core/error.h"

namespace rmoe::cuda::detail {

// "rank R, host H": R from Open MPI, MPICH/Intel MPI or Slurm, else 0.
inline std::string where() {
  const char* rank = nullptr;
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
    if ((rank = std::getenv(var)) && *rank) break;
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "?");
  return std::string("rank ") + (rank && *rank ? rank : "0") + ", host " + host;
}

[[noreturn]] inline void cuda_fail(const char* call, cudaError_t e, const char* file, int line) {
  throw_error(file, line,
              std::string("CUDA error in ") + call + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                  ") on " + where());
}
[[noreturn]] inline void cublas_fail(const char* call, cublasStatus_t s, const char* file, int line) {
  throw_error(file, line,
              std::string("cuBLAS error in ") + call + ": " + cublasGetStatusName(s) + " (" +
                  cublasGetStatusString(s) + ") on " + where());
}

inline std::string bytes_text(size_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB (%zu bytes)", double(b) / double(1ull << 30), b);
  return buf;
}

// cudaMalloc that reports running out of device memory in the user's terms.
inline void* device_malloc(size_t bytes, const char* file, int line) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky, but clear it so the next check does not see it
    size_t free_b = 0, total_b = 0;
    int dev = -1;
    cudaGetDevice(&dev);
    const bool known = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
    throw_error(file, line,
                "out of GPU memory: cudaMalloc of " + bytes_text(bytes) + " failed on device " + std::to_string(dev) +
                    (known ? " with " + bytes_text(free_b) + " free of " + bytes_text(total_b) : std::string()) +
                    " on " + where() +
                    "; the activations grow with --micro-batch-size x --seq-length (attention keeps [B, H, S] per layer): "
                    "lower --micro-batch-size (the same --global-batch-size then takes more accumulation steps) "
                    "or --seq-length; --dry-run prints the memory a configuration needs");
  }
  if (e != cudaSuccess) cuda_fail("cudaMalloc", e, file, line);
  return p;
}

}  // namespace rmoe::cuda::detail

#define RMOE_CUDA_CHECK(call)                                                               \
  do {                                                                                      \
    const cudaError_t rmoe_cuda_e_ = (call);                                                \
    if (rmoe_cuda_e_ != cudaSuccess) ::rmoe::cuda::detail::cuda_fail(#call, rmoe_cuda_e_, __FILE__, __LINE__); \
  } while (0)

#define RMOE_CUBLAS_CHECK(call)                                                             \
  do {                                                                                      \
    const cublasStatus_t rmoe_cublas_s_ = (call);                                           \
    if (rmoe_cublas_s_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::rmoe::cuda::detail::cublas_fail(#call, rmoe_cublas_s_, __FILE__, __LINE__);         \
  } while (0)
