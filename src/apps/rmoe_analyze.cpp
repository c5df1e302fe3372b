// rmoe_analyze — routing and expert metrics of a checkpoint (the paper's
// Table 8 and App. A.4; formulas and caveats in docs/ANALYSIS.md).
//
//   rmoe_analyze --load CKPT_OR_DIR [--data-path DIR] [--tokens N] [--out DIR] [--micro-batch-size B]
//                [--no-plots] [--allow-tokenizer-mismatch] [rmoe_train options]
//
// Rebuilds the model from the checkpoint's configuration and weights as
// rmoe_eval does (eval_setup.h) and runs it forward, in float, in one process,
// over the first N tokens of the validation split (windows in order, N
// default: the whole split, at most kDefaultTokens; synthetic data: exactly
// kDefaultTokens). It gathers per layer the gate entropy, the IB and OB
// medians and the expert selection frequency, the cross-layer mutual
// information of the routers by two estimators, and from the weights the
// router weight statistics and the expert similarity; then writes
// DIR/analysis.json and, unless --no-plots, runs scripts/plot_analyze.py on
// it for the PNG figures. Without matplotlib (or /usr/bin/python3) it says so
// and the JSON is still written.
//
// One process: refused under mpirun with more than one rank. Progress lines
// on stdout every tenth of the run (and at least every 30 s).
// Exit status: 0 done (also when the figures were skipped for lack of
// matplotlib), 1 failure (also the plot script failing for another reason:
// the JSON is written first), 2 bad usage (one line).
// Tested by tests/cli/analyze.sh; the metrics by tests/test_analysis.cpp.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "app_main.h"
#include "app_options.h"
#include "eval_setup.h"
#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"
#include "rmoe/model/model.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/train/analysis.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"
#include "rmoe/train/signals.h"

extern char** environ;

using namespace rmoe;
using json = nlohmann::ordered_json;

