// expert_dispatcher.h — moves token slots to the experts that own them, runs
// the grouped expert GEMMs, and brings the results back (docs/ARCHITECTURE.md §3).
//
// The model gathers each layer's token slots sorted by global expert id (rows
// xs[N,d] with offsets[E+1]). The dispatcher's job:
//   forward:  xs -> rows grouped by LOCAL expert (xe) -> experts -> ye -> ys
//   backward: dys -> dye -> experts backward -> dxe -> dxs
// This base class is the one-process dispatcher (every expert is local, the
// moves are copies). parallel/mpi_dispatcher.cpp overrides plan/to_experts/
// from_experts with all-to-all-v over the expert-parallel group; the expert
// math is this class's, the same on every layout. Rows move by ops (copy, add,
// fill) on views; the one host copy is the expert offsets in forward().
#pragma once
#include <cstdint>
#include <vector>

#include "rmoe/core/tensor.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

template <class T>
class ExpertDispatcher {
 public:
  ExpertDispatcher(int num_layers, int num_experts, int first_local_expert, int num_local_experts);
  virtual ~ExpertDispatcher() = default;

  int first_local_expert() const { return first_local_; }
  int num_local_experts() const { return num_local_; }

  // xs [N,d] sorted by global expert; offsets [E+1] (a view on the model's
  // device); ys [N,d] overwritten. W1, W3 [El,f,d], W2 [El,d,f] are this
  // rank's experts.
  void forward(int l, In<T> xs, Tensor<const int64_t> offsets, Tensor<T> ys, In<T> W1, In<T> W3, In<T> W2);
  // dys [N,d]; dxs [N,d] and dW* accumulate (+=).
  void backward(int l, In<T> dys, Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2, In<T> W1, In<T> W3,
                In<T> W2);
  // Bytes this rank sent through all-to-all and seconds spent in it, since reset.
  int64_t bytes_sent() const { return bytes_sent_; }
  double comm_seconds() const { return comm_seconds_; }
  void reset_counters() { bytes_sent_ = 0; comm_seconds_ = 0; }

 protected:
  struct LayerState {
    std::vector<int64_t> eoff;     // [El+1] rows of each local expert in xe
    std::vector<T> xe, ea, eb, eh; // saved for backward: [R,d], [R,f] x3
  };
  // Decide where rows go for layer l from the host copy of the offsets
  // [E+1]; must set state(l).eoff and return R.
  virtual int64_t plan(int l, const int64_t* offsets, int64_t N);
  // Slot order (rows of x, [N,d]) -> local-expert order (rows of xe, [R,d]).
  virtual void to_experts(int l, In<T> x, Tensor<T> xe);
  // Inverse move: local-expert order (ye [R,d]) -> slot order (y [N,d]).
  virtual void from_experts(int l, In<T> ye, Tensor<T> y);

  LayerState& state(int l) { return layers_[l]; }
  int num_experts_, first_local_, num_local_;
  int64_t bytes_sent_ = 0;
  double comm_seconds_ = 0;

 private:
  std::vector<LayerState> layers_;
  std::vector<T> ye_, dye_, dxe_, da_, db_, back_;  // scratch, grown as needed
  std::vector<int64_t> n_rows_;                     // N of the last forward per layer
  std::vector<int64_t> host_offsets_;               // [E+1] the host copy of forward's offsets
};

extern template class ExpertDispatcher<float>;
extern template class ExpertDispatcher<double>;

}  // namespace rmoe
