// batch_source.h — where training batches come from.
//
// A source fills any slice of a step's global batch from (step, sequence
// index) alone, so a resumed run or another rank count reads exactly the same
// data. Implemented by the synthetic Markov source (data/synthetic.h) and the
// HDF5 shard loader (data/loader.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace rmoe {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int vocab_size() const = 0;
  // Sequences [first, first + n) of the global batch of `step`: tokens and
  // next-token targets, each [n, seq_length].
  virtual void fill(int64_t step, int64_t first, int64_t n, int seq_length, int32_t* tokens,
                    int32_t* targets) const = 0;
  // Held-out batch i (evaluation), disjoint from every training batch.
  virtual void fill_validation(int64_t i, int64_t first, int64_t n, int seq_length, int32_t* tokens,
                               int32_t* targets) const = 0;
  // The best achievable loss in nats/token if known (synthetic data), else < 0.
  virtual double entropy_rate_nats() const { return -1; }
  // True when one token is one byte of text (byte tokenizer): evaluation then
  // reports bits per character = loss / ln 2; otherwise perplexity = exp(loss).
  virtual bool byte_level() const { return false; }
  // Total seconds fill() has spent getting data (reading, or waiting for the
  // prefetch threads); 0 for generated data.
  virtual double data_wait_seconds() const { return 0; }
  virtual std::string describe() const = 0;
};

// "synthetic:NAME" sources, or a dataset directory made by rmoe_prepare.
// For a dataset, seq_length and global_batch_size (G) are required (windows
// and the global batch's order depend on them) and vocab_size must be 0
// ("take the dataset's") or equal the dataset's; throws UsageError otherwise
// and for a missing, damaged or unsuitable dataset (message names the file).
std::unique_ptr<BatchSource> open_batch_source(const std::string& data_path, int vocab_size, uint64_t seed,
                                               int seq_length = 0, int64_t global_batch_size = 0);

}  // namespace rmoe
