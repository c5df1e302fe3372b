// test_arena.cpp — the activation arena: a counting pass sizes the real one,
// every view starts on a 64-byte boundary, views never overlap, and the
// memory starts zeroed.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "rmoe/core/arena.h"

namespace rmoe {
namespace {

template <class T>
void carve_and_check() {
  const std::vector<std::vector<int64_t>> shapes = {{3}, {1, 1}, {17, 5}, {2, 3, 7}, {64}, {1}, {5, 1, 1, 3}};
  auto carve = [&](Arena<T>& a, std::vector<Tensor<T>>& out) {
    for (const auto& s : shapes) out.push_back(s.size() == 1   ? a.take({s[0]})
                                               : s.size() == 2 ? a.take({s[0], s[1]})
                                               : s.size() == 3 ? a.take({s[0], s[1], s[2]})
                                                               : a.take({s[0], s[1], s[2], s[3]}));
  };
  Arena<T> counting;
  std::vector<Tensor<T>> none;
  carve(counting, none);
  Arena<T> real(counting.used());
  std::vector<Tensor<T>> views;
  carve(real, views);
  EXPECT_EQ(real.used(), counting.used());
  EXPECT_EQ(real.bytes(), counting.used() * int64_t(sizeof(T)));
  for (size_t i = 0; i < views.size(); ++i) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(views[i].data) % 64, 0u) << "view " << i << " is not 64-byte aligned";
    for (int64_t j = 0; j < views[i].numel(); ++j) EXPECT_EQ(views[i].data[j], T(0));
    if (i + 1 < views.size()) {
      EXPECT_LE(views[i].data + views[i].numel(), views[i + 1].data) << "views overlap";
    }
  }
  EXPECT_THROW(real.take({1}), Error) << "a take past the counted size must fail";
}

TEST(Arena, AlignedZeroedDisjointFloat) { carve_and_check<float>(); }
TEST(Arena, AlignedZeroedDisjointDouble) { carve_and_check<double>(); }

}  // namespace
}  // namespace rmoe
