// config.cpp — the training CLI: one table of options drives parsing (Boost.
// Program_options, command line + INI file), --help, validation messages and
// config_to_ini, so the four can never disagree.
//
// Every value is read as text and converted here, so each bad value gets the
// same one-line message shape: "--flag=value: what is allowed".
// Tested by tests/test_config.cpp.
#include "rmoe/train/config.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>

#include "rmoe/data/dataset.h"    // dataset_vocab_size
#include "rmoe/data/synthetic.h"  // is_synthetic_data_path
#include "rmoe/core/error.h"
#include "rmoe/core/format.h"
#include "rmoe/train/dry_run.h"   // compute_model_stats: the shape's counts fit

namespace rmoe {

namespace po = boost::program_options;

namespace {

// ---- text <-> value, one overload per field type ---------------------------

std::string to_text(int x) { return std::to_string(x); }
std::string to_text(int64_t x) { return std::to_string(x); }
std::string to_text(uint64_t x) { return std::to_string(x); }
std::string to_text(double x) { return shortest_text(x); }
std::string to_text(bool x) { return x ? "true" : "false"; }
std::string to_text(const std::string& x) { return x; }
std::string to_text(RouterType x) { return router_type_name(x); }
std::string to_text(RouterInit x) { return router_init_name(x); }
std::string to_text(Device x) { return x == Device::cuda ? "cuda" : "cpu"; }

template <class Int>
void parse_integer(const std::string& flag, const std::string& v, Int& out, const char* what) {
  Int x{};
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec == std::errc::result_out_of_range) usage_fail(flag + "=" + v + ": out of range for " + what);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || v.empty())
    usage_fail(flag + "=" + v + ": expected " + what);
  out = x;
}

void from_text(const std::string& flag, const std::string& v, int& out) {
  parse_integer(flag, v, out, "an integer (32-bit)");
}
void from_text(const std::string& flag, const std::string& v, int64_t& out) {
  parse_integer(flag, v, out, "an integer (64-bit)");
}
void from_text(const std::string& flag, const std::string& v, uint64_t& out) {
  parse_integer(flag, v, out, "a non-negative integer (64-bit)");
}
void from_text(const std::string& flag, const std::string& v, double& out) {
  double x = 0;
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || v.empty() || !std::isfinite(x))
    usage_fail(flag + "=" + v + ": expected a finite number (e.g. 0.001 or 1e-3)");
  out = x;
}
void from_text(const std::string& flag, const std::string& v, bool& out) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") {
    out = true;
  } else if (v == "false" || v == "0" || v == "no" || v == "off") {
    out = false;
  } else {
    usage_fail(flag + "=" + v + ": expected true or false");
  }
}
void from_text(const std::string&, const std::string& v, std::string& out) { out = v; }
void from_text(const std::string&, const std::string& v, RouterType& out) {
  out = parse_router_type(v);  // its message names --moe-router-type
}
void from_text(const std::string&, const std::string& v, RouterInit& out) {
  out = parse_router_init(v);  // its message names --router-init
}
void from_text(const std::string& flag, const std::string& v, Device& out) {
  if (v == "cpu") {
    out = Device::cpu;
  } else if (v == "cuda") {
    out = Device::cuda;
  } else {
    usage_fail(flag + "=" + v + ": unknown device; allowed: cpu, cuda");
  }
}

// ---- the option table -------------------------------------------------------

struct OptionSpec {
  std::string name;  // flag without dashes; also the INI key
  std::string arg;   // placeholder in --help ("N", "X", "PATH", ...); empty for switches
  std::string help;
  bool is_switch = false;  // `--flag` alone means true; `--flag=false` also accepted
  std::function<std::string(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const std::string&)> set;  // throws UsageError
  std::string default_text;  // shown in --help; empty: get(TrainConfig{})
};

