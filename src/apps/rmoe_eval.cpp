// rmoe_eval — the validation loss of a checkpoint (docs/ARCHITECTURE.md, apps).
//
//   rmoe_eval --load CKPT_OR_DIR [--data-path DIR] [--eval-iters N] [--micro-batch-size B]
//             [--allow-tokenizer-mismatch]
//   mpirun -n 2 rmoe_eval --load runs/x/ckpt --data-path data/x
//
// Rebuilds the model from the configuration stored in the checkpoint (any
// rmoe_train option given here overrides it; --data-path defaults to the one
// the run trained on), loads the weights (not the optimizer moments) and
// evaluates the validation split: every window of it by default, or the
// first N micro-batches of B windows (--eval-iters N). Validation windows are
// those of rmoe_train (S + 1 tokens at stride S, docs/DATA.md), numbered in
// order; micro-batch m holds windows [m B, (m + 1) B). Under MPI, rank r
// takes micro-batches r, r + P, ...; the token-weighted loss is all-reduced,
// so the result does not depend on the rank count (to float rounding). Rank 0
// prints the loss, BPC (byte data: loss / ln 2) or perplexity, and the tokens
// evaluated; the last line reads
//   val loss 1.2345 | bpc 1.7810 | tokens 43008
// For synthetic:NAME data (no fixed split) N defaults to --eval-iters of the
// checkpoint's configuration.
//
// The data's tokenizer must be the one the model was trained on (the
// checkpoint's tokenizer_fingerprint, checkpoint.h): another one, even of the
// same vocabulary size, is refused naming both, unless
// --allow-tokenizer-mismatch (then a warning). A checkpoint written before
// fingerprints gets a one-line warning.
//
// Exit status: 0 done, 1 failure (also a checkpoint holding non-finite
// values), 2 bad usage (one line: a missing checkpoint, a dataset whose
// vocabulary or tokenizer differs from the model's, a bad option). An error
// on any rank ends every rank.
// Tested by tests/cli/eval_generate.sh and tests/cli/quickstart.sh.

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "app_main.h"
#include "app_options.h"
#include "eval_setup.h"
#include "rmoe/data/batch_source.h"
#include "rmoe/data/dataset.h"
#include "rmoe/data/loader.h"
#include "rmoe/data/synthetic.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/watchdog.h"
#include "rmoe/parallel/grad_sync.h"
#include "rmoe/parallel/mpi_dispatcher.h"
#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"
#include "rmoe/model/model.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"
#include "rmoe/train/signals.h"

using namespace rmoe;

