// host_device.h — what a formula written once for host and device code needs:
// RMOE_HD (a plain inline function for the host compiler, __host__ __device__
// under nvcc), the bit casts between a float and its 32-bit pattern, and the
// exp both backends use in float (fexp). Included by pointwise.h, bf16.h and
// flash_attention.h.
#pragma once
#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

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

// exp in float, written out so that the cpu loops vectorise (std::exp does
// not) and both backends run the same formula: exp(x) = 2^n exp(r), n =
// round(x / ln 2), r = x - n ln 2 in two parts (|r| <= ln2 / 2), exp(r) by
// its Taylor series to r^7 (truncation 5e-9): within 2 ulp of exp for x <= 88
// (tests/test_ops.cpp); 0 below -87.33 (where 2^n leaves the normal range),
// +inf above 88. Attention's arguments are all <= 0 (s - max, s - lse).
RMOE_HD float fexp(float x) {
  const float lo = -87.33f, hi = 88.0f;
  const float xc = !(x >= lo) ? lo : (x > hi ? hi : x);  // NaN -> lo, fixed below
  const float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
  const float r = (xc - n * 0.693145751953125f) - n * 1.4286068e-6f;  // ln 2 = 0.693145751953125 + 1.4286068e-6
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * bits_float(uint32_t(int32_t(n) + 127) << 23);
  return x != x ? x : (x < lo ? 0.0f : (x > hi ? __builtin_huge_valf() : e));
}
#if defined(__CUDA_ARCH__)
RMOE_HD double fexp(double x) { return ::exp(x); }
#else
RMOE_HD double fexp(double x) { return std::exp(x); }
#endif

}  // namespace rmoe::hd
