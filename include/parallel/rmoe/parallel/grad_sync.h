// grad_sync.h — the reductions over the data-parallel ranks of one step: the
// model's forward statistics, and after the micro-batches the gradients, the
// loss and the global gradient norm.
//
// Each rank holds its part of the gradient of the global loss (Model::backward).
// Replicated parameters (everything but the experts) are the same on every
// rank: their gradients are summed over world. An expert lives on one rank of
// each expert-parallel group (EP) and has a replica in every group, on the
// ranks of its expert-data-parallel group (EDP): its gradients are summed over
// EDP. Deterministic for a fixed layout (Comm's collectives are).
// Tested by tests/mpi_test_parallel.cpp (every layout gives the one-process
// loss and gradients; the first step's gradient norm equals one process's).
#pragma once
#include "rmoe/model/model.h"
#include "rmoe/model/params.h"
#include "rmoe/parallel/comm.h"

namespace rmoe {

// The reducer a Model sums its forward statistics with (the aux losses see
// every rank's tokens): all-reduce over world. Empty (nothing to do) when
// world is one process. world must outlive the model.
StatsReducer world_stats_reducer(Comm& world);

// The capacity's slot-key exchange (SlotGatherer): every rank's keys of a
// layer, in rank order, through one count exchange and one all-to-all-v over
// world. Empty when world is one process. world must outlive the model.
SlotGatherer world_slot_gatherer(Comm& world);

// Sums the gradients over the ranks that share each parameter (replicated:
// world, experts: EDP) and loss, this rank's share of the step's mean loss,
// over world.
template <class T>
void allreduce_grads(const ProcessGroups& g, ParamStore<T>& grads, double& loss);

// The L2 norm of the (reduced) gradients of the whole model, each parameter
// counted once: replicated ones are equal on every rank, expert squares are
// summed over EP.
template <class T>
double global_grad_norm(const ProcessGroups& g, ParamStore<T>& grads);

}  // namespace rmoe
