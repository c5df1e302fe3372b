// arena.h — a bump allocator for activations: sized once, carved into views.
//
// Run the same carving function twice: first on a counting arena (no memory;
// it only sums sizes), then on a real one of that size. After that a training
// step allocates nothing.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/core/tensor.h"

namespace rmoe {

template <class T>
class Arena {
 public:
  Arena() = default;                                  // counting arena
  explicit Arena(int64_t n) : buf_(size_t(n)), counting_(false) {}

  Tensor<T> take(std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Tensor<T> t(counting_ ? nullptr : buf_.data() + used_, dims);
    used_ += (n + 15) / 16 * 16;  // 64-byte aligned starts for float
    RMOE_CHECK(counting_ || used_ <= int64_t(buf_.size()), "arena overflow: " << used_ << " > " << buf_.size());
    return t;
  }
  int64_t used() const { return used_; }
  int64_t bytes() const { return int64_t(buf_.size() * sizeof(T)); }

 private:
  std::vector<T> buf_;
  int64_t used_ = 0;
  bool counting_ = true;
};

}  // namespace rmoe
