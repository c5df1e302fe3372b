// analysis.h — routing and expert metrics of a trained model (rmoe_analyze;
// the paper's Table 8 and App. A.4). Pure functions and accumulators over
// plain row-major arrays: nothing here knows of models, files or ranks.
// Formulas, and why the two mutual-information estimators differ:
// docs/ANALYSIS.md.
//
// Legend: N tokens, E experts, k top-k, L layers, f expert FFN width,
// d model width.
// Tested by tests/test_analysis.cpp (hand-built cases with known answers).
#pragma once
#include <cstdint>
#include <vector>

namespace rmoe::analysis {

// ---- one softmax row ----------------------------------------------------------

// -sum_e p_e ln p_e in nats (0 ln 0 = 0), accumulated in double. p [E].
double gate_entropy(const float* p, int E);

struct TopStats {
  double top1_over_top2 = 0;  // largest / second largest prob; +inf when the second is 0
  double topk_sum = 0;        // sum of the k largest probs
};
// p [E], 2 <= E, 1 <= k <= E.
TopStats top_stats(const float* p, int E, int k);

// The median of v (the mean of the two middle values when v.size() is even;
// +inf values sort last). v non-empty; taken by value (it is reordered).
double median(std::vector<double> v);

// ---- one layer's gates over many tokens (Table 8) -----------------------------

struct GateSummary {
  int64_t tokens = 0;
  double entropy_mean = 0;                  // nats
  double entropy_max = 0;                   // ln E, the uniform gate's
  std::vector<int64_t> entropy_hist;        // [bins] over [0, ln E], equal widths; sums to tokens
  double ib_median = 0;                     // median of top1/top2 (IB); +inf if half or more are +inf
  double ib_infinite_fraction = 0;          // tokens whose second-largest prob is exactly 0
  double ob_median = 0;                     // median of the top-k sum (OB), in [k/E, 1]
  std::vector<double> selection_frequency;  // [E] slots sent to e / (N k); sums to 1
};

class GateAccumulator {
 public:
  GateAccumulator(int E, int k, int entropy_bins = 50);
  // probs [n, E] (the full softmax), topk_idx [n, k] (the experts chosen).
  void add(const float* probs, const int32_t* topk_idx, int64_t n);
  GateSummary summary() const;  // needs at least one token

 private:
  int E_, k_, bins_;
  double entropy_sum_ = 0;
  std::vector<int64_t> hist_, slots_;  // [bins], [E]
  std::vector<double> ib_, ob_;        // one value per token (for the medians)
  int64_t ib_infinite_ = 0;
};

// ---- cross-layer mutual information -------------------------------------------

// (a) The paper's estimator (App. A.4.2). For one token, each of layer l's E
// probabilities is put in bin min(floor(p * bins), bins - 1) of [0, 1]; the
// MI between layers l and m is the plug-in MI of the E pairs (bin of l's
// p_e, bin of m's p_e), e = 0..E-1, as samples; the matrix is its mean over
// tokens. Diagonal: the plug-in entropy of the binned values.
class BinnedMiAccumulator {
 public:
  BinnedMiAccumulator(int L, int E, int bins = 100);
  // probs[l]: layer l's [n, E] softmax, for the same n tokens in every layer.
  void add(const std::vector<const float*>& probs, int64_t n);
  int64_t tokens() const { return tokens_; }
  std::vector<double> matrix() const;  // [L, L], symmetric; needs at least one token

 private:
  int L_, E_, bins_;
  int64_t tokens_ = 0;
  std::vector<double> sum_;  // [L, L] upper triangle used
};

// The plug-in MI of one token's E binned pairs (a[e], b[e]), each in
// [0, bins), in nats. `scratch` holds zeros (it is grown to (bins + 2) * bins
// when smaller) and is left zero on return.
double binned_pair_mi(const int32_t* a, const int32_t* b, int E, int bins, std::vector<int32_t>& scratch);

// MI of a joint count table [A, B] (N = its sum > 0), in nats:
//   plugin       = sum_ab (n_ab / N) ln(N n_ab / (n_a n_b))
//   miller_madow = plugin + (m_a + m_b - m_ab - 1) / (2N)
// where m_* count the non-empty cells: H_MM = H_plugin + (m - 1) / (2N) for
// each of H(X), H(Y), H(X, Y), and MI = H(X) + H(Y) - H(X, Y).
struct MiEstimate {
  double plugin = 0, miller_madow = 0;
};
MiEstimate count_table_mi(const int64_t* joint, int A, int B);

// (b) The MI between two layers' top-1 choices over all tokens: joint counts
// [E, E] per layer pair, estimated by count_table_mi. Diagonal: the
// entropy of the choice (plug-in and Miller–Madow).
class Top1MiAccumulator {
 public:
  Top1MiAccumulator(int L, int E);
  // top1[l] points at layer l's top-1 expert of token t at top1[l][t * stride]
  // (topk_idx [n, k] with stride k: slot 0 is the largest prob).
  void add(const std::vector<const int32_t*>& top1, int64_t n, int stride);
  int64_t tokens() const { return tokens_; }
  // [L, L] each, symmetric; needs at least one token.
  void matrices(std::vector<double>& plugin, std::vector<double>& miller_madow) const;

 private:
  int L_, E_;
  int64_t tokens_ = 0;
  std::vector<int64_t> joint_;  // [L, L, E, E], pairs l <= m
};

// ---- weights --------------------------------------------------------------------

// Expert similarity (App. A.4.3) of one layer. Each expert e is summarised by
// three d-vectors: the mean over f of its W1 rows w1[e, i, :], of its W3 rows
// and of its W2 columns w2[e, :, j]; each is scaled to unit length and the
// Gram matrices G1, G3, G2 [E, E] of those unit vectors are formed.
//   w1, w3, w2 = the mean of all E^2 entries of G1, G3, G2 (diagonal included)
//   mean       = (w1 + w3 + w2) / 3 = the mean of (G1 + G3 + G2) / 3
// Each is ||sum_e v_e||^2 / E^2: 1 for identical experts, 1/E for mutually
// orthogonal ones, 0 (the floor) when the unit vectors sum to zero.
struct ExpertSimilarity {
  double w1 = 0, w3 = 0, w2 = 0, mean = 0;
  double off_diagonal_mean = 0;  // of (G1 + G3 + G2) / 3 without its diagonal (E >= 2)
  std::vector<double> gram;      // (G1 + G3 + G2) / 3, [E, E]
};
// w1, w3 [E, f, d], w2 [E, d, f]. Throws rmoe::Error when a summary vector is
// zero (it has no direction), naming the tensor and the expert.
ExpertSimilarity expert_similarity(const float* w1, const float* w3, const float* w2, int E, int f, int d);

// Over the concatenation of several tensors' elements: count, L2 norm
// sqrt(sum x^2), mean, population standard deviation.
struct WeightStats {
  int64_t numel = 0;
  double norm = 0, mean = 0, std = 0;
};
struct WeightSpan {
  const float* data;
  int64_t n;
};
WeightStats weight_stats(const std::vector<WeightSpan>& parts);

}  // namespace rmoe::analysis
