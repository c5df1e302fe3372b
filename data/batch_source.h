// batch_source.h — where training batches come from.
//
// A source fills any slice of a step's global batch from (step, sequence
// index) alone, so a resumed run or another rank count reads exactly the same
// data. The synthetic Markov source implements it now; HDF5 shards follow.
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
  virtual std::string describe() const = 0;
};

// "synthetic:NAME" sources; throws UsageError for anything else (for now).
std::unique_ptr<BatchSource> open_batch_source(const std::string& data_path, int vocab_size, uint64_t seed);

}  // namespace rmoe
