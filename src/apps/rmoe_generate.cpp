// rmoe_generate — samples text from a checkpoint (docs/ARCHITECTURE.md, apps).
//
//   rmoe_generate --load CKPT_OR_DIR [--data-path DIR | --tokenizer-from DIR] --prompt TEXT
//                 [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--no-stop-at-eod]
//                 [--allow-tokenizer-mismatch]
//
// Rebuilds the model from the configuration stored in the checkpoint, loads
// its weights and the tokenizer of a dataset (--data-path or --tokenizer-from
// DIR, default: the dataset the run trained on), and extends the prompt one
// token at a time. Each new token: the last S tokens of the context (S = the
// model's sequence length) are placed at positions 0.. of one sequence, the
// rest of it padded with end-of-document tokens AFTER them (causal attention
// and per-token routing make the padding invisible to the real positions, and
// the positions match training, which starts every window at 0); the logits
// at the last real position are divided by T, cut to the K most likely
// tokens and then to the smallest set whose probability reaches P, and one
// token is drawn with the counter-based RNG (core/rng.h) at (seed, token
// index), so a seed always gives the same text. T = 0 picks the most likely
// token. Generation stops after N tokens or at an end-of-document token
// (unless --no-stop-at-eod). An empty prompt starts a new document (the
// context is one end-of-document token).
//
// The dataset's tokenizer must be the one the model was trained on (the
// checkpoint's tokenizer_fingerprint, checkpoint.h): another one, even of the
// same vocabulary size, would decode garbage, so it is refused naming both,
// unless --allow-tokenizer-mismatch (then a warning). A checkpoint written
// before fingerprints gets a one-line warning.
//
// Prints prompt + continuation on stdout (decoded by the dataset's tokenizer;
// byte data prints the bytes as they are), and one summary line on stderr.
// One process (refused under mpirun with more than one rank), one thread
// unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are set.
// Exit status: 0 done, 1 failure, 2 bad usage (one line).
// Tested by tests/cli/eval_generate.sh and tests/cli/quickstart.sh.

#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "app_main.h"
#include "app_options.h"
#include "rmoe/data/dataset.h"
#include "rmoe/data/synthetic.h"
#include "rmoe/data/tokenizer.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/core/timer.h"
#include "rmoe/model/model.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"
#include "rmoe/train/signals.h"

extern "C" void openblas_set_num_threads(int);

using namespace rmoe;
namespace po = boost::program_options;

