// threads.h — CPU threading defaults for the apps.
//
// OpenBLAS runs its own thread pool next to OpenMP's, and on a machine with
// as many threads as cores the two pools take turns on the same cores:
// - With OpenMP's default (active, spinning) wait policy, idle OpenMP threads
//   keep the cores busy while the BLAS threads need them: measured 311
//   tokens/s at 2+2 threads vs 878 with OMP_WAIT_POLICY=passive on the medium
//   config (2 cores).
// - An idle OpenBLAS thread spins too, for 2^OPENBLAS_THREAD_TIMEOUT cycles
//   (default 2^28, about 0.1 s) after each threaded GEMM, while the OpenMP
//   regions that follow (attention blocks, concurrent experts, pointwise ops)
//   need its core: measured 1337-1427 tokens/s at 2 threads vs 1825-1830
//   with OPENBLAS_THREAD_TIMEOUT=4 or 14 (medium config, 2 cores, Haswell
//   kernel; 1 thread: 1014-1027).
// Both libraries read these once, when they load, so a main that wants them
// must set them and exec itself again, first thing (before MPI_Init).
#pragma once
#include <cstdint>

namespace rmoe {

// Whether a loop over `work` elements is worth an OpenMP team: starting one
// wakes every thread (tens of microseconds under the passive wait policy
// below), more than a small op's whole work. Results never depend on it (each
// element is computed by one thread, reductions in a fixed order). Used as
// `#pragma omp parallel for if (worth_threads(n))`.
inline bool worth_threads(int64_t work) { return work >= (int64_t(1) << 15); }

// Sets, where the user has not, OMP_WAIT_POLICY=passive and
// OPENBLAS_THREAD_TIMEOUT=kOpenBlasThreadTimeout, and re-executes this
// program with the same arguments if it set either. Before that, when
// ranks_on_node > 1 (several processes of one job share this node; the
// launcher says how many, see rmoe/parallel/launcher.h) and OMP_NUM_THREADS /
// OPENBLAS_NUM_THREADS are unset, gives each its share of the cores: OpenMP
// regions with more threads than free cores wait on descheduled threads at
// every barrier. Returns normally when nothing needed setting (or when the
// exec fails, which only costs speed).
void use_thread_defaults(char** argv, int ranks_on_node);

// log2 of the cycles an idle OpenBLAS thread spins before it sleeps (OpenBLAS
// accepts 4..30): about 5 microseconds, less than a wake-up costs.
inline constexpr int kOpenBlasThreadTimeout = 14;

}  // namespace rmoe
