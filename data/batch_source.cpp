// batch_source.cpp — opens a BatchSource from --data-path.
#include "data/batch_source.h"

#include <sstream>

#include "data/synthetic.h"
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

std::unique_ptr<BatchSource> open_batch_source(const std::string& data_path, int vocab_size, uint64_t seed) {
  if (data_path.rfind("synthetic:", 0) == 0)
    return std::make_unique<MarkovBatchSource>(make_synthetic_source(data_path, vocab_size, seed));
  throw UsageError("--data-path=" + data_path +
                   ": HDF5 datasets are not supported yet; use --data-path synthetic:markov");
}

}  // namespace rmoe
