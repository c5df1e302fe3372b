// format.h — small text forms of numbers and shapes shared by messages,
// INI files and tools.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>
#include <vector>

namespace rmoe {

// The shortest text that reads back to the same double ("0.001", "1e-08",
// "4.2e-05"): what configurations are written with, so they round-trip.
inline std::string shortest_text(double x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

// "[4, 8, 16]" (a scalar: "[]").
inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string t = "[";
  for (size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + "]";
}

}  // namespace rmoe
