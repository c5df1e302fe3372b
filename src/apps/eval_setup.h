// eval_setup.h — what the apps that run a checkpoint over a validation split
// share (rmoe_eval, rmoe_analyze; header-only: each app is one source file):
//
//   const std::string path = checkpoint_to_load(load);            // app_options.h
//   const CheckpointHeader header = read_checkpoint_header(path);
//   TrainConfig cfg = checkpoint_eval_config(header, path, overrides);
//   check_eval_dataset(cfg, path);                                  // vocabulary
//   ValidationData val = open_validation_data(cfg, header, path, allow_mismatch, print);
//   val.source->fill_validation(m, 0, n, S, tokens, targets);      // windows [m B, m B + n)
//
// Validation windows are those of rmoe_train (S + 1 tokens at stride S,
// docs/DATA.md), numbered in order; the source's global batch is one
// micro-batch of B = cfg.micro_batch_size windows, so validation batch m holds
// windows [m B, (m + 1) B).
// Tested through tests/cli/eval_generate.sh and tests/cli/analyze.sh.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "app_options.h"
#include "rmoe/core/error.h"
#include "rmoe/data/batch_source.h"
#include "rmoe/data/dataset.h"
#include "rmoe/data/loader.h"
#include "rmoe/data/synthetic.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

namespace rmoe {

// `flag`=`v` as an integer in [min, max]; UsageError naming both otherwise.
inline int64_t parse_count(const std::string& flag, const std::string& v, int64_t min,
                           int64_t max = std::numeric_limits<int64_t>::max()) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < min || x > max)
    throw UsageError(flag + "=" + v + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                     "]");
  return x;
}

// The configuration to run checkpoint `path` with: the stored one with
// `overrides` (rmoe_train options) on top. The saved expert-parallel size
// need not suit this rank count: it is chosen anew unless given.
inline TrainConfig checkpoint_eval_config(const CheckpointHeader& header, const std::string& path,
                                          std::vector<std::string> overrides) {
  if (!has_option(overrides, "expert-parallel-size")) overrides.push_back("--expert-parallel-size=0");
  return parse_train_config_from_ini(header.config_ini, path, overrides);
}

// cfg.data_path is synthetic:NAME or a dataset directory of the model's
// vocabulary; a UsageError naming both otherwise.
inline void check_eval_dataset(const TrainConfig& cfg, const std::string& path) {
  if (is_synthetic_data_path(cfg.data_path)) return;
  if (!is_dataset_dir(cfg.data_path))
    throw UsageError("--data-path=" + cfg.data_path + ": not a dataset directory (no " + kDatasetMetaFile +
                     "); give the directory rmoe_prepare wrote");
  const int v = dataset_vocab_size(cfg.data_path);
  if (v != cfg.model.vocab_size)
    throw UsageError("dataset " + cfg.data_path + " has vocabulary " + std::to_string(v) + " but the model of " + path +
                     " has vocabulary " + std::to_string(cfg.model.vocab_size) +
                     "; evaluate on data prepared with the tokenizer the model was trained on");
}

struct ValidationData {
  std::unique_ptr<BatchSource> source;
  int64_t windows = -1;  // the dataset's validation windows; -1: synthetic data, no fixed split
};

// Opens cfg.data_path with micro-batches of cfg.micro_batch_size windows (file
// comment) and checks that its tokenizer is the one the checkpoint's model
// was trained on (check_same_tokenizer, app_options.h; warnings on stderr
// when `print`).
inline ValidationData open_validation_data(const TrainConfig& cfg, const CheckpointHeader& header,
                                           const std::string& path, bool allow_tokenizer_mismatch, bool print) {
  ValidationData v;
  v.source =
      open_batch_source(cfg.data_path, cfg.model.vocab_size, cfg.seed, cfg.model.seq_length, cfg.micro_batch_size);
  check_same_tokenizer(header, path, cfg.data_path, tokenizer_fingerprint_of(*v.source, cfg.data_path, cfg.seed),
                       tokenizer_description_of(*v.source, cfg.data_path, cfg.seed), allow_tokenizer_mismatch, print);
  if (const auto* shards = dynamic_cast<const ShardBatchSource*>(v.source.get()))
    v.windows = shards->num_windows(Split::val);
  return v;
}

}  // namespace rmoe
