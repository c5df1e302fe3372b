// model_util.h — small view helpers shared by the model's layer files.
#pragma once
#include "rmoe/core/tensor.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

// The first n entries of the first dimension of a buffer carved for the
// largest micro-batch (n tokens of [T,d], n sequences of [B,H,S,S]); not
// Tensor::rows(), the product of all but the last dimension.
template <class T>
Tensor<T> first_rows(const Tensor<T>& t, int64_t n) {
  return t.slice(0, n);
}
// Reinterpret a buffer's data with new dimensions (same element count or fewer).
template <class T>
Tensor<T> reshape(const Tensor<T>& t, std::initializer_list<int64_t> dims) {
  return Tensor<T>(t.data, dims, t.device);
}
// t = 0 (an op: the view may be on any device).
template <class T>
void zero(Tensor<T> t) {
  ops::fill(t, 0.0);
}

}  // namespace rmoe
