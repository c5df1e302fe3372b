// bench_sgemm — the machine's OpenBLAS sgemm GFLOP/s, the ceiling the CPU
// training step is measured against. Usage: bench_sgemm [M N K]...
// Run with OPENBLAS_NUM_THREADS=1 for the single-thread figure.
#include <cblas.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "rmoe/core/timer.h"

extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

int main(int argc, char** argv) {
  std::vector<std::array<int, 3>> shapes = {{512, 512, 512}, {1024, 1024, 1024}, {2048, 352, 352}, {512, 352, 1024}};
  if (argc >= 4) {
    shapes.clear();
    for (int i = 1; i + 2 < argc; i += 3) shapes.push_back({std::atoi(argv[i]), std::atoi(argv[i + 1]), std::atoi(argv[i + 2])});
  }
  std::printf("OpenBLAS core %s, %d threads\n", openblas_get_corename(), openblas_get_num_threads());
  for (auto [M, N, K] : shapes) {
    std::vector<float> A(size_t(M) * K, 0.5f), B(size_t(K) * N, 0.25f), C(size_t(M) * N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, C.data(), N);
    int reps = 0;
    const auto t0 = rmoe::Clock::now();
    double s = 0;
    while (s < 1.0) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, C.data(), N);
      ++reps;
      s = rmoe::seconds_since(t0);
    }
    std::printf("sgemm %5d x %5d x %5d: %7.1f GFLOP/s\n", M, N, K, 2.0 * M * N * K * reps / s / 1e9);
  }
}
