// flash_attention.h — the blocked causal attention algorithm (FlashAttention-2
// style), written once for the cpu backend (src/kernels/cpu/cpu_attention.cpp)
// and the CUDA kernels (src/kernels/cuda/cuda_attention.cu).
//
// Per (b, h), with s_ij = q_i.k_j * scale (scale = 1/sqrt(D)) for j <= i:
//   forward   rows are cut into query blocks, keys into key blocks. A query
//             block visits the key blocks from 0 up to the one holding its last
//             row (never the blocks wholly above the diagonal); the diagonal
//             block is masked per element. Each row keeps a running max m and
//             sum l (online softmax); its accumulator is rescaled by
//             exp(m_old - m_new) when m grows. At the end out_i = acc_i / l_i
//             and lse_i = m_i + log(l_i), which the backward needs (not P).
//   backward  P_ij = exp(s_ij - lse_i), D_i = sum_d dout_id out_id,
//             dP_ij = dout_i.v_j, dS_ij = P_ij (dP_ij - D_i) scale;
//             dv_j += sum_i P_ij dout_i, dq_i += sum_j dS_ij k_j,
//             dk_j += sum_i dS_ij q_i.
// Everything is accumulated in T (float or double). Plain C++: no std:: call
// runs in device code (the math goes through the wrappers below).
#pragma once
#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

#include "rmoe/kernels/host_device.h"

namespace rmoe::flash {

// ---- math that host and device code both call ----------------------------------
// fexp (float: the vectorisable exp; double: exp) lives in host_device.h,
// shared with pointwise.h's sigmoid.
using hd::fexp;
#if defined(__CUDA_ARCH__)
RMOE_HD float flog(float x) { return ::logf(x); }
RMOE_HD double flog(double x) { return ::log(x); }
#else
RMOE_HD float flog(float x) { return std::log(x); }
RMOE_HD double flog(double x) { return std::log(x); }
#endif
template <class T>
RMOE_HD T fmax2(T a, T b) {
  return a < b ? b : a;
}
template <class T>
RMOE_HD T neg_inf() {
  return -T(__builtin_huge_val());  // -inf in float and double, without <limits>
}

// Row reductions in kLanes interleaved partials (element j into partial
// j % kLanes, the partials combined in order at the end): a fixed order, so
// deterministic, that the compiler turns into vector instructions.
constexpr int kLanes = 8;
template <class T>
RMOE_HD T row_max(const T* x, int64_t n, T init) {
  T part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = init;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] = fmax2(part[l], x[j + l]);
  for (int l = 0; j < n; ++j, ++l) part[l] = fmax2(part[l], x[j]);
  T r = part[0];
  for (int l = 1; l < kLanes; ++l) r = fmax2(r, part[l]);
  return r;
}
// sum_j x[j] * y[j], and sum_j x[j].
template <class T>
RMOE_HD T row_dot(const T* x, const T* y, int64_t n) {
  T part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = T(0);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += x[j + l] * y[j + l];
  for (int l = 0; j < n; ++j, ++l) part[l] += x[j] * y[j];
  T r = part[0];
  for (int l = 1; l < kLanes; ++l) r += part[l];
  return r;
}
template <class T>
RMOE_HD T row_sum(const T* x, int64_t n) {
  T part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = T(0);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += x[j + l];
  for (int l = 0; j < n; ++j, ++l) part[l] += x[j];
  T r = part[0];
  for (int l = 1; l < kLanes; ++l) r += part[l];
  return r;
}

// ---- block geometry --------------------------------------------------------------
// Block `blk` of size `bs` covers rows [blk*bs, min(S, (blk+1)*bs)).
RMOE_HD int64_t num_blocks(int64_t S, int64_t bs) { return (S + bs - 1) / bs; }
RMOE_HD int64_t block_begin(int64_t blk, int64_t bs) { return blk * bs; }
RMOE_HD int64_t block_end(int64_t blk, int64_t bs, int64_t S) {
  const int64_t e = (blk + 1) * bs;
  return e < S ? e : S;
}
// Key blocks (size bk) a query block with rows [r0, r1) visits: [0, this).
// Blocks from there on hold only keys j >= r1 > i: wholly masked, skipped.
RMOE_HD int64_t key_blocks_visited(int64_t r1, int64_t bk) { return (r1 + bk - 1) / bk; }
// Key block kb as a query block ending at r1 uses it: [kb*bk, min((kb+1)*bk,
// r1)), since keys from r1 on are masked for all its rows (with key blocks
// larger than query blocks, the last one visited is cut there).
RMOE_HD int64_t key_block_end(int64_t kb, int64_t bk, int64_t r1) {
  const int64_t e = (kb + 1) * bk;
  return e < r1 ? e : r1;
}
// The first query block (size bq) with a row i >= c0, i.e. that sees a key of
// a key block starting at c0; every later query block sees it too.
RMOE_HD int64_t first_query_block(int64_t c0, int64_t bq) { return c0 / bq; }
// Keys of [c0, c1) that row i sees (j <= i): the first n of them, n in [0, c1-c0].
RMOE_HD int64_t visible_keys(int64_t i, int64_t c0, int64_t c1) {
  const int64_t n = (i < c1 ? i + 1 : c1) - c0;
  return n < 0 ? 0 : n;
}