namespace {

// The default number of tokens: enough for stable medians and MI tables
// (E^2 = 4096 cells at E = 64 get 64 tokens each), small enough for a CPU.
constexpr int64_t kDefaultTokens = int64_t(1) << 18;  // 262144
constexpr int kEntropyBins = 50;
constexpr int kPaperMiBins = 100;  // App. A.4.2: 100 bins on [0, 1]
constexpr const char* kPython = "/usr/bin/python3";
constexpr int kPlotNoMatplotlib = 3;  // plot_analyze.py's status when matplotlib is missing

const char* kUsage =
    "usage: rmoe_analyze --load CKPT_OR_DIR [--data-path DIR] [--tokens N] [--out DIR] [options]\n"
    "  --load CKPT_OR_DIR    a checkpoint file, or a --save directory (its newest checkpoint)\n"
    "  --data-path DIR       dataset made by rmoe_prepare (default: the one the checkpoint trained on)\n"
    "  --tokens N            analyse the first N validation tokens (default: the whole validation split,\n"
    "                        at most 262144; synthetic data: 262144)\n"
    "  --out DIR             where analysis.json and the figures go (default: analysis)\n"
    "  --micro-batch-size B  windows per forward pass (default: the checkpoint's)\n"
    "  --no-plots            write the JSON only (no scripts/plot_analyze.py)\n"
    "  --allow-tokenizer-mismatch  analyse even if the data's tokenizer is not the model's (a warning)\n"
    "Other rmoe_train options override the checkpoint's configuration. One process (no mpirun -n 2).\n"
    "Metrics and formulas: docs/ANALYSIS.md. Exit status: 0 done, 1 failure, 2 bad usage.\n";

json weight_stats_json(ParamStore<float>& params, const std::string& prefix) {
  std::vector<analysis::WeightSpan> parts;
  json tensors = json::object();
  for (const ParamSpec& s : params.specs()) {
    if (s.name.rfind(prefix, 0) != 0) continue;
    const analysis::WeightSpan span{params.data_of(s), s.numel()};
    parts.push_back(span);
    const analysis::WeightStats one = analysis::weight_stats({span});
    tensors[s.name] = {{"numel", one.numel}, {"norm", one.norm}, {"std", one.std}};
  }
  if (parts.empty()) return nullptr;
  const analysis::WeightStats all = analysis::weight_stats(parts);
  return {{"numel", all.numel}, {"norm", all.norm}, {"mean", all.mean}, {"std", all.std}, {"tensors", tensors}};
}

json matrix_json(const std::vector<double>& m, int n) {
  json rows = json::array();
  for (int i = 0; i < n; ++i) rows.push_back(std::vector<double>(m.begin() + i * n, m.begin() + (i + 1) * n));
  return rows;
}

std::string duration_text(double s) {
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  return buf;
}

// Runs `argv` (no shell) and returns its exit status, or -1 if it could not
// be started or did not exit normally. posix_spawn, not fork: no fork
// handlers run in this MPI process.
int run_program(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  if (mpi_initialized() && mpi_world()->size() > 1)
    throw UsageError("runs in one process; start it without mpirun (or with -n 1)");
  const bool allow_tokenizer_mismatch = take_switch(argc, argv, "--allow-tokenizer-mismatch");
  const bool plots = !take_switch(argc, argv, "--no-plots");
  std::vector<std::pair<std::string, std::string>> own;
  const std::vector<std::string> overrides =
      take_own_options(argc, argv, {"load", "tokens", "out", "micro-batch-size"}, own);
  std::string load, out_dir = "analysis";
  int64_t want_tokens = -1;  // -1: the default (file comment)
  int64_t micro_batch = -1;  // -1: the checkpoint's
  for (const auto& [name, value] : own) {
    if (name == "load") load = value;
    if (name == "tokens") want_tokens = parse_count("--tokens", value, 1);
    if (name == "out") out_dir = value;
    if (name == "micro-batch-size")
      micro_batch = parse_count("--micro-batch-size", value, 1, std::numeric_limits<int>::max());
  }
  if (out_dir.empty()) throw UsageError("--out needs a directory name");
  const std::string path = checkpoint_to_load(load);
  const CheckpointHeader header = read_checkpoint_header(path);
  TrainConfig cfg = checkpoint_eval_config(header, path, overrides);
  if (cfg.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (micro_batch > 0) cfg.micro_batch_size = int(micro_batch);
  check_eval_dataset(cfg, path);
  const ModelConfig& mc = cfg.model;
  const int L = mc.num_layers, E = mc.num_experts, K = mc.topk, S = mc.seq_length, mb = cfg.micro_batch_size;

  ValidationData val = open_validation_data(cfg, header, path, allow_tokenizer_mismatch, true);
  // Tokens to analyse: windows in order, the last one cut to what is left.
  const int64_t split_tokens = val.windows >= 0 ? val.windows * S : -1;  // -1: synthetic, no end
  int64_t tokens = want_tokens > 0 ? want_tokens : kDefaultTokens;
  std::string tokens_note = want_tokens > 0 ? "--tokens" : "the default, at most " + std::to_string(kDefaultTokens);
  if (split_tokens >= 0 && tokens >= split_tokens) {
    if (want_tokens > split_tokens)
      std::fprintf(stderr, "rmoe_analyze: --tokens %lld is more than the validation split's %lld tokens: all of it\n",
                   (long long)want_tokens, (long long)split_tokens);
    tokens = split_tokens;
    tokens_note = "all of the validation split";
  }
  if (tokens <= 0)
    throw UsageError("the validation split of " + cfg.data_path + " holds no complete window of " +
                     std::to_string(S + 1) +
                     " tokens; prepare the data with more validation tokens (rmoe_prepare --val-tokens)");
  const int64_t tokens_per_batch = int64_t(mb) * S;
  const int64_t batches = (tokens + tokens_per_batch - 1) / tokens_per_batch;

  // The output directory before the long part, so a bad --out fails at once.
  if (std::filesystem::exists(out_dir) && !std::filesystem::is_directory(out_dir))
    throw UsageError("--out=" + out_dir + " is a file; give a directory for analysis.json and the figures");
  std::error_code made;
  std::filesystem::create_directories(out_dir, made);
  if (made) throw UsageError("--out=" + out_dir + ": cannot create the directory (" + made.message() + ")");
  const std::string json_path = (std::filesystem::path(out_dir) / "analysis.json").string();

  check_memory_fits(cfg, 1, 1, MemoryUse::evaluation);  // before any model buffer
  Model<float> model(mc, mb);
  TrainState state;  // m_rep null: the moments are not read
  state.params = &model.params();
  const ProcessGroups groups = make_process_groups(make_self_comm(), 0, E);
  load_checkpoint(path, state, groups);

  std::printf("rmoe_analyze: %s (step %lld), %s router, %d layers, d=%d, %d experts (top-%d), seq %d\n", path.c_str(),
              (long long)state.step, router_type_name(mc.router_type), L, mc.hidden_size, E, K, S);
  std::printf("data: %s\n", val.source->describe().c_str());
  std::printf("analysing %lld tokens (%s) in %lld forward passes of %d windows, one process\n", (long long)tokens,
              tokens_note.c_str(), (long long)batches, mb);
  std::fflush(stdout);

  // ---- forward passes: the routing metrics ----
  std::vector<analysis::GateAccumulator> gates;
  for (int l = 0; l < L; ++l) gates.emplace_back(E, K, kEntropyBins);
  analysis::BinnedMiAccumulator paper_mi(L, E, kPaperMiBins);
  analysis::Top1MiAccumulator top1_mi(L, E);
  std::vector<int32_t> tok(size_t(mb) * S), tgt(size_t(mb) * S);
  std::vector<const float*> probs(static_cast<size_t>(L));
  std::vector<const int32_t*> idx(static_cast<size_t>(L));
  double ce_sum = 0;  // sum over the windows run of their mean CE x tokens
  int64_t ce_tokens = 0, done = 0;
  const auto t0 = Clock::now();
  double last_print = 0;
  for (int64_t m = 0; m < batches; ++m) {
    const int64_t use = std::min(tokens_per_batch, tokens - done);  // tokens of this batch analysed
    const int n = int((use + S - 1) / S);                           // windows to run
    val.source->fill_validation(m, 0, n, S, tok.data(), tgt.data());
    const ForwardResult res = model.forward(tok.data(), tgt.data(), n);
    RMOE_CHECK(std::isfinite(res.ce),
               "the loss is not finite (" << res.ce << ") on validation batch " << m << " of " << path);
    ce_sum += res.ce * double(n) * S;
    ce_tokens += int64_t(n) * S;
    for (int l = 0; l < L; ++l) {
      probs[size_t(l)] = model.router_probs(l).data;  // [n S, E]
      idx[size_t(l)] = model.topk_idx(l).data;        // [n S, k], slot 0 the largest
      gates[size_t(l)].add(probs[size_t(l)], idx[size_t(l)], use);
    }
    paper_mi.add(probs, use);
    top1_mi.add(idx, use, K);
    done += use;
    const double now = seconds_since(t0);
    const bool tenth = (m + 1) * 10 / batches != m * 10 / batches;
    if (m + 1 < batches && (tenth || now - last_print >= 30)) {
      last_print = now;
      const double rate = double(done) / std::max(now, 1e-9);
      std::printf("  %lld / %lld tokens (%.0f%%), %.0f tokens/s, %s left\n", (long long)done, (long long)tokens,
                  100.0 * double(done) / double(tokens), rate, duration_text(double(tokens - done) / rate).c_str());
      std::fflush(stdout);
    }
  }
  const double seconds = seconds_since(t0);
  std::printf("ran %lld tokens in %s (%.0f tokens/s)\n", (long long)done, duration_text(seconds).c_str(),
              double(done) / std::max(seconds, 1e-9));

  // ---- the report ----
  json report;
  report["checkpoint"] = path;
  report["step"] = state.step;
  report["model"] = {{"router_type", router_type_name(mc.router_type)},
                     {"num_layers", L},
                     {"hidden_size", mc.hidden_size},
                     {"num_experts", E},
                     {"topk", K},
                     {"ffn_hidden_size", mc.ffn_hidden_size},
                     {"router_dim", mc.router_dim},
                     {"seq_length", S}};
  report["data"] = {{"path", cfg.data_path},
                    {"describe", val.source->describe()},
                    {"tokens", done},
                    {"tokens_choice", tokens_note},
                    {"split_tokens", split_tokens >= 0 ? json(split_tokens) : json()},
                    {"val_loss", ce_sum / double(ce_tokens)},
                    {"val_loss_tokens", ce_tokens}};
  json layers = json::array();
  for (int l = 0; l < L; ++l) {
    const analysis::GateSummary g = gates[size_t(l)].summary();
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "layers/%02d/", l);
    const std::string P = prefix;
    const Tensor<float> w1 = model.params().get(P + "experts/w1"), w3 = model.params().get(P + "experts/w3"),
                        w2 = model.params().get(P + "experts/w2");  // [E,f,d], [E,f,d], [E,d,f]
    const analysis::ExpertSimilarity sim =
        analysis::expert_similarity(w1.data, w3.data, w2.data, E, int(mc.ffn_hidden_size), int(mc.hidden_size));
    json entry;
    entry["layer"] = l;
    entry["gate_entropy"] = {
        {"mean", g.entropy_mean}, {"max", g.entropy_max}, {"bins", kEntropyBins}, {"histogram", g.entropy_hist}};
    // An infinite median (half the tokens or more with a second prob of 0) is null in JSON.
    entry["ib_median"] = std::isfinite(g.ib_median) ? json(g.ib_median) : json();
    entry["ib_infinite_fraction"] = g.ib_infinite_fraction;
    entry["ob_median"] = g.ob_median;
    entry["selection_frequency"] = g.selection_frequency;
    entry["router_weights"] = weight_stats_json(model.params(), P + "router/");
    entry["expert_similarity"] = {{"mean", sim.mean},
                                  {"w1", sim.w1},
                                  {"w3", sim.w3},
                                  {"w2", sim.w2},
                                  {"off_diagonal_mean", sim.off_diagonal_mean},
                                  {"orthogonal_value", 1.0 / E},
                                  {"gram", matrix_json(sim.gram, E)}};
    layers.push_back(entry);
  }
  report["layers"] = layers;
  report["router_cell"] = weight_stats_json(model.params(), "router/cell/");  // null: no shared cell
  std::vector<double> mm_plugin, mm_corrected;
  top1_mi.matrices(mm_plugin, mm_corrected);
  report["mutual_information"] = {
      {"paper_binned", {{"bins", kPaperMiBins}, {"matrix", matrix_json(paper_mi.matrix(), L)}}},
      {"top1_miller_madow", {{"matrix", matrix_json(mm_corrected, L)}}},
      {"top1_plugin", {{"matrix", matrix_json(mm_plugin, L)}}}};
  {
    std::ofstream f(json_path);
    f << report.dump(1) << "\n";
    f.close();
    if (!f) throw Error("could not write " + json_path + " (disk full or not writable?)");
  }

  // ---- a summary on stdout ----
  std::printf(
      "layer  entropy (max %.3f)  IB median  OB median  expert sim.  top-1 MI with next (MM)  binned MI (paper)\n",
      std::log(double(E)));
  const std::vector<double> pm = paper_mi.matrix();
  for (int l = 0; l < L; ++l) {
    const json& e = layers[size_t(l)];
    const double ib = e["ib_median"].is_null() ? std::numeric_limits<double>::infinity() : e["ib_median"].get<double>();
    std::printf("%5d  %18.4f  %9.3f  %9.4f  %11.4f", l, e["gate_entropy"]["mean"].get<double>(), ib,
                e["ob_median"].get<double>(), e["expert_similarity"]["mean"].get<double>());
    if (l + 1 < L)
      std::printf("  %23.4f  %17.4f\n", mm_corrected[size_t(l) * L + l + 1], pm[size_t(l) * L + l + 1]);
    else
      std::printf("  %23s  %17s\n", "-", "-");
  }
  std::printf("wrote %s\n", json_path.c_str());
  std::fflush(stdout);

  // ---- figures ----
  if (!plots) return exit_status_done;
  const std::string script = RMOE_PLOT_ANALYZE_SCRIPT;
  const std::string by_hand = std::string(kPython) + " " + script + " " + json_path;
  if (!std::filesystem::exists(script)) {
    std::printf("figures not written: %s is missing (the source tree moved?); plot with %s\n", script.c_str(),
                by_hand.c_str());
    return exit_status_done;
  }
  if (access(kPython, X_OK) != 0) {
    std::printf("figures not written: no %s (Debian's python3 and python3-matplotlib); the JSON is complete\n",
                kPython);
    return exit_status_done;
  }
  std::fflush(stdout);
  const int st = run_program({kPython, script, json_path, "--out", out_dir});
  if (st == kPlotNoMatplotlib) {
    std::printf(
        "figures not written: matplotlib is missing (apt-get install python3-matplotlib, then %s); the "
        "JSON is complete\n",
        by_hand.c_str());
    return exit_status_done;
  }
  if (st != 0)
    throw Error("the plot script failed (status " + std::to_string(st) + "): " + by_hand + "; " + json_path +
                " is written");
  return exit_status_done;
}

}  // namespace

int main(int argc, char** argv) { return rmoe::mpi_app_main("rmoe_analyze", argc, argv, run); }
