// comm.h — the communicator interface (a process group) and process groups.
//
// One interface, two implementations: MPI now (mpi_comm.cpp) and NCCL later
// (same calls, device buffers). SelfComm is the one-process group used when
// nothing is distributed. Every collective is deterministic for a fixed
// layout (no atomics; MPI's reduction order is fixed per call shape).
// Tested by tests/mpi_test_parallel.cpp under mpiexec -n 1/2/4 (ctest mpi_tests_np*).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rmoe {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place sums / max over the group.
  virtual void allreduce_sum(float* x, int64_t n) = 0;
  virtual void allreduce_sum(double* x, int64_t n) = 0;
  virtual void allreduce_sum(int64_t* x, int64_t n) = 0;
  virtual void allreduce_max(double* x, int64_t n) = 0;
  // send[r*n .. r*n+n) goes to rank r; recv[r*n ..) is what rank r sent here.
  virtual void alltoall(const int64_t* send, int64_t* recv, int64_t n) = 0;
  // Variable all-to-all of floats: send_counts[r] elements go to rank r (taken
  // in rank order from send), recv_counts[r] arrive from rank r (stored in
  // rank order into recv). Zero-length pieces are fine.
  virtual void alltoallv(const float* send, const int64_t* send_counts, float* recv,
                         const int64_t* recv_counts) = 0;
  virtual void alltoallv(const double* send, const int64_t* send_counts, double* recv,
                         const int64_t* recv_counts) = 0;
  // Concatenation of every rank's equal-size piece, in rank order, on all ranks.
  virtual void allgather(const float* send, int64_t n, float* recv) = 0;
  // The same for pieces of different lengths: counts[r] elements from rank r
  // (counts[rank()] = n), stored in rank order into recv.
  virtual void allgatherv(const double* send, int64_t n, double* recv, const int64_t* counts) = 0;
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ranks with the same color form a new group, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
};

// The group of just this process.
std::unique_ptr<Comm> make_self_comm();

// MPI: call mpi_init() first thing in main. world() wraps MPI_COMM_WORLD.
void mpi_init(int* argc, char*** argv);
void mpi_finalize();
bool mpi_initialized();
int mpi_world_rank();  // 0 when MPI is not initialised
std::unique_ptr<Comm> mpi_world();
// Ends every rank (MPI_Abort) after printing nothing more; used by mains when
// one rank fails so no other rank hangs in a collective.
[[noreturn]] void mpi_abort_all(int status);
std::string host_name();

// docs/ARCHITECTURE.md §3: P ranks, EP divides P and E. Expert e lives on EP-rank e/(E/EP)
// of every EP group. EP groups are consecutive ranks [g*EP, (g+1)*EP); the
// expert-data-parallel group of a rank holds the ranks with the same EP-rank.
struct ProcessGroups {
  std::unique_ptr<Comm> world;  // everything replicated: all-reduce here
  std::unique_ptr<Comm> ep;     // tokens travel by all-to-all here
  std::unique_ptr<Comm> edp;    // replicas of the same experts: all-reduce here
  int ep_size = 1;
  int first_local_expert = 0;
  int num_local_experts = 0;
};

// Default EP when requested = 0: the largest divisor of both P and E.
int resolve_expert_parallel_size(int requested, int world_size, int num_experts);  // throws UsageError
ProcessGroups make_process_groups(std::unique_ptr<Comm> world, int requested_ep, int num_experts);

}  // namespace rmoe
