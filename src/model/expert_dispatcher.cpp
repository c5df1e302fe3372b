// expert_dispatcher.cpp — the grouped expert stage and the one-process moves.
// Tested through tests/test_model.cpp and, with the MPI moves,
// tests/mpi_test_parallel.cpp (every layout gives the one-process result).
#include "rmoe/model/expert_dispatcher.h"

#include "rmoe/core/error.h"

namespace rmoe {

namespace {
// The first rows x cols elements of v as a [rows, cols] view. v never shrinks,
// so it allocates only when a step needs more than any before.
template <class T>
Tensor<T> grown(std::vector<T>& v, int64_t rows, int64_t cols) {
  if (int64_t(v.size()) < rows * cols) v.resize(size_t(rows * cols));
  return Tensor<T>(v.data(), {rows, cols});
}
}  // namespace

template <class T>
ExpertDispatcher<T>::ExpertDispatcher(int num_layers, int num_experts, int first_local, int num_local)
    : num_experts_(num_experts), first_local_(first_local), num_local_(num_local), layers_(num_layers),
      n_rows_(num_layers, 0), host_offsets_(size_t(num_experts) + 1, 0) {
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
void ExpertDispatcher<T>::to_experts(int l, In<T> x, Tensor<T> xe) {
  ops::copy(xe, x);
}

template <class T>
void ExpertDispatcher<T>::from_experts(int l, In<T> ye, Tensor<T> y) {
  ops::copy(y, ye);
}

template <class T>
void ExpertDispatcher<T>::forward(int l, In<T> xs, Tensor<const int64_t> offsets, Tensor<T> ys, In<T> W1, In<T> W3,
                                  In<T> W2) {
  const int64_t N = xs.rows(), d = xs.cols(), f = W1.size(1);
  n_rows_[l] = N;
  // The one host copy of a MoE layer: its expert offsets [E+1]. The moves
  // need the row counts on the host (all-to-all sizes, row ranges).
  ops::copy(Tensor<int64_t>(host_offsets_.data(), {num_experts_ + 1}), offsets);
  const int64_t R = plan(l, host_offsets_.data(), N);
  auto& st = state(l);
  Tensor<T> xe = grown(st.xe, R, d), ye = grown(ye_, R, d);
  to_experts(l, xs, xe);
  ops::experts_forward(ye, grown(st.ea, R, f), grown(st.eb, R, f), grown(st.eh, R, f), xe,
                       Tensor<const int64_t>(st.eoff.data(), {num_local_ + 1}), W1, W3, W2);
  from_experts(l, ye, ys);
}

template <class T>
void ExpertDispatcher<T>::backward(int l, In<T> dys, Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2,
                                   In<T> W1, In<T> W3, In<T> W2) {
  auto& st = state(l);
  const int64_t N = n_rows_[l], d = dys.cols(), f = W1.size(1), R = st.eoff.back() - st.eoff.front();
  Tensor<T> dye = grown(dye_, R, d), dxe = grown(dxe_, R, d), back = grown(back_, N, d);
  to_experts(l, dys, dye);
  ops::fill(dxe, 0.0);
  ops::experts_backward(dxe, dW1, dW3, dW2, grown(da_, R, f), grown(db_, R, f), dye, grown(st.xe, R, d),
                        Tensor<const int64_t>(st.eoff.data(), {num_local_ + 1}), grown(st.ea, R, f),
                        grown(st.eb, R, f), grown(st.eh, R, f), W1, W3, W2);
  from_experts(l, dxe, back);
  ops::add(dxs, dxs, back);  // dxs += the rows' gradients, back in slot order
}

template class ExpertDispatcher<float>;
template class ExpertDispatcher<double>;

}  // namespace rmoe
