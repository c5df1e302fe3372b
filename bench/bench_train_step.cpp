// bench_train_step — tokens/s and achieved GFLOP/s of full training steps
// (forward, backward, AdamW) for a config: one process, or P ranks under
// mpirun (the global batch split over them, experts over --expert-parallel-size
// as rmoe_train does; rank 0 prints, tokens/s counts every rank's tokens).
// Usage: [mpirun -n P] bench_train_step --config configs/medium_char_rmoe.ini [--steps N] [--profile] [other rmoe_train flags]
// --profile adds the table of where the time of the timed steps went (profile.h; rank 0's).
// The FLOP count is dry-run's formula (6 * matmul weights + 6 L S d per token).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "rmoe/core/profile.h"
#include "rmoe/core/threads.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/launcher.h"
#include "rmoe/train/config.h"
#include "rmoe/train/dry_run.h"
#include "rmoe/train/trainer.h"

extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

int main(int argc, char** argv) {
  rmoe::use_thread_defaults(argv, rmoe::ranks_on_this_node());  // as the apps do (threads.h)
  rmoe::mpi_init(&argc, &argv);
  int steps = 5;
  std::vector<const char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
      continue;
    }
    args.push_back(argv[i]);
  }
  rmoe::TrainConfig cfg = rmoe::parse_train_config(int(args.size()), args.data());
  cfg.train_iters = std::max<int64_t>(cfg.train_iters, steps + 1);
  const rmoe::ModelStats stats = rmoe::compute_model_stats(cfg);
  std::unique_ptr<rmoe::Comm> world = rmoe::mpi_world();
  const int ranks = world->size(), rank = world->rank();
  auto groups = std::make_shared<rmoe::ProcessGroups>(
      rmoe::make_process_groups(std::move(world), cfg.expert_parallel_size, cfg.model.num_experts));
  rmoe::Trainer t(cfg, groups);
  t.train_step();  // warm-up (first touch of buffers)
  std::vector<double> secs;
  if (cfg.profile) rmoe::profile::enable(true);  // the timed steps only
  for (int i = 0; i < steps; ++i) secs.push_back(t.train_step().seconds);
  rmoe::profile::pause();
  std::sort(secs.begin(), secs.end());
  const double med = secs[secs.size() / 2];
  const double tokens = double(cfg.global_batch_size) * cfg.model.seq_length;
  if (rank != 0) {
    rmoe::mpi_finalize();
    return 0;
  }
  std::printf("router %s | L=%d d=%d E=%d k=%d f=%d S=%d batch %d | %d rank(s), EP %d | OpenBLAS %s x%d\n",
              rmoe::router_type_name(cfg.model.router_type), cfg.model.num_layers, cfg.model.hidden_size,
              cfg.model.num_experts, cfg.model.topk, cfg.model.ffn_hidden_size, cfg.model.seq_length,
              cfg.global_batch_size, ranks, groups->ep_size, openblas_get_corename(), openblas_get_num_threads());
  std::printf("step median %.4f s (min %.4f, max %.4f, %d steps) | %.0f tokens/s | %.2f GFLOP/s | %.4f MFLOP/token\n",
              med, secs.front(), secs.back(), steps, tokens / med, stats.flops_per_token * tokens / med / 1e9,
              stats.flops_per_token / 1e6);
  double total = 0;
  for (double x : secs) total += x;
  if (cfg.profile) std::fputs(rmoe::profile::report(steps, total).c_str(), stdout);
  rmoe::mpi_finalize();
}
