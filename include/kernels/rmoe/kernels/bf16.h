// bf16.h — float <-> bfloat16 (the upper 16 bits of an IEEE float), written
// once for host and device: the CUDA kernel of cuda::to_bf16 calls these same
// functions, and tests/test_gemm_mapping.cpp checks them on the host.
// A bf16 value is handled as its bit pattern (uint16_t), so no CUDA type is
// needed here.
#pragma once
#include <cstdint>

#include "rmoe/kernels/host_device.h"

namespace rmoe::bf16 {

// float -> bf16, round to nearest, ties to even. Adding 0x7fff plus the lowest
// kept bit to the float's bits and truncating rounds the magnitude correctly
// over normals, denormals (kept, not flushed) and the overflow to inf (the
// integer order of finite floats of one sign is their magnitude order). NaN
// is the one input where that carry would be wrong (it can turn a NaN whose
// payload lies only in the low bits into inf, or reach the sign): NaN keeps
// its sign and upper payload and is made quiet.
RMOE_HD uint16_t from_float(float f) {
  const uint32_t u = hd::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// bf16 -> float: exact.
RMOE_HD float to_float(uint16_t b) { return hd::bits_float(uint32_t(b) << 16); }

}  // namespace rmoe::bf16
