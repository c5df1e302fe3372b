// cuda_pointwise.cu — the first CUDA kernels: element-wise ops that call the
// same rmoe::pw functions (pointwise.h) as the cpu backend, so the math the
// GPU runs is the code the CPU tests check. Views must be device memory.
// The rest of the CUDA backend (cuBLAS GEMMs, attention, MoE, NCCL) follows.
#include <cuda_runtime.h>

#include "../instantiate.h"
#include "cuda_check.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/kernels/pointwise.h"

namespace rmoe::cuda {

namespace {
constexpr int kBlock = 256;
inline int blocks(int64_t n) { return int((n + kBlock - 1) / kBlock); }

template <class T>
__global__ void swiglu_fwd_kernel(T* h, const T* a, const T* b, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) h[i] = pw::swiglu(a[i], b[i]);
}
template <class T>
__global__ void swiglu_bwd_kernel(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T ga, gb;
  pw::swiglu_grad(a[i], b[i], dh[i], ga, gb);
  if (da) da[i] += ga;  // null: not needed
  if (db) db[i] += gb;
}
template <class T>
__global__ void gru_fwd_kernel(T* hnew, T* gates, const T* gi, const T* gh, const T* h, int64_t N, int64_t p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * p) return;
  const int64_t n = i / p, j = i % p, o = n * 3 * p;
  hnew[i] = pw::gru_cell(gi[o + j], gi[o + p + j], gi[o + 2 * p + j], gh[o + j], gh[o + p + j], gh[o + 2 * p + j],
                         h[i], gates[o + j], gates[o + p + j], gates[o + 2 * p + j]);
}
}  // namespace

template <class T>
void swiglu_forward(Tensor<T> h, In<T> a, In<T> b) {
  const int64_t n = a.numel();
  if (n == 0) return;
  swiglu_fwd_kernel<<<blocks(n), kBlock>>>(h.data, a.data, b.data, n);
  RMOE_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh, In<T> a, In<T> b) {
  const int64_t n = a.numel();
  if (n == 0 || (da.is_null() && db.is_null())) return;
  swiglu_bwd_kernel<<<blocks(n), kBlock>>>(da.data, db.data, dh.data, a.data, b.data, n);
  RMOE_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h) {
  const int64_t N = h.rows(), p = h.cols();
  if (N * p == 0) return;
  gru_fwd_kernel<<<blocks(N * p), kBlock>>>(hnew.data, gates.data, gi.data, gh.data, h.data, N, p);
  RMOE_CUDA_CHECK(cudaGetLastError());
}

RMOE_INSTANTIATE_CUDA_OPS(RMOE_OPS_DENSE)

}  // namespace rmoe::cuda

namespace rmoe::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device/driver" error
    return 0;
  }
  return n;
}
void* device_alloc(size_t bytes) { return detail::device_malloc(bytes, __FILE__, __LINE__); }
// Not checked: called from destructors, where a throw ends the program; a
// failure here is an earlier kernel's sticky error, which the next checked
// call reports.
void device_free(void* p) { cudaFree(p); }
void copy_to_device(void* dst, const void* src, size_t bytes) {
  RMOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  RMOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

}  // namespace rmoe::cuda