// `access` is a generic lambda returning a reference to the field, so one
// lambda serves both the const getter and the setter.
template <class Access>
OptionSpec field(std::string name, std::string arg, std::string help, Access access,
                 std::string default_text = "") {
  using T = std::remove_cvref_t<decltype(access(std::declval<TrainConfig&>()))>;
  OptionSpec o;
  o.name = name;
  o.is_switch = std::is_same_v<T, bool>;
  o.arg = o.is_switch ? "" : arg;
  o.help = std::move(help);
  o.get = [access](const TrainConfig& c) { return to_text(access(c)); };
  o.set = [access, flag = "--" + name](TrainConfig& c, const std::string& v) { from_text(flag, v, access(c)); };
  o.default_text = std::move(default_text);
  return o;
}

const std::vector<OptionSpec>& option_table() {
  static const std::vector<OptionSpec> table = [] {
    std::vector<OptionSpec> t;
    // model shape (ModelConfig)
    t.push_back(field("num-layers", "L", "decoder layers (every layer is an MoE layer)",
                      [](auto& c) -> auto& { return c.model.num_layers; }));
    t.push_back(field("hidden-size", "d", "model width",
                      [](auto& c) -> auto& { return c.model.hidden_size; }));
    t.push_back(field("ffn-hidden-size", "f", "each expert's SwiGLU width",
                      [](auto& c) -> auto& { return c.model.ffn_hidden_size; }));
    t.push_back(field("num-attention-heads", "H", "attention heads; d/H must be even",
                      [](auto& c) -> auto& { return c.model.num_heads; }));
    t.push_back(field("seq-length", "S", "tokens per sequence",
                      [](auto& c) -> auto& { return c.model.seq_length; }));
    t.push_back(field("vocab-size", "V", "vocabulary size",
                      [](auto& c) -> auto& { return c.model.vocab_size; }));
    t.push_back(field("num-experts", "E", "experts per MoE layer",
                      [](auto& c) -> auto& { return c.model.num_experts; }));
    t.push_back(field("moe-router-topk", "k", "experts per token (k <= E)",
                      [](auto& c) -> auto& { return c.model.topk; }));
    t.push_back(field("moe-expert-capacity-factor", "C",
                      "each expert keeps at most ceil(C x tokens x k / E) token slots per micro-step (tokens of "
                      "all ranks), its most probable; the rest are dropped. 0 = dropless",
                      [](auto& c) -> auto& { return c.model.capacity_factor; }));
    t.push_back(field("moe-aux-loss-coeff", "X",
                      "load-balancing loss coefficient (the loss's statistics cover one micro-step on all ranks: "
                      "it depends on micro-batch-size x ranks)",
                      [](auto& c) -> auto& { return c.model.aux_loss_coeff; }));
    t.push_back(field("moe-z-loss-coeff", "X", "router z-loss coefficient",
                      [](auto& c) -> auto& { return c.model.z_loss_coeff; }));
    t.push_back(field("moe-router-type", "TYPE", "router: linear | random (frozen linear) | mlp (GELU) | mlp-tanh | gru (RMoE) | gru-np (gru, no state between layers) | rnn"
                      " | cosine (CosineMoE: scaled cosine of u and expert embeddings) | xmoe (X-MoE: cosine after a projection to xmoe-dim)"
                      " | gru-xmoe (gru's state into the xmoe head)"
                      " | lstm (one LSTM cell shared by all layers, state h and c)",
                      [](auto& c) -> auto& { return c.model.router_type; }));
    t.push_back(field("router-dim", "p", "router width p (mlp, gru, rnn, lstm, gru-xmoe)",
                      [](auto& c) -> auto& { return c.model.router_dim; }));
    t.push_back(field("xmoe-dim", "r", "width r of the xmoe / gru-xmoe cosine head (expert embeddings [E, r])",
                      [](auto& c) -> auto& { return c.model.xmoe_dim; }));
    t.push_back(field("router-detach", "",
                      "cut the gradient through the router's h_{i-1} (and lstm's c_{i-1}) (ablation)",
                      [](auto& c) -> auto& { return c.model.router_detach; }));
    t.push_back(field("router-shared-proj", "",
                      "one router projection router/proj_w, proj_b shared by all layers instead of one per layer "
                      "(the paper's S-proj; routers with a projection: mlp, mlp-tanh, gru, gru-np, rnn, lstm)",
                      [](auto& c) -> auto& { return c.model.router_shared_proj; }));
    t.push_back(field("router-logit-residual", "A",
                      "router logit residual (the paper's r-A): layer i >= 1's logits += A x layer i-1's final "
                      "logits, before softmax and top-k (0 = off; every router type)",
                      [](auto& c) -> auto& { return c.model.router_logit_residual; }));
    t.push_back(field("router-logit-residual-detach", "",
                      "the logit residual's term carries no gradient into layer i-1 (needs --router-logit-residual)",
                      [](auto& c) -> auto& { return c.model.router_logit_residual_detach; }));
    t.push_back(field("tie-embeddings", "", "the head shares the embedding matrix",
                      [](auto& c) -> auto& { return c.model.tie_embeddings; }));
    t.push_back(field("init-method-std", "X", "std of the normal init of every matrix",
                      [](auto& c) -> auto& { return c.model.init_std; }));
    t.push_back(field("router-init", "INIT",
                      "router tensors' init: normal (init-method-std, biases 0) | torch (PyTorch's nn.Linear / "
                      "nn.GRUCell / nn.LSTMCell: uniform +-1/sqrt(fan_in), biases too)",
                      [](auto& c) -> auto& { return c.model.router_init; }));
    // batch and optimisation
    t.push_back(field("micro-batch-size", "N", "sequences per forward/backward",
                      [](auto& c) -> auto& { return c.micro_batch_size; }));
    t.push_back(field("global-batch-size", "N", "sequences per optimizer step (a multiple of micro-batch-size)",
                      [](auto& c) -> auto& { return c.global_batch_size; }));
    t.push_back(field("lr", "X", "peak learning rate", [](auto& c) -> auto& { return c.lr; }));
    t.push_back(field("min-lr", "X", "learning rate at the end of the cosine decay (<= lr)",
                      [](auto& c) -> auto& { return c.min_lr; }));
    t.push_back(field("lr-warmup-iters", "N", "steps of linear warm-up from 0",
                      [](auto& c) -> auto& { return c.lr_warmup_iters; }));
    OptionSpec decay = field("lr-decay-iters", "N", "step at which the cosine decay reaches min-lr",
                             [](auto& c) -> auto& { return c.lr_decay_iters; }, "train-iters");
    decay.get = [](const TrainConfig& c) { return to_text(c.resolved_lr_decay_iters()); };
    t.push_back(decay);
    t.push_back(field("train-iters", "N", "optimizer steps", [](auto& c) -> auto& { return c.train_iters; }));
    t.push_back(field("exit-interval", "N", "exit after a step that is a multiple of N (0 = never)",
                      [](auto& c) -> auto& { return c.exit_interval; }));
    t.push_back(field("weight-decay", "X", "AdamW decoupled weight decay (matrices only)",
                      [](auto& c) -> auto& { return c.weight_decay; }));
    t.push_back(field("adam-beta1", "X", "AdamW beta1, in [0, 1)", [](auto& c) -> auto& { return c.adam_beta1; }));
    t.push_back(field("adam-beta2", "X", "AdamW beta2, in [0, 1)", [](auto& c) -> auto& { return c.adam_beta2; }));
    t.push_back(field("adam-eps", "X", "AdamW epsilon", [](auto& c) -> auto& { return c.adam_eps; }));
    t.push_back(field("clip-grad", "X", "max global gradient norm (0 = no clipping)",
                      [](auto& c) -> auto& { return c.clip_grad; }));
    t.push_back(field("max-skipped-steps", "N",
                      "a step whose loss or gradient norm is not finite is skipped (no update); after N such steps "
                      "in a row the run stops with exit 1, keeping the last good checkpoint",
                      [](auto& c) -> auto& { return c.max_skipped_steps; }));
    // parallel layout, data, checkpoints, logging
    t.push_back(field("collective-timeout", "SECONDS",
                      "a rank that waits longer than this in one collective ends the job, naming the call "
                      "(0 = wait forever); keep it above the longest checkpoint save or evaluation",
                      [](auto& c) -> auto& { return c.collective_timeout; }));
    t.push_back(field("expert-parallel-size", "N", "ranks experts are sharded over (0 = auto); divides E",
                      [](auto& c) -> auto& { return c.expert_parallel_size; }));
    t.push_back(field("data-path", "PATH", "dataset directory, or synthetic:markov",
                      [](auto& c) -> auto& { return c.data_path; }));
    t.push_back(field("save", "DIR", "checkpoint directory to write (empty = none)",
                      [](auto& c) -> auto& { return c.save; }));
    t.push_back(field("load", "DIR", "checkpoint directory to resume from (empty = none)",
                      [](auto& c) -> auto& { return c.load; }));
    t.push_back(field("save-interval", "N", "steps between checkpoints (0 = only at the end)",
                      [](auto& c) -> auto& { return c.save_interval; }));
    t.push_back(field("keep-checkpoints", "K", "newest checkpoints kept in the --save directory (0 = keep all)",
                      [](auto& c) -> auto& { return c.keep_checkpoints; }));
    t.push_back(field("eval-interval", "N", "steps between evaluations (0 = never)",
                      [](auto& c) -> auto& { return c.eval_interval; }));
    t.push_back(field("eval-iters", "N", "micro-batches per evaluation",
                      [](auto& c) -> auto& { return c.eval_iters; }));
    t.push_back(field("log-interval", "N", "steps between log lines",
                      [](auto& c) -> auto& { return c.log_interval; }));
    t.push_back(field("log-router-grads", "",
                      "on every logged step, the norm of the router parameters' gradient split into its CE (lm), "
                      "load-balance (lb) and, with a z-loss coefficient, z-loss parts, per layer, the shared cell "
                      "and in total: in the log line and the metrics (docs/MODEL.md); one more backward per part and "
                      "micro-step on those steps, training unchanged",
                      [](auto& c) -> auto& { return c.log_router_grads; }));
    t.push_back(field("seed", "N", "seed of weights, data order and synthetic data",
                      [](auto& c) -> auto& { return c.seed; }));
    t.push_back(field("device", "DEV", "cpu | cuda", [](auto& c) -> auto& { return c.device; }));
    t.push_back(field("dry-run", "", "print parameter counts, FLOPs and memory, then exit",
                      [](auto& c) -> auto& { return c.dry_run; }));
    t.push_back(field("dry-run-ranks", "P", "with --dry-run: plan for P ranks (0 = the ranks running)",
                      [](auto& c) -> auto& { return c.dry_run_ranks; }));
    t.push_back(field("profile", "", "time every op and model region of each step after the first; print where "
                      "the time went at the end (rank 0)",
                      [](auto& c) -> auto& { return c.profile; }));
    t.push_back(field("metrics-file", "PATH", "write JSON-lines metrics here (empty = none)",
                      [](auto& c) -> auto& { return c.metrics_file; }));
    return t;
  }();
  return table;
}

