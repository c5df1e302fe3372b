// rmoe_train — trains an MoE language model (DESIGN.md). Thin main: parse the
// configuration, build the trainer, loop, log. Exit status: 0 done, 1 failure,
// 2 bad usage (one line naming the option).

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app_main.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"
#include "rmoe/train/config.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/dry_run.h"
#include "rmoe/train/signals.h"
#include "rmoe/train/trainer.h"

extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

using namespace rmoe;

namespace {

// Fault injection for the no-hang test: RMOE_FAIL_AT=RANK:STEP throws on that
// rank after that step (tests/cli/mpi_rank_failure.sh).
void maybe_inject_failure(int rank, int64_t step) {
  static const char* spec = std::getenv("RMOE_FAIL_AT");
  if (!spec) return;
  int r = -1;
  long s = -1;
  if (std::sscanf(spec, "%d:%ld", &r, &s) == 2 && r == rank && s == step)
    throw Error("injected failure on rank " + std::to_string(rank) + " at step " + std::to_string(step));
}

std::string format_duration(double s) {
  char buf[32];
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(t / 3600), long(t / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", long(t / 60), long(t % 60));
  return buf;
}

int run(int argc, char** argv) {
  TrainConfig cfg = parse_train_config(argc, argv);
  if (cfg.help) {
    std::cout << cfg.help_text;
    return 0;
  }
  resolve_vocab_size_from_data(cfg);  // --data-path DIR: the dataset's vocabulary unless --vocab-size is given
  const ModelStats stats = compute_model_stats(cfg);
  if (cfg.dry_run && cfg.dry_run_ranks > 0) {  // plan a layout without starting it
    const std::string layout = format_layout(
        cfg, stats, cfg.dry_run_ranks,
        resolve_expert_parallel_size(cfg.expert_parallel_size, cfg.dry_run_ranks, cfg.model.num_experts));
    if (mpi_world_rank() == 0) std::cout << format_dry_run(cfg, stats) << layout;
    return 0;
  }
  auto groups = std::make_shared<ProcessGroups>(
      make_process_groups(mpi_world(), cfg.expert_parallel_size, cfg.model.num_experts));
  const bool root = groups->world->rank() == 0;
  if (cfg.dry_run) {
    const std::string layout = format_layout(cfg, stats, groups->world->size(), groups->ep_size);
    if (root) std::cout << format_dry_run(cfg, stats) << layout;
    return 0;
  }
  Trainer trainer(cfg, groups);
  if (!root && !std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);  // rank 0 reports; others via errors
  install_stop_signal_handlers();
  // --load DIR resumes from its newest checkpoint (none yet: start fresh), so
  // one command line serves the first run and every requeue.
  std::string resumed_from;
  if (!cfg.load.empty()) {
    // Rank 0 picks the checkpoint and tells the others, so every rank loads the
    // same file even if a shared file system shows them different listings.
    std::string path = root ? resolve_load_path(cfg.load) : std::string();
    int64_t len = int64_t(path.size());
    groups->world->broadcast(&len, sizeof len, 0);
    path.resize(size_t(len));
    groups->world->broadcast(path.data(), len, 0);
    if (path.empty()) {
      std::printf("no checkpoint in %s yet: starting from step 0\n", cfg.load.c_str());
    } else {
      TrainState s = trainer.state();
      load_checkpoint(path, s, *groups);
      if (s.seed != cfg.seed)
        throw UsageError("--seed=" + std::to_string(cfg.seed) + " differs from the seed " + std::to_string(s.seed) +
                         " of " + path + " (the data order depends on it); resume with --seed " +
                         std::to_string(s.seed));
      trainer.set_step(s.step);
      resumed_from = path;
      std::printf("resumed from %s at step %ld\n", path.c_str(), long(s.step));
    }
  }
  std::printf("rmoe_train: %s router, %d layers, d=%d, %d experts (top-%d), %.2fM params (%.2fM active/token)\n",
              router_type_name(cfg.model.router_type), cfg.model.num_layers, cfg.model.hidden_size,
              cfg.model.num_experts, cfg.model.topk, stats.total_params / 1e6, stats.active_params_per_token / 1e6);
  std::printf("layout: %d ranks, expert-parallel size %d (%d experts per rank), data-parallel over all ranks\n",
              groups->world->size(), groups->ep_size, groups->num_local_experts);
  std::printf("data: %s\n", trainer.source().describe().c_str());
  std::printf("batch: %d x %d tokens per step (micro-batch %d, %d accumulation steps), %ld steps; "
              "OpenBLAS %s, %d threads\n",
              cfg.global_batch_size, cfg.model.seq_length, cfg.micro_batch_size, cfg.accumulation_steps(),
              long(cfg.train_iters), openblas_get_corename(), openblas_get_num_threads());
  std::fflush(stdout);
  std::ofstream metrics;
  if (root && !cfg.metrics_file.empty()) {
    metrics.open(cfg.metrics_file, std::ios::app);
    RMOE_CHECK(metrics, "--metrics-file=" << cfg.metrics_file << ": cannot open for writing");
  }
  const double tokens_per_step = double(cfg.global_batch_size) * cfg.model.seq_length;
  double window_seconds = 0, total_seconds = 0, a2a_seconds = 0, allreduce_seconds = 0, data_seconds = 0;
  int64_t a2a_bytes = 0;
  int64_t window_steps = 0;
  const int64_t last = cfg.train_iters, first = trainer.step();
  int64_t last_saved = resumed_from.empty() ? -1 : first;
  auto save = [&](const char* why) {
    if (cfg.save.empty() || last_saved == trainer.step()) return;
    const auto t0 = Clock::now();
    const std::string path = save_checkpoint(cfg.save, trainer.state(), *groups, cfg.keep_checkpoints);
    last_saved = trainer.step();
    std::printf("saved %s (%s, %.2f s)\n", path.c_str(), why, seconds_since(t0));
    std::fflush(stdout);
  };
  int exit_status = exit_status_done;
  while (trainer.step() < last) {
    const StepStats st = trainer.train_step();
    maybe_inject_failure(groups->world->rank(), st.step + 1);
    window_seconds += st.seconds;
    total_seconds += st.seconds;
    a2a_seconds += st.a2a_seconds;
    allreduce_seconds += st.allreduce_seconds;
    data_seconds += st.data_seconds;
    a2a_bytes += st.a2a_bytes;
    ++window_steps;
    const bool log_now = (st.step + 1) % cfg.log_interval == 0 || st.step + 1 == last || st.step == first;
    if (log_now) {
      const double tps = tokens_per_step * window_steps / window_seconds;
      const double eta = (last - st.step - 1) * (total_seconds / (st.step + 1 - first));
      std::printf("step %6ld/%ld | loss %.4f | lr %.3e | grad %.3f | aux %.4f | %8.0f tok/s | load %.2f (L%d) | "
                  "eta %s\n",
                  long(st.step + 1), long(cfg.train_iters), st.loss, st.lr, st.grad_norm, st.lb, tps, st.max_load,
                  st.worst_layer, format_duration(eta).c_str());
      std::fflush(stdout);
      if (metrics.is_open()) {
        nlohmann::json j = {{"type", "train"}, {"step", st.step + 1}, {"loss", st.loss},     {"lr", st.lr},
                            {"grad_norm", st.grad_norm}, {"aux_lb", st.lb},          {"z", st.z},
                            {"tokens_per_s", tps},       {"max_load", st.max_load}, {"worst_layer", st.worst_layer},
                            {"layer_max_load", st.layer_load}};
        metrics << j.dump() << "\n" << std::flush;
      }
      window_seconds = 0;
      window_steps = 0;
    }
    if (cfg.eval_interval > 0 && ((st.step + 1) % cfg.eval_interval == 0 || st.step + 1 == last)) {
      const double val = trainer.evaluate(cfg.eval_iters);
      const double best = trainer.source().entropy_rate_nats();
      std::printf("eval step %ld | val loss %.4f", long(st.step + 1), val);
      if (best >= 0) std::printf(" | entropy rate %.4f (gap %.4f)", best, val - best);
      if (trainer.source().byte_level())
        std::printf(" | bpc %.4f", val / std::log(2.0));  // one token per byte (character)
      else
        std::printf(" | ppl %.2f", std::exp(val));
      std::printf("\n");
      std::fflush(stdout);
      if (metrics.is_open())
        metrics << nlohmann::json{{"type", "eval"}, {"step", st.step + 1}, {"val_loss", val}}.dump() << "\n"
                << std::flush;
    }
    const int64_t done = st.step + 1;
    if (cfg.save_interval > 0 && done % cfg.save_interval == 0) save("interval");
    // Every rank learns of a signal any rank got, at the same step.
    if (stop_requested_any(*groups->world)) {
      std::printf("signal %d: stopping after step %ld\n", stop_signal(), long(done));
      save("signal");
      exit_status = exit_status_requeue;
      break;
    }
    if (cfg.exit_interval > 0 && done % cfg.exit_interval == 0 && done < last) {
      std::printf("--exit-interval=%ld: stopping after step %ld\n", long(cfg.exit_interval), long(done));
      save("exit interval");
      exit_status = exit_status_requeue;
      break;
    }
  }
  if (exit_status == exit_status_done) save("end of training");
  if (exit_status != exit_status_done && cfg.save.empty())
    std::printf("warning: stopped early without --save: nothing was saved\n");
  const int64_t ran = trainer.step() - first;
  std::printf("%s: step %ld/%ld, %ld steps in %s this run (%.0f tokens/s)\n",
              exit_status == exit_status_done ? "done" : "stopped", long(trainer.step()), long(last), long(ran),
              format_duration(total_seconds).c_str(), tokens_per_step * ran / std::max(total_seconds, 1e-9));
  const double n = std::max<int64_t>(ran, 1), tot = std::max(total_seconds, 1e-9);
  std::printf("time per step (rank 0): %.4f s = all-to-all %.1f%% + gradient all-reduce %.1f%% + data %.1f%% + compute "
              "%.1f%%; all-to-all sent %.2f MB/step\n",
              tot / n, 100 * a2a_seconds / tot, 100 * allreduce_seconds / tot, 100 * data_seconds / tot,
              100 * (tot - a2a_seconds - allreduce_seconds - data_seconds) / tot, a2a_bytes / n / 1e6);
  return exit_status;
}

}  // namespace

int main(int argc, char** argv) { return rmoe::mpi_app_main("rmoe_train", argc, argv, run); }
