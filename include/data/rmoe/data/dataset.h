// dataset.h — a dataset directory written by rmoe_prepare (docs/DATA.md):
//
//   DIR/dataset.h5          format = "rmoe-dataset", version = 1, tokenizer,
//                           tokenizer_fingerprint, vocab_size, eod_id,
//                           token_dtype, documents, input_bytes,
//                           {train,val}_{tokens,shards}, created_by;
//                           /tokenizer_model (uint8 bytes of the tokenizer,
//                           e.g. the SentencePiece model; absent for byte)
//   DIR/train/00000.h5 ...  token shards (data/shard.h), in stream order
//   DIR/val/00000.h5 ...
//
// The tokenizer travels in dataset.h5 so training, evaluation and generation
// decode without extra files. Opening validates every file's metadata (not
// the token data: HDF5 checks those checksums on every read, and
// verify_all() scans everything); each problem throws InputError (a
// UsageError) naming the file and what is wrong.
// Tested by tests/test_data.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rmoe/data/shard.h"
#include "rmoe/data/tokenizer.h"

namespace rmoe {

inline constexpr const char* kDatasetFormat = "rmoe-dataset";
inline constexpr int kDatasetVersion = 1;
inline constexpr const char* kDatasetMetaFile = "dataset.h5";

enum class Split { train, val };
const char* split_name(Split s);  // "train", "val"

struct SplitInfo {
  std::vector<ShardHeader> shards;  // in stream order (file names sorted)
  int64_t tokens = 0;
};

// What rmoe_prepare records in dataset.h5 besides the tokenizer.
struct DatasetSummary {
  int64_t documents = 0;
  int64_t input_bytes = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_shards = 0, val_shards = 0;
  std::string created_by;  // the command line
};

// Writes DIR/dataset.h5; throws naming it when it cannot be written (a full disk).
void write_dataset_meta(const std::string& dir, const Tokenizer& tok, const DatasetSummary& summary);

// True if `path` is a directory holding dataset.h5.
bool is_dataset_dir(const std::string& path);

// The vocabulary size recorded in DIR/dataset.h5 (cheap: reads one file).
// Throws InputError when DIR is not a readable dataset.
int dataset_vocab_size(const std::string& dir);

class ShardDataset {
 public:
  explicit ShardDataset(const std::string& dir);
  const std::string& dir() const { return dir_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  int vocab_size() const { return tokenizer_->vocab_size(); }
  const SplitInfo& split(Split s) const { return s == Split::train ? train_ : val_; }
  const DatasetSummary& summary() const { return summary_; }
  std::string describe() const;
  // Reads every token of every shard (checksums and id ranges), in blocks.
  void verify_all() const;

 private:
  std::string dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  DatasetSummary summary_;
  SplitInfo train_, val_;
};

}  // namespace rmoe