// Boost descriptions: every table option as text; the command line also has
// --config and --help. No defaults are given to Boost (TrainConfig holds them),
// so "was it given?" is vm.count(name).
po::options_description file_options() {
  po::options_description d;
  for (const OptionSpec& o : option_table()) {
    if (o.is_switch) {
      d.add_options()(o.name.c_str(), po::value<std::string>()->implicit_value("true"), o.help.c_str());
    } else {
      d.add_options()(o.name.c_str(), po::value<std::string>(), o.help.c_str());
    }
  }
  return d;
}

po::options_description command_line_options() {
  po::options_description d;
  d.add_options()("config", po::value<std::string>(), "INI file")("help", "print this help");
  d.add(file_options());
  return d;
}

// Boost keeps an error's values (the option, the value, the INI line) in a
// protected map that what() substitutes into the error's template. A pointer
// to that member, formed in a derived class, reaches it on any error object.
struct BoostErrorFields : po::error_with_option_name {
  using Map = std::map<std::string, std::string>;
  static Map po::error_with_option_name::*substitutions() { return &BoostErrorFields::m_substitutions; }
};

// '%' -> "\x01\x03" and '\x01' -> "\x01\x02", so no value holds a placeholder
// ("%name%"); reveal_percent() undoes it on the finished message.
std::string hide_percent(const std::string& s) {
  std::string t;
  for (char ch : s) {
    if (ch == '%') {
      t += "\x01\x03";
    } else if (ch == '\x01') {
      t += "\x01\x02";
    } else {
      t += ch;
    }
  }
  return t;
}

