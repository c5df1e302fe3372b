// test_analysis.cpp — the metrics of rmoe_analyze (include/train/rmoe/train/analysis.h)
// on hand-built cases whose answers are known in closed form: one-hot and
// uniform gates, identical and independent layers, orthogonal, antipodal and
// identical experts; and the measurement docs/ANALYSIS.md quotes, the
// paper's binned MI of independent random gates against the top-1 MI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/train/analysis.h"

namespace rmoe::analysis {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// n rows [n, E] of one-hot gates, token t on expert t % E; its top-k
// [n, k]: that expert, then the next ones (all prob 0).
void one_hot(int64_t n, int E, int k, std::vector<float>& p, std::vector<int32_t>& idx) {
  p.assign(size_t(n) * E, 0.f);
  idx.resize(size_t(n) * k);
  for (int64_t t = 0; t < n; ++t) {
    p[size_t(t) * E + t % E] = 1.f;
    for (int j = 0; j < k; ++j) idx[size_t(t) * k + j] = int32_t((t + j) % E);
  }
}

// Softmax of independent normal(0, sigma) logits: rows [n, E], from (seed, stream).
std::vector<float> random_gates(int64_t n, int E, double sigma, uint64_t stream) {
  std::vector<float> p(size_t(n) * E);
  for (int64_t t = 0; t < n; ++t) {
    double z[256], mx = -kInf, s = 0;
    for (int e = 0; e < E; ++e) mx = std::max(mx, z[e] = sigma * random_normal(7, stream, uint64_t(t * E + e)));
    for (int e = 0; e < E; ++e) s += z[e] = std::exp(z[e] - mx);
    for (int e = 0; e < E; ++e) p[size_t(t * E + e)] = float(z[e] / s);
  }
  return p;
}

// The k largest of each row [n, E], descending (ties: lower index), [n, k].
std::vector<int32_t> topk_of(const std::vector<float>& p, int64_t n, int E, int k) {
  std::vector<int32_t> idx(size_t(n) * k);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<bool> used(size_t(E), false);
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < E; ++e)
        if (!used[size_t(e)] && (best < 0 || p[size_t(t * E + e)] > p[size_t(t * E + best)])) best = e;
      used[size_t(best)] = true;
      idx[size_t(t * k + j)] = best;
    }
  }
  return idx;
}

TEST(Analysis, EntropyAndTopStatsOfOneRow) {
  const float hot[4] = {0, 0, 1, 0}, flat[4] = {0.25f, 0.25f, 0.25f, 0.25f}, half[4] = {0.5f, 0, 0.5f, 0};
  EXPECT_EQ(gate_entropy(hot, 4), 0.0);
  EXPECT_NEAR(gate_entropy(flat, 4), std::log(4.0), 1e-12);
  EXPECT_NEAR(gate_entropy(half, 4), std::log(2.0), 1e-12);
  EXPECT_EQ(top_stats(hot, 4, 2).top1_over_top2, kInf);
  EXPECT_EQ(top_stats(hot, 4, 2).topk_sum, 1.0);
  EXPECT_EQ(top_stats(flat, 4, 3).top1_over_top2, 1.0);
  EXPECT_EQ(top_stats(flat, 4, 3).topk_sum, 0.75);
  const float row[3] = {0.1f, 0.6f, 0.3f};  // top-2 are not in index order
  EXPECT_NEAR(top_stats(row, 3, 2).top1_over_top2, 2.0, 1e-6);
  EXPECT_NEAR(top_stats(row, 3, 2).topk_sum, 0.9, 1e-6);
  EXPECT_NEAR(top_stats(row, 3, 1).topk_sum, 0.6, 1e-6);  // k = 1 still finds the second for IB
  EXPECT_NEAR(top_stats(row, 3, 1).top1_over_top2, 2.0, 1e-6);
  EXPECT_THROW(top_stats(row, 3, 4), Error);
}

