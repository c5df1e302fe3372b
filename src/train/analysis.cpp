// analysis.cpp — the routing and expert metrics of rmoe_analyze (formulas in
// include/train/rmoe/train/analysis.h and docs/ANALYSIS.md).
// Tested by tests/test_analysis.cpp.
#include "rmoe/train/analysis.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "rmoe/core/error.h"

namespace rmoe::analysis {

double gate_entropy(const float* p, int E) {
  double h = 0;
  for (int e = 0; e < E; ++e)
    if (p[e] > 0) h -= double(p[e]) * std::log(double(p[e]));
  return h;
}

TopStats top_stats(const float* p, int E, int k) {
  RMOE_CHECK(E >= 2 && k >= 1 && k <= E, "top_stats needs 2 <= E and 1 <= k <= E, got E = " << E << ", k = " << k);
  // The k (at least 2) largest, in descending order: a copy, E is small.
  thread_local std::vector<float> sorted;
  sorted.assign(p, p + E);
  const int keep = std::max(k, 2);
  std::partial_sort(sorted.begin(), sorted.begin() + keep, sorted.end(), std::greater<float>());
  TopStats s;
  for (int j = 0; j < k; ++j) s.topk_sum += double(sorted[j]);
  s.top1_over_top2 = sorted[1] > 0 ? double(sorted[0]) / double(sorted[1]) : std::numeric_limits<double>::infinity();
  return s;
}

double median(std::vector<double> v) {
  RMOE_CHECK(!v.empty(), "the median of no values");
  const size_t n = v.size(), mid = n / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double upper = v[mid];
  if (n % 2 == 1) return upper;
  const double lower = *std::max_element(v.begin(), v.begin() + mid);  // the largest of the lower half
  return 0.5 * (lower + upper);
}

// ---- GateAccumulator --------------------------------------------------------------

GateAccumulator::GateAccumulator(int E, int k, int entropy_bins)
    : E_(E), k_(k), bins_(entropy_bins), hist_(size_t(entropy_bins), 0), slots_(size_t(E), 0) {
  RMOE_CHECK(E >= 2 && k >= 1 && k <= E && entropy_bins >= 1,
             "GateAccumulator needs 2 <= E, 1 <= k <= E, bins >= 1; got E = " << E << ", k = " << k
                                                                              << ", bins = " << entropy_bins);
}

void GateAccumulator::add(const float* probs, const int32_t* topk_idx, int64_t n) {
  const double h_max = std::log(double(E_));
  for (int64_t t = 0; t < n; ++t) {
    const float* p = probs + t * E_;  // [E]
    const double h = gate_entropy(p, E_);
    entropy_sum_ += h;
    // ln E itself (a uniform gate) and rounding just above it go to the last bin.
    const int b = std::clamp(int(std::floor(h / h_max * bins_)), 0, bins_ - 1);
    ++hist_[size_t(b)];
    const TopStats s = top_stats(p, E_, k_);
    if (std::isinf(s.top1_over_top2)) ++ib_infinite_;
    ib_.push_back(s.top1_over_top2);
    ob_.push_back(s.topk_sum);
    for (int j = 0; j < k_; ++j) {
      const int32_t e = topk_idx[t * k_ + j];
      RMOE_CHECK(e >= 0 && e < E_, "expert index " << e << " of token " << t << " is outside [0, " << E_ << ")");
      ++slots_[size_t(e)];
    }
  }
}

GateSummary GateAccumulator::summary() const {
  const int64_t n = int64_t(ib_.size());
  RMOE_CHECK(n > 0, "no tokens were added to the gate statistics");
  GateSummary s;
  s.tokens = n;
  s.entropy_mean = entropy_sum_ / double(n);
  s.entropy_max = std::log(double(E_));
  s.entropy_hist = hist_;
  s.ib_median = median(ib_);
  s.ib_infinite_fraction = double(ib_infinite_) / double(n);
  s.ob_median = median(ob_);
  s.selection_frequency.resize(size_t(E_));
  for (int e = 0; e < E_; ++e) s.selection_frequency[size_t(e)] = double(slots_[size_t(e)]) / (double(n) * k_);
  return s;
}

// ---- the paper's binned MI ------------------------------------------------------------

double binned_pair_mi(const int32_t* a, const int32_t* b, int E, int bins, std::vector<int32_t>& scratch) {
  // scratch: joint counts [bins, bins], then the marginals of a and of b [bins] each.
  const size_t need = size_t(bins + 2) * size_t(bins);
  if (scratch.size() < need) scratch.assign(need, 0);
  int32_t* joint = scratch.data();
  int32_t* ca = joint + size_t(bins) * bins;
  int32_t* cb = ca + bins;
  for (int e = 0; e < E; ++e) {
    RMOE_CHECK(a[e] >= 0 && a[e] < bins && b[e] >= 0 && b[e] < bins,
               "bin " << a[e] << " / " << b[e] << " of expert " << e << " is outside [0, " << bins << ")");
    ++joint[size_t(a[e]) * bins + b[e]];
    ++ca[a[e]];
    ++cb[b[e]];
  }
  // Plug-in MI over the E samples: each sample e adds (1/E) ln(E n_ab / (n_a n_b)),
  // so a cell of count n_ab adds (n_ab / E) ln(...), the usual sum over cells.
  double mi = 0;
  for (int e = 0; e < E; ++e)
    mi += std::log(double(E) * joint[size_t(a[e]) * bins + b[e]] / (double(ca[a[e]]) * double(cb[b[e]])));
  for (int e = 0; e < E; ++e) {  // leave the scratch zero
    joint[size_t(a[e]) * bins + b[e]] = 0;
    ca[a[e]] = 0;
    cb[b[e]] = 0;
  }
  return mi / E;
}

BinnedMiAccumulator::BinnedMiAccumulator(int L, int E, int bins) : L_(L), E_(E), bins_(bins), sum_(size_t(L) * L, 0.0) {
  RMOE_CHECK(L >= 1 && E >= 2 && bins >= 2, "BinnedMiAccumulator needs L >= 1, E >= 2, bins >= 2; got L = "
                                                << L << ", E = " << E << ", bins = " << bins);
}

void BinnedMiAccumulator::add(const std::vector<const float*>& probs, int64_t n) {
  RMOE_CHECK(int(probs.size()) == L_, "binned MI: " << probs.size() << " layers given, " << L_ << " expected");
  std::vector<int32_t> binned(size_t(L_) * E_), scratch;  // one token's bins [L, E]
  for (int64_t t = 0; t < n; ++t) {
    for (int l = 0; l < L_; ++l)
      for (int e = 0; e < E_; ++e) {
        const double p = probs[size_t(l)][t * E_ + e];
        binned[size_t(l) * E_ + e] = std::clamp(int(std::floor(p * bins_)), 0, bins_ - 1);  // p = 1: the last bin
      }
    for (int l = 0; l < L_; ++l)
      for (int m = l; m < L_; ++m)
        sum_[size_t(l) * L_ + m] +=
            binned_pair_mi(&binned[size_t(l) * E_], &binned[size_t(m) * E_], E_, bins_, scratch);
  }
  tokens_ += n;
}

std::vector<double> BinnedMiAccumulator::matrix() const {
  RMOE_CHECK(tokens_ > 0, "no tokens were added to the binned MI");
  std::vector<double> mi(size_t(L_) * L_);
  for (int l = 0; l < L_; ++l)
    for (int m = l; m < L_; ++m)
      mi[size_t(l) * L_ + m] = mi[size_t(m) * L_ + l] = sum_[size_t(l) * L_ + m] / double(tokens_);
  return mi;
}

// ---- MI of the top-1 choices --------------------------------------------------------------

MiEstimate count_table_mi(const int64_t* joint, int A, int B) {
  std::vector<int64_t> na(size_t(A), 0), nb(size_t(B), 0);
  int64_t total = 0, cells = 0;
  for (int a = 0; a < A; ++a)
    for (int b = 0; b < B; ++b) {
      const int64_t c = joint[size_t(a) * B + b];
      RMOE_CHECK(c >= 0, "negative count " << c << " in cell (" << a << ", " << b << ")");
      na[size_t(a)] += c;
      nb[size_t(b)] += c;
      total += c;
      cells += c > 0;
    }
  RMOE_CHECK(total > 0, "the MI of an empty count table");
  const double N = double(total);
  double plugin = 0;
  for (int a = 0; a < A; ++a)
    for (int b = 0; b < B; ++b) {
      const int64_t c = joint[size_t(a) * B + b];
      if (c > 0) plugin += double(c) / N * std::log(N * double(c) / (double(na[size_t(a)]) * double(nb[size_t(b)])));
    }
  const auto nonempty = [](const std::vector<int64_t>& v) {
    return int64_t(std::count_if(v.begin(), v.end(), [](int64_t c) { return c > 0; }));
  };
  MiEstimate r;
  r.plugin = plugin;
  r.miller_madow = plugin + double(nonempty(na) + nonempty(nb) - cells - 1) / (2 * N);
  return r;
}

Top1MiAccumulator::Top1MiAccumulator(int L, int E) : L_(L), E_(E), joint_(size_t(L) * L * E * E, 0) {
  RMOE_CHECK(L >= 1 && E >= 2, "Top1MiAccumulator needs L >= 1, E >= 2; got L = " << L << ", E = " << E);
}

void Top1MiAccumulator::add(const std::vector<const int32_t*>& top1, int64_t n, int stride) {
  RMOE_CHECK(int(top1.size()) == L_, "top-1 MI: " << top1.size() << " layers given, " << L_ << " expected");
  for (int64_t t = 0; t < n; ++t)
    for (int l = 0; l < L_; ++l) {
      const int32_t a = top1[size_t(l)][t * stride];
      RMOE_CHECK(a >= 0 && a < E_,
                 "layer " << l << ": expert " << a << " of token " << t << " is outside [0, " << E_ << ")");
      for (int m = l; m < L_; ++m) {
        const int32_t b = top1[size_t(m)][t * stride];
        RMOE_CHECK(b >= 0 && b < E_,
                   "layer " << m << ": expert " << b << " of token " << t << " is outside [0, " << E_ << ")");
        ++joint_[((size_t(l) * L_ + m) * E_ + a) * E_ + b];
      }
    }
  tokens_ += n;
}

void Top1MiAccumulator::matrices(std::vector<double>& plugin, std::vector<double>& miller_madow) const {
  RMOE_CHECK(tokens_ > 0, "no tokens were added to the top-1 MI");
  plugin.assign(size_t(L_) * L_, 0);
  miller_madow.assign(size_t(L_) * L_, 0);
  for (int l = 0; l < L_; ++l)
    for (int m = l; m < L_; ++m) {
      const MiEstimate r = count_table_mi(&joint_[(size_t(l) * L_ + m) * E_ * E_], E_, E_);
      plugin[size_t(l) * L_ + m] = plugin[size_t(m) * L_ + l] = r.plugin;
      miller_madow[size_t(l) * L_ + m] = miller_madow[size_t(m) * L_ + l] = r.miller_madow;
    }
}

// ---- weights --------------------------------------------------------------------------------

ExpertSimilarity expert_similarity(const float* w1, const float* w3, const float* w2, int E, int f, int d) {
  RMOE_CHECK(E >= 1 && f >= 1 && d >= 1, "expert_similarity needs E, f, d >= 1; got " << E << ", " << f << ", " << d);
  // Unit summary vectors [E, d] of each tensor.
  const auto unit_rows = [&](const char* name, auto&& element) {
    std::vector<double> v(size_t(E) * d, 0.0);
    for (int e = 0; e < E; ++e) {
      double* row = &v[size_t(e) * d];
      for (int i = 0; i < f; ++i)
        for (int c = 0; c < d; ++c) row[c] += element(e, i, c);
      double norm2 = 0;
      for (int c = 0; c < d; ++c) norm2 += row[c] * row[c];
      // The mean over f and the scaling to unit length: one division by the norm of the sum.
      RMOE_CHECK(norm2 > 0, "expert " << e << "'s mean " << name
                                      << " is the zero vector: it has no direction, so its similarity is undefined");
      const double inv = 1 / std::sqrt(norm2);
      for (int c = 0; c < d; ++c) row[c] *= inv;
    }
    return v;
  };
  const auto u1 = unit_rows("W1 row", [&](int e, int i, int c) { return double(w1[(size_t(e) * f + i) * d + c]); });
  const auto u3 = unit_rows("W3 row", [&](int e, int i, int c) { return double(w3[(size_t(e) * f + i) * d + c]); });
  const auto u2 = unit_rows("W2 column", [&](int e, int j, int c) { return double(w2[(size_t(e) * d + c) * f + j]); });
  ExpertSimilarity s;
  s.gram.assign(size_t(E) * E, 0.0);
  double sum[3] = {0, 0, 0}, off = 0;
  const std::vector<double>* u[3] = {&u1, &u3, &u2};
  for (int a = 0; a < E; ++a)
    for (int b = 0; b < E; ++b) {
      double g = 0;
      for (int x = 0; x < 3; ++x) {
        double dot = 0;
        for (int c = 0; c < d; ++c) dot += (*u[x])[size_t(a) * d + c] * (*u[x])[size_t(b) * d + c];
        sum[x] += dot;
        g += dot / 3;
      }
      s.gram[size_t(a) * E + b] = g;
      if (a != b) off += g;
    }
  const double cells = double(E) * E;
  s.w1 = sum[0] / cells;
  s.w3 = sum[1] / cells;
  s.w2 = sum[2] / cells;
  s.mean = (s.w1 + s.w3 + s.w2) / 3;
  s.off_diagonal_mean = E >= 2 ? off / (cells - E) : 0;
  return s;
}

WeightStats weight_stats(const std::vector<WeightSpan>& parts) {
  WeightStats s;
  double sum = 0, sum2 = 0;
  for (const WeightSpan& p : parts)
    for (int64_t i = 0; i < p.n; ++i) {
      sum += p.data[i];
      sum2 += double(p.data[i]) * p.data[i];
    }
  for (const WeightSpan& p : parts) s.numel += p.n;
  RMOE_CHECK(s.numel > 0, "weight statistics of no elements");
  s.norm = std::sqrt(sum2);
  s.mean = sum / double(s.numel);
  double dev2 = 0;  // second pass around the mean: no cancellation of sum2 - n mean^2
  for (const WeightSpan& p : parts)
    for (int64_t i = 0; i < p.n; ++i) dev2 += (p.data[i] - s.mean) * (p.data[i] - s.mean);
  s.std = std::sqrt(dev2 / double(s.numel));
  return s;
}

}  // namespace rmoe::analysis
