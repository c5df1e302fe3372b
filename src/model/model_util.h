// model_util.h — small view helpers shared by the model's layer files.
#pragma once
#include "rmoe/core/tensor.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

// The first n rows of a buffer carved for the largest micro-batch.
template <class T>
Tensor<T> rows(Tensor<T> t, int64_t n) {
  t.shape[0] = n;
  return t;
}
// Reinterpret a buffer's data with new dimensions (same element count or fewer).
template <class T>
Tensor<T> reshape(const Tensor<T>& t, std::initializer_list<int64_t> dims) {
  return Tensor<T>(t.data, dims, t.device);
}
template <class T>
void zero(Tensor<T> t) {
  ops::fill(t, 0.0);
}

}  // namespace rmoe
