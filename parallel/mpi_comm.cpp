// mpi_comm.cpp — Comm over MPI, SelfComm, and the process-group layout.
//
// Counts above INT_MAX are not supported by MPI's int interface; the checks
// say so instead of silently truncating.
#include <mpi.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <numeric>

#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/watchdog.h"
#include "rmoe/core/error.h"
#include "rmoe/core/profile.h"

namespace rmoe {

#define RMOE_MPI(call)                                                                              \
  do {                                                                                              \
    int rmoe_rc_ = (call);                                                                          \
    if (rmoe_rc_ != MPI_SUCCESS) {                                                                  \
      char rmoe_msg_[MPI_MAX_ERROR_STRING];                                                         \
      int rmoe_len_ = 0;                                                                            \
      MPI_Error_string(rmoe_rc_, rmoe_msg_, &rmoe_len_);                                            \
      RMOE_CHECK(false, #call << ": " << std::string(rmoe_msg_, rmoe_len_) << " on " << host_name()); \
    }                                                                                               \
  } while (0)

std::string host_name() {
  char h[256] = {0};
  gethostname(h, sizeof h - 1);
  return h;
}

namespace {

int to_int(int64_t n, const char* what) {
  RMOE_CHECK(n >= 0 && n <= INT_MAX, what << ": count " << n << " exceeds MPI's int range");
  return int(n);
}

// A blocking collective: timed under --profile (communication), watched by
// the --collective-timeout watchdog (watchdog.h).
struct InCollective {
  explicit InCollective(const char* call) : wait(call) {}
  profile::RegionScope region{profile::Region::communication};
  CollectiveWait wait;
};

template <class T> MPI_Datatype mpi_type();
template <> MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <> MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm c, bool owned) : c_(c), owned_(owned) {
    MPI_Comm_rank(c_, &rank_);
    MPI_Comm_size(c_, &size_);
  }
  ~MpiComm() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (owned_ && !fin) MPI_Comm_free(&c_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  template <class T>
  void sum(T* x, int64_t n) {
    if (size_ == 1 || n == 0) return;
    InCollective in("MPI_Allreduce (sum)");
    RMOE_MPI(MPI_Allreduce(MPI_IN_PLACE, x, to_int(n, "allreduce"), mpi_type<T>(), MPI_SUM, c_));
  }
  void allreduce_sum(float* x, int64_t n) override { sum(x, n); }
  void allreduce_sum(double* x, int64_t n) override { sum(x, n); }
  void allreduce_sum(int64_t* x, int64_t n) override { sum(x, n); }
  void allreduce_max(double* x, int64_t n) override {
    if (size_ == 1 || n == 0) return;
    InCollective in("MPI_Allreduce (max)");
    RMOE_MPI(MPI_Allreduce(MPI_IN_PLACE, x, to_int(n, "allreduce"), MPI_DOUBLE, MPI_MAX, c_));
  }
  void alltoall(const int64_t* send, int64_t* recv, int64_t n) override {
    InCollective in("MPI_Alltoall");
    RMOE_MPI(MPI_Alltoall(send, to_int(n, "alltoall"), MPI_INT64_T, recv, to_int(n, "alltoall"), MPI_INT64_T, c_));
  }
  template <class T>
  void a2av(const T* send, const int64_t* sc, T* recv, const int64_t* rc) {
    InCollective in("MPI_Alltoallv");
    std::vector<int> scount(size_), sdisp(size_), rcount(size_), rdisp(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      scount[r] = to_int(sc[r], "alltoallv");
      rcount[r] = to_int(rc[r], "alltoallv");
      sdisp[r] = to_int(so, "alltoallv offset");
      rdisp[r] = to_int(ro, "alltoallv offset");
      so += sc[r];
      ro += rc[r];
    }
    RMOE_MPI(MPI_Alltoallv(send, scount.data(), sdisp.data(), mpi_type<T>(), recv, rcount.data(), rdisp.data(),
                           mpi_type<T>(), c_));
  }
  void alltoallv(const float* s, const int64_t* sc, float* r, const int64_t* rc) override { a2av(s, sc, r, rc); }
  void alltoallv(const double* s, const int64_t* sc, double* r, const int64_t* rc) override { a2av(s, sc, r, rc); }
  void allgather(const float* send, int64_t n, float* recv) override {
    InCollective in("MPI_Allgather");
    RMOE_MPI(MPI_Allgather(send, to_int(n, "allgather"), MPI_FLOAT, recv, to_int(n, "allgather"), MPI_FLOAT, c_));
  }
  void allgatherv(const double* send, int64_t n, double* recv, const int64_t* counts) override {
    InCollective in("MPI_Allgatherv");
    std::vector<int> rcount(size_), rdisp(size_);
    int64_t off = 0;
    for (int r = 0; r < size_; ++r) {
      rcount[r] = to_int(counts[r], "allgatherv");
      rdisp[r] = to_int(off, "allgatherv offset");
      off += counts[r];
    }
    RMOE_MPI(MPI_Allgatherv(send, to_int(n, "allgatherv"), MPI_DOUBLE, recv, rcount.data(), rdisp.data(), MPI_DOUBLE,
                            c_));
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    InCollective in("MPI_Bcast");
    RMOE_MPI(MPI_Bcast(data, to_int(bytes, "broadcast"), MPI_BYTE, root, c_));
  }
  void barrier() override {
    InCollective in("MPI_Barrier");
    RMOE_MPI(MPI_Barrier(c_));
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm nc;
    RMOE_MPI(MPI_Comm_split(c_, color, key, &nc));
    return std::make_unique<MpiComm>(nc, true);
  }

 private:
  MPI_Comm c_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  void allreduce_sum(int64_t*, int64_t) override {}
  void allreduce_max(double*, int64_t) override {}
  void alltoall(const int64_t* s, int64_t* r, int64_t n) override { std::memcpy(r, s, n * sizeof(int64_t)); }
  void alltoallv(const float* s, const int64_t* sc, float* r, const int64_t*) override { std::memcpy(r, s, sc[0] * sizeof(float)); }
  void alltoallv(const double* s, const int64_t* sc, double* r, const int64_t*) override { std::memcpy(r, s, sc[0] * sizeof(double)); }
  void allgather(const float* s, int64_t n, float* r) override { std::memcpy(r, s, n * sizeof(float)); }
  void allgatherv(const double* s, int64_t n, double* r, const int64_t*) override {
    std::memcpy(r, s, n * sizeof(double));
  }
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<SelfComm>(); }
};

}  // namespace