TEST(Analysis, Median) {
  EXPECT_EQ(median({3, 1, 2}), 2.0);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(median({5}), 5.0);
  EXPECT_EQ(median({1, kInf, 1, 1}), 1.0);      // infinities sort last
  EXPECT_EQ(median({kInf, 1, kInf, 2}), kInf);  // half infinite: (2 + inf) / 2
  EXPECT_EQ(median({kInf, 1, kInf}), kInf);
  EXPECT_THROW(median({}), Error);
}

TEST(Analysis, OneHotGates) {
  const int E = 4, k = 2;
  const int64_t n = 10;
  std::vector<float> p;
  std::vector<int32_t> idx;
  one_hot(n, E, k, p, idx);
  GateAccumulator acc(E, k, 8);
  acc.add(p.data(), idx.data(), 6);  // in two batches: the summary is over all of them
  acc.add(p.data() + 6 * E, idx.data() + 6 * k, n - 6);
  const GateSummary s = acc.summary();
  EXPECT_EQ(s.tokens, n);
  EXPECT_EQ(s.entropy_mean, 0.0);
  EXPECT_NEAR(s.entropy_max, std::log(4.0), 1e-15);
  ASSERT_EQ(s.entropy_hist.size(), 8u);
  EXPECT_EQ(s.entropy_hist[0], n);  // all in the first bin
  EXPECT_EQ(s.ib_median, kInf);     // the second prob is 0: IB is infinite, not capped
  EXPECT_EQ(s.ib_infinite_fraction, 1.0);
  EXPECT_EQ(s.ob_median, 1.0);
  // Slots: token t sends one to t % 4 and one to (t + 1) % 4; over t = 0..9
  // expert 0 gets 3 + 2, 1 gets 3 + 3, 2 gets 2 + 3, 3 gets 2 + 2, of 20 slots.
  ASSERT_EQ(s.selection_frequency.size(), size_t(E));
  EXPECT_DOUBLE_EQ(s.selection_frequency[0], 5.0 / 20);
  EXPECT_DOUBLE_EQ(s.selection_frequency[1], 6.0 / 20);
  EXPECT_DOUBLE_EQ(s.selection_frequency[2], 5.0 / 20);
  EXPECT_DOUBLE_EQ(s.selection_frequency[3], 4.0 / 20);
}

TEST(Analysis, UniformGates) {
  const int E = 8, k = 3;
  const int64_t n = 5;
  std::vector<float> p(size_t(n) * E, 1.f / E);
  std::vector<int32_t> idx(size_t(n) * k);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int32_t(i % 3);  // experts 0, 1, 2 only
  GateAccumulator acc(E, k, 10);
  acc.add(p.data(), idx.data(), n);
  const GateSummary s = acc.summary();
  EXPECT_NEAR(s.entropy_mean, std::log(double(E)), 1e-6);
  EXPECT_EQ(s.entropy_hist[9], n);  // ln E lands in the last bin
  EXPECT_EQ(s.ib_median, 1.0);
  EXPECT_EQ(s.ib_infinite_fraction, 0.0);
  EXPECT_NEAR(s.ob_median, double(k) / E, 1e-7);
  for (int e = 0; e < E; ++e) EXPECT_DOUBLE_EQ(s.selection_frequency[size_t(e)], e < 3 ? 1.0 / 3 : 0.0);
  // A bad expert index names itself.
  idx[4] = E;
  GateAccumulator bad(E, k);
  EXPECT_THROW(bad.add(p.data(), idx.data(), n), Error);
}

