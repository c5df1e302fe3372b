// config.h — every option of a training run in one typed struct, parsed once
// from the command line and an optional INI file (docs/ARCHITECTURE.md §6).
//
//   TrainConfig cfg = parse_train_config(argc, argv);   // throws UsageError
//   if (cfg.help) { std::cout << cfg.help_text; return 0; }
//
// Flags are long options (`--num-layers 8` or `--num-layers=8`). `--config F`
// reads an INI file whose keys are the flag names without dashes
// (`num-layers = 8`); a flag given on the command line overrides the file.
// Every bad option, value or combination throws rmoe::UsageError with ONE line
// naming the option, the value and what is allowed, e.g.
//   "--moe-router-topk=5 must be <= --num-experts=4".
// config_to_ini() writes the resolved configuration back in the same INI
// format (parseable by --config), for logs and checkpoints.
//
// Tested by tests/test_config.cpp (every validation path, INI precedence,
// round trip, frozen CLI surface).
#pragma once
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "rmoe/core/tensor.h"   // Device
#include "rmoe/model/config.h"  // ModelConfig

namespace rmoe {

struct TrainConfig {
  ModelConfig model;  // shape, router, init; validated by ModelConfig::validate()

  // Batch: sequences of model.seq_length tokens.
  int micro_batch_size = 4;   // sequences per forward/backward
  int global_batch_size = 8;  // sequences per optimizer step; a multiple of
                              // micro_batch_size (split over ranks later)

  // Learning-rate schedule (train/schedule.h): linear warm-up, cosine decay.
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t lr_warmup_iters = 10;
  int64_t lr_decay_iters = -1;  // < 0: use train_iters (the parser resolves it)
  int64_t train_iters = 100;    // optimizer steps
  int64_t exit_interval = 0;    // stop after a step that is a multiple of it; 0 = never

  // AdamW (train/adamw.h) and clipping.
  double weight_decay = 0.1;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.95;
  double adam_eps = 1e-8;
  double clip_grad = 1.0;  // max global gradient L2 norm; 0 disables clipping
  // Non-finite steps: a step whose loss or gradient norm is not finite is
  // skipped (no update); after this many such steps in a row the run stops
  // with exit 1, keeping the last good checkpoint. 0 = stop at the first.
  int64_t max_skipped_steps = 10;
  // A rank waiting longer than this in one collective ends the job, naming
  // the call (another rank stopped answering; parallel/watchdog.h). 0 = never.
  double collective_timeout = 600;

  // Parallel layout (docs/ARCHITECTURE.md §3).
  int expert_parallel_size = 0;  // EP; 0 = auto (chosen from world size and E)

  // Data, checkpoints, evaluation, logging.
  std::string data_path = "synthetic:markov";  // a dataset directory or synthetic:NAME
  std::string save;             // checkpoint directory to write; empty = none
  std::string load;             // checkpoint directory to resume from; empty = none
  int64_t save_interval = 0;    // steps between checkpoints; 0 = only at the end (if --save)
  int keep_checkpoints = 3;     // newest checkpoints kept in --save (by step); 0 = keep all
  int64_t eval_interval = 0;    // steps between evaluations; 0 = never
  int64_t eval_iters = 10;      // micro-batches per evaluation
  int64_t log_interval = 10;    // steps between log lines
  bool log_router_grads = false;  // logged steps: the router gradient by loss term (trainer.h)
  uint64_t seed = 1234;         // weights, data order, synthetic data
  Device device = Device::cpu;
  bool dry_run = false;         // print sizes, FLOPs and memory, then exit
  bool profile = false;         // time every op and region of a step; print the table at the end
  int dry_run_ranks = 0;        // --dry-run plans for this many ranks (0 = those running)
  std::string metrics_file;     // JSON-lines metrics; empty = none

  // True when --vocab-size was given (command line or INI); otherwise a
  // dataset's vocabulary replaces the default (resolve_vocab_size_from_data).
  bool vocab_size_given = false;

  // Set by --help: the caller prints help_text and exits (nothing is validated).
  bool help = false;
  std::string help_text;

