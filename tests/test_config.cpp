// test_config.cpp — the training CLI (include/rmoe/train/config.h): defaults,
// every flag, every validation error (one line naming the option and value),
// INI file + command-line precedence, config_to_ini round trip, and a frozen
// list of flags. Also the fuzzer's config findings F3 and F4
// (tests/fuzz/README.md, reproducers in tests/fuzz/findings/config_*.ini) and
// Boost.Program_options' errors, which must never reach Boost 1.74's what().
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/train/config.h"
#include "test_util.h"

namespace rmoe {
namespace {

using namespace testutil;

// Parsing `args` must throw UsageError whose one-line message contains every
// string of `parts`.
void expect_usage_error(const std::vector<std::string>& args, std::initializer_list<std::string> parts) {
  std::string joined;
  for (const auto& a : args) joined += a + " ";
  const std::string msg = expect_error<UsageError>([&] { parse_args(args); }, parts, "args: " + joined);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
}

std::string write_temp_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "rmoe_test_config_" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(TrainConfig, DefaultsAreValidAndDecayIsResolved) {
  TrainConfig c = parse_args({});
  EXPECT_FALSE(c.help);
  EXPECT_EQ(c.model.router_type, RouterType::gru);
  EXPECT_EQ(c.model.router_dim, 128);
  EXPECT_EQ(c.data_path, "synthetic:markov");
  EXPECT_EQ(c.seed, 1234u);
  EXPECT_EQ(c.log_interval, 10);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(c.adam_beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.adam_beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.adam_eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.clip_grad, 1.0);
  EXPECT_EQ(c.max_skipped_steps, 10);
  EXPECT_DOUBLE_EQ(c.model.aux_loss_coeff, 0.01);
  EXPECT_DOUBLE_EQ(c.model.z_loss_coeff, 0.0);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.02);
  EXPECT_EQ(c.expert_parallel_size, 0);
  EXPECT_EQ(c.device, Device::cpu);
  EXPECT_FALSE(c.dry_run);
  EXPECT_FALSE(c.log_router_grads);
  EXPECT_FALSE(c.model.router_detach);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.lr_decay_iters, c.train_iters);  // default lr-decay-iters = train-iters
  EXPECT_EQ(parse_args({"--train-iters=77"}).lr_decay_iters, 77);
  EXPECT_EQ(parse_args({"--train-iters=77", "--lr-decay-iters=50"}).lr_decay_iters, 50);
  EXPECT_NO_THROW(validate_train_config(TrainConfig{}));  // unresolved default is valid too
}

TEST(TrainConfig, EveryFlagSetsItsField) {
  TrainConfig c = parse_args({"--num-layers=6", "--hidden-size", "96", "--ffn-hidden-size=80", "--num-attention-heads=3",
                         "--seq-length=64", "--vocab-size=300", "--micro-batch-size=2", "--global-batch-size=6",
                         "--lr=4.2e-4", "--min-lr=4.2e-5", "--lr-warmup-iters=7", "--lr-decay-iters=90",
                         "--train-iters=100", "--exit-interval=50", "--weight-decay=0.05", "--adam-beta1=0.8",
                         "--adam-beta2=0.99", "--adam-eps=1e-6", "--clip-grad=0", "--max-skipped-steps=0", "--num-experts=6",
                         "--moe-router-topk=3", "--moe-aux-loss-coeff=0.02", "--moe-z-loss-coeff=0.001",
                         "--moe-router-type=rnn", "--router-dim=32", "--router-detach", "--tie-embeddings",
                         "--init-method-std=0.01", "--expert-parallel-size=3", "--data-path=/data/x", "--save=ck",
                         "--load=ck0", "--save-interval=20", "--keep-checkpoints=5", "--eval-interval=10",
                         "--eval-iters=4", "--log-interval=5", "--log-router-grads", "--seed=99", "--device=cpu",
                         "--dry-run", "--metrics-file=m.jsonl"});
  EXPECT_EQ(c.model.num_layers, 6);
  EXPECT_EQ(c.model.hidden_size, 96);
  EXPECT_EQ(c.model.ffn_hidden_size, 80);
  EXPECT_EQ(c.model.num_heads, 3);
  EXPECT_EQ(c.model.seq_length, 64);
  EXPECT_EQ(c.model.vocab_size, 300);
  EXPECT_EQ(c.micro_batch_size, 2);
  EXPECT_EQ(c.global_batch_size, 6);
  EXPECT_EQ(c.accumulation_steps(), 3);
  EXPECT_DOUBLE_EQ(c.lr, 4.2e-4);
  EXPECT_DOUBLE_EQ(c.min_lr, 4.2e-5);
  EXPECT_EQ(c.lr_warmup_iters, 7);
  EXPECT_EQ(c.lr_decay_iters, 90);
  EXPECT_EQ(c.train_iters, 100);
  EXPECT_EQ(c.exit_interval, 50);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(c.adam_beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.adam_beta2, 0.99);
  EXPECT_DOUBLE_EQ(c.adam_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.clip_grad, 0.0);
  EXPECT_EQ(c.max_skipped_steps, 0);
  EXPECT_EQ(c.model.num_experts, 6);
  EXPECT_EQ(c.model.topk, 3);
  EXPECT_DOUBLE_EQ(c.model.aux_loss_coeff, 0.02);
  EXPECT_DOUBLE_EQ(c.model.z_loss_coeff, 0.001);
  EXPECT_EQ(c.model.router_type, RouterType::rnn);
  EXPECT_EQ(c.model.router_dim, 32);
  EXPECT_TRUE(c.model.router_detach);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.01);
  EXPECT_EQ(c.expert_parallel_size, 3);
  EXPECT_EQ(c.data_path, "/data/x");
  EXPECT_EQ(c.save, "ck");
  EXPECT_EQ(c.load, "ck0");
  EXPECT_EQ(c.save_interval, 20);
  EXPECT_EQ(c.keep_checkpoints, 5);
  EXPECT_EQ(c.eval_interval, 10);
  EXPECT_EQ(c.eval_iters, 4);
  EXPECT_EQ(c.log_interval, 5);
  EXPECT_TRUE(c.log_router_grads);
  EXPECT_EQ(c.seed, 99u);
  EXPECT_EQ(c.device, Device::cpu);
  EXPECT_TRUE(c.dry_run);
  EXPECT_EQ(c.metrics_file, "m.jsonl");
  EXPECT_FALSE(parse_args({"--router-detach=false"}).model.router_detach);
  for (const char* t : {"linear", "random", "mlp", "mlp-tanh", "gru", "gru-np", "rnn",
                        "lstm"})
    EXPECT_STREQ(router_type_name(parse_args({std::string("--moe-router-type=") + t}).model.router_type), t);
}