TEST(Analysis, MixedGatesHistogramAndMedians) {
  // Rows with known entropy: one-hot (0), two equal halves (ln 2), uniform (ln 4).
  const int E = 4, k = 1;
  const std::vector<float> p = {1, 0, 0, 0, 0.5f, 0.5f, 0, 0, 0.25f, 0.25f, 0.25f, 0.25f, 0, 0, 0.5f, 0.5f};
  const std::vector<int32_t> idx = {0, 0, 0, 2};
  GateAccumulator acc(E, k, 3);  // bins of width ln 4 / 3: ln 2 is in the middle one
  acc.add(p.data(), idx.data(), 4);
  const GateSummary s = acc.summary();
  EXPECT_NEAR(s.entropy_mean, (0 + 2 * std::log(2.0) + std::log(4.0)) / 4, 1e-7);
  EXPECT_EQ(s.entropy_hist, (std::vector<int64_t>{1, 2, 1}));
  EXPECT_EQ(s.ib_median, 1.0);  // IB values inf, 1, 1, 1
  EXPECT_DOUBLE_EQ(s.ib_infinite_fraction, 0.25);
  EXPECT_EQ(s.ob_median, 0.5);  // OB values 1, 0.5, 0.25, 0.5
}

TEST(Analysis, BinnedPairMiHandCases) {
  std::vector<int32_t> scratch;
  // Bins of p = (0.05, 0.05, 0.45, 0.45) with 100 bins: (5, 5, 45, 45).
  const int32_t a[4] = {5, 5, 45, 45}, same[4] = {5, 5, 45, 45}, crossed[4] = {5, 45, 5, 45}, flat[4] = {7, 7, 7, 7};
  EXPECT_NEAR(binned_pair_mi(a, same, 4, 100, scratch), std::log(2.0), 1e-12);
  EXPECT_NEAR(binned_pair_mi(a, crossed, 4, 100, scratch), 0.0, 1e-12);  // all four pairs distinct
  EXPECT_NEAR(binned_pair_mi(a, flat, 4, 100, scratch), 0.0, 1e-12);     // a constant carries nothing
  // Four distinct values against four distinct values: ln 4 whatever the pairing.
  const int32_t u[4] = {0, 1, 2, 3}, v[4] = {9, 3, 4, 0};
  EXPECT_NEAR(binned_pair_mi(u, v, 4, 10, scratch), std::log(4.0), 1e-12);
  for (int32_t c : scratch) ASSERT_EQ(c, 0);  // left zero for the next call
  const int32_t out_of_range[4] = {0, 1, 2, 10};
  EXPECT_THROW(binned_pair_mi(u, out_of_range, 4, 10, scratch), Error);
}

TEST(Analysis, BinnedMiMatrix) {
  // Two tokens, three layers, E = 4. Layer 0 and 1 equal, layer 2 crossed
  // against them on token 0 and constant on token 1.
  const int E = 4;
  const std::vector<float> l0 = {0.05f, 0.05f, 0.45f, 0.45f, 1.0f, 0, 0, 0};
  const std::vector<float> l2 = {0.05f, 0.45f, 0.05f, 0.45f, 0.25f, 0.25f, 0.25f, 0.25f};
  BinnedMiAccumulator acc(3, E, 100);
  acc.add({l0.data(), l0.data(), l2.data()}, 2);
  const std::vector<double> mi = acc.matrix();
  // Token 1 of layer 0: bins (99, 0, 0, 0), entropy H1 = ln 4 - (3/4) ln 3.
  const double h1 = std::log(4.0) - 0.75 * std::log(3.0);
  EXPECT_NEAR(mi[0 * 3 + 0], (std::log(2.0) + h1) / 2, 1e-12);
  EXPECT_NEAR(mi[0 * 3 + 1], (std::log(2.0) + h1) / 2, 1e-12);
  EXPECT_NEAR(mi[0 * 3 + 2], 0.0, 1e-12);
  EXPECT_NEAR(mi[2 * 3 + 2], (std::log(2.0) + 0) / 2, 1e-12);
  for (int l = 0; l < 3; ++l)
    for (int m = 0; m < 3; ++m) EXPECT_EQ(mi[size_t(l * 3 + m)], mi[size_t(m * 3 + l)]);
  // p = 1 exactly goes to the last bin, not past it (no throw above), and a
  // uniform layer (all in one bin) has entropy 0 with itself.
  BinnedMiAccumulator flat(1, E, 100);
  flat.add({l2.data() + E}, 1);
  EXPECT_EQ(flat.matrix()[0], 0.0);
}

