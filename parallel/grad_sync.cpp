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

SlotGatherer world_slot_gatherer(Comm& world) {
  if (world.size() == 1) return {};
  // Every rank's key count (an all-to-all of the same count to each rank),
  // then the keys themselves; the buffers live with the gatherer.
  struct Buffers {
    std::vector<int64_t> send_counts, counts;
  };
  auto buf = std::make_shared<Buffers>();
  return [&world, buf](Tensor<const double> mine, std::vector<double>& all) -> int64_t {
    const int P = world.size();
    const int64_t n = mine.numel();
    buf->send_counts.assign(size_t(P), n);
    buf->counts.assign(size_t(P), 0);
    world.alltoall(buf->send_counts.data(), buf->counts.data(), 1);
    int64_t total = 0, first = 0;
    for (int r = 0; r < P; ++r) {
      if (r == world.rank()) first = total;
      total += buf->counts[size_t(r)];
    }
    all.resize(size_t(total));
    world.allgatherv(mine.data, n, all.data(), buf->counts.data());
    return first / 2;  // keys are rows of two
  };
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
