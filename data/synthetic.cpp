// synthetic.cpp — the synthetic:markov source (see data/synthetic.h).
// Tested by tests/test_synthetic.cpp.
#include "rmoe/data/synthetic.h"

#include <algorithm>
#include <cmath>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/core/threads.h"  // worth_threads

namespace rmoe {

namespace {

// RNG streams; the index within each stream is given where it is used.
const uint64_t kCountStream = hash_name("synthetic:markov/count");            // index: state
const uint64_t kSuccessorStream = hash_name("synthetic:markov/successor");    // index: state * 2^20 + draw
const uint64_t kWeightStream = hash_name("synthetic:markov/weight");          // index: state * 16 + slot
const uint64_t kSampleStream = hash_name("synthetic:markov/sample");

// The stream of one sequence: a function of (step, global sequence index) only.
uint64_t sequence_stream(int64_t step, int64_t sequence) {
  return mix64(mix64(kSampleStream ^ mix64(static_cast<uint64_t>(step))) + static_cast<uint64_t>(sequence));
}

}  // namespace

MarkovSource::MarkovSource(int vocab_size, uint64_t seed) : vocab_size_(vocab_size), seed_(seed) {
  if (vocab_size < 2)
    throw UsageError("--vocab-size=" + std::to_string(vocab_size) + " must be >= 2 for --data-path=synthetic:markov");
  const int V = vocab_size;

  // Likely successors and their weights, row by row (CSR).
  row_start_.assign(V + 1, 0);
  for (int i = 0; i < V; ++i) {
    const int want = 4 + static_cast<int>(random_uniform(seed, kCountStream, i) * 5.0);  // 4..8
    const int count = std::min(want, V);
    const int64_t begin = static_cast<int64_t>(successor_.size());
    for (uint64_t draw = 0; static_cast<int64_t>(successor_.size()) - begin < count; ++draw) {
      const int j = static_cast<int>(random_bits(seed, kSuccessorStream, (static_cast<uint64_t>(i) << 20) + draw) %
                                     static_cast<uint64_t>(V));
      if (std::find(successor_.begin() + begin, successor_.end(), j) == successor_.end()) successor_.push_back(j);
    }
    double sum = 0;
    for (int slot = 0; slot < count; ++slot) {
      const double z = random_normal(seed, kWeightStream, static_cast<uint64_t>(i) * 16 + slot);
      weight_.push_back(z * z + 1e-3);  // Gamma(1/2)-like; the 1e-3 keeps every weight positive
      sum += weight_.back();
    }
    double running = 0;
    for (int64_t e = begin; e < begin + count; ++e) {
      weight_[e] /= sum;
      running += weight_[e];
      cum_weight_.push_back(running);
    }
    cum_weight_.back() = 1.0;
    row_start_[i + 1] = static_cast<int64_t>(successor_.size());
  }

  // Stationary distribution: pi <- pi P until the L1 change is below 1e-14.
  // The floor makes P a contraction (factor <= 1 - floor), so this converges.
  std::vector<double> pi(V, 1.0 / V), next(V);
  for (int iter = 0; iter < 100000; ++iter) {
    std::fill(next.begin(), next.end(), floor_ / V);  // sum(pi) = 1
    for (int i = 0; i < V; ++i)
      for (int64_t e = row_start_[i]; e < row_start_[i + 1]; ++e) next[successor_[e]] += (1.0 - floor_) * pi[i] * weight_[e];
    double total = 0, change = 0;
    for (int j = 0; j < V; ++j) total += next[j];
    for (int j = 0; j < V; ++j) {
      next[j] /= total;
      change += std::abs(next[j] - pi[j]);
    }
    pi.swap(next);
    if (change < 1e-14) break;
  }
  stationary_ = pi;
  stationary_cdf_.resize(V);
  double running = 0;
  for (int j = 0; j < V; ++j) stationary_cdf_[j] = (running += pi[j]);
  stationary_cdf_.back() = 1.0;

  // Entropy rate sum_i pi_i H(row i): the V - K_i non-successors each have
  // probability floor/V; successors floor/V + (1 - floor) w_ij.
  const double base = floor_ / V;
  double rate = 0;
  for (int i = 0; i < V; ++i) {
    const int64_t count = row_start_[i + 1] - row_start_[i];
    double h = -static_cast<double>(V - count) * base * std::log(base);
    for (int64_t e = row_start_[i]; e < row_start_[i + 1]; ++e) {
      const double q = base + (1.0 - floor_) * weight_[e];
      h -= q * std::log(q);
    }
    rate += pi[i] * h;
  }
  entropy_rate_ = rate;
}

double MarkovSource::transition_prob(int from, int to) const {
  double q = floor_ / vocab_size_;
  for (int64_t e = row_start_[from]; e < row_start_[from + 1]; ++e)
    if (successor_[e] == to) q += (1.0 - floor_) * weight_[e];
  return q;
}

int MarkovSource::sample_next(int state, double u) const {
  // Mixture: with probability floor a uniform token, else a likely successor.
  if (u < floor_) return std::min(vocab_size_ - 1, static_cast<int>(u / floor_ * vocab_size_));
  const double w = (u - floor_) / (1.0 - floor_);  // uniform in [0, 1)
  const auto first = cum_weight_.begin() + row_start_[state];
  const auto last = cum_weight_.begin() + row_start_[state + 1];
  auto it = std::upper_bound(first, last, w);
  if (it == last) --it;
  return successor_[row_start_[state] + (it - first)];
}

void MarkovSource::fill_batch(int64_t step, int64_t first_sequence, int64_t num_sequences, int seq_length,
                              int32_t* tokens, int32_t* targets) const {
  RMOE_CHECK(seq_length >= 1 && num_sequences >= 0 && first_sequence >= 0,
             "fill_batch: seq_length=" << seq_length << " num_sequences=" << num_sequences
                                       << " first_sequence=" << first_sequence);
  // A token costs a search and a hash, some 16 elements of a pointwise loop:
  // a micro-batch of one short sequence is not worth waking a team for
  // (tiny config at 2 threads: 0.58 ms of a 2.8 ms step in here).
#pragma omp parallel for schedule(static) if (worth_threads(num_sequences * seq_length * 16))
  for (int64_t r = 0; r < num_sequences; ++r) {
    const uint64_t stream = sequence_stream(step, first_sequence + r);
    int32_t* tok = tokens + r * seq_length;  // [S]
    int32_t* tgt = targets + r * seq_length; // [S]
    // x_0 from pi (counter 0), then x_{t+1} ~ P(. | x_t) (counter t + 1).
    const double u0 = random_uniform(seed_, stream, 0);
    int state = static_cast<int>(std::upper_bound(stationary_cdf_.begin(), stationary_cdf_.end(), u0) -
                                 stationary_cdf_.begin());
    state = std::min(state, vocab_size_ - 1);
    for (int t = 0; t < seq_length; ++t) {
      const int next = sample_next(state, random_uniform(seed_, stream, static_cast<uint64_t>(t) + 1));
      tok[t] = state;
      tgt[t] = next;
      state = next;
    }
  }
}

bool is_synthetic_data_path(const std::string& data_path) { return data_path.rfind("synthetic:", 0) == 0; }

std::unique_ptr<MarkovSource> make_synthetic_source(const std::string& data_path, int vocab_size, uint64_t seed) {
  if (data_path == "synthetic:markov") return std::make_unique<MarkovSource>(vocab_size, seed);
  if (is_synthetic_data_path(data_path))
    throw UsageError("--data-path=" + data_path + ": unknown synthetic source; available: synthetic:markov");
  throw UsageError("--data-path=" + data_path + ": not a synthetic source; available: synthetic:markov");
}

}  // namespace rmoe
