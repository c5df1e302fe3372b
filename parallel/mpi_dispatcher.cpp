// mpi_dispatcher.cpp — see mpi_dispatcher.h.
#include "rmoe/parallel/mpi_dispatcher.h"

#include <chrono>

#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

template <class T>
MpiExpertDispatcher<T>::MpiExpertDispatcher(int num_layers, int num_experts, Comm& ep)
    : ExpertDispatcher<T>(num_layers, num_experts, ep.rank() * (num_experts / ep.size()), num_experts / ep.size()),
      ep_(ep),
      plans_(num_layers) {
  RMOE_CHECK(num_experts % ep.size() == 0,
             "--num-experts=" << num_experts << " is not divisible by the expert-parallel size " << ep.size());
}

template <class T>
int64_t MpiExpertDispatcher<T>::plan(int l, const int64_t* offsets, int64_t N) {
  const int P = ep_.size(), El = this->num_local_;
  Plan& p = plans_[l];
  counts_.assign(size_t(P) * El, 0);
  for (int e = 0; e < P * El; ++e) counts_[e] = offsets[e + 1] - offsets[e];  // global expert e = q*El + j
  p.recv_cnt.assign(size_t(P) * El, 0);
  const auto t0 = std::chrono::steady_clock::now();
  ep_.alltoall(counts_.data(), p.recv_cnt.data(), El);
  this->comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  p.send_rows.assign(P, 0);
  p.recv_rows.assign(P, 0);
  auto& eoff = this->state(l).eoff;
  eoff.assign(El + 1, 0);
  for (int q = 0; q < P; ++q)
    for (int j = 0; j < El; ++j) {
      p.send_rows[q] += counts_[q * El + j];
      p.recv_rows[q] += p.recv_cnt[q * El + j];
      eoff[j + 1] += p.recv_cnt[q * El + j];
    }
  for (int j = 0; j < El; ++j) eoff[j + 1] += eoff[j];
  p.src_major.assign(size_t(P) * El, 0);
  p.exp_major.assign(size_t(P) * El, 0);
  int64_t o = 0;
  for (int r = 0; r < P; ++r)
    for (int j = 0; j < El; ++j) p.src_major[r * El + j] = o, o += p.recv_cnt[r * El + j];
  o = 0;
  for (int j = 0; j < El; ++j)
    for (int r = 0; r < P; ++r) p.exp_major[r * El + j] = o, o += p.recv_cnt[r * El + j];
  (void)N;
  return eoff[El];
}

template <class T>
void MpiExpertDispatcher<T>::permute(const Plan& p, In<T> in, Tensor<T> out, bool to_expert_major) const {
  const int P = ep_.size(), El = this->num_local_;
  for (int b = 0; b < P * El; ++b) {
    const int64_t from = to_expert_major ? p.src_major[b] : p.exp_major[b];
    const int64_t to = to_expert_major ? p.exp_major[b] : p.src_major[b];
    ops::copy(out.slice(to, p.recv_cnt[b]), in.slice(from, p.recv_cnt[b]));
  }
}

template <class T>
void MpiExpertDispatcher<T>::to_experts(int l, In<T> x, Tensor<T> xe) {
  const Plan& p = plans_[l];
  const int P = ep_.size();
  const int64_t d = x.cols();
  elems_send_.resize(P);
  elems_recv_.resize(P);
  int64_t R = 0;
  for (int r = 0; r < P; ++r) {
    elems_send_[r] = p.send_rows[r] * d;
    elems_recv_[r] = p.recv_rows[r] * d;
    R += p.recv_rows[r];
  }
  if (int64_t(buf_.size()) < R * d) buf_.resize(size_t(R * d));
  const auto t0 = std::chrono::steady_clock::now();
  ep_.alltoallv(x.data, elems_send_.data(), buf_.data(), elems_recv_.data());
  this->comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int r = 0; r < P; ++r)
    if (r != ep_.rank()) this->bytes_sent_ += elems_send_[r] * int64_t(sizeof(T));
  permute(p, Tensor<const T>(buf_.data(), {R, d}), xe, true);
}

template <class T>
void MpiExpertDispatcher<T>::from_experts(int l, In<T> ye, Tensor<T> y) {
  const Plan& p = plans_[l];
  const int P = ep_.size();
  const int64_t d = ye.cols();
  int64_t R = 0;
  for (int r = 0; r < P; ++r) {
    elems_send_[r] = p.recv_rows[r] * d;  // results go back where the rows came from
    elems_recv_[r] = p.send_rows[r] * d;
    R += p.recv_rows[r];
  }
  if (int64_t(buf_.size()) < R * d) buf_.resize(size_t(R * d));
  permute(p, ye, Tensor<T>(buf_.data(), {R, d}), false);
  const auto t0 = std::chrono::steady_clock::now();
  ep_.alltoallv(buf_.data(), elems_send_.data(), y.data, elems_recv_.data());
  this->comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int r = 0; r < P; ++r)
    if (r != ep_.rank()) this->bytes_sent_ += elems_send_[r] * int64_t(sizeof(T));
}

template class MpiExpertDispatcher<float>;
template class MpiExpertDispatcher<double>;

}  // namespace rmoe
