// host_device.h — what a formula written once for host and device code needs:
// RMOE_HD (a plain inline function for the host compiler, __host__ __device__
// under nvcc) and the bit casts between a float and its 32-bit pattern.
// Included by pointwise.h, bf16.h and flash_attention.h.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define RMOE_HD __host__ __device__ __forceinline__
#else
#define RMOE_HD inline
#endif

namespace rmoe::hd {

RMOE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

RMOE_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

}  // namespace rmoe::hd