std::unique_ptr<Comm> make_self_comm() { return std::make_unique<SelfComm>(); }

void mpi_init(int* argc, char*** argv) {
  int provided = 0;
  RMOE_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  // Errors come back as codes so RMOE_MPI can name the call.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
void mpi_finalize() {
  set_collective_timeout(0);  // the watchdog must not outlive MPI
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}
bool mpi_initialized() {
  int init = 0;
  MPI_Initialized(&init);
  return init != 0;
}
int mpi_world_rank() {
  int r = 0;
  if (mpi_initialized()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
std::unique_ptr<Comm> mpi_world() { return std::make_unique<MpiComm>(MPI_COMM_WORLD, false); }
void mpi_abort_all(int status) {
  if (mpi_initialized()) {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, status);  // nobody may wait for this rank
    mpi_finalize();  // alone: a plain exit, without MPI_Abort's banner
  }
  std::exit(status);
}

int resolve_expert_parallel_size(int requested, int P, int E) {
  if (requested == 0) {
    int ep = std::gcd(P, E);
    return ep;
  }
  if (requested < 1 || P % requested != 0 || E % requested != 0)
    throw UsageError("--expert-parallel-size=" + std::to_string(requested) + " must divide both the number of ranks (" +
                     std::to_string(P) + ") and --num-experts (" + std::to_string(E) + ")");
  return requested;
}

ProcessGroups make_process_groups(std::unique_ptr<Comm> world, int requested_ep, int E) {
  ProcessGroups g;
  const int P = world->size(), r = world->rank();
  g.ep_size = resolve_expert_parallel_size(requested_ep, P, E);
  const int ep_rank = r % g.ep_size;
  g.ep = world->split(r / g.ep_size, ep_rank);
  g.edp = world->split(ep_rank, r / g.ep_size);
  g.num_local_experts = E / g.ep_size;
  g.first_local_expert = ep_rank * g.num_local_experts;
  g.world = std::move(world);
  return g;
}

}  // namespace rmoe
