// expert_dispatcher.cpp — the grouped expert stage and the one-process moves.
// Tested through tests/test_model.cpp and, with the MPI moves,
// tests/mpi_test_parallel.cpp (every layout gives the one-process result).
#include "rmoe/model/expert_dispatcher.h"

#include <algorithm>
#include <cstring>

#include "rmoe/core/error.h"

namespace rmoe {

namespace {
template <class T>
T* grow(std::vector<T>& v, int64_t n) {  // capacity is kept: allocates only when a step needs more
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}
}  // namespace

template <class T>
ExpertDispatcher<T>::ExpertDispatcher(int num_layers, int num_experts, int first_local, int num_local)
    : num_experts_(num_experts), first_local_(first_local), num_local_(num_local), layers_(num_layers),
      n_rows_(num_layers, 0) {
  RMOE_CHECK(num_local >= 1 && first_local >= 0 && first_local + num_local <= num_experts,
             "expert slice [" << first_local << ", " << first_local + num_local << ") of " << num_experts);
}

template <class T>
int64_t ExpertDispatcher<T>::plan(int l, const int64_t* offsets, int64_t N) {
  auto& st = state(l);
  st.eoff.assign(offsets, offsets + num_experts_ + 1);
  return N;
}

// One process: slot order already is expert order; the moves are copies.
template <class T>
void ExpertDispatcher<T>::to_experts(int l, const T* x, int64_t d, T* xe) {
  std::memcpy(xe, x, sizeof(T) * size_t(n_rows_[l] * d));
}

template <class T>
void ExpertDispatcher<T>::from_experts(int l, const T* ye, int64_t d, T* y) {
  std::memcpy(y, ye, sizeof(T) * size_t(n_rows_[l] * d));
}

template <class T>
void ExpertDispatcher<T>::forward(int l, In<T> xs, const int64_t* offsets, Tensor<T> ys, In<T> W1, In<T> W3,
                                  In<T> W2) {
  const int64_t N = xs.rows(), d = xs.cols(), f = W1.size(1);
  n_rows_[l] = N;
  const int64_t R = plan(l, offsets, N);
  auto& st = state(l);
  T* xe = grow(st.xe, R * d);
  to_experts(l, xs.data, d, xe);
  T* ye = grow(ye_, R * d);
  ops::experts_forward(Tensor<T>(ye, {R, d}), Tensor<T>(grow(st.ea, R * f), {R, f}),
                       Tensor<T>(grow(st.eb, R * f), {R, f}), Tensor<T>(grow(st.eh, R * f), {R, f}),
                       Tensor<const T>(xe, {R, d}), Tensor<const int64_t>(st.eoff.data(), {num_local_ + 1}), W1, W3,
                       W2);
  from_experts(l, ye, d, ys.data);
}

template <class T>
void ExpertDispatcher<T>::backward(int l, In<T> dys, Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2,
                                   In<T> W1, In<T> W3, In<T> W2) {
  auto& st = state(l);
  const int64_t d = dys.cols(), f = W1.size(1), R = st.eoff.back() - st.eoff.front();
  T* dye = grow(dye_, R * d);
  to_experts(l, dys.data, d, dye);
  T* dxe = grow(dxe_, R * d);
  std::fill_n(dxe, R * d, T(0));
  ops::experts_backward(Tensor<T>(dxe, {R, d}), dW1, dW3, dW2, Tensor<T>(grow(da_, R * f), {R, f}),
                        Tensor<T>(grow(db_, R * f), {R, f}), Tensor<const T>(dye, {R, d}),
                        Tensor<const T>(st.xe.data(), {R, d}),
                        Tensor<const int64_t>(st.eoff.data(), {num_local_ + 1}), Tensor<const T>(st.ea.data(), {R, f}),
                        Tensor<const T>(st.eb.data(), {R, f}), Tensor<const T>(st.eh.data(), {R, f}), W1, W3, W2);
  const int64_t N = n_rows_[l];
  T* back = grow(back_, N * d);
  from_experts(l, dxe, d, back);
  for (int64_t i = 0; i < N * d; ++i) dxs.data[i] += back[i];
}

template class ExpertDispatcher<float>;
template class ExpertDispatcher<double>;

}  // namespace rmoe
