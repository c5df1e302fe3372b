// cpu_basic.cpp — the cpu backend's memory ops and reductions: fill, copy,
// add, sum, sum_squares (any shape; views are host memory).
//
// add is OpenMP-parallel over elements; sum runs in index order (one thread)
// and sum_squares over fixed blocks, so neither depends on the thread count.
// Tested against rmoe::ref in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../instantiate.h"
#include "checks.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe::cpu {

template <class T>
void fill(Tensor<T> y, double value) {
  std::fill_n(y.data, y.numel(), T(value));
}

template <class T>
void copy(Tensor<T> dst, In<T> src) {
  const int64_t n = src.numel();
  RMOE_CHECK(dst.numel() == n, "copy: dst " << dst.shape_str() << " src " << src.shape_str());
  RMOE_CHECK(dst.device == Device::cpu && src.device == Device::cpu,
             "cpu::copy: both views must be host memory (a copy to or from a device is that device's)");
  if (n > 0) std::memcpy(dst.data, src.data, sizeof(T) * size_t(n));
}

template <class T>
void add(Tensor<T> y, In<T> a, In<T> b) {
  const int64_t n = y.numel();
  RMOE_CHECK(a.numel() == n && b.numel() == n,
             "add: y " << y.shape_str() << " a " << a.shape_str() << " b " << b.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) y.data[i] = a.data[i] + b.data[i];
}

template <class T>
void add_scaled(Tensor<T> y, In<T> a, In<T> b, double alpha) {
  const int64_t n = y.numel();
  RMOE_CHECK(a.numel() == n && b.numel() == n,
             "add_scaled: y " << y.shape_str() << " a " << a.shape_str() << " b " << b.shape_str());
  const T s = T(alpha);
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) y.data[i] = a.data[i] + s * b.data[i];
}

template <class T>
void sum(Tensor<double> out, In<T> x) {
  RMOE_CHECK(out.numel() == 1, "sum: out " << out.shape_str() << ", want one element");
  const int64_t n = x.numel();
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x.data[i];
  out.data[0] = s;
}

template <class T>
void sum_squares(Tensor<double> out, In<T> x) {
  RMOE_CHECK(out.numel() == 1, "sum_squares: out " << out.shape_str() << ", want one element");
  constexpr int64_t kBlock = 4096;
  const int64_t n = x.numel(), num_blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> block_sum(size_t(num_blocks), 0.0);  // once per call (a step's norm), not per element
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    // 8 interleaved partial sums (element i into i % 8, combined in order):
    // a fixed order that vectorises, where one running sum is a chain of
    // dependent adds.
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b * kBlock;
    for (; i + 8 <= end; i += 8)
      for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(x.data[i + l]) * x.data[i + l];
    for (int l = 0; i < end; ++i, ++l) part[l] += static_cast<double>(x.data[i]) * x.data[i];
    double s = 0.0;
    for (double p : part) s += p;
    block_sum[b] = s;
  }
  double total = 0.0;
  for (double s : block_sum) total += s;  // fixed order
  out.data[0] = total;
}

RMOE_INSTANTIATE_OPS(RMOE_OPS_BASIC)

}  // namespace rmoe::cpu