std::string reveal_percent(const std::string& s) {
  std::string t;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x01' && i + 1 < s.size() && (s[i + 1] == '\x02' || s[i + 1] == '\x03')) {
      t += s[++i] == '\x03' ? '%' : '\x01';
    } else {
      t += s[i];
    }
  }
  return t;
}

// A value in a message, on one line: control characters as \n, \t, \xNN.
std::string printable(const std::string& v) {
  std::string t;
  for (unsigned char ch : v) {
    if (ch == '\n') {
      t += "\\n";
    } else if (ch == '\r') {
      t += "\\r";
    } else if (ch == '\t') {
      t += "\\t";
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      t += buf;
    } else {
      t += char(ch);
    }
  }
  return t;
}

// One line for any Boost parse error; `source` names the INI text ("" for the command line).
std::string boost_error_text(const po::error& e, const std::string& source) {
  if (auto* u = dynamic_cast<const po::unknown_option*>(&e)) {
    if (source.empty()) return printable(u->get_option_name()) + ": unknown option; run with --help for the list";
    return source + ": unknown key '" + printable(u->get_option_name()) +
           "' (keys are the flag names without dashes, e.g. num-layers; run with --help for the list)";
  }
  return (source.empty() ? std::string() : source + ": ") + option_error_text(e) + "; run with --help for the options";
}

