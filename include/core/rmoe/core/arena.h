// arena.h — a bump allocator for activations: sized once, carved into views.
//
// Run the same carving function twice: first on a counting arena (no memory;
// it only sums sizes), then on a real one of that size. After that a training
// step allocates nothing. Every view starts on a 64-byte boundary (a cache
// line, and the widest vector load): the buffer is allocated 64-byte aligned
// and each view's length is rounded up to a multiple of 16 elements.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>

#include "rmoe/core/error.h"
#include "rmoe/core/tensor.h"

namespace rmoe {

template <class T>
class Arena {
 public:
  Arena() = default;                                  // counting arena
  explicit Arena(int64_t n)
      : buf_(static_cast<T*>(::operator new[](size_t(n) * sizeof(T), std::align_val_t(kAlign)))),
        size_(n),
        counting_(false) {
    std::memset(static_cast<void*>(buf_.get()), 0, size_t(n) * sizeof(T));  // as std::vector did: zeros
  }

  Tensor<T> take(std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Tensor<T> t(counting_ ? nullptr : buf_.get() + used_, dims);
    used_ += (n + 15) / 16 * 16;  // 16 elements: 64 bytes for float, 128 for double
    RMOE_CHECK(counting_ || used_ <= size_, "arena overflow: " << used_ << " > " << size_);
    return t;
  }
  int64_t used() const { return used_; }
  int64_t bytes() const { return size_ * int64_t(sizeof(T)); }

 private:
  static constexpr size_t kAlign = 64;
  static_assert(16 * sizeof(T) % kAlign == 0, "16 elements must fill whole 64-byte lines");
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
  };
  std::unique_ptr<T, Free> buf_;
  int64_t size_ = 0;
  int64_t used_ = 0;
  bool counting_ = true;
};

}  // namespace rmoe
