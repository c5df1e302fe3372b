// tensor.h — a non-owning view of a dense, row-major array (up to 4-D).
//
// Ops take views, never raw backend types: the device tag on the view picks
// the backend (cpu now, cuda when built with it). The element type is a
// template parameter so the same model runs in fp32 (training) and fp64
// (finite-difference checks in tests).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

namespace rmoe {

enum class Device : uint8_t { cpu, cuda };

template <class T>
struct Tensor {
  T* data = nullptr;
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  int ndim = 0;
  Device device = Device::cpu;

  Tensor() = default;
  // A mutable view converts to a const one (ops take const views for inputs).
  template <class U>
    requires std::is_same_v<const U, T> && (!std::is_same_v<U, T>)
  Tensor(const Tensor<U>& o) : data(o.data), shape(o.shape), ndim(o.ndim), device(o.device) {}
  Tensor(T* p, std::initializer_list<int64_t> dims, Device dev = Device::cpu)
      : data(p), device(dev) {
    for (int64_t d : dims) shape[ndim++] = d;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return ndim == 0 ? 0 : n;
  }
  int64_t size(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t cols() const { return ndim == 0 ? 0 : shape[ndim - 1]; }  // last dim
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }  // all others
  // A null view (no data pointer, e.g. Tensor{}): an absent argument, such as
  // a gradient output that is not needed. Not the same as zero elements.
  bool is_null() const { return data == nullptr; }
  // Entries [first, first + n) of the first dimension: a view of the same data
  // (the other dimensions unchanged).
  Tensor slice(int64_t first, int64_t n) const {
    Tensor t = *this;
    if (data) t.data = data + first * (shape[0] == 0 ? 0 : numel() / shape[0]);
    t.shape[0] = n;
    return t;
  }
  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

using TensorF = Tensor<float>;
using TensorD = Tensor<double>;

}  // namespace rmoe