[[noreturn]] void rethrow_boost(const po::error& e, const std::string& source) {
  usage_fail(boost_error_text(e, source));
}

std::string require_text(const char* flag, int64_t value, const char* rule) {
  return std::string(flag) + "=" + std::to_string(value) + " " + rule;
}

void require_min(const char* flag, int64_t value, int64_t min) {
  if (value < min) usage_fail(require_text(flag, value, ("must be >= " + std::to_string(min)).c_str()));
}

void require_finite_min(const char* flag, double value, double min, bool strict) {
  bool bad = !std::isfinite(value) || (strict ? value <= min : value < min);
  if (bad)
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be " + (strict ? "> " : ">= ") +
               shortest_text(min));
}

void require_unit_interval(const char* flag, double value) {
  if (!(value >= 0.0 && value < 1.0))
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be in [0, 1)");
}

// A text value must read back unchanged from config_to_ini's "key = value"
// line (what checkpoints store): the INI reader ends a value at '#' (a
// comment) and at a line break, and trims white space at both ends.
void require_ini_text(const char* flag, const std::string& v) {
  const std::string arg = std::string(flag) + "=" + printable(v);
  const char* where = " where the configuration is stored (config_to_ini, checkpoints)";
  if (v.find('#') != std::string::npos)
    usage_fail(arg + ": '#' would start a comment" + where + "; use a value without '#'");
  if (v.find_first_of("\n\r") != std::string::npos)
    usage_fail(arg + ": a line break would end the value" + where + "; use a value on one line");
  auto space = [](char ch) { return std::isspace(static_cast<unsigned char>(ch)) != 0; };
  if (!v.empty() && (space(v.front()) || space(v.back())))
    usage_fail(arg + ": white space at either end would be dropped" + where + "; remove it");
}

// Most a --config file may hold: a configuration is a short text file.
constexpr std::uintmax_t kMaxConfigBytes = std::uintmax_t(1) << 20;

