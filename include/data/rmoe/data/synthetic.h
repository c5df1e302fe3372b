// synthetic.h — `--data-path synthetic:markov`: token sequences from a seeded
// random Markov chain whose entropy rate is known exactly, so a run's loss can
// be judged against the best possible (docs/DATA.md). No files needed.
//
// The chain over V tokens: state i has K_i in [4, 8] (at most V) distinct
// likely successors with Dirichlet(1/2)-like weights w_ij (normal^2, summed
// to 1), mixed with a uniform floor:
//   P(j | i) = floor / V + (1 - floor) * w_ij          floor = 0.02
// so every transition is possible (the chain is ergodic) yet the entropy rate
// is far below log V. Structure depends only on (seed, V).
//
// Sequence n of step s (n counts over the GLOBAL batch) depends only on
// (seed, s, n) through the counter-based RNG: any rank can make any slice of
// any step's batch, in any order, and a resumed run sees the same data.
// Negative steps are valid and give disjoint streams (e.g. for validation).
// Tested by tests/test_synthetic.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rmoe {

class MarkovSource {
 public:
  // Builds the chain and its stationary distribution (power iteration);
  // O(V * 8) memory. Throws UsageError if vocab_size < 2.
  MarkovSource(int vocab_size, uint64_t seed);

  int vocab_size() const { return vocab_size_; }
  uint64_t seed() const { return seed_; }

  // sum_i pi_i H(P(. | i)) in nats, computed exactly from the chain.
  double entropy_rate_nats() const { return entropy_rate_; }
  // P(to | from), exact.
  double transition_prob(int from, int to) const;
  // pi [V], the stationary distribution.
  const std::vector<double>& stationary() const { return stationary_; }

  // tokens, targets: [num_sequences, seq_length], row r holding global
  // sequence first_sequence + r of step `step`. Each sequence is a chain run
  // x_0 .. x_S with x_0 drawn from pi; tokens = x_0..x_{S-1}, targets = x_1..x_S.
  void fill_batch(int64_t step, int64_t first_sequence, int64_t num_sequences, int seq_length, int32_t* tokens,
                  int32_t* targets) const;

 private:
  int sample_next(int state, double u) const;  // inverse CDF of P(. | state) at u in [0, 1)

  int vocab_size_;
  uint64_t seed_;
  double floor_ = 0.02;
  std::vector<int64_t> row_start_;       // [V + 1]  CSR rows of the likely successors
  std::vector<int32_t> successor_;       // [nnz]
  std::vector<double> weight_;           // [nnz]    w_ij, each row sums to 1
  std::vector<double> cum_weight_;       // [nnz]    running sum of w within the row
  std::vector<double> stationary_;       // [V]
  std::vector<double> stationary_cdf_;   // [V]
  double entropy_rate_ = 0;
};

// True for data paths of the form "synthetic:NAME".
bool is_synthetic_data_path(const std::string& data_path);

// data_path "synthetic:markov" -> a MarkovSource; any other "synthetic:NAME"
// (or a non-synthetic path) throws UsageError naming --data-path.
std::unique_ptr<MarkovSource> make_synthetic_source(const std::string& data_path, int vocab_size, uint64_t seed);

}  // namespace rmoe