TEST(Analysis, CountTableMi) {
  // A product table: plug-in MI exactly 0, Miller–Madow (2 + 3 - 6 - 1) / 2N.
  const int64_t product[6] = {2 * 1, 2 * 2, 2 * 3, 4 * 1, 4 * 2, 4 * 3};  // n_a = (2, 4) x n_b = (1, 2, 3)
  const double N = 36;
  const MiEstimate r = count_table_mi(product, 2, 3);
  EXPECT_NEAR(r.plugin, 0.0, 1e-14);
  EXPECT_NEAR(r.miller_madow, -2.0 / (2 * N), 1e-14);
  // A diagonal table of equal counts: MI = ln 3; Miller–Madow adds (3 + 3 - 3 - 1) / 2N.
  const int64_t diagonal[9] = {5, 0, 0, 0, 5, 0, 0, 0, 5};
  const MiEstimate d = count_table_mi(diagonal, 3, 3);
  EXPECT_NEAR(d.plugin, std::log(3.0), 1e-14);
  EXPECT_NEAR(d.miller_madow, std::log(3.0) + 2.0 / 30, 1e-14);
  const int64_t empty[4] = {0, 0, 0, 0};
  EXPECT_THROW(count_table_mi(empty, 2, 2), Error);
}

// Top-1 choices of three layers over n tokens: layer 0 uniform random,
// layer 1 = layer 0, layer 2 independent of both, layer 3 = layer 0 with
// probability 1/2 and independent otherwise. Stored [n, 2] (stride 2, a
// second slot that must be ignored).
struct Choices {
  std::vector<std::vector<int32_t>> idx;
};
Choices make_choices(int64_t n, int E) {
  Choices c;
  c.idx.assign(4, std::vector<int32_t>(size_t(n) * 2, -1));
  for (int64_t t = 0; t < n; ++t) {
    const auto pick = [&](uint64_t stream) { return int32_t(random_bits(3, stream, uint64_t(t)) % uint64_t(E)); };
    const int32_t a = pick(1), b = pick(2), keep = int32_t(random_bits(3, 4, uint64_t(t)) % 2), other = pick(5);
    c.idx[0][size_t(2 * t)] = a;
    c.idx[1][size_t(2 * t)] = a;
    c.idx[2][size_t(2 * t)] = b;
    c.idx[3][size_t(2 * t)] = keep ? a : other;
  }
  return c;
}

TEST(Analysis, Top1MiIdenticalIndependentAndHalfCopied) {
  const int E = 8;
  const int64_t n = 20000;
  const Choices c = make_choices(n, E);
  Top1MiAccumulator acc(4, E);
  acc.add({c.idx[0].data(), c.idx[1].data(), c.idx[2].data(), c.idx[3].data()}, n / 2, 2);
  acc.add({c.idx[0].data() + n, c.idx[1].data() + n, c.idx[2].data() + n, c.idx[3].data() + n}, n / 2, 2);
  EXPECT_EQ(acc.tokens(), n);
  std::vector<double> plugin, mm;
  acc.matrices(plugin, mm);
  // The entropy of layer 0's choice from its counts, plug-in and Miller–Madow.
  std::vector<int64_t> count(size_t(E), 0);
  for (int64_t t = 0; t < n; ++t) ++count[size_t(c.idx[0][size_t(2 * t)])];
  double h = 0;
  int used = 0;
  for (int64_t x : count) {
    if (x == 0) continue;
    h -= double(x) / n * std::log(double(x) / n);
    ++used;
  }
  const double h_mm = h + (used - 1) / (2.0 * n);
  // Identical layers: MI = the entropy of the choice (and = the diagonal).
  EXPECT_NEAR(plugin[0 * 4 + 1], h, 1e-12);
  EXPECT_NEAR(mm[0 * 4 + 1], h_mm, 1e-12);
  EXPECT_NEAR(mm[0 * 4 + 0], h_mm, 1e-12);
  EXPECT_NEAR(h, std::log(double(E)), 2e-3);
  // Independent layers: the plug-in estimate is biased up by about
  // (E - 1)^2 / 2N = 1.2e-3 nats (its standard deviation is about
  // sqrt(2 (E - 1)^2) / 2N = 2.5e-4); Miller–Madow takes the bias off.
  const double bias = (E - 1) * (E - 1) / (2.0 * n);
  EXPECT_GT(plugin[0 * 4 + 2], bias / 2);
  EXPECT_LT(plugin[0 * 4 + 2], bias * 2);
  EXPECT_LT(std::abs(mm[0 * 4 + 2]), 1e-3);
  EXPECT_LT(std::abs(mm[1 * 4 + 2]), 1e-3);
  // Half copied: P(b | a) = 1/2 [b = a] + 1/(2E), so MI = ln E - H(1/2 + 1/2E, 1/2E x (E - 1)).
  const double q = 0.5 + 0.5 / E, r = 0.5 / E;
  const double mi_half = std::log(double(E)) + q * std::log(q) + (E - 1) * r * std::log(r);
  EXPECT_NEAR(mm[0 * 4 + 3], mi_half, 5e-3);
  for (int l = 0; l < 4; ++l)
    for (int m = 0; m < 4; ++m) EXPECT_EQ(mm[size_t(l * 4 + m)], mm[size_t(m * 4 + l)]);
}