// The text of the --config file `path`, or UsageError naming it: a path that
// does not exist or cannot be read, a directory, anything but a regular file
// (a device such as /dev/zero, a pipe: never opened, so never read forever),
// more than 1 MiB, or bytes that are not text (NUL).
std::string read_config_text(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string source = "--config=" + printable(path);
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found || (ec && st.type() == fs::file_type::none))
    usage_fail(source + ": cannot open the file (" + (ec ? ec.message() : std::string("no such file")) +
               "); check the path");
  if (fs::is_directory(st)) usage_fail(source + ": is a directory; give an INI file such as configs/tiny.ini");
  if (!fs::is_regular_file(st))
    usage_fail(source + ": not a regular file (a device, pipe or socket); give an INI file such as configs/tiny.ini");
  const std::uintmax_t size = fs::file_size(path, ec);
  auto too_large = [&](std::uintmax_t n) {
    usage_fail(source + ": " + std::to_string(n) + (n > kMaxConfigBytes ? "" : "+") +
               " bytes is too large for a configuration (at most 1 MiB of key = value lines); check the path");
  };
  if (!ec && size > kMaxConfigBytes) too_large(size);
  std::ifstream in(path, std::ios::binary);
  if (!in) usage_fail(source + ": cannot open the file (" + std::strerror(errno) + "); check the path and its permissions");
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  if (in.bad()) usage_fail(source + ": cannot read the file (" + std::strerror(errno) + ")");
  text.resize(size_t(in.gcount()));
  if (text.size() > kMaxConfigBytes) too_large(text.size());
  if (text.find('\0') != std::string::npos)
    usage_fail(source + ": not a text file (it holds NUL bytes); give an INI file of key = value lines");
  return text;
}

}  // namespace

void validate_train_config(const TrainConfig& c) {
  c.model.validate();
  require_min("--micro-batch-size", c.micro_batch_size, 1);
  require_min("--global-batch-size", c.global_batch_size, 1);
  check_batch_layout(c);
  require_finite_min("--lr", c.lr, 0.0, true);
  check_float_range("--lr", c.lr);
  require_finite_min("--min-lr", c.min_lr, 0.0, false);
  check_float_range("--min-lr", c.min_lr);
  if (c.min_lr > c.lr) usage_fail("--min-lr=" + shortest_text(c.min_lr) + " must be <= --lr=" + shortest_text(c.lr));
  require_min("--lr-warmup-iters", c.lr_warmup_iters, 0);
  if (c.lr_decay_iters != -1) require_min("--lr-decay-iters", c.lr_decay_iters, 1);  // -1: = train-iters
  require_min("--train-iters", c.train_iters, 1);
  require_min("--exit-interval", c.exit_interval, 0);
  require_finite_min("--weight-decay", c.weight_decay, 0.0, false);
  check_float_range("--weight-decay", c.weight_decay);
  require_unit_interval("--adam-beta1", c.adam_beta1);
  check_float_range("--adam-beta1", c.adam_beta1);
  require_unit_interval("--adam-beta2", c.adam_beta2);
  check_float_range("--adam-beta2", c.adam_beta2);
  require_finite_min("--adam-eps", c.adam_eps, 0.0, true);
  check_float_range("--adam-eps", c.adam_eps);
  require_finite_min("--clip-grad", c.clip_grad, 0.0, false);
  check_float_range("--clip-grad", c.clip_grad);
  require_min("--max-skipped-steps", c.max_skipped_steps, 0);
  require_finite_min("--collective-timeout", c.collective_timeout, 0.0, false);
  require_min("--expert-parallel-size", c.expert_parallel_size, 0);
  if (c.expert_parallel_size > 0 && c.model.num_experts % c.expert_parallel_size != 0)
    usage_fail("--expert-parallel-size=" + std::to_string(c.expert_parallel_size) + " must divide --num-experts=" +
               std::to_string(c.model.num_experts));
  require_ini_text("--data-path", c.data_path);
  require_ini_text("--save", c.save);
  require_ini_text("--load", c.load);
  require_ini_text("--metrics-file", c.metrics_file);
  if (c.data_path.empty()) usage_fail("--data-path= must not be empty; give a dataset directory or synthetic:markov");
  if (is_synthetic_data_path(c.data_path) && c.data_path != "synthetic:markov")
    usage_fail("--data-path=" + c.data_path + ": unknown synthetic source; available: synthetic:markov");
  require_min("--save-interval", c.save_interval, 0);
  require_min("--keep-checkpoints", c.keep_checkpoints, 0);
  require_min("--dry-run-ranks", c.dry_run_ranks, 0);
  require_min("--eval-interval", c.eval_interval, 0);
  require_min("--eval-iters", c.eval_iters, 0);
  if (c.eval_interval > 0 && c.eval_iters < 1)
    usage_fail("--eval-iters=" + std::to_string(c.eval_iters) + " must be >= 1 when --eval-interval=" +
               std::to_string(c.eval_interval) + " is set");
  require_min("--log-interval", c.log_interval, 1);
  if (!c.dry_run) check_device_supported(c.device);  // a dry run plans --device cuda on any machine
  (void)compute_model_stats(c);  // every count of the shape fits (UsageError naming the options otherwise)
}

