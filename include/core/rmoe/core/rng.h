// rng.h — counter-based random numbers: value = f(seed, stream, index).
//
// No hidden state, so a tensor's initial values depend only on (seed, tensor
// name, element index) and never on how many ranks exist or in which order
// things are created. The mixer is SplitMix64's finaliser applied to a
// combined key; uniform in [0,1) from the top 53 bits; normal by Box-Muller.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

namespace rmoe {

inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a, used to turn a tensor name into a stream id.
inline uint64_t hash_name(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

inline uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed ^ mix64(stream)) + index);
}

inline double random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (random_bits(seed, stream, index) >> 11) * 0x1.0p-53;
}

// Standard normal; uses two uniforms drawn at counters 2i and 2i+1.
inline double random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  double u1 = random_uniform(seed, stream, 2 * index);
  double u2 = random_uniform(seed, stream, 2 * index + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace rmoe