// The measurement docs/ANALYSIS.md quotes: for independent random gates
// (softmax of normal(0, sigma) logits, a fresh draw per layer), the paper's
// binned MI is far from 0, near what a layer scores with itself, while the
// top-1 MI is 0 within its noise.
TEST(Analysis, PaperMiOfIndependentRandomGatesIsNotZero) {
  const int64_t n = 20000;
  std::printf(
      "  E  sigma  paper binned MI: independent  identical  top-1 MI (Miller-Madow): independent  [%lld tokens]\n",
      (long long)n);
  for (const int E : {8, 16, 64})
    for (const double sigma : {0.1, 0.5, 1.0, 2.0, 4.0}) {
      const std::vector<float> a = random_gates(n, E, sigma, 11), b = random_gates(n, E, sigma, 12);
      BinnedMiAccumulator paper(2, E, 100);
      paper.add({a.data(), b.data()}, n);
      const std::vector<int32_t> ta = topk_of(a, n, E, 1), tb = topk_of(b, n, E, 1);
      Top1MiAccumulator sound(2, E);
      sound.add({ta.data(), tb.data()}, n, 1);
      std::vector<double> plugin, mm;
      sound.matrices(plugin, mm);
      const double binned = paper.matrix()[1], same = paper.matrix()[0];  // [0] = layer a with itself
      std::printf("%3d  %5.1f  %28.3f  %9.3f  %37.4f\n", E, sigma, binned, same, mm[1]);
      // The sound estimate is 0 within a few standard deviations (sqrt(2) (E - 1) / 2n).
      EXPECT_LT(std::abs(mm[1]), 4 * std::sqrt(2.0) * (E - 1) / (2.0 * n)) << "E " << E << " sigma " << sigma;
      // The paper's is at least 0.4 nats for E = 16 at moderate sigma.
      if (E == 16 && sigma >= 0.5 && sigma <= 2) {
        EXPECT_GT(binned, 0.4) << "sigma " << sigma;
      }
      // At E = 8, sigma = 1 independent layers score nearly what identical ones do.
      if (E == 8 && sigma == 1.0) {
        EXPECT_GT(binned, 0.8 * same);
      }
    }
}