std::string option_error_text(const std::exception& e) {
  // Built here from the parts, never through Boost's what():
  if (auto* line = dynamic_cast<const po::invalid_config_file_syntax*>(&e))
    return "the line '" + printable(line->tokens()) + "' is not a 'key = value' line (nor a # comment)";
  if (auto* u = dynamic_cast<const po::unknown_option*>(&e))
    return "unrecognised option '" + printable(u->get_option_name()) + "'";
  if (auto* a = dynamic_cast<const po::ambiguous_option*>(&e))
    return "option '" + printable(a->get_option_name()) + "' is ambiguous";
  // The rest substitute their values into a template: on a copy whose values
  // hold no '%' (so no placeholder), then the '%' put back.
  if (auto* named = dynamic_cast<const po::error_with_option_name*>(&e)) {
    po::error_with_option_name copy(*named);  // what() is this class's (only ambiguous_option overrides it)
    for (auto& kv : copy.*BoostErrorFields::substitutions()) kv.second = hide_percent(kv.second);
    return printable(reveal_percent(copy.what()));
  }
  return printable(e.what());  // fixed texts (reading_file, too_many_positional_options_error, ...)
}

void check_batch_layout(const TrainConfig& c, int ranks) {
  const std::string global = "--global-batch-size=" + std::to_string(c.global_batch_size);
  if (ranks <= 0) {
    if (c.global_batch_size % c.micro_batch_size != 0)
      usage_fail(global + " must be a multiple of --micro-batch-size=" + std::to_string(c.micro_batch_size));
  } else if (c.global_batch_size % (ranks * c.micro_batch_size) != 0) {
    usage_fail(global + " must be a multiple of ranks (" + std::to_string(ranks) + ") x --micro-batch-size (" +
               std::to_string(c.micro_batch_size) + ")");
  }
}

void check_device_supported(Device device) {
  if (device != Device::cuda) return;
#ifndef RMOE_WITH_CUDA
  usage_fail("--device=cuda: this build has no CUDA backend; rebuild with -DRMOE_CUDA=ON or use --device=cpu");
#else
  usage_fail("--device=cuda: this build has no CUDA backend yet; use --device cpu");
#endif
}

