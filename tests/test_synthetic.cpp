// test_synthetic.cpp — the synthetic:markov source (data/synthetic.h):
// determinism, slices equal the matching rows of the whole batch whatever the
// call order, a proper chain (rows and pi sum to 1, pi P = pi), an entropy rate
// far below log V, and sampled data whose measured next-token entropy matches
// the exact entropy rate.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "rmoe/data/synthetic.h"
#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"

namespace rmoe {
namespace {

struct Batch {
  std::vector<int32_t> tokens, targets;  // [N, S]
};

Batch make_batch(const MarkovSource& src, int64_t step, int64_t first, int64_t n, int S) {
  Batch b{std::vector<int32_t>(n * S), std::vector<int32_t>(n * S)};
  src.fill_batch(step, first, n, S, b.tokens.data(), b.targets.data());
  return b;
}

TEST(Markov, DeterministicAndKeyedBySeedStepAndSequence) {
  const MarkovSource a(256, 42), b(256, 42), other_seed(256, 43);
  const Batch x = make_batch(a, 3, 0, 8, 64);
  const Batch y = make_batch(b, 3, 0, 8, 64);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_EQ(a.entropy_rate_nats(), b.entropy_rate_nats());
  EXPECT_NE(make_batch(other_seed, 3, 0, 8, 64).tokens, x.tokens);
  EXPECT_NE(make_batch(a, 4, 0, 8, 64).tokens, x.tokens);
  EXPECT_NE(make_batch(a, -1, 0, 8, 64).tokens, x.tokens);  // negative steps: their own stream
  // (step 0, sequence 1) and (step 1, sequence 0) are different sequences.
  EXPECT_NE(make_batch(a, 0, 1, 1, 64).tokens, make_batch(a, 1, 0, 1, 64).tokens);
  for (int32_t t : x.tokens) ASSERT_TRUE(t >= 0 && t < 256);
}

TEST(Markov, SlicesEqualTheWholeBatchInAnyOrder) {
  const MarkovSource src(300, 7);
  const int S = 33;
  const Batch whole = make_batch(src, 12, 0, 16, S);
  // Later slice first, then an earlier one, then single rows.
  const Batch late = make_batch(src, 12, 5, 11, S);
  const Batch early = make_batch(src, 12, 0, 5, S);
  for (int64_t r = 0; r < 16; ++r) {
    const Batch& part = r < 5 ? early : late;
    const int64_t row = r < 5 ? r : r - 5;
    for (int t = 0; t < S; ++t) {
      ASSERT_EQ(part.tokens[row * S + t], whole.tokens[r * S + t]) << r << " " << t;
      ASSERT_EQ(part.targets[row * S + t], whole.targets[r * S + t]) << r << " " << t;
    }
    const Batch one = make_batch(src, 12, r, 1, S);
    EXPECT_TRUE(std::equal(one.tokens.begin(), one.tokens.end(), whole.tokens.begin() + r * S));
  }
  // A shorter sequence is a prefix of the longer one (same counters).
  const Batch shorter = make_batch(src, 12, 0, 1, 10);
  EXPECT_TRUE(std::equal(shorter.tokens.begin(), shorter.tokens.end(), whole.tokens.begin()));
}

TEST(Markov, TargetsAreTokensShiftedByOne) {
  const MarkovSource src(64, 1);
  const int S = 50;
  const Batch b = make_batch(src, 0, 0, 4, S);
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t + 1 < S; ++t) ASSERT_EQ(b.tokens[r * S + t + 1], b.targets[r * S + t]);
}

TEST(Markov, IsAProperChainWithLowEntropyRate) {
  for (uint64_t seed : {1u, 2u, 1234u}) {
    const int V = 256;
    const MarkovSource src(V, seed);
    const std::vector<double>& pi = src.stationary();
    double pi_sum = 0;
    for (double x : pi) pi_sum += x;
    EXPECT_NEAR(pi_sum, 1.0, 1e-12);
    std::vector<double> pi_next(V, 0.0);
    for (int i = 0; i < V; ++i) {
      double row = 0;
      for (int j = 0; j < V; ++j) {
        const double q = src.transition_prob(i, j);
        row += q;
        pi_next[j] += pi[i] * q;
      }
      ASSERT_NEAR(row, 1.0, 1e-12) << "row " << i;
    }
    for (int j = 0; j < V; ++j) ASSERT_NEAR(pi_next[j], pi[j], 1e-12) << j;  // pi P = pi
    // Entropy rate recomputed here from transition_prob.
    double rate = 0;
    for (int i = 0; i < V; ++i)
      for (int j = 0; j < V; ++j) rate -= pi[i] * src.transition_prob(i, j) * std::log(src.transition_prob(i, j));
    EXPECT_NEAR(src.entropy_rate_nats(), rate, 1e-10);
    EXPECT_LT(src.entropy_rate_nats(), 0.7 * std::log(double(V))) << "seed " << seed;
    EXPECT_GT(src.entropy_rate_nats(), 0.1);
  }
}

// Mean of -log P(target | token) over sampled data estimates the entropy rate
// without bias (sequences start in pi). 400 x 256 = 102,400 transitions; the
// per-transition spread of -log P is under 2.5 nats, so the standard error is
// under 0.01 nats (the chain mixes in a few steps); the bound 0.05 is > 5 SE.
TEST(Markov, SampledLogLossMatchesEntropyRate) {
  const MarkovSource src(256, 1234);
  const int S = 256, N = 400;
  const Batch b = make_batch(src, 0, 0, N, S);
  double nll = 0;
  for (size_t i = 0; i < b.tokens.size(); ++i) nll -= std::log(src.transition_prob(b.tokens[i], b.targets[i]));
  nll /= static_cast<double>(b.tokens.size());
  EXPECT_NEAR(nll, src.entropy_rate_nats(), 0.05) << "entropy rate " << src.entropy_rate_nats();
}

// Plug-in conditional entropy from bigram counts, V = 32, 2000 x 512 =
// 1,024,000 transitions: its bias is about -(V * V) / (2 N) = -0.0005 nats and
// its noise about 0.003 nats, so a 0.02-nat bound is loose yet meaningful.
// The token frequencies also match pi (each within 0.005; SE ~ 0.0003).
TEST(Markov, EmpiricalNextTokenEntropyMatchesEntropyRate) {
  const int V = 32, S = 512, N = 2000;
  const MarkovSource src(V, 99);
  const Batch b = make_batch(src, 5, 0, N, S);
  std::vector<double> count(V * V, 0.0), from(V, 0.0);
  for (size_t i = 0; i < b.tokens.size(); ++i) {
    count[b.tokens[i] * V + b.targets[i]] += 1;
    from[b.tokens[i]] += 1;
  }
  const double total = static_cast<double>(b.tokens.size());
  double h = 0;
  for (int i = 0; i < V; ++i)
    for (int j = 0; j < V; ++j)
      if (count[i * V + j] > 0) h -= count[i * V + j] / total * std::log(count[i * V + j] / from[i]);
  EXPECT_NEAR(h, src.entropy_rate_nats(), 0.02);
  EXPECT_LT(h, 0.7 * std::log(double(V)));
  for (int i = 0; i < V; ++i) EXPECT_NEAR(from[i] / total, src.stationary()[i], 0.005) << i;
}

TEST(Markov, PaperSizedVocabularyBuildsQuickly) {
  const auto start = Clock::now();
  const MarkovSource src(96512, 1234);
  const double seconds = seconds_since(start);
  EXPECT_LT(src.entropy_rate_nats(), 0.7 * std::log(96512.0));
  std::printf("V=96512: entropy rate %.4f nats (log V = %.4f), built in %.2f s\n", src.entropy_rate_nats(),
              std::log(96512.0), seconds);
  const Batch b = make_batch(src, 0, 0, 2, 128);
  for (int32_t t : b.tokens) ASSERT_TRUE(t >= 0 && t < 96512);
}

TEST(Markov, FactoryNamesAndErrors) {
  EXPECT_EQ(make_synthetic_source("synthetic:markov", 100, 3)->vocab_size(), 100);
  try {
    make_synthetic_source("synthetic:foo", 100, 3);
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--data-path=synthetic:foo: unknown synthetic source; available: synthetic:markov");
  }
  EXPECT_THROW(make_synthetic_source("/data/shards", 100, 3), UsageError);
  EXPECT_THROW(MarkovSource(1, 3), UsageError);
  EXPECT_TRUE(is_synthetic_data_path("synthetic:markov"));
  EXPECT_FALSE(is_synthetic_data_path("/data/synthetic:markov"));
  // The smallest vocabulary still works (every state has both tokens as successors).
  const MarkovSource tiny(2, 5);
  EXPECT_NEAR(tiny.transition_prob(0, 0) + tiny.transition_prob(0, 1), 1.0, 1e-12);
  make_batch(tiny, 0, 0, 3, 20);
}

}  // namespace
}  // namespace rmoe