// Relabelling one layer's experts changes neither the model nor its routing:
// the top-1 MI does not move, the paper's binned MI does (docs/ANALYSIS.md).
TEST(Analysis, RelabellingExpertsMovesOnlyThePaperMi) {
  const int E = 8;
  const int64_t n = 4000;
  const std::vector<float> a = random_gates(n, E, 1.0, 21);
  std::vector<float> shifted(a.size());  // expert e of the copy is expert (e + 1) % E of a
  for (int64_t t = 0; t < n; ++t)
    for (int e = 0; e < E; ++e) shifted[size_t(t * E + e)] = a[size_t(t * E + (e + 1) % E)];
  BinnedMiAccumulator paper(3, E, 100);
  paper.add({a.data(), a.data(), shifted.data()}, n);
  const std::vector<int32_t> ta = topk_of(a, n, E, 1), ts = topk_of(shifted, n, E, 1);
  Top1MiAccumulator sound(3, E);
  sound.add({ta.data(), ta.data(), ts.data()}, n, 1);
  std::vector<double> plugin, mm;
  sound.matrices(plugin, mm);
  const std::vector<double> pm = paper.matrix();
  EXPECT_NEAR(mm[0 * 3 + 2], mm[0 * 3 + 1], 1e-12);  // the same choices, other names
  EXPECT_LT(pm[0 * 3 + 2], pm[0 * 3 + 1] - 0.1);     // same layer, relabelled: lower
}

TEST(Analysis, ExpertSimilarityIdenticalOrthogonalAntipodal) {
  // f = 3, d = 5 (f != d so a transposed W2 would read the wrong axis).
  const int f = 3, d = 5;
  // Expert e's tensors: W1 rows (i + 1) u_e, W3 rows u_e - i u_e / 4, W2 columns (j + 2) u_e
  // where u_e are vectors given per case. Every summary vector points along u_e.
  const auto make = [&](const std::vector<std::vector<double>>& u, std::vector<float>& w1, std::vector<float>& w3,
                        std::vector<float>& w2) {
    const int E = int(u.size());
    w1.assign(size_t(E) * f * d, 0);
    w3.assign(size_t(E) * f * d, 0);
    w2.assign(size_t(E) * d * f, 0);
    for (int e = 0; e < E; ++e)
      for (int i = 0; i < f; ++i)
        for (int c = 0; c < d; ++c) {
          w1[size_t((e * f + i) * d + c)] = float((i + 1) * u[size_t(e)][size_t(c)]);
          w3[size_t((e * f + i) * d + c)] = float((1 - i / 4.0) * u[size_t(e)][size_t(c)]);
          w2[size_t((e * d + c) * f + i)] = float((i + 2) * u[size_t(e)][size_t(c)]);
        }
  };
  std::vector<float> w1, w3, w2;
  const auto basis = [&](int c, double s) {
    std::vector<double> v(size_t(d), 0.0);
    v[size_t(c)] = s;
    return v;
  };
  // Identical experts: 1.
  make({{1, 2, 0, 0, -1}, {1, 2, 0, 0, -1}, {1, 2, 0, 0, -1}}, w1, w3, w2);
  ExpertSimilarity s = expert_similarity(w1.data(), w3.data(), w2.data(), 3, f, d);
  EXPECT_NEAR(s.mean, 1.0, 1e-12);
  EXPECT_NEAR(s.off_diagonal_mean, 1.0, 1e-12);
  // Orthogonal experts: the diagonal only, 1/E.
  make({basis(0, 1), basis(1, 2), basis(2, -1), basis(3, 0.5)}, w1, w3, w2);
  s = expert_similarity(w1.data(), w3.data(), w2.data(), 4, f, d);
  EXPECT_NEAR(s.w1, 0.25, 1e-12);
  EXPECT_NEAR(s.w3, 0.25, 1e-12);
  EXPECT_NEAR(s.w2, 0.25, 1e-12);
  EXPECT_NEAR(s.mean, 0.25, 1e-12);
  EXPECT_NEAR(s.off_diagonal_mean, 0.0, 1e-12);
  ASSERT_EQ(s.gram.size(), 16u);
  EXPECT_NEAR(s.gram[0], 1.0, 1e-12);
  EXPECT_NEAR(s.gram[1], 0.0, 1e-12);
  // Antipodal pairs: the unit vectors sum to 0, the floor of the mean, 0.
  make({basis(0, 1), basis(0, -3), basis(1, 1), basis(1, -1)}, w1, w3, w2);
  s = expert_similarity(w1.data(), w3.data(), w2.data(), 4, f, d);
  EXPECT_NEAR(s.mean, 0.0, 1e-12);
  EXPECT_NEAR(s.off_diagonal_mean, -1.0 / 3, 1e-12);  // -(E / (E^2 - E)) = -1/(E - 1)
  // W1 orthogonal, W3 identical, W2 antipodal: the three combine as their mean.
  make({basis(0, 1), basis(1, 1)}, w1, w3, w2);
  for (int i = 0; i < f * d; ++i) w3[size_t(f * d + i)] = w3[size_t(i)];  // expert 1's W3 = expert 0's
  for (int c = 0; c < d; ++c)
    for (int j = 0; j < f; ++j) w2[size_t((d + c) * f + j)] = -w2[size_t(c * f + j)];  // expert 1's W2 = -expert 0's
  s = expert_similarity(w1.data(), w3.data(), w2.data(), 2, f, d);
  EXPECT_NEAR(s.w1, 0.5, 1e-12);
  EXPECT_NEAR(s.w3, 1.0, 1e-12);
  EXPECT_NEAR(s.w2, 0.0, 1e-12);
  EXPECT_NEAR(s.mean, 0.5, 1e-12);
  // A zero summary vector has no direction: an error naming the expert.
  std::fill(w1.begin() + f * d, w1.end(), 0.f);
  try {
    expert_similarity(w1.data(), w3.data(), w2.data(), 2, f, d);
    ADD_FAILURE() << "no error for a zero W1 of expert 1";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert 1's mean W1 row"), std::string::npos) << e.what();
  }
}

