// mpi_dispatcher.h — the expert dispatcher over an expert-parallel group.
//
// Per MoE layer: exchange per-expert slot counts (all-to-all), send each token
// slot's vector to its expert's owner (all-to-all-v), regroup received rows by
// local expert (source rank order within an expert, so the result does not
// depend on timing), run the shared grouped expert stage, and send results
// back the same way. Backward mirrors it. An expert or a rank with no rows is
// an ordinary zero-length piece. It only moves rows: the aux-loss statistics
// are summed by the model's reducer (grad_sync.h).
// Tested by tests/mpi_test_parallel.cpp under mpiexec -n 1, 2, 4.
#pragma once
#include "rmoe/parallel/comm.h"
#include "rmoe/model/expert_dispatcher.h"

namespace rmoe {

template <class T>
class MpiExpertDispatcher : public ExpertDispatcher<T> {
 public:
  // ep: this rank's expert-parallel group.
  MpiExpertDispatcher(int num_layers, int num_experts, Comm& ep);

 protected:
  int64_t plan(int l, const int64_t* offsets, int64_t N) override;
  void to_experts(int l, In<T> x, Tensor<T> xe) override;
  void from_experts(int l, In<T> ye, Tensor<T> y) override;

 private:
  struct Plan {
    std::vector<int64_t> send_rows, recv_rows;  // [P] rows to / from each EP rank
    std::vector<int64_t> recv_cnt;              // [P, El] rows from rank r for local expert j
    // Row offset of block (r, j) in source-major order (as all-to-all-v
    // delivers) and in expert-major order (as the grouped GEMMs want).
    std::vector<int64_t> src_major, exp_major;  // [P, El]
  };
  // Regroups rows between [source rank][expert] and [expert][source rank] order.
  void permute(const Plan& p, In<T> in, Tensor<T> out, bool to_expert_major) const;

  Comm& ep_;
  std::vector<Plan> plans_;
  std::vector<T> buf_;
  std::vector<int64_t> counts_, elems_send_, elems_recv_;
};

extern template class MpiExpertDispatcher<float>;
extern template class MpiExpertDispatcher<double>;

}  // namespace rmoe
