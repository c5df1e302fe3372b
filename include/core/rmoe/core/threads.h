// threads.h — CPU threading defaults for the apps.
//
// OpenBLAS runs its own thread pool next to OpenMP's. With OpenMP's default
// (active, spinning) wait policy, idle OpenMP threads keep the cores busy
// while the BLAS threads need them: measured 311 tokens/s at 2+2 threads vs
// 878 with OMP_WAIT_POLICY=passive on the medium config (2 cores). libgomp
// reads the policy once, when it loads, so a main that wants it must set it
// and exec itself again, first thing (before MPI_Init).
#pragma once
#include <cstdint>

namespace rmoe {

// Whether a loop over `work` elements is worth an OpenMP team: starting one
// wakes every thread (tens of microseconds under the passive wait policy
// below), more than a small op's whole work. Results never depend on it (each
// element is computed by one thread, reductions in a fixed order). Used as
// `#pragma omp parallel for if (worth_threads(n))`.
inline bool worth_threads(int64_t work) { return work >= (int64_t(1) << 15); }

// If OMP_WAIT_POLICY is unset, sets it to "passive" and re-executes this
// program with the same arguments. Before that, when ranks_on_node > 1 (several
// processes of one job share this node; the launcher says how many, see
// rmoe/parallel/launcher.h) and OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are
// unset, gives each its share of the cores: OpenMP regions with more threads
// than free cores wait on descheduled threads at every barrier. Returns
// normally when the policy is already set (or when the exec fails, which only
// costs speed).
void use_passive_omp_wait(char** argv, int ranks_on_node);

}  // namespace rmoe
