// batch_source.cpp — opens a BatchSource from --data-path.
#include "rmoe/data/batch_source.h"

#include <sstream>

#include "rmoe/data/loader.h"
#include "rmoe/data/synthetic.h"
#include "rmoe/core/error.h"

namespace rmoe {

namespace {

// Validation batches use step numbers far beyond any training run.
constexpr int64_t kValidationStepBase = int64_t(1) << 50;

class MarkovBatchSource final : public BatchSource {
 public:
  explicit MarkovBatchSource(std::unique_ptr<MarkovSource> m) : m_(std::move(m)) {}
  int vocab_size() const override { return m_->vocab_size(); }
  void fill(int64_t step, int64_t first, int64_t n, int S, int32_t* tok, int32_t* tgt) const override {
    m_->fill_batch(step, first, n, S, tok, tgt);
  }
  void fill_validation(int64_t i, int64_t first, int64_t n, int S, int32_t* tok, int32_t* tgt) const override {
    m_->fill_batch(kValidationStepBase + i, first, n, S, tok, tgt);
  }
  double entropy_rate_nats() const override { return m_->entropy_rate_nats(); }
  std::string describe() const override {
    std::ostringstream os;
    os << "synthetic:markov (V=" << m_->vocab_size() << ", seed " << m_->seed()
       << ", entropy rate " << m_->entropy_rate_nats() << " nats/token)";
    return os.str();
  }

 private:
  std::unique_ptr<MarkovSource> m_;
};

}  // namespace

std::unique_ptr<BatchSource> open_batch_source(const std::string& data_path, int vocab_size, uint64_t seed,
                                               int seq_length, int64_t global_batch_size) {
  if (data_path.rfind("synthetic:", 0) == 0)
    return std::make_unique<MarkovBatchSource>(make_synthetic_source(data_path, vocab_size, seed));
  RMOE_CHECK(seq_length > 0 && global_batch_size > 0,
             "open_batch_source(" << data_path << "): a dataset needs seq_length and global_batch_size");
  LoaderOptions opts;
  opts.seq_length = seq_length;
  opts.global_batch_size = global_batch_size;
  opts.seed = seed;
  auto src = std::make_unique<ShardBatchSource>(data_path, opts);
  if (vocab_size > 0 && vocab_size != src->vocab_size())
    throw UsageError("--vocab-size=" + std::to_string(vocab_size) + " does not match the vocabulary " +
                     std::to_string(src->vocab_size()) + " of dataset '" + data_path + "' (tokenizer " +
                     src->dataset().tokenizer().name() + "); drop --vocab-size or give " +
                     std::to_string(src->vocab_size()));
  return src;
}

}  // namespace rmoe
