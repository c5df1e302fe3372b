// rmoe_train — trains an MoE language model (docs/ARCHITECTURE.md). Thin main: parse the
// configuration, answer --help / --dry-run, build the trainer, then the pieces
// of train_loop.h (resume, header, the step loop with its log lines, metrics
// (metrics_writer.h), evaluation and checkpoints, the summary). Exit status: 0
// done, 1 failure (also: more than --max-skipped-steps non-finite steps in a
// row), 2 bad usage (one line naming the option; also a --save directory that
// cannot be written or holds another run's checkpoints, a --load that does
// not exist, a resume that changes the model or the tokenizer), 3 stopped
// early with a checkpoint of the stop step in --save (a signal or
// --exit-interval; signals.h), 4 stopped early without one (no --save).

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "app_main.h"
#include "metrics_writer.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/watchdog.h"
#include "rmoe/train/config.h"
#include "rmoe/train/dry_run.h"
#include "rmoe/train/signals.h"
#include "rmoe/train/trainer.h"
#include "train_loop.h"

using namespace rmoe;

namespace {

bool stopped_without_checkpoint = false;  // run() stopped early without a checkpoint: main returns 4

int run(int argc, char** argv) {
  TrainConfig cfg = parse_train_config(argc, argv);
  if (cfg.help) {
    std::cout << cfg.help_text;
    return 0;
  }
  resolve_vocab_size_from_data(cfg);  // --data-path DIR: the dataset's vocabulary unless --vocab-size is given
  const ModelStats stats = compute_model_stats(cfg);
  if (cfg.dry_run && cfg.dry_run_ranks > 0) {  // plan a layout without starting it
    const int ep = resolve_expert_parallel_size(cfg.expert_parallel_size, cfg.dry_run_ranks, cfg.model.num_experts);
    std::string layout = format_layout(cfg, stats, cfg.dry_run_ranks, ep);
    if (cfg.device == Device::cuda) layout += format_gpu_plan(cfg, cfg.dry_run_ranks, ep);
    if (mpi_world_rank() == 0) std::cout << format_dry_run(cfg, stats) << layout;
    return 0;
  }
  auto groups = std::make_shared<ProcessGroups>(
      make_process_groups(mpi_world(), cfg.expert_parallel_size, cfg.model.num_experts));
  set_collective_timeout(cfg.collective_timeout);  // from here on no rank waits forever (watchdog.h)
  const bool root = groups->world->rank() == 0;
  if (cfg.dry_run) {
    std::string layout = format_layout(cfg, stats, groups->world->size(), groups->ep_size);
    if (cfg.device == Device::cuda) layout += format_gpu_plan(cfg, groups->world->size(), groups->ep_size);
    if (root) std::cout << format_dry_run(cfg, stats) << layout;
    return 0;
  }
  check_memory_fits(cfg, ranks_on_this_node(), groups->ep_size);  // UsageError naming the options if it cannot fit
  Trainer trainer(cfg, groups);
  if (!root && !std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);  // rank 0 reports; others via errors
  install_stop_signal_handlers();
  MetricsWriter metrics(cfg.metrics_file, root);
  const std::string resumed_from = resume_from_load(cfg, trainer, *groups, metrics);
  check_save_dir(cfg, trainer, *groups, !resumed_from.empty());
  print_run_header(cfg, stats, *groups, trainer);
  const int64_t first = trainer.step();
  CheckpointSaver saver(cfg, trainer, *groups, resumed_from.empty() ? -1 : first);
  RunTimes times;
  const int exit_status = train_loop(cfg, trainer, *groups, metrics, saver, times);
  print_run_summary(cfg, trainer, first, exit_status, times, saver.enabled());
  if (exit_status == exit_status_stopped_without_checkpoint) {
    stopped_without_checkpoint = true;
    return exit_status_done;  // see main
  }
  return exit_status;
}

}  // namespace

// A stop without a checkpoint is no failure, but the shared main ends every
// rank with MPI_Abort for any status other than 0 and 3: run() reports 0,
// MPI finalizes normally, and main returns 4.
int main(int argc, char** argv) {
  const int status = rmoe::mpi_app_main("rmoe_train", argc, argv, run);
  return status == exit_status_done && stopped_without_checkpoint ? exit_status_stopped_without_checkpoint : status;
}