  int64_t resolved_lr_decay_iters() const {
    return lr_decay_iters < 0 ? train_iters : lr_decay_iters;
  }
  // Gradient-accumulation steps of one process (data parallelism divides it later).
  int accumulation_steps() const { return global_batch_size / micro_batch_size; }
};

// Parses argv (argv[0] is the program name). Throws UsageError (one line) for
// an unknown flag, a bad value, a bad combination, a missing or unreadable
// --config file (a directory, not a regular file, not text, over 1 MiB) or an
// unknown INI key. The result is validated and its lr_decay_iters resolved,
// unless help is set.
// Real values must fit 32-bit float (check_float_range, model/config.h).
// Text values (paths) must survive config_to_ini: no '#', no line break, no
// white space at either end.
// (A char** argv converts implicitly.)
TrainConfig parse_train_config(int argc, const char* const* argv);

// The configuration a checkpoint stores (its config_to_ini text, root
// attribute `config` of checkpoint.h) with `overrides` (flags as on
// rmoe_train's command line) taking precedence: the INI is read where a
// --config file would be, so every option means what it meant to rmoe_train
// and an override is validated the same way. `where` (the checkpoint) names
// the text in errors: UsageError "<where>: the checkpoint holds no
// configuration ..." for empty text, "<where>: its stored configuration is not
// readable by this build (...)" for a key this build does not know; a
// --config among the overrides is refused. Used by rmoe_eval and rmoe_generate.
TrainConfig parse_train_config_from_ini(const std::string& ini, const std::string& where,
                                        const std::vector<std::string>& overrides);

// Throws UsageError naming the first bad option (ModelConfig's checks first;
// last, that the shape's counts fit: compute_model_stats in dry_run.h).
void validate_train_config(const TrainConfig& cfg);

// The one-line text of an exception from Boost.Program_options (for any other
// exception: its what()), built without ever letting Boost 1.74 substitute a
// value that contains its own placeholder: its what() then loops forever (an
// INI line "%invalid_line%", a value "%value%"; tests/fuzz/README.md F4).
// rmoe's parsers and the apps' parse_or_usage (src/apps/app_options.h) use it.
std::string option_error_text(const std::exception& e);

// Throws UsageError unless the global batch splits into whole micro-batches:
// with ranks = 0 (no layout yet, as when parsing) in one process, e.g.
//   "--global-batch-size=10 must be a multiple of --micro-batch-size=4";
// with ranks = P, P ranks each taking global / P sequences, e.g.
//   "--global-batch-size=8 must be a multiple of ranks (3) x --micro-batch-size (2)".
void check_batch_layout(const TrainConfig& cfg, int ranks = 0);

// Throws UsageError when this build cannot run on `device`: the one place that
// says so (validate_train_config calls it). --device=cuda is refused for now:
// without a CUDA toolkit nothing of the backend is built, and with one only
// its element-wise kernels are (README, Backends).
void check_device_supported(Device device);

// What a process of an app holds (check_memory_fits):
//   training:   parameters, gradients, two AdamW moments (16 bytes per
//               parameter) + the model's buffers for --micro-batch-size (rmoe_train);
//   evaluation: parameters and gradients (a Model holds both: 8 bytes per
//               parameter) + the model's buffers for --micro-batch-size (rmoe_eval);
//   generation: the same for one sequence (rmoe_generate).
enum class MemoryUse { training, evaluation, generation };

// The apps call it before building the model: throws UsageError when
// ranks_on_node processes of `use` (experts split over ep_size ranks) need
// more memory than this machine has (available_memory_bytes() of dry_run.h;
// unknown: no check), e.g.
//   "this run needs about 812.0 GiB (weights, gradients and AdamW moments
//    12.0 GiB for 805,306,368 parameters: --num-layers=.., ...; activations
//    790.0 GiB for --micro-batch-size=4 x --seq-length=65536 tokens in 4
//    layers, ...), but the machine has 23.0 GiB available; lower
//    --micro-batch-size or --seq-length"
// (one line, naming the options of each part; the advice follows the larger
// part). Also every check of compute_model_stats (dry_run.h): the apps may
// change the micro-batch after parsing. Implemented in dry_run.cpp.
void check_memory_fits(const TrainConfig& cfg, int ranks_on_node, int ep_size = 1,
                       MemoryUse use = MemoryUse::training);

// The resolved configuration as INI text, one `key = value` line per option
// (every option except config and help), readable back through --config.
std::string config_to_ini(const TrainConfig& cfg);

// For --data-path DIR (a dataset made by rmoe_prepare): sets
// cfg.model.vocab_size to the dataset's vocabulary when --vocab-size was not
// given; throws UsageError when it was given and differs, or when DIR is not
// a readable dataset. Does nothing for synthetic:NAME.
void resolve_vocab_size_from_data(TrainConfig& cfg);

// The long flag names, in --help order (without dashes). Tests freeze this list
// so adding or renaming a flag is a deliberate act.
std::vector<std::string> train_option_names();

// The --help text.
std::string train_config_help();

}  // namespace rmoe
