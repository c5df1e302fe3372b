// bf16.h — float <-> bfloat16 (the upper 16 bits of an IEEE float), written
// once for host and device: the CUDA kernel of cuda::to_bf16 calls these same
// functions, and tests/test_gemm_mapping.cpp checks them on the host.
// A bf16 value is handled as its bit pattern (uint16_t), so no CUDA type is
// needed here.
#pragma once
#include <cstdint>
#include <cstring>

#ifndef RMOE_HD
#if defined(__CUDACC__)
#define RMOE_HD __host__ __device__ __forceinline__
#else
#define RMOE_HD inline
#endif
#endif

namespace rmoe::bf16 {

RMOE_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
RMOE_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// float -> bf16, round to nearest, ties to even. Adding 0x7fff plus the lowest
// kept bit to the float's bits and truncating rounds the magnitude correctly
// over normals, denormals (kept, not flushed) and the overflow to inf (the
// integer order of finite floats of one sign is their magnitude order). NaN
// is the one input where that carry would be wrong (it can turn a NaN whose
// payload lies only in the low bits into inf, or reach the sign): NaN keeps
// its sign and upper payload and is made quiet.
RMOE_HD uint16_t from_float(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// bf16 -> float: exact.
RMOE_HD float to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

}  // namespace rmoe::bf16