namespace {

const char* kUsage =
    "usage: rmoe_eval --load CKPT_OR_DIR [--data-path DIR] [--eval-iters N] [--micro-batch-size B] [rmoe_train "
    "options]\n"
    "  --load CKPT_OR_DIR    a checkpoint file, or a --save directory (its newest checkpoint)\n"
    "  --data-path DIR       dataset made by rmoe_prepare (default: the one the checkpoint trained on)\n"
    "  --eval-iters N        evaluate the first N micro-batches of the validation split (default: all of it)\n"
    "  --micro-batch-size B  windows per forward pass (default: the checkpoint's)\n"
    "  --allow-tokenizer-mismatch  evaluate even if the data's tokenizer is not the model's (a warning)\n"
    "Other rmoe_train options override the checkpoint's configuration (e.g. --expert-parallel-size).\n"
    "Prints the validation loss, BPC (byte data) or perplexity, and the tokens evaluated (rank 0).\n"
    "Exit status: 0 done, 1 failure, 2 bad usage.\n";

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      if (mpi_world_rank() == 0) std::fputs(kUsage, stdout);
      return 0;
    }
  const bool allow_tokenizer_mismatch = take_switch(argc, argv, "--allow-tokenizer-mismatch");
  std::vector<std::pair<std::string, std::string>> own;
  std::vector<std::string> overrides =
      take_own_options(argc, argv, {"load", "eval-iters", "micro-batch-size"}, own);
  std::string load;
  int64_t eval_iters = -1;  // -1: all of the validation split
  int64_t micro_batch = -1;  // -1: the checkpoint's
  for (const auto& [name, value] : own) {
    if (name == "load") load = value;
    if (name == "eval-iters") eval_iters = parse_count("--eval-iters", value, 1);
    if (name == "micro-batch-size") micro_batch = parse_count("--micro-batch-size", value, 1, std::numeric_limits<int>::max());
  }
  const std::string path = checkpoint_to_load(load);
  const CheckpointHeader header = read_checkpoint_header(path);
  TrainConfig cfg = checkpoint_eval_config(header, path, overrides);
  if (cfg.help) {
    if (mpi_world_rank() == 0) std::fputs(kUsage, stdout);
    return 0;
  }
  if (micro_batch > 0) cfg.micro_batch_size = int(micro_batch);  // the global batch plays no part here
  if (is_synthetic_data_path(cfg.data_path) && eval_iters < 0) eval_iters = cfg.eval_iters;
  check_eval_dataset(cfg, path);

  auto groups = std::make_shared<ProcessGroups>(
      make_process_groups(mpi_world(), cfg.expert_parallel_size, cfg.model.num_experts));
  set_collective_timeout(cfg.collective_timeout);
  check_memory_fits(cfg, ranks_on_this_node(), groups->ep_size, MemoryUse::evaluation);  // before any model buffer
  const int P = groups->world->size(), rank = groups->world->rank();
  const int mb = cfg.micro_batch_size, S = cfg.model.seq_length;

  // Validation batch m is micro-batch m, sequence j of it the window m * mb + j (eval_setup.h).
  ValidationData val = open_validation_data(cfg, header, path, allow_tokenizer_mismatch, rank == 0);
  std::unique_ptr<BatchSource>& source = val.source;
  const int64_t windows = val.windows;
  int64_t micro_batches = 0;
  if (windows >= 0) {
    const int64_t all = (windows + mb - 1) / mb;
    micro_batches = eval_iters < 0 ? all : std::min(eval_iters, all);
  } else {
    micro_batches = eval_iters;
  }

  std::shared_ptr<ExpertDispatcher<float>> dispatcher;
  if (P > 1)
    dispatcher = std::make_shared<MpiExpertDispatcher<float>>(cfg.model.num_layers, cfg.model.num_experts,
                                                               *groups->ep);
  Model<float> model(cfg.model, mb, dispatcher, {}, world_slot_gatherer(*groups->world));  // the capacity: all ranks
  TrainState state;  // m_rep null: the moments are not read
  state.params = &model.params();
  load_checkpoint(path, state, *groups);

  if (rank == 0) {
    std::printf("rmoe_eval: %s (step %lld), %s router, %d layers, d=%d, %d experts (top-%d), seq %d\n", path.c_str(),
                (long long)state.step, router_type_name(cfg.model.router_type), cfg.model.num_layers,
                cfg.model.hidden_size, cfg.model.num_experts, cfg.model.topk, S);
    std::printf("data: %s\n", source->describe().c_str());
    if (windows >= 0)
      std::printf("validation: %lld of %lld micro-batches of %d windows (%s), %d rank(s)\n",
                  (long long)micro_batches, (long long)((windows + mb - 1) / mb), mb,
                  micro_batches * mb >= windows ? "all of the validation split" : "--eval-iters", P);
    else
      std::printf("validation: %lld micro-batches of %d sequences, %d rank(s)\n", (long long)micro_batches, mb, P);
    std::fflush(stdout);
  }

  // Every rank runs the same number of forward passes (the MoE layers
  // exchange tokens collectively); a rank without a micro-batch left in the
  // last round runs one window and ignores it.
  const auto t0 = Clock::now();
  std::vector<int32_t> tokens(size_t(mb) * S), targets(size_t(mb) * S);
  double sums[2] = {0, 0};  // sum of per-token CE (nats), tokens
  const int64_t rounds = (micro_batches + P - 1) / P;
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t m = r * P + rank;
    const bool real = m < micro_batches;
    int64_t n = mb;
    if (real && windows >= 0) n = std::min<int64_t>(mb, windows - m * mb);
    if (!real) n = 1;
    source->fill_validation(real ? m : 0, 0, n, S, tokens.data(), targets.data());
    const ForwardResult res = model.forward(tokens.data(), targets.data(), int(n));
    RMOE_CHECK(std::isfinite(res.ce), "validation loss is not finite (" << res.ce << ") on micro-batch " << m
                                                                         << " of " << path);
    if (real) {
      sums[0] += res.ce * double(n) * S;
      sums[1] += double(n) * S;
    }
  }
  groups->world->allreduce_sum(sums, 2);
  const double seconds = seconds_since(t0);
  if (rank == 0) {
    const double loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
    std::printf("evaluated %lld tokens in %.2f s (%.0f tokens/s)\n", (long long)sums[1], seconds,
                sums[1] / std::max(seconds, 1e-9));
    const double best = source->entropy_rate_nats();
    std::printf("val loss %.4f", loss);
    if (source->byte_level())
      std::printf(" | bpc %.4f", loss / std::log(2.0));
    else
      std::printf(" | ppl %.2f", std::exp(loss));
    if (best >= 0) std::printf(" | entropy rate %.4f (gap %.4f)", best, loss - best);
    std::printf(" | tokens %lld\n", (long long)sums[1]);
    std::fflush(stdout);
  }
  return exit_status_done;
}

}  // namespace

int main(int argc, char** argv) { return rmoe::mpi_app_main("rmoe_eval", argc, argv, run); }