TEST(Analysis, ExpertSimilarityMatchesGramOfMeansDirectly) {
  // Random weights: the mean over f of W2's columns, not its rows. Computed
  // here a second way, from the Gram formula ||sum_e v_e||^2 / E^2.
  const int E = 3, f = 4, d = 6;
  std::vector<float> w1(size_t(E) * f * d), w3(w1.size()), w2(w1.size());
  for (size_t i = 0; i < w1.size(); ++i) {
    w1[i] = float(random_normal(1, 1, i));
    w3[i] = float(random_normal(1, 3, i));
    w2[i] = float(random_normal(1, 2, i));
  }
  const auto gram_mean = [&](const std::vector<float>& w, bool columns) {
    std::vector<double> total(size_t(d), 0.0);
    for (int e = 0; e < E; ++e) {
      std::vector<double> v(size_t(d), 0.0);
      for (int c = 0; c < d; ++c)
        for (int i = 0; i < f; ++i)
          v[size_t(c)] += columns ? w[size_t((e * d + c) * f + i)] : w[size_t((e * f + i) * d + c)];
      double nrm = 0;
      for (double x : v) nrm += x * x;
      for (int c = 0; c < d; ++c) total[size_t(c)] += v[size_t(c)] / std::sqrt(nrm);
    }
    double s2 = 0;
    for (double x : total) s2 += x * x;
    return s2 / (E * E);
  };
  const ExpertSimilarity s = expert_similarity(w1.data(), w3.data(), w2.data(), E, f, d);
  EXPECT_NEAR(s.w1, gram_mean(w1, false), 1e-12);
  EXPECT_NEAR(s.w3, gram_mean(w3, false), 1e-12);
  EXPECT_NEAR(s.w2, gram_mean(w2, true), 1e-12);
  EXPECT_GE(s.mean, 0.0);
}

TEST(Analysis, WeightStats) {
  const float a[3] = {1, 2, 3}, b[1] = {4};
  const WeightStats s = weight_stats({{a, 3}, {b, 1}});
  EXPECT_EQ(s.numel, 4);
  EXPECT_NEAR(s.norm, std::sqrt(30.0), 1e-12);
  EXPECT_NEAR(s.mean, 2.5, 1e-12);
  EXPECT_NEAR(s.std, std::sqrt(1.25), 1e-12);
  EXPECT_THROW(weight_stats({}), Error);
}

}  // namespace
}  // namespace rmoe::analysis