namespace {

// A configuration stored elsewhere (a checkpoint's INI text), read where
// --config would be.
struct StoredIni {
  const std::string& text;
  const std::string& where;  // names it in messages
};

// parse_train_config, with `stored` (when not null) in place of a --config file.
TrainConfig parse(int argc, const char* const* argv, const StoredIni* stored) {
  const po::options_description cmd_desc = command_line_options();
  po::variables_map vm;
  // No abbreviations ("--num" is not "--num-layers"), no short options.
  const int style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
  try {
    const po::parsed_options parsed = po::command_line_parser(argc, argv).options(cmd_desc).style(style).run();
    for (const po::option& o : parsed.options)  // Boost keeps stray words as positional options
      if (o.position_key >= 0 || o.string_key.empty())
        usage_fail((o.original_tokens.empty() ? std::string("?") : o.original_tokens.front()) +
                   ": unexpected argument; every option is a flag (--name=value); run with --help for the list");
    po::store(parsed, vm);
  } catch (const po::error& e) {
    rethrow_boost(e, "");
  }

  TrainConfig cfg;
  if (vm.count("help")) {
    cfg.help = true;
    cfg.help_text = train_config_help();
    return cfg;
  }

  if (stored) {
    if (vm.count("config"))  // the stored configuration takes the place of --config
      usage_fail("option '--config' cannot be specified more than once; run with --help for the options");
    std::istringstream in(stored->text);
    try {
      po::store(po::parse_config_file(in, file_options(), /*allow_unregistered=*/false), vm);
    } catch (const po::error& e) {
      usage_fail(stored->where + ": its stored configuration is not readable by this build (" +
                 boost_error_text(e, "attribute 'config'") + ")");
    }
  } else if (vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    const std::string source = "--config=" + printable(path);
    std::istringstream in(read_config_text(path));
    try {
      // Stored after the command line: Boost keeps the first value stored, so
      // a flag on the command line overrides the file.
      po::store(po::parse_config_file(in, file_options(), /*allow_unregistered=*/false), vm);
    } catch (const po::error& e) {
      rethrow_boost(e, source);
    }
  }

  for (const OptionSpec& o : option_table())
    if (vm.count(o.name)) o.set(cfg, vm[o.name].as<std::string>());
  cfg.vocab_size_given = vm.count("vocab-size") > 0;

  if (vm.count("lr-decay-iters") && cfg.lr_decay_iters < 1)
    usage_fail("--lr-decay-iters=" + std::to_string(cfg.lr_decay_iters) + " must be >= 1");
  validate_train_config(cfg);
  cfg.lr_decay_iters = cfg.resolved_lr_decay_iters();
  return cfg;
}

}  // namespace

TrainConfig parse_train_config(int argc, const char* const* argv) { return parse(argc, argv, nullptr); }

TrainConfig parse_train_config_from_ini(const std::string& ini, const std::string& where,
                                        const std::vector<std::string>& overrides) {
  if (ini.empty()) usage_fail(where + ": the checkpoint holds no configuration (attribute 'config')");
  std::vector<const char*> argv = {"rmoe"};
  for (const std::string& a : overrides) argv.push_back(a.c_str());
  const StoredIni stored{ini, where};
  return parse(int(argv.size()), argv.data(), &stored);
}

std::string config_to_ini(const TrainConfig& cfg) {
  std::ostringstream os;
  os << "# rmoe resolved training configuration (read back with --config FILE)\n";
  for (const OptionSpec& o : option_table()) os << o.name << " = " << o.get(cfg) << "\n";
  return os.str();
}

void resolve_vocab_size_from_data(TrainConfig& cfg) {
  if (is_synthetic_data_path(cfg.data_path)) return;
  const int v = dataset_vocab_size(cfg.data_path);
  if (cfg.vocab_size_given && v != cfg.model.vocab_size)
    usage_fail("--vocab-size=" + std::to_string(cfg.model.vocab_size) + " does not match the vocabulary " +
               std::to_string(v) + " of dataset '" + cfg.data_path + "'; drop --vocab-size or give " +
               std::to_string(v));
  cfg.model.vocab_size = v;
}

std::vector<std::string> train_option_names() {
  std::vector<std::string> names = {"config", "help"};
  for (const OptionSpec& o : option_table()) names.push_back(o.name);
  return names;
}

std::string train_config_help() {
  const TrainConfig defaults;
  std::vector<std::pair<std::string, std::string>> rows = {
      {"--config FILE", "INI file of `key = value` lines (keys: the flags without dashes); flags override it"},
      {"--help", "print this help and exit"}};
  for (const OptionSpec& o : option_table()) {
    std::string left = "--" + o.name + (o.arg.empty() ? "" : " " + o.arg);
    std::string def = o.default_text.empty() ? o.get(defaults) : o.default_text;
    if (def.empty()) def = "none";
    rows.push_back({left, o.help + " (default: " + def + ")"});
  }
  size_t width = 0;
  for (auto& r : rows) width = std::max(width, r.first.size());
  std::ostringstream os;
  os << "rmoe training options (docs/ARCHITECTURE.md section 6):\n";
  for (auto& r : rows) os << "  " << r.first << std::string(width + 2 - r.first.size(), ' ') << r.second << "\n";
  return os.str();
}

}  // namespace rmoe