TEST(TrainConfig, HelpListsEveryFlagAndSkipsValidation) {
  TrainConfig c = parse_args({"--help", "--num-layers=0"});
  EXPECT_TRUE(c.help);
  for (const std::string& name : train_option_names())
    EXPECT_NE(c.help_text.find("--" + name), std::string::npos) << name;
  EXPECT_NE(c.help_text.find("(default: train-iters)"), std::string::npos);
}

// --moe-expert-capacity-factor: 0 (dropless) by default; C >= 0, finite.
TEST(TrainConfig, ExpertCapacityFactor) {
  EXPECT_EQ(parse_args({}).model.capacity_factor, 0.0);
  EXPECT_EQ(parse_args({"--moe-expert-capacity-factor", "1.25"}).model.capacity_factor, 1.25);
  for (const char* bad : {"-0.5", "inf", "nan"}) {
    try {
      parse_args({"--moe-expert-capacity-factor", bad});
      ADD_FAILURE() << bad << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--moe-expert-capacity-factor="), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(expert_capacity(1.25, 2048, 2, 16), 320);  // 2048 x 2 / 16 = 256 slots per expert, x 1.25
  EXPECT_EQ(expert_capacity(1.0, 7, 2, 4), 4);          // ceil(3.5)
}

// Adding, removing or renaming a flag must be deliberate: update this list
// (and README.md / docs/ARCHITECTURE.md §6) in the same change.
TEST(TrainConfig, CliSurfaceIsFrozen) {
  const std::vector<std::string> expected = {
      "config", "help", "num-layers", "hidden-size", "ffn-hidden-size", "num-attention-heads", "seq-length",
      "vocab-size", "num-experts", "moe-router-topk", "moe-expert-capacity-factor", "moe-aux-loss-coeff",
      "moe-z-loss-coeff", "moe-router-type",
      "router-dim", "xmoe-dim", "router-detach", "router-shared-proj", "router-logit-residual",
      "router-logit-residual-detach", "tie-embeddings", "init-method-std", "router-init", "micro-batch-size",
      "global-batch-size",
      "lr", "min-lr", "lr-warmup-iters", "lr-decay-iters", "train-iters", "exit-interval", "weight-decay",
      "adam-beta1", "adam-beta2", "adam-eps", "clip-grad", "max-skipped-steps", "collective-timeout", "expert-parallel-size", "data-path", "save", "load",
      "save-interval", "keep-checkpoints", "eval-interval", "eval-iters", "log-interval", "log-router-grads", "seed", "device", "dry-run",
      "dry-run-ranks", "profile", "metrics-file"};
  EXPECT_EQ(train_option_names(), expected);
}

TEST(TrainConfigErrors, BadCombinations) {
  expect_usage_error({"--router-shared-proj", "--moe-router-type=linear"},
                     {"--router-shared-proj", "--moe-router-type=linear", "has none", "allowed: mlp"});
  expect_usage_error({"--router-shared-proj", "--moe-router-type=random"},
                     {"--router-shared-proj", "--moe-router-type=random"});
  EXPECT_TRUE(parse_args({"--router-shared-proj", "--moe-router-type=mlp"}).model.router_shared_proj);
  EXPECT_FALSE(parse_args({}).model.router_shared_proj);
  expect_usage_error({"--router-logit-residual-detach"},
                     {"--router-logit-residual-detach", "--router-logit-residual", "no residual"});
  expect_usage_error({"--router-logit-residual=x"}, {"--router-logit-residual=x", "finite number"});
  expect_usage_error({"--router-logit-residual=1e-40"}, {"--router-logit-residual=1e-40", "32-bit float"});
  const TrainConfig r = parse_args({"--router-logit-residual=0.5", "--router-logit-residual-detach"});
  EXPECT_DOUBLE_EQ(r.model.router_logit_residual, 0.5);
  EXPECT_TRUE(r.model.router_logit_residual_detach);
  const TrainConfig neg = parse_args({"--router-logit-residual=-0.25", "--moe-router-type=linear"});
  EXPECT_DOUBLE_EQ(neg.model.router_logit_residual, -0.25);
  EXPECT_DOUBLE_EQ(parse_args({}).model.router_logit_residual, 0.0);
  expect_usage_error({"--num-experts=4", "--moe-router-topk=5"}, {"--moe-router-topk=5 must be <= --num-experts=4"});
  expect_usage_error({"--hidden-size=100", "--num-attention-heads=3"},
                     {"--hidden-size=100", "--num-attention-heads=3", "multiple"});
  expect_usage_error({"--hidden-size=12", "--num-attention-heads=4"},
                     {"--hidden-size=12", "--num-attention-heads=4", "head dim 3", "even"});
  expect_usage_error({"--micro-batch-size=4", "--global-batch-size=10"},
                     {"--global-batch-size=10 must be a multiple of --micro-batch-size=4"});
  expect_usage_error({"--lr=0.001", "--min-lr=0.01"}, {"--min-lr=0.01 must be <= --lr=0.001"});
  expect_usage_error({"--num-experts=8", "--expert-parallel-size=3"},
                     {"--expert-parallel-size=3 must divide --num-experts=8"});
  expect_usage_error({"--eval-interval=10", "--eval-iters=0"}, {"--eval-iters=0", "--eval-interval=10"});
}

// The one batch-layout rule: at parse time per process, later per rank count.
TEST(TrainConfigErrors, BatchLayout) {
  TrainConfig c;
  c.micro_batch_size = 2;
  c.global_batch_size = 8;
  EXPECT_NO_THROW(check_batch_layout(c));
  EXPECT_NO_THROW(check_batch_layout(c, 2));
  EXPECT_NO_THROW(check_batch_layout(c, 4));
  try {
    check_batch_layout(c, 3);
    ADD_FAILURE() << "8 sequences in micro-batches of 2 do not split over 3 ranks";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--global-batch-size=8 must be a multiple of ranks (3) x --micro-batch-size (2)");
  }
  c.global_batch_size = 9;
  EXPECT_THROW(check_batch_layout(c), UsageError);
  EXPECT_NO_THROW(check_device_supported(Device::cpu));
  EXPECT_THROW(check_device_supported(Device::cuda), UsageError);  // until the CUDA backend is complete
  EXPECT_THROW(parse_args({"--device", "cuda"}), UsageError);
  EXPECT_EQ(parse_args({"--device", "cuda", "--dry-run"}).device, Device::cuda);  // the GPU plan needs no GPU
}

TEST(TrainConfigErrors, NonPositiveSizes) {
  for (const char* flag : {"--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads",
                           "--seq-length", "--vocab-size", "--num-experts", "--moe-router-topk", "--router-dim", "--xmoe-dim",
                           "--micro-batch-size", "--global-batch-size", "--train-iters", "--log-interval",
                           "--lr-decay-iters"}) {
    for (const char* value : {"0", "-3"}) {
      const std::string arg = std::string(flag) + "=" + value;
      expect_usage_error({arg}, {arg, "must be >="});
    }
  }
  for (const char* flag : {"--lr-warmup-iters", "--exit-interval", "--save-interval", "--keep-checkpoints",
                           "--eval-interval", "--eval-iters", "--expert-parallel-size", "--max-skipped-steps"}) {
    const std::string arg = std::string(flag) + "=-1";
    expect_usage_error({arg}, {arg, "must be >= 0"});
  }
  expect_usage_error({"--lr=0"}, {"--lr=0 must be > 0"});
  expect_usage_error({"--lr=-1"}, {"--lr=-1"});
  expect_usage_error({"--min-lr=-1e-05"}, {"--min-lr=-1e-05 must be >= 0"});
  expect_usage_error({"--weight-decay=-0.1"}, {"--weight-decay=-0.1"});
  expect_usage_error({"--clip-grad=-1"}, {"--clip-grad=-1"});
  expect_usage_error({"--adam-eps=0"}, {"--adam-eps=0"});
  expect_usage_error({"--adam-beta1=1"}, {"--adam-beta1=1 must be in [0, 1)"});
  expect_usage_error({"--adam-beta2=-0.5"}, {"--adam-beta2=-0.5 must be in [0, 1)"});
  expect_usage_error({"--init-method-std=0"}, {"--init-method-std=0"});
  expect_usage_error({"--moe-aux-loss-coeff=-1"}, {"--moe-aux-loss-coeff=-1"});
  expect_usage_error({"--moe-z-loss-coeff=-1"}, {"--moe-z-loss-coeff=-1"});
  expect_usage_error({"--vocab-size=1"}, {"--vocab-size=1"});
}

TEST(TrainConfigErrors, BadValuesAndUnknownOptions) {
  expect_usage_error({"--num-layers=abc"}, {"--num-layers=abc", "integer"});
  expect_usage_error({"--num-layers=2.5"}, {"--num-layers=2.5", "integer"});
  expect_usage_error({"--num-layers=99999999999"}, {"--num-layers=99999999999", "out of range"});
  expect_usage_error({"--seed=-1"}, {"--seed=-1", "non-negative"});
  expect_usage_error({"--lr=fast"}, {"--lr=fast", "number"});
  expect_usage_error({"--lr=nan"}, {"--lr=nan"});
  expect_usage_error({"--router-detach=maybe"}, {"--router-detach=maybe", "true or false"});
  expect_usage_error({"--moe-router-type=gru2"},
                     {"--moe-router-type=gru2", "unknown router type", "linear, random, mlp, mlp-tanh, gru, gru-np, rnn"
                                                              ", cosine, xmoe, gru-xmoe, lstm"});
  expect_usage_error({"--device=tpu"}, {"--device=tpu", "cpu, cuda"});
  expect_usage_error({"--data-path=synthetic:foo"},
                     {"--data-path=synthetic:foo: unknown synthetic source; available: synthetic:markov"});
  expect_usage_error({"--data-path="}, {"--data-path"});
  expect_usage_error({"--bogus=1"}, {"--bogus", "unknown option"});
  expect_usage_error({"--num-layer=3"}, {"--num-layer", "unknown option"});  // no abbreviations
  expect_usage_error({"--lr=0.1", "--lr=0.2"}, {"lr"});                        // given twice
  expect_usage_error({"stray"}, {"stray"});                                    // positional argument
  expect_usage_error({"--num-layers"}, {"num-layers"});                        // missing value
#ifndef RMOE_WITH_CUDA
  expect_usage_error({"--device=cuda"}, {"--device=cuda", "-DRMOE_CUDA=ON"});
#endif
}

TEST(TrainConfigErrors, ConfigFileProblems) {
  expect_usage_error({"--config=/nonexistent/rmoe.ini"}, {"--config=/nonexistent/rmoe.ini", "cannot open"});
  const std::string unknown = write_temp_file("unknown.ini", "num-layers = 2\nnum-layerz = 3\n");
  expect_usage_error({"--config=" + unknown}, {"--config=" + unknown, "unknown key 'num-layerz'"});
  const std::string dashed = write_temp_file("dashed.ini", "--num-layers = 2\n");
  expect_usage_error({"--config=" + dashed}, {"--config=" + dashed});
  const std::string bad_value = write_temp_file("bad_value.ini", "hidden-size = wide\n");
  expect_usage_error({"--config=" + bad_value}, {"--hidden-size=wide"});
  const std::string bad_combo = write_temp_file("bad_combo.ini", "num-experts = 2\nmoe-router-topk = 3\n");
  expect_usage_error({"--config=" + bad_combo}, {"--moe-router-topk=3 must be <= --num-experts=2"});
  const std::string nested = write_temp_file("nested.ini", "config = other.ini\n");
  expect_usage_error({"--config=" + nested}, {"unknown key 'config'"});
}

// Defect: real options were checked as doubles but computed in float, so
// --lr=1e300 trained with an infinite rate and --adam-eps=1e-50 with 0.
TEST(TrainConfigErrors, RealValuesMustFitFloat) {
  for (const char* flag : {"--lr", "--min-lr", "--weight-decay", "--adam-eps", "--clip-grad", "--init-method-std",
                           "--moe-aux-loss-coeff", "--moe-z-loss-coeff"}) {
    const std::string f(flag);
    const std::vector<std::string> base = f == "--min-lr" ? std::vector<std::string>{"--lr=3e38"}
                                                           : std::vector<std::string>{};
    std::vector<std::string> big = base, tiny = base;
    big.push_back(f + "=1e300");
    tiny.push_back(f + "=1e-50");
    expect_usage_error(big, {f + "=1e+300", "32-bit float", "it would be inf", "1.1755e-38 to 3.4028e+38"});
    expect_usage_error(tiny, {f + "=1e-50", "32-bit float", "it would be 0", "1.1755e-38 to 3.4028e+38"});
  }
  for (const char* flag : {"--adam-beta1", "--adam-beta2"})  // above 1 is the [0, 1) rule
    expect_usage_error({std::string(flag) + "=1e-45"}, {std::string(flag) + "=1e-45", "32-bit float"});
  // The edges of the range and 0 (where 0 is allowed) are accepted.
  const TrainConfig c = parse_args({"--lr=3.4e38", "--min-lr=0", "--adam-eps=1.2e-38", "--weight-decay=0",
                                    "--clip-grad=3.4e38", "--moe-z-loss-coeff=0", "--moe-aux-loss-coeff=1.2e-38",
                                    "--init-method-std=1.1755e-38", "--adam-beta1=0", "--adam-beta2=1.2e-38"});
  EXPECT_DOUBLE_EQ(c.lr, 3.4e38);
  EXPECT_DOUBLE_EQ(c.adam_eps, 1.2e-38);
  EXPECT_GT(float(c.adam_eps), 0.f);
  EXPECT_TRUE(std::isfinite(float(c.lr)));
  // A configuration built in code is held to the same rule.
  TrainConfig t;
  t.model.init_std = 1e-300;
  EXPECT_THROW(validate_train_config(t), UsageError);
}

// Defect: --config naming a directory or /dev/zero was ignored (the default
// model trained, exit 0; /dev/zero read forever). Now a UsageError naming the
// path for anything but a readable, regular, text file of at most 1 MiB.
TEST(TrainConfigErrors, ConfigMustBeAReadableTextFile) {
  const std::string dir = ::testing::TempDir() + "rmoe_test_config_dir";
  std::filesystem::create_directories(dir);
  expect_usage_error({"--config=" + dir}, {"--config=" + dir, "is a directory"});
  expect_usage_error({"--config=" + dir, "--save=ck"}, {"--config=" + dir});
  if (std::filesystem::exists("/dev/zero"))
    expect_usage_error({"--config=/dev/zero"}, {"--config=/dev/zero", "not a regular file"});
  const std::string fifo = ::testing::TempDir() + "rmoe_test_config_fifo";
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);  // opening it would wait for a writer forever
  expect_usage_error({"--config=" + fifo}, {"--config=" + fifo, "not a regular file"});
  std::filesystem::remove(fifo);
  const std::string nul = write_temp_file("nul.ini", std::string("num-layers = 2\n\0\0\0\n", 20));
  expect_usage_error({"--config=" + nul}, {"--config=" + nul, "not a text file", "NUL"});
  const std::string big = write_temp_file("big.ini", std::string((1 << 20) + 1, '#'));
  expect_usage_error({"--config=" + big}, {"--config=" + big, "1048577 bytes", "at most 1 MiB"});
  const std::string exact = write_temp_file("exact.ini", "num-layers = 3\n" + std::string((1 << 20) - 15, '#'));
  EXPECT_EQ(parse_args({"--config=" + exact}).model.num_layers, 3);  // 1 MiB exactly is fine
  const std::string locked = write_temp_file("locked.ini", "num-layers = 2\n");
  ::chmod(locked.c_str(), 0);
  if (::geteuid() != 0)  // root reads it anyway
    expect_usage_error({"--config=" + locked}, {"--config=" + locked, "cannot open"});
  ::chmod(locked.c_str(), 0600);
  expect_usage_error({"--config=/nonexistent/dir/x.ini"}, {"--config=/nonexistent/dir/x.ini", "cannot open"});
}

// F3 (tests/fuzz/README.md, findings/config_hash_in_value_roundtrip.ini): a
// text value that the INI form of the configuration cannot carry ('#' starts
// a comment, a line break ends the line, white space at either end is
// trimmed) is refused with the flag named, instead of being stored in a
// checkpoint and read back as another value.
TEST(TrainConfigErrors, TextValuesMustSurviveConfigToIni) {
  // The reproducer: an INI part (empty) and, after "#argv", the argument.
  expect_usage_error({"--data-path=data/run#2"}, {"--data-path=data/run#2", "'#' would start a comment"});
  for (const char* flag : {"--data-path", "--save", "--load", "--metrics-file"}) {
    const std::string f(flag);
    expect_usage_error({f + "=run#2"}, {f + "=run#2", "'#'"});
    expect_usage_error({f + "= run"}, {f + "= run", "white space at either end"});
    expect_usage_error({f + "=run\t"}, {f + "=run\\t", "white space at either end"});
    expect_usage_error({f + "=a\nb"}, {f + "=a\\nb", "line break"});  // one line: the newline is shown as \n
    expect_usage_error({f + "=a\rb"}, {f + "=a\\rb", "line break"});
  }
  // What the INI form does carry is accepted and reads back unchanged
  // (Boost's reader has no ';' comments: "a;b" stays "a;b").
  for (const std::string v : {"a;b", "a=b", "[x]", "dir with spaces/x", "caf\xc3\xa9", "%value%", "%invalid_line%",
                              "\"quoted\"", "a\\b"}) {
    const TrainConfig c = parse_args({"--save=" + v, "--metrics-file=" + v});
    const std::string ini = config_to_ini(c);
    const TrainConfig back = parse_train_config_from_ini(ini, "config_to_ini text", {});
    EXPECT_EQ(back.save, v);
    EXPECT_EQ(back.metrics_file, v);
    EXPECT_EQ(config_to_ini(back), ini);
  }
  TrainConfig t;
  t.save = "ck ";
  EXPECT_THROW(validate_train_config(t), UsageError);
}

// F4 (tests/fuzz/README.md, findings/config_boost_placeholder_hang.ini): an
// INI line holding "%invalid_line%" hung rmoe_train --config forever inside
// Boost 1.74's what(); the same for a checkpoint's stored configuration and
// for any value that holds its own placeholder. Each now ends in one line.
TEST(TrainConfigErrors, BoostPlaceholdersDoNotHang) {
  const std::string hang = write_temp_file("placeholder.ini", "%invalid_line%\n");  // the reproducer's content
  expect_usage_error({"--config=" + hang}, {"--config=" + hang, "'%invalid_line%'", "key = value"});
  const std::string mixed = write_temp_file("placeholder2.ini", "num-layers = 2\nx %invalid_line% %option% y\n");
  expect_usage_error({"--config=" + mixed}, {"'x %invalid_line% %option% y'"});
  expect_usage_error({"--config=" + write_temp_file("placeholder3.ini", "%canonical_option%\n")},
                     {"'%canonical_option%'"});
  try {
    parse_train_config_from_ini("%invalid_line%\n", "ck.h5", {});
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("ck.h5: its stored configuration is not readable"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("'%invalid_line%'"), std::string::npos) << e.what();
  }
  // Command-line errors with placeholders in what the user typed.
  expect_usage_error({"--lr%canonical_option%=1"}, {"--lr%canonical_option%", "unknown option"});
  expect_usage_error({"--lr", "--%original_token%"}, {"lr"});
  expect_usage_error({"%prefix%"}, {"%prefix%", "unexpected argument"});
  expect_usage_error({"--help=%option%"}, {"help"});
}

// option_error_text on every kind of Boost.Program_options error whose
// values can come from the user (parse_or_usage in src/apps/app_options.h
// uses it for the other apps' typed options too).
TEST(TrainConfig, OptionErrorTextNeverCallsBoostsWhat) {
  namespace po = boost::program_options;
  const po::invalid_config_file_syntax line("%invalid_line%", po::invalid_syntax::unrecognized_line);
  EXPECT_EQ(option_error_text(line), "the line '%invalid_line%' is not a 'key = value' line (nor a # comment)");
  po::invalid_option_value value("%value% and %canonical_option%");
  value.set_option_name("--max-tokens");
  value.set_prefix(po::command_line_style::allow_long);
  EXPECT_EQ(option_error_text(value),
            "the argument ('%value% and %canonical_option%') for option '--max-tokens' is invalid");
  const po::unknown_option unknown("--x%original_token%");
  EXPECT_EQ(option_error_text(unknown), "unrecognised option '--x%original_token%'");
  po::invalid_command_line_syntax missing(po::invalid_syntax::missing_parameter, "%option%", "%option%",
                                          po::command_line_style::allow_long);
  EXPECT_NE(option_error_text(missing).find("'--%option%'"), std::string::npos) << option_error_text(missing);
  const po::multiple_occurrences twice;
  EXPECT_FALSE(option_error_text(twice).empty());
  const po::ambiguous_option ambiguous({"%option%a", "%option%b"});
  EXPECT_FALSE(option_error_text(ambiguous).empty());
  // '%' and the helper's own marker byte pass through untouched.
  po::invalid_option_value odd(std::string("100%\x01\x03%"));
  EXPECT_NE(option_error_text(odd).find("100%\\x01\\x03%"), std::string::npos) << option_error_text(odd);
  EXPECT_EQ(option_error_text(std::runtime_error("plain")), "plain");
}

// --max-skipped-steps (the trainer skips non-finite steps; this is the option).
TEST(TrainConfig, MaxSkippedSteps) {
  EXPECT_EQ(parse_args({}).max_skipped_steps, 10);
  EXPECT_EQ(parse_args({"--max-skipped-steps=0"}).max_skipped_steps, 0);  // stop at the first
  EXPECT_EQ(parse_args({"--max-skipped-steps", "1000000000000"}).max_skipped_steps, 1000000000000);
  expect_usage_error({"--max-skipped-steps=-1"}, {"--max-skipped-steps=-1 must be >= 0"});
  expect_usage_error({"--max-skipped-steps=1.5"}, {"--max-skipped-steps=1.5", "integer"});
  const TrainConfig c = parse_args({"--max-skipped-steps=25"});
  const std::string ini = config_to_ini(c);
  EXPECT_NE(ini.find("max-skipped-steps = 25\n"), std::string::npos) << ini;
  EXPECT_EQ(parse_train_config_from_ini(ini, "ck.h5", {}).max_skipped_steps, 25);
  EXPECT_EQ(parse_train_config_from_ini(ini, "ck.h5", {"--max-skipped-steps=3"}).max_skipped_steps, 3);
  const std::string help = train_config_help();
  EXPECT_NE(help.find("a step whose loss or gradient norm is not finite is skipped (no update); after N such steps "
                      "in a row the run stops with exit 1, keeping the last good checkpoint (default: 10)"),
            std::string::npos)
      << help;
}

// Shapes whose counts do not fit 64 bits, or whose token slots do not fit
// the model's 32-bit indices, stop at parsing with the options named (they
// printed negative counts in --dry-run, or failed in an allocation).
TEST(TrainConfigErrors, ShapesMustFitTheirCounts) {
  expect_usage_error({"--dry-run", "--hidden-size=2147483646", "--num-attention-heads=1"},
                     {"--hidden-size", "--num-layers", "does not fit in 64-bit integers"});
  expect_usage_error({"--dry-run", "--num-experts=2147483647", "--ffn-hidden-size=2147483647"},
                     {"--num-experts", "--ffn-hidden-size", "64-bit"});
  expect_usage_error({"--seq-length=2147483647"},
                     {"--micro-batch-size=4 x --seq-length=2147483647 x --moe-router-topk=2", "32-bit indices"});
  expect_usage_error({"--seq-length=1000000", "--micro-batch-size=2048", "--global-batch-size=2048"},
                     {"--micro-batch-size=2048", "--seq-length=1000000"});
  // Attention saves lse [B, H, S], never [B, H, S, S]: no S^2 term is left to overflow.
  EXPECT_EQ(parse_args({"--micro-batch-size=1", "--global-batch-size=8", "--moe-router-topk=1", "--seq-length=2147483647",
                        "--num-attention-heads=64", "--hidden-size=128"})
                .model.seq_length,
            2147483647);
  expect_usage_error({"--router-dim=715827883"}, {"--router-dim=715827883", "GRU", "at most 715827882"});
  expect_usage_error({"--router-dim=536870912", "--moe-router-type=lstm"},
                     {"--router-dim=536870912", "LSTM cell's 4 x --router-dim", "at most 536870911"});
  EXPECT_EQ(parse_args({"--router-dim=715827883", "--moe-router-type=mlp", "--dry-run"}).model.router_dim, 715827883);
}

TEST(TrainConfig, CommandLineOverridesIniFile) {
  const std::string path = write_temp_file("precedence.ini",
                                           "# a comment\n"
                                           "num-layers = 8\n"
                                           "hidden-size = 64\n"
                                           "lr = 0.5\n"
                                           "router-detach = true\n"
                                           "moe-router-type = mlp\n"
                                           "data-path = /from/file\n");
  TrainConfig c = parse_args({"--num-layers=6", "--config", path, "--router-detach=false", "--data-path=/from/cli"});
  EXPECT_EQ(c.model.num_layers, 6);              // command line wins
  EXPECT_EQ(c.model.hidden_size, 64);            // from the file
  EXPECT_DOUBLE_EQ(c.lr, 0.5);                   // from the file
  EXPECT_EQ(c.model.router_type, RouterType::mlp);
  EXPECT_FALSE(c.model.router_detach);           // command line wins over the file's true
  EXPECT_EQ(c.data_path, "/from/cli");
  EXPECT_EQ(c.model.num_heads, TrainConfig{}.model.num_heads);  // neither: default
  // The file alone.
  TrainConfig f = parse_args({"--config=" + path});
  EXPECT_EQ(f.model.num_layers, 8);
  EXPECT_TRUE(f.model.router_detach);
  // A command-line value that makes the file's values valid is accepted:
  // validation runs on the merged result.
  const std::string topk = write_temp_file("topk.ini", "moe-router-topk = 6\n");
  EXPECT_EQ(parse_args({"--config=" + topk, "--num-experts=6"}).model.topk, 6);
}

// --xmoe-dim: parsed, validated (>= 1, the message names the flag), stored
// in the INI text and read back; the router list names the cosine routers.
TEST(TrainConfig, XmoeDim) {
  EXPECT_EQ(parse_args({}).model.xmoe_dim, 16);  // X-MoE's
  const TrainConfig c = parse_args({"--moe-router-type=gru-xmoe", "--xmoe-dim=24"});
  EXPECT_EQ(c.model.router_type, RouterType::gru_xmoe);
  EXPECT_EQ(c.model.xmoe_dim, 24);
  const std::string ini = config_to_ini(c);
  EXPECT_NE(ini.find("xmoe-dim = 24\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("moe-router-type = gru-xmoe\n"), std::string::npos) << ini;
  EXPECT_EQ(parse_train_config_from_ini(ini, "ck.h5", {}).model.xmoe_dim, 24);
  expect_usage_error({"--xmoe-dim=0"}, {"--xmoe-dim=0", "must be >= 1"});
  expect_usage_error({"--xmoe-dim=abc"}, {"--xmoe-dim"});
  expect_usage_error({"--moe-router-type=xmoe2"}, {"--moe-router-type=xmoe2", "cosine, xmoe, gru-xmoe"});
  EXPECT_NE(parse_args({"--help"}).help_text.find("gru-xmoe"), std::string::npos);
}

TEST(TrainConfig, IniRoundTrip) {
  TrainConfig c = parse_args({"--num-layers=3", "--hidden-size=48", "--num-attention-heads=2", "--lr=4.2e-4",
                         "--min-lr=4.2e-5", "--moe-router-type=linear", "--tie-embeddings", "--seed=18446744073709551615",
                         "--metrics-file=/tmp/m.jsonl", "--train-iters=33", "--init-method-std=0.013",
                         "--adam-eps=1e-7"});
  const std::string ini = config_to_ini(c);
  EXPECT_NE(ini.find("num-layers = 3\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("lr-decay-iters = 33\n"), std::string::npos) << ini;  // resolved
  EXPECT_NE(ini.find("moe-router-type = linear\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("tie-embeddings = true\n"), std::string::npos) << ini;
  EXPECT_EQ(ini.find("help"), std::string::npos);
  const std::string path = write_temp_file("roundtrip.ini", ini);
  TrainConfig back = parse_args({"--config=" + path});
  EXPECT_EQ(config_to_ini(back), ini);
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.lr, c.lr);  // bit-exact: shortest round-trip formatting
  EXPECT_EQ(back.min_lr, c.min_lr);
  EXPECT_EQ(back.model.init_std, c.model.init_std);
  EXPECT_EQ(back.adam_eps, c.adam_eps);
  EXPECT_EQ(back.model.router_type, RouterType::linear);
  EXPECT_TRUE(back.model.tie_embeddings);
  EXPECT_EQ(back.save, "");
  EXPECT_EQ(back.metrics_file, "/tmp/m.jsonl");
  // Defaults round-trip too.
  const std::string def_path = write_temp_file("defaults.ini", config_to_ini(parse_args({})));
  EXPECT_EQ(config_to_ini(parse_args({"--config=" + def_path})), config_to_ini(parse_args({})));
}

// A checkpoint's stored INI read as --config, overrides on top (rmoe_eval, rmoe_generate).
TEST(TrainConfig, StoredIniWithOverrides) {
  const TrainConfig saved = parse_args({"--num-layers=3", "--lr=4.2e-4", "--moe-router-type=mlp", "--seed=77"});
  const std::string ini = config_to_ini(saved);
  const TrainConfig same = parse_train_config_from_ini(ini, "ck.h5", {});
  EXPECT_EQ(config_to_ini(same), ini);
  const TrainConfig changed = parse_train_config_from_ini(ini, "ck.h5", {"--micro-batch-size=2", "--seed", "5"});
  EXPECT_EQ(changed.micro_batch_size, 2);
  EXPECT_EQ(changed.seed, 5u);
  EXPECT_EQ(changed.model.num_layers, 3);
  EXPECT_EQ(changed.model.router_type, RouterType::mlp);
  EXPECT_TRUE(parse_train_config_from_ini(ini, "ck.h5", {"--help"}).help);
  auto expect_message = [](const std::string& text, const std::vector<std::string>& overrides,
                           const std::vector<std::string>& parts) {
    try {
      parse_train_config_from_ini(text, "ck.h5", overrides);
      ADD_FAILURE() << "no error";
    } catch (const UsageError& e) {
      for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_message("", {}, {"ck.h5: the checkpoint holds no configuration (attribute 'config')"});
  expect_message(ini + "num-layerz = 2\n", {},
                 {"ck.h5: its stored configuration is not readable by this build", "unknown key 'num-layerz'"});
  expect_message(ini, {"--num-experts=1"}, {"--moe-router-topk=2 must be <= --num-experts=1"});  // validated merged
  expect_message(ini, {"--config=other.ini"}, {"'--config' cannot be specified more than once"});
}

TEST(ModelConfig, RouterTypeNames) {
  for (RouterType r : {RouterType::linear, RouterType::random, RouterType::mlp, RouterType::mlp_tanh, RouterType::gru,
                       RouterType::gru_np, RouterType::rnn,
                       RouterType::lstm})
    EXPECT_EQ(parse_router_type(router_type_name(r)), r);
  for (RouterType r : {RouterType::cosine, RouterType::xmoe, RouterType::gru_xmoe})
    EXPECT_EQ(parse_router_type(router_type_name(r)), r);
  EXPECT_EQ(parse_router_type("gru-xmoe"), RouterType::gru_xmoe);
  EXPECT_THROW(parse_router_type("GRU"), UsageError);
  EXPECT_THROW(parse_router_type("gru_np"), UsageError);  // the flag spells it gru-np
  EXPECT_THROW(parse_router_type("gru_xmoe"), UsageError);
  ModelConfig m;
  EXPECT_NO_THROW(m.validate());
  m.topk = m.num_experts + 1;
  EXPECT_THROW(m.validate(), UsageError);
}

}  // namespace
}  // namespace rmoe
