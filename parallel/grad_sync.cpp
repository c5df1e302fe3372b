// grad_sync.cpp — see grad_sync.h.
#include "rmoe/parallel/grad_sync.h"

#include <cmath>

#include "rmoe/kernels/ops.h"

namespace rmoe {

namespace {
template <class T>
Tensor<T> whole(std::vector<T>& v) {
  return Tensor<T>(v.data(), {int64_t(v.size())});
}
}  // namespace

StatsReducer world_stats_reducer(Comm& world) {
  if (world.size() == 1) return {};
  return [&world](Tensor<double> stats) { world.allreduce_sum(stats.data, stats.numel()); };
}

template <class T>
void allreduce_grads(const ProcessGroups& g, ParamStore<T>& grads, double& loss) {
  auto& gr = grads.replicated();
  auto& ge = grads.expert();
  g.world->allreduce_sum(gr.data(), int64_t(gr.size()));
  g.edp->allreduce_sum(ge.data(), int64_t(ge.size()));
  g.world->allreduce_sum(&loss, 1);
}

template <class T>
double global_grad_norm(const ProcessGroups& g, ParamStore<T>& grads) {
  double expert_sq = 0, replicated_sq = 0;
  ops::sum_squares<T>(Tensor<double>(&expert_sq, {1}), whole(grads.expert()));
  g.ep->allreduce_sum(&expert_sq, 1);
  ops::sum_squares<T>(Tensor<double>(&replicated_sq, {1}), whole(grads.replicated()));
  return std::sqrt(replicated_sq + expert_sq);
}

template void allreduce_grads<float>(const ProcessGroups&, ParamStore<float>&, double&);
template void allreduce_grads<double>(const ProcessGroups&, ParamStore<double>&, double&);
template double global_grad_norm<float>(const ProcessGroups&, ParamStore<float>&);
template double global_grad_norm<double>(const ProcessGroups&, ParamStore<double>&);

}  // namespace rmoe