namespace {

struct GenerateOptions {
  std::string load, data_path, tokenizer_from, prompt;
  int64_t max_tokens = 200;
  double temperature = 0.8;
  int top_k = 0;       // 0: no cut
  double top_p = 1.0;  // 1: no cut
  uint64_t seed = 1;
  bool stop_at_eod = true;
};

// Draws a token from `logits` [V] (see the file comment); `u` uniform in [0, 1).
int32_t sample_token(const float* logits, int V, const GenerateOptions& o, double u, std::vector<int32_t>& order,
                     std::vector<double>& prob) {
  if (o.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);
  // Most likely first; ties by id, so the order is fully determined.
  order.resize(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int keep_k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  prob.assign(keep_k, 0.0);
  const double top = double(logits[order[0]]) / o.temperature;
  double sum = 0;
  for (int i = 0; i < keep_k; ++i) sum += prob[i] = std::exp(double(logits[order[i]]) / o.temperature - top);
  int keep = keep_k;
  if (o.top_p < 1) {
    double cum = 0;
    for (int i = 0; i < keep_k; ++i) {
      cum += prob[i] / sum;
      if (cum >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int i = 0; i < keep; ++i) kept += prob[i];
  double target = u * kept, cum = 0;
  for (int i = 0; i < keep; ++i) {
    cum += prob[i];
    if (target < cum) return order[i];
  }
  return order[keep - 1];  // u * kept rounded up to the total
}

const char* kAbout =
    "rmoe_generate: sample text from a checkpoint\n"
    "usage: rmoe_generate --load CKPT_OR_DIR [--data-path DIR | --tokenizer-from DIR] --prompt TEXT [options]\n"
    "Prints prompt + continuation on stdout and a summary line on stderr. Exit status: 0 done, 1 failure, 2 bad "
    "usage.\nOptions";

int run(int argc, char** argv) {
  GenerateOptions o;
  po::options_description desc(kAbout);
  // clang-format off
  desc.add_options()
      ("help", "print this help and exit")
      ("load", po::value<std::string>(&o.load), "checkpoint file, or a --save directory (its newest checkpoint)")
      ("data-path", po::value<std::string>(&o.data_path),
       "dataset whose tokenizer decodes (default: the dataset the checkpoint trained on)")
      ("tokenizer-from", po::value<std::string>(&o.tokenizer_from), "same as --data-path")
      ("prompt", po::value<std::string>(&o.prompt), "text to continue (may be empty: start a new document)")
      ("max-tokens", po::value<int64_t>(&o.max_tokens)->default_value(200), "tokens to generate")
      ("temperature", po::value<double>(&o.temperature)->default_value(0.8), "softmax temperature; 0 = greedy")
      ("top-k", po::value<int>(&o.top_k)->default_value(0), "sample from the K most likely tokens only; 0 = all")
      ("top-p", po::value<double>(&o.top_p)->default_value(1.0),
       "then from the smallest set of them with probability >= P (nucleus); 1 = no cut")
      ("seed", po::value<uint64_t>(&o.seed)->default_value(1), "random seed; the same seed gives the same text")
      ("no-stop-at-eod", "keep generating after an end-of-document token")
      ("allow-tokenizer-mismatch", "decode with the dataset's tokenizer even if the model was trained on another "
       "(a warning instead of an error)");
  // clang-format on
  po::variables_map vm;
  if (!parse_or_usage(argc, argv, desc, vm)) return 0;  // --help
  if (mpi_initialized() && mpi_world()->size() > 1)
    throw UsageError("runs in one process; start it without mpirun (or with -n 1)");
  if (!vm.count("prompt")) throw UsageError("--prompt is required (an empty --prompt= starts a new document)");
  if (vm.count("data-path") && vm.count("tokenizer-from"))
    throw UsageError("give --data-path or --tokenizer-from, not both");
  if (o.max_tokens < 0) throw UsageError("--max-tokens=" + std::to_string(o.max_tokens) + " must be >= 0");
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw UsageError("--temperature=" + std::to_string(o.temperature) + " must be a finite number >= 0");
  if (o.top_k < 0) throw UsageError("--top-k=" + std::to_string(o.top_k) + " must be >= 0 (0 = no cut)");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw UsageError("--top-p=" + std::to_string(o.top_p) + " must be in (0, 1]");
  o.stop_at_eod = !vm.count("no-stop-at-eod");

  const std::string path = checkpoint_to_load(o.load);
  const CheckpointHeader header = read_checkpoint_header(path);
  TrainConfig cfg = parse_train_config_from_ini(header.config_ini, path, {"--expert-parallel-size=0"});
  std::string data = !o.data_path.empty() ? o.data_path : o.tokenizer_from;
  const char* data_flag = !o.data_path.empty() ? "--data-path" : "--tokenizer-from";
  if (data.empty()) {
    data = cfg.data_path;
    data_flag = "the checkpoint's data-path";
    if (is_synthetic_data_path(data))
      throw UsageError(path + " was trained on " + data + ", which has no tokenizer; give --data-path DIR");
  }
  if (!is_dataset_dir(data))
    throw UsageError(std::string(data_flag) + "=" + data + ": not a dataset directory (no " + kDatasetMetaFile +
                     "); give the directory rmoe_prepare wrote");
  const ShardDataset dataset(data);
  const Tokenizer& tok = dataset.tokenizer();
  const int V = cfg.model.vocab_size, S = cfg.model.seq_length;
  if (tok.vocab_size() != V)
    throw UsageError("the tokenizer of " + data + " has vocabulary " + std::to_string(tok.vocab_size()) +
                     " but the model of " + path + " has vocabulary " + std::to_string(V) +
                     "; use the dataset the model was trained on");
  check_same_tokenizer(header, path, data, tokenizer_fingerprint_of(tok), tok.describe(),
                       vm.count("allow-tokenizer-mismatch") > 0, true);

  // One sequence is too little work to share between threads (on a busy
  // machine, waiting threads make it many times slower): one thread unless
  // OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise.
  if (!std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
  if (!std::getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
  check_memory_fits(cfg, 1, 1, MemoryUse::generation);  // one process, one sequence
  Model<float> model(cfg.model, 1);
  TrainState state;  // m_rep null: the moments are not read
  state.params = &model.params();
  const ProcessGroups groups = make_process_groups(make_self_comm(), 0, cfg.model.num_experts);
  load_checkpoint(path, state, groups);

  std::vector<int32_t> context;
  tok.encode(o.prompt, context);
  const size_t prompt_tokens = context.size();
  if (context.empty()) context.push_back(tok.eod_id());  // a new document
  const int32_t eod = tok.eod_id();
  std::vector<int32_t> tokens(S), targets(S, 0), generated, order;
  std::vector<double> prob;
  const uint64_t stream = hash_name("rmoe_generate");
  const auto t0 = Clock::now();
  bool ended = false;
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    const size_t n = std::min<size_t>(context.size(), size_t(S));
    std::copy(context.end() - n, context.end(), tokens.begin());
    std::fill(tokens.begin() + n, tokens.end(), eod);
    model.forward(tokens.data(), targets.data(), 1);
    const float* row = model.logits(int64_t(n) - 1, 1).data;
    const int32_t next = sample_token(row, V, o, random_uniform(o.seed, stream, uint64_t(i)), order, prob);
    if (next == eod && o.stop_at_eod) {
      ended = true;
      break;
    }
    context.push_back(next);
    generated.push_back(next);
  }
  const double seconds = seconds_since(t0);
  const std::string text = o.prompt + tok.decode(generated.data(), int64_t(generated.size()), "\n");
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  std::fprintf(stderr,
               "rmoe_generate: %zu prompt + %zu generated tokens in %.2f s (%.1f tokens/s)%s; %s (step %lld), "
               "temperature %g, top-k %d, top-p %g, seed %llu\n",
               prompt_tokens, generated.size(), seconds, generated.size() / std::max(seconds, 1e-9),
               ended ? ", stopped at end of document" : "", path.c_str(), (long long)state.step, o.temperature,
               o.top_k, o.top_p, (unsigned long long)o.seed);
  return exit_status_done;
}

}  // namespace

int main(int argc, char** argv) { return rmoe::mpi_app_main("rmoe_generate", argc, argv, run); }