// ---- forward: online softmax of one query row -------------------------------------
// s[0, width): this row's scaled scores against one key block, of which the
// first n are visible. Updates the running max m and sum l (m = -inf, l = 0
// before the first block), overwrites s with exp(s - m_new) for the visible
// keys and 0 for the rest, and returns the factor the row's accumulator must
// be multiplied by before this block's P v is added: exp(m_old - m_new).
template <class T>
RMOE_HD T online_softmax_row(T* s, int64_t n, int64_t width, T& m, T& l) {
  const T mx = row_max(s, n, m);
  if (mx == neg_inf<T>()) {  // nothing visible yet (a padding row): stay empty
    for (int64_t j = 0; j < width; ++j) s[j] = T(0);
    return T(1);
  }
  const T alpha = fexp(m - mx);  // m = -inf: 0, the accumulator is empty anyway
  for (int64_t j = 0; j < n; ++j) s[j] = fexp(s[j] - mx);
  for (int64_t j = n; j < width; ++j) s[j] = T(0);
  l = l * alpha + row_sum(s, n);
  m = mx;
  return alpha;
}
// acc[0, n) *= alpha.
template <class T>
RMOE_HD void rescale(T* acc, int64_t n, T alpha) {
  for (int64_t d = 0; d < n; ++d) acc[d] *= alpha;
}
// End of a row: the factor 1/l that turns the accumulator into out, and lse.
template <class T>
RMOE_HD T finish_row(T m, T l, T& lse) {
  lse = m + flog(l);
  return T(1) / l;
}

// ---- backward -------------------------------------------------------------------
// The two per-element formulas: P_ij from the score and lse_i, and dS_ij.
template <class T>
RMOE_HD T prob(T s, T lse) {
  return fexp(s - lse);
}
template <class T>
RMOE_HD T dscore(T p, T dp, T Di, T scale) {
  return p * (dp - Di) * scale;
}
// D_i = sum_d dout_id out_id (= sum_j P_ij dP_ij).
template <class T>
RMOE_HD T row_delta(const T* dout, const T* out, int64_t D) {
  return row_dot(dout, out, D);
}
// s[0, width) scaled scores of row i against a key block, first n visible:
// becomes P_ij = exp(s_ij - lse_i), 0 where masked.
template <class T>
RMOE_HD void probs_row(T* s, int64_t n, int64_t width, T lse) {
  for (int64_t j = 0; j < n; ++j) s[j] = prob(s[j], lse);
  for (int64_t j = n; j < width; ++j) s[j] = T(0);
}
// dp[0, width) = dP_ij of row i becomes dS_ij = P_ij (dP_ij - D_i) scale
// (0 where P is, i.e. masked).
template <class T>
RMOE_HD void dscores_row(T* dp, const T* p, int64_t width, T Di, T scale) {
  for (int64_t j = 0; j < width; ++j) dp[j] = dscore(p[j], dp[j], Di, scale);
}

// ---- the cpu backend's blocks (the CUDA kernels pick their own tiles) -----------
// Query and key block size of cpu_attention.cpp (measured best of 16..128 x
// 32..256 for S = 64..512, D = 16..64: small query blocks waste little of the
// diagonal, long key blocks make the GEMMs efficient).
constexpr int64_t kCpuBlockQ = 32, kCpuBlockK = 128;
// Elements of attention_backward's scratch on the cpu for up to `workers`
// threads: per thread a P and a dS block [bq, bk] and D_i of the query block
// [bq], with bq, bk the block sizes capped at S. With scratch for fewer
// workers than threads the op runs on fewer threads (same result).
constexpr int64_t cpu_scratch_per_worker(int64_t S) {
  const int64_t bq = S < kCpuBlockQ ? S : kCpuBlockQ, bk = S < kCpuBlockK ? S : kCpuBlockK;
  return 2 * bq * bk + bq;
}
constexpr int64_t cpu_scratch_elements(int64_t S, int64_t workers) { return workers * cpu_scratch_per_worker(S); }
// The workers the model's scratch is sized for (Model::carve, and the dry
// run's count of it): a fixed number, so the arena does not depend on the
// machine; attention_backward then uses at most this many threads.
constexpr int64_t kCpuScratchWorkers = 64;

}  // namespace rmoe::flash
