// train_loop.h — the pieces of rmoe_train's run(): resuming from --load
// (with what a resume checks), the --save directory checks, the run header,
// the step loop (log lines, metrics, evaluation, the save decision, skipped
// steps, stopping on a signal or --exit-interval) and the closing summary.
// Header-only: each app is one source file. Every line goes to stdout, which
// only rank 0 keeps (rmoe_train.cpp sends the others' to /dev/null).
// Tested through tests/cli/*.sh (train_cli, checkpoint_resume, mpi_rank_failure,
// quickstart).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "metrics_writer.h"
#include "rmoe/core/error.h"
#include "rmoe/core/format.h"
#include "rmoe/core/profile.h"
#include "rmoe/core/timer.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"
#include "rmoe/train/dry_run.h"
#include "rmoe/train/signals.h"
#include "rmoe/train/trainer.h"

extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

namespace rmoe {

// "12m05s" below an hour, "1h02m" from one.
inline std::string format_duration(double s) {
  char buf[32];
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(t / 3600), long(t / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", long(t / 60), long(t % 60));
  return buf;
}

// Fault injection for the no-hang test: RMOE_FAIL_AT=RANK:STEP throws on that
// rank after that step (tests/cli/mpi_rank_failure.sh).
inline void maybe_inject_failure(int rank, int64_t step) {
  static const char* spec = std::getenv("RMOE_FAIL_AT");
  if (!spec) return;
  int r = -1;
  long s = -1;
  if (std::sscanf(spec, "%d:%ld", &r, &s) == 2 && r == rank && s == step)
    throw Error("injected failure on rank " + std::to_string(rank) + " at step " + std::to_string(step));
}

// Exit status of a run that stopped early (a signal, --exit-interval) when no
// checkpoint of the stop step exists: without --save there is nothing to
// resume from, so it is neither "done" (0) nor "continue later" (3,
// exit_status_requeue, which job scripts requeue on). README, slurm/README.md.
constexpr int exit_status_stopped_without_checkpoint = 4;

// Runs `decide` on world rank 0 only and gives every rank its result, or
// makes every rank throw rank 0's exception (UsageError stays UsageError), so
// no rank is left waiting in a collective. For decisions that read the file
// system (a shared one may show ranks different listings).
inline std::string decide_on_rank0(Comm& world, const std::function<std::string()>& decide) {
  std::string text;
  int64_t header[2] = {0, 0};  // length, 0 ok / 1 UsageError / 2 Error
  if (world.rank() == 0) {
    try {
      text = decide();
    } catch (const UsageError& e) {
      text = e.what();
      header[1] = 1;
    } catch (const std::exception& e) {
      text = e.what();
      header[1] = 2;
    }
    header[0] = int64_t(text.size());
  }
  world.broadcast(header, int64_t(sizeof header), 0);
  text.resize(size_t(header[0]));
  world.broadcast(text.data(), header[0], 0);
  if (header[1] == 1) throw UsageError(text);
  if (header[1] == 2) throw Error(text);
  return text;
}

// Whether two paths name the same place (neither need exist).
inline bool same_path(const std::string& a, const std::string& b) {
  std::error_code ea, eb;
  const auto ca = std::filesystem::weakly_canonical(a, ea), cb = std::filesystem::weakly_canonical(b, eb);
  if (ea || eb) return std::filesystem::path(a).lexically_normal() == std::filesystem::path(b).lexically_normal();
  return ca == cb;
}

// --load DIR resumes from its newest checkpoint (none yet: start fresh), so
// one command line serves the first run and every requeue. A --load that
// does not exist is a UsageError, unless it is also the --save directory
// (the requeue idiom's first run: one line says the run starts fresh). Rank 0
// picks the checkpoint and tells the others, so every rank loads the same
// file even if a shared file system shows them different listings.
//
// What a resume checks (docs/DATA.md): the checkpoint's stored configuration
// against this run's. A change to a model-shaping option
// (model_shaping_options(): the shapes, top-k, router type and width,
// router-detach, tied embeddings, init, seed) or to the tokenizer of the data
// is a UsageError naming every such option with both values; every other
// change is printed, one line per option, and recorded in the metrics (a
// "resume" record). A checkpoint without a tokenizer fingerprint (an older
// file) gets a one-line warning. Then the trainer continues the checkpoint's
// step, token count, skip counts and run id. Returns the path resumed from
// ("" when starting fresh).
inline std::string resume_from_load(const TrainConfig& cfg, Trainer& trainer, const ProcessGroups& groups,
                                    MetricsWriter& metrics) {
  if (cfg.load.empty()) return "";
  bool fresh_save_dir = false;  // --load does not exist but is the --save directory
  const std::string path = decide_on_rank0(*groups.world, [&]() -> std::string {
    std::error_code ec;
    if (!std::filesystem::exists(cfg.load, ec)) {
      if (!cfg.save.empty() && same_path(cfg.load, cfg.save)) return "";
      throw UsageError("--load=" + cfg.load + ": no such file or directory; give a checkpoint (ckpt_<step>.h5) or "
                       "the --save directory of an earlier run (to start a fresh run that later runs resume, give "
                       "the same directory as --save and --load)");
    }
    return resolve_load_path(cfg.load);
  });
  if (path.empty()) {
    std::error_code ec;
    fresh_save_dir = !std::filesystem::exists(cfg.load, ec);
    if (fresh_save_dir)
      std::printf("--load=%s does not exist yet; it is also the --save directory: starting a fresh run at step 0\n",
                  cfg.load.c_str());
    else
      std::printf("no checkpoint in %s yet: starting from step 0\n", cfg.load.c_str());
    return "";
  }

  // The configuration and the tokenizer first: a model change is named by
  // option, not by the first tensor whose shape it changed.
  const CheckpointHeader h = read_checkpoint_header(path);
  TrainState saved;
  saved.config_ini = h.config_ini;
  saved.tokenizer_fingerprint = h.tokenizer_fingerprint;
  saved.tokenizer = h.tokenizer;
  const ResumeChanges changes =
      compare_for_resume(saved, config_to_ini(cfg), trainer.tokenizer_fingerprint(), trainer.tokenizer_description());
  if (!changes.refused.empty()) {
    std::string list;
    for (const ConfigChange& c : changes.refused)
      list += (list.empty() ? "" : "; ") + c.key + ": " + c.from + " -> " + c.to;
    throw UsageError("--load=" + path + ": cannot resume: it was trained with another model or data tokenizer (" +
                     list + "; checkpoint -> this run); resume with the checkpoint's values (rmoe_ckpt info " + path +
                     " shows them), or start a new run in an empty --save directory");
  }
  if (h.tokenizer_fingerprint.empty())
    std::printf("warning: %s records no tokenizer fingerprint (written by an older rmoe): not checking that it was "
                "trained on this run's tokenizer, %s\n",
                path.c_str(), trainer.tokenizer_description().c_str());

  TrainState s = trainer.state();
  load_checkpoint(path, s, groups);
  trainer.restore(s);
  for (const ConfigChange& c : changes.reported)
    std::printf("resume: %s changed since the checkpoint: %s -> %s\n", c.key.c_str(), c.from.c_str(), c.to.c_str());
  metrics.resume(s.step, path, changes.reported);
  std::printf("resumed from %s at step %ld (%ld tokens", path.c_str(), long(s.step), long(s.consumed_tokens));
  if (s.skipped_steps > 0) std::printf(", %ld skipped step(s)", long(s.skipped_steps));
  std::printf(")\n");
  return path;
}

// The --save directory, checked before the first step so no work is lost at
// the first save: it is created and a probe file written, fsynced and
// removed (UsageError naming it otherwise), and it must not hold checkpoints
// of another run (by run id; UsageError naming them and what to do). A run
// that resumed tolerates files without a run id (written before run ids);
// a fresh run tolerates none. keep-K never deletes another run's files
// either (checkpoint.h).
inline void check_save_dir(const TrainConfig& cfg, const Trainer& trainer, const ProcessGroups& groups,
                           bool resumed) {
  if (cfg.save.empty()) return;
  decide_on_rank0(*groups.world, [&]() -> std::string {
    try {
      probe_checkpoint_dir(cfg.save);
    } catch (const Error& e) {
      throw UsageError("--save=" + cfg.save + ": cannot write checkpoints there (" + e.what() +
                       "); choose a writable directory");
    }
    const std::vector<std::string> other = checkpoints_of_other_runs(cfg.save, trainer.run_id(), !resumed);
    if (!other.empty()) {
      std::string list;
      for (size_t i = 0; i < other.size() && i < 3; ++i) list += (i ? ", " : "") + other[i];
      if (other.size() > 3) list += ", ... (" + std::to_string(other.size()) + " files)";
      throw UsageError("--save=" + cfg.save + " already holds checkpoints of another run (" + list +
                       "); to continue that run give --load " + cfg.save + ", otherwise choose an empty directory");
    }
    return "";
  });
}

// The model, the layout, the data and the batch of this run.
inline void print_run_header(const TrainConfig& cfg, const ModelStats& stats, const ProcessGroups& groups,
                             const Trainer& trainer) {
  std::printf("rmoe_train: %s router, %d layers, d=%d, %d experts (top-%d), %.2fM params (%.2fM active/token)\n",
              router_type_name(cfg.model.router_type), cfg.model.num_layers, cfg.model.hidden_size,
              cfg.model.num_experts, cfg.model.topk, stats.total_params / 1e6, stats.active_params_per_token / 1e6);
  std::printf("layout: %d ranks, expert-parallel size %d (%d experts per rank), data-parallel over all ranks\n",
              groups.world->size(), groups.ep_size, groups.num_local_experts);
  std::printf("data: %s\n", trainer.source().describe().c_str());
  std::printf("batch: %d x %d tokens per step (micro-batch %d, %d accumulation steps), %ld steps; "
              "OpenBLAS %s, %d threads\n",
              cfg.global_batch_size, cfg.model.seq_length, cfg.micro_batch_size, cfg.accumulation_steps(),
              long(cfg.train_iters), openblas_get_corename(), openblas_get_num_threads());
  std::fflush(stdout);
}

// Time and all-to-all traffic of this run's steps (this rank's view), and the
// window since the last log line.
struct RunTimes {
  double window_seconds = 0, total_seconds = 0, a2a_seconds = 0, allreduce_seconds = 0, data_seconds = 0;
  int64_t a2a_bytes = 0, window_steps = 0;
  double profiled_seconds = 0;  // --profile: the steps the profile covers (all but the run's first)
  int64_t profiled_steps = 0;

  void add(const StepStats& st) {
    window_seconds += st.seconds;
    total_seconds += st.seconds;
    a2a_seconds += st.a2a_seconds;
    allreduce_seconds += st.allreduce_seconds;
    data_seconds += st.data_seconds;
    a2a_bytes += st.a2a_bytes;
    ++window_steps;
  }
  // Tokens/s over the window, which starts again.
  double take_window_rate(double tokens_per_step) {
    const double tps = tokens_per_step * window_steps / window_seconds;
    window_seconds = 0;
    window_steps = 0;
    return tps;
  }
};

// Whether step `step` (0-based) of a run that started at step `first` gets a
// log line: every --log-interval, the run's first and its last. The trainer
// is told before the step (--log-router-grads measures on these steps only).
inline bool is_log_step(const TrainConfig& cfg, int64_t step, int64_t first) {
  const int64_t done = step + 1;
  return done % cfg.log_interval == 0 || done == cfg.train_iters || step == first;
}

// " | router grad lm X lb Y[ z Z]": the totals of the router gradient's parts
// (--log-router-grads), "" for a step that did not measure them.
inline std::string format_router_grads(const RouterGradSplit& rg) {
  if (!rg.measured) return "";
  char buf[96];
  std::snprintf(buf, sizeof buf, " | router grad lm %.3e lb %.3e", rg.lm.total, rg.lb.total);
  std::string text = buf;
  if (rg.has_z) {
    std::snprintf(buf, sizeof buf, " z %.3e", rg.z.total);
    text += buf;
  }
  return text;
}

// The log line of step st.step + 1 of train_iters; the router gradient's
// parts when measured; "| skipped N" at the end once the run has skipped
// steps (non-finite loss or gradient).
inline std::string format_step_line(const StepStats& st, int64_t train_iters, double tokens_per_s,
                                    double eta_seconds) {
  const char* format =
      "step %6ld/%ld | loss %.4f | lr %.3e | grad %.3f | aux %.4f | %8.0f tok/s | load %.2f (L%d)%s | eta %s%s\n";
  const std::string eta = format_duration(eta_seconds);
  std::string drop;  // --moe-expert-capacity-factor: dropped slots, mean and per layer
  if (!st.layer_drop.empty()) {
    char mean[32];
    std::snprintf(mean, sizeof mean, " | drop %.1f%% [", 100 * st.drop);
    drop = mean;
    for (size_t l = 0; l < st.layer_drop.size(); ++l) {
      char one[16];
      std::snprintf(one, sizeof one, "%s%.1f", l ? " " : "", 100 * st.layer_drop[l]);
      drop += one;
    }
    drop += "]";
  }
  const std::string router = drop + format_router_grads(st.router_grads);
  const std::string skipped = st.skipped_steps > 0 ? " | skipped " + std::to_string(st.skipped_steps) : "";
  auto print = [&](char* out, size_t size) {
    return std::snprintf(out, size, format, long(st.step + 1), long(train_iters), st.loss, st.lr, st.grad_norm, st.lb,
                         tokens_per_s, st.max_load, st.worst_layer, router.c_str(), eta.c_str(), skipped.c_str());
  };
  std::string line(size_t(print(nullptr, 0)), '\0');  // a huge finite gradient norm has ~300 digits
  print(line.data(), line.size() + 1);
  return line;
}

// The line of a skipped step (every one is printed, whatever --log-interval).
inline std::string format_skipped_line(const StepStats& st, int64_t train_iters, int64_t max_skipped) {
  return "step " + std::to_string(st.step + 1) + "/" + std::to_string(train_iters) + " | SKIPPED: loss " +
         shortest_text(st.loss) + ", grad " + shortest_text(st.grad_norm) + " not finite, no update (" +
         std::to_string(st.skipped_in_a_row) + " in a row, at most " + std::to_string(max_skipped) +
         " allowed; skipped " + std::to_string(st.skipped_steps) + ")\n";
}

// The evaluation step after step `step`: the validation loss over
// --eval-iters batches, with the entropy rate (synthetic data) and BPC (byte
// data) or perplexity; printed and recorded.
inline void evaluate_and_report(Trainer& trainer, const TrainConfig& cfg, int64_t step, MetricsWriter& metrics) {
  const double val = trainer.evaluate(cfg.eval_iters);
  const double best = trainer.source().entropy_rate_nats();
  std::printf("eval step %ld | val loss %.4f", long(step), val);
  if (best >= 0) std::printf(" | entropy rate %.4f (gap %.4f)", best, val - best);
  if (trainer.source().byte_level())
    std::printf(" | bpc %.4f", val / std::log(2.0));  // one token per byte (character)
  else
    std::printf(" | ppl %.2f", std::exp(val));
  std::printf("\n");
  std::fflush(stdout);
  metrics.eval(step, val);
}

// The checkpoint step: saves the trainer's state into --save (keeping
// --keep-checkpoints), unless there is no --save or this step is saved
// already (e.g. the step a run resumed from, or an interval save followed by
// a stop).
class CheckpointSaver {
 public:
  // last_saved: the step already on disk (the step resumed from), -1 if none.
  CheckpointSaver(const TrainConfig& cfg, Trainer& trainer, const ProcessGroups& groups, int64_t last_saved)
      : cfg_(cfg), trainer_(trainer), groups_(groups), last_saved_(last_saved) {}
  bool enabled() const { return !cfg_.save.empty(); }
  // Whether --save holds a checkpoint of the trainer's current step (saved
  // by this saver, or the step resumed from).
  bool has_current_step() const { return enabled() && last_saved_ == trainer_.step(); }
  void save(const char* why) {
    if (!enabled() || last_saved_ == trainer_.step()) return;
    const auto t0 = Clock::now();
    const std::string path = save_checkpoint(cfg_.save, trainer_.state(), groups_, cfg_.keep_checkpoints);
    last_saved_ = trainer_.step();
    std::printf("saved %s (%s, %.2f s)\n", path.c_str(), why, seconds_since(t0));
    std::fflush(stdout);
  }

 private:
  const TrainConfig& cfg_;
  Trainer& trainer_;
  const ProcessGroups& groups_;
  int64_t last_saved_;
};

// Why a run stops early after step `done`, saving first: a stop signal any
// rank got (all ranks learn of it at the same step), or --exit-interval.
// Returns false to go on.
inline bool stop_after(int64_t done, const TrainConfig& cfg, Comm& world, CheckpointSaver& saver) {
  if (const StopRequest stop = stop_request_any(world); stop.signal != 0) {
    if (stop_signal() != 0)  // received here; else name the rank that did
      std::printf("signal %d: stopping after step %ld (%s)\n", stop_signal(), long(done),
                  stop_signal_name(stop_signal()));
    else
      std::printf("stopping after step %ld: rank %d got signal %d (%s)\n", long(done), stop.rank, stop.signal,
                  stop_signal_name(stop.signal));
    saver.save("signal");
    return true;
  }
  if (cfg.exit_interval > 0 && done % cfg.exit_interval == 0 && done < cfg.train_iters) {
    std::printf("--exit-interval=%ld: stopping after step %ld\n", long(cfg.exit_interval), long(done));
    saver.save("exit interval");
    return true;
  }
  return false;
}

// Steps from trainer.step() to --train-iters: log every --log-interval steps
// (and the first and last) and every skipped step, evaluate every
// --eval-interval (and at the end), save every --save-interval and at the
// end. Returns exit_status_done; after an early stop (stop_after)
// exit_status_requeue when a checkpoint of the stop step exists, else
// exit_status_stopped_without_checkpoint. A run of more than
// --max-skipped-steps non-finite steps ends with the trainer's Error (exit 1)
// before anything of that step is saved.
inline int train_loop(const TrainConfig& cfg, Trainer& trainer, const ProcessGroups& groups, MetricsWriter& metrics,
                      CheckpointSaver& saver, RunTimes& times) {
  const double tokens_per_step = double(cfg.global_batch_size) * cfg.model.seq_length;
  const int64_t last = cfg.train_iters, first = trainer.step();
  if (cfg.profile) profile::enable(true);
  while (trainer.step() < last) {
    if (cfg.profile) profile::resume();
    const bool log_step = is_log_step(cfg, trainer.step(), first);
    const StepStats st = trainer.train_step(cfg.log_router_grads && log_step);
    if (cfg.profile) {
      profile::pause();  // evaluation and saves are not part of a step
      if (st.step == first) {
        profile::reset();  // the first step touches every buffer: left out
      } else {
        times.profiled_seconds += st.seconds;
        ++times.profiled_steps;
      }
    }
    const int64_t done = st.step + 1;
    maybe_inject_failure(groups.world->rank(), done);
    times.add(st);
    if (st.skipped) {
      std::fputs(format_skipped_line(st, cfg.train_iters, cfg.max_skipped_steps).c_str(), stdout);
      std::fflush(stdout);
      metrics.skip(st);
    } else if (log_step) {
      const double tps = times.take_window_rate(tokens_per_step);
      const double eta = (last - done) * (times.total_seconds / double(done - first));
      std::fputs(format_step_line(st, cfg.train_iters, tps, eta).c_str(), stdout);
      std::fflush(stdout);
      metrics.train(st, tps);
    }
    if (cfg.eval_interval > 0 && (done % cfg.eval_interval == 0 || done == last))
      evaluate_and_report(trainer, cfg, done, metrics);
    if (cfg.save_interval > 0 && done % cfg.save_interval == 0) saver.save("interval");
    if (stop_after(done, cfg, *groups.world, saver))
      return saver.has_current_step() ? exit_status_requeue : exit_status_stopped_without_checkpoint;
  }
  saver.save("end of training");
  return exit_status_done;
}

// The closing lines: how far the run got, its speed, and where the time went.
inline void print_run_summary(const TrainConfig& cfg, const Trainer& trainer, int64_t first_step, int exit_status,
                              const RunTimes& t, bool saving) {
  if (exit_status == exit_status_stopped_without_checkpoint)
    std::printf("warning: stopped early without %s: nothing to resume from (exit status %d)\n",
                saving ? "a checkpoint" : "--save", exit_status);
  const double tokens_per_step = double(cfg.global_batch_size) * cfg.model.seq_length;
  const int64_t ran = trainer.step() - first_step;
  std::printf("%s: step %ld/%ld, %ld steps in %s this run (%.0f tokens/s)\n",
              exit_status == exit_status_done ? "done" : "stopped", long(trainer.step()), long(cfg.train_iters),
              long(ran), format_duration(t.total_seconds).c_str(),
              tokens_per_step * ran / std::max(t.total_seconds, 1e-9));
  const double n = std::max<int64_t>(ran, 1), tot = std::max(t.total_seconds, 1e-9);
  std::printf("time per step (rank 0): %.4f s = all-to-all %.1f%% + gradient all-reduce %.1f%% + data %.1f%% + compute "
              "%.1f%%; all-to-all sent %.2f MB/step\n",
              tot / n, 100 * t.a2a_seconds / tot, 100 * t.allreduce_seconds / tot, 100 * t.data_seconds / tot,
              100 * (tot - t.a2a_seconds - t.allreduce_seconds - t.data_seconds) / tot, t.a2a_bytes / n / 1e6);
  if (cfg.profile) std::fputs(profile::report(t.profiled_steps, t.profiled_seconds).c_str(), stdout);
}

}  // namespace rmoe
