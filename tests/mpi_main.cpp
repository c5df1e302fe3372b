// mpi_main.cpp — GoogleTest main for the tests that run under mpiexec.
//
// Every rank runs every test; afterwards the number of failed tests is
// all-reduced, so one failing rank fails the whole run on every rank and no
// rank waits in a collective another rank skipped (tests are written so every
// rank reaches the same collectives; assertions that could differ per rank
// are reduced first). Only rank 0 prints GoogleTest's report; other ranks
// print their failures.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace {
// On ranks other than 0: print each failed assertion with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                   r.summary());
  }

 private:
  int rank_;
};
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  const int local = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int failed_ranks = 0;
  MPI_Allreduce(&local, &failed_ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (local) std::fprintf(stderr, "rank %d of %d: tests FAILED\n", rank, size);
  if (rank == 0) std::printf("mpi_tests on %d ranks: %d rank(s) failed\n", size, failed_ranks);
  MPI_Finalize();
  return failed_ranks == 0 ? 0 : 1;
}
