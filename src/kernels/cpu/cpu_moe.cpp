// cpu_moe.cpp — the MoE ops on the cpu backend: router softmax/top-k, gates
// over a fixed choice, routing statistics and the load-balance gradient, the
// routing plan, token dispatch (gather) and combine, and the grouped SwiGLU
// experts.
//
// Experts: one GEMM per expert over exactly the rows routed to it (no padding);
// an expert with zero rows costs nothing. Gather/combine are parallel over
// tokens; every slot belongs to one (token, j), so there are no write races and
// sums run in slot order j = 0..k-1.
// Tested against rmoe::ref and by finite differences in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../instantiate.h"
#include "blas.h"
#include "checks.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/kernels/pointwise.h"

namespace rmoe::cpu {

namespace {
// This thread's scratch of at least n elements: allocated on a thread's first
// use and when a larger n comes, never in the loops of a step.
template <class T>
T* thread_scratch(int64_t n) {
  static thread_local std::vector<T> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}
}  // namespace

// ---- router: softmax, top-k, renormalised gates ------------------------------
template <class T>
void router_topk_forward(Tensor<T> probs, Tensor<int32_t> idx, Tensor<T> gate, Tensor<T> lse, In<T> logits) {
  const int64_t N = logits.rows(), E = logits.cols(), K = idx.cols();
  RMOE_CHECK(K >= 1 && K <= E && idx.rows() == N && gate.rows() == N,
             "router_topk_forward: logits " << logits.shape_str() << " idx " << idx.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * E))
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits.data + n * E;
    T* p = probs.data + n * E;
    T mx = l[0];
    for (int64_t e = 1; e < E; ++e) mx = std::max(mx, l[e]);
    T sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - mx));
    for (int64_t e = 0; e < E; ++e) p[e] /= sum;
    lse.data[n] = mx + std::log(sum);
    // k passes of argmax; strict '>' keeps the lower index on ties.
    int32_t* id = idx.data + n * K;
    T chosen_sum = 0;
    for (int64_t j = 0; j < K; ++j) {
      int32_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        bool taken = false;
        for (int64_t i = 0; i < j; ++i) taken |= (id[i] == e);
        if (!taken && (best < 0 || p[e] > p[best])) best = int32_t(e);
      }
      id[j] = best;
      chosen_sum += p[best];
    }
    for (int64_t j = 0; j < K; ++j) gate.data[n * K + j] = p[id[j]] / chosen_sum;
  }
}

template <class T>
void router_topk_backward(Tensor<T> dlogits, In<T> dgate, In<T> dprobs_extra, double dlse_scale, In<T> probs,
                          Tensor<const int32_t> idx, In<T> lse) {
  if (dlogits.is_null()) return;
  const int64_t N = probs.rows(), E = probs.cols(), K = idx.cols();
  RMOE_CHECK(idx.rows() == N && dlogits.rows() == N && dlogits.cols() == E,
             "router_topk_backward: probs " << probs.shape_str() << " idx " << idx.shape_str() << " dlogits "
                                            << dlogits.shape_str());
  check_indices(idx, E, "router_topk_backward", "idx", "the experts");
#pragma omp parallel if (worth_threads(N * E))
  {
    T* dprob = thread_scratch<T>(E);  // d loss / d prob of the row at hand
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* p = probs.data + n * E;
      const int32_t* id = idx.data + n * K;
      for (int64_t e = 0; e < E; ++e) dprob[e] = dprobs_extra.is_null() ? T(0) : dprobs_extra.data[e];
      if (!dgate.is_null()) {
        // g_j = p_j / s, s = sum_i p_i:  d/dp_j = (dg_j - sum_i dg_i g_i) / s
        T s = 0, c = 0;
        for (int64_t j = 0; j < K; ++j) s += p[id[j]];
        for (int64_t j = 0; j < K; ++j) c += dgate.data[n * K + j] * (p[id[j]] / s);
        for (int64_t j = 0; j < K; ++j) dprob[id[j]] += (dgate.data[n * K + j] - c) / s;
      }
      T dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += p[e] * dprob[e];
      const T dz = dlse_scale == 0 ? T(0) : T(dlse_scale) * T(2) * lse.data[n];  // d(lse^2) = 2 lse * softmax
      T* g = dlogits.data + n * E;
      for (int64_t e = 0; e < E; ++e) g[e] += p[e] * (dprob[e] - dot + dz);
    }
  }
}

// Gates renormalised over a given top-k (the frozen-routing path).
template <class T>
void router_gates(Tensor<T> gate, In<T> probs, Tensor<const int32_t> idx) {
  const int64_t N = probs.rows(), E = probs.cols(), K = idx.cols();
  RMOE_CHECK(idx.rows() == N && gate.rows() == N && gate.cols() == K,
             "router_gates: probs " << probs.shape_str() << " idx " << idx.shape_str() << " gate "
                                    << gate.shape_str());
  check_indices(idx, E, "router_gates", "idx", "the experts");
#pragma omp parallel for schedule(static) if (worth_threads(N * K))
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs.data + n * E;
    const int32_t* id = idx.data + n * K;
    T s = 0;
    for (int64_t j = 0; j < K; ++j) s += p[id[j]];
    for (int64_t j = 0; j < K; ++j) gate.data[n * K + j] = p[id[j]] / s;
  }
}

// One thread, tokens in order (the sums must not depend on the thread count).
template <class T>
void router_stats(Tensor<double> stats, In<T> probs, In<T> lse, Tensor<const int32_t> idx) {
  const int64_t N = probs.rows(), E = probs.cols();
  RMOE_CHECK(stats.numel() == 2 * E + 2 && lse.numel() == N && idx.rows() == N,
             "router_stats: stats " << stats.shape_str() << " probs " << probs.shape_str() << " lse "
                                    << lse.shape_str() << " idx " << idx.shape_str());
  check_indices(idx, E, "router_stats", "idx", "the experts");
  double* st = stats.data;
  std::fill_n(st, 2 * E + 2, 0.0);
  for (int64_t s = 0; s < idx.numel(); ++s) st[idx.data[s]] += 1.0;
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t e = 0; e < E; ++e) st[E + e] += probs.data[t * E + e];
    st[2 * E] += double(lse.data[t]) * lse.data[t];
  }
  st[2 * E + 1] = double(N);
}

template <class T>
void load_balance_backward(Tensor<T> dprobs, Tensor<const double> stats, int64_t topk, double scale) {
  if (dprobs.is_null()) return;
  const int64_t E = dprobs.numel();
  RMOE_CHECK(stats.numel() == 2 * E + 2,
             "load_balance_backward: stats " << stats.shape_str() << " for dprobs " << dprobs.shape_str());
  const double tokens = stats.data[2 * E + 1];
  for (int64_t e = 0; e < E; ++e) {
    const double f = stats.data[e] / (tokens * double(topk));  // fraction of slots on e
    dprobs.data[e] += T(scale * f / tokens);
  }
}

// A stable counting sort of the kept slots by expert; one pass, one thread.
void moe_route_plan(Tensor<int64_t> offsets, Tensor<int32_t> slot_token, Tensor<int32_t> slot_of,
                    Tensor<const int32_t> idx, Tensor<const int32_t> keep) {
  const int64_t n_tok = idx.rows(), K = idx.cols(), n_slots = n_tok * K, E = offsets.numel() - 1;
  RMOE_CHECK(E >= 1 && slot_token.numel() == n_slots && slot_of.numel() == n_slots &&
                 (keep.is_null() || keep.numel() == n_slots),
             "moe_route_plan: idx " << idx.shape_str() << " offsets " << offsets.shape_str() << " slot_token "
                                    << slot_token.shape_str() << " slot_of " << slot_of.shape_str() << " keep "
                                    << keep.shape_str());
  check_indices(idx, E, "moe_route_plan", "idx", "the experts");
  if (!keep.is_null()) check_indices(keep, 2, "moe_route_plan", "keep", "0 = dropped, 1 = kept");
  auto kept = [&](int64_t s) { return keep.is_null() || keep.data[s] != 0; };
  int64_t* off = offsets.data;
  std::fill_n(off, E + 1, int64_t(0));
  for (int64_t s = 0; s < n_slots; ++s)
    if (kept(s)) off[idx.data[s] + 1]++;
  for (int64_t e = 0; e < E; ++e) off[e + 1] += off[e];
  int64_t* cursor = thread_scratch<int64_t>(E);  // next free slot of each expert
  std::copy_n(off, E, cursor);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t j = 0; j < K; ++j) {
      if (!kept(t * K + j)) {
        slot_of.data[t * K + j] = -1;
        continue;
      }
      const int64_t slot = cursor[idx.data[t * K + j]]++;
      slot_token.data[slot] = int32_t(t);
      slot_of.data[t * K + j] = int32_t(slot);
    }
}

// ---- capacity ------------------------------------------------------------------------
template <class T>
void moe_slot_keys(Tensor<double> keys, In<T> probs, Tensor<const int32_t> idx) {
  const int64_t n_slots = idx.numel(), K = idx.cols(), E = probs.cols();
  RMOE_CHECK(keys.numel() == 2 * n_slots && probs.rows() == idx.rows(),
             "moe_slot_keys: keys " << keys.shape_str() << " probs " << probs.shape_str() << " idx "
                                    << idx.shape_str());
  check_indices(idx, E, "moe_slot_keys", "idx", "the experts");
  for (int64_t s = 0; s < n_slots; ++s) {
    const int64_t e = idx.data[s];
    keys.data[2 * s] = double(e);
    keys.data[2 * s + 1] = double(probs.data[(s / K) * E + e]);
  }
}

// Every slot's rank among those asking for its expert, by one sort of all G
// slots: (expert ascending, probability descending, row ascending).
void moe_capacity_keep(Tensor<int32_t> keep, Tensor<int64_t> dropped, Tensor<const double> keys, int64_t first,
                       int64_t capacity, int64_t num_experts) {
  const int64_t G = keys.numel() / 2, n_slots = keep.numel();
  RMOE_CHECK(keys.numel() % 2 == 0 && dropped.numel() == 1 && first >= 0 && first + n_slots <= G && capacity >= 0,
             "moe_capacity_keep: keys " << keys.shape_str() << " keep " << keep.shape_str() << " first " << first
                                        << " capacity " << capacity);
  const double* k = keys.data;
  for (int64_t g = 0; g < G; ++g)
    RMOE_CHECK(k[2 * g] >= 0 && k[2 * g] < double(num_experts) && k[2 * g] == std::floor(k[2 * g]),
               "cpu::moe_capacity_keep: keys[" << g << "] asks for expert " << k[2 * g] << ", outside [0, "
                                               << num_experts << ") (the experts)");
  std::vector<int64_t> order(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) order[size_t(g)] = g;
  std::sort(order.begin(), order.end(), [k](int64_t a, int64_t b) {
    if (k[2 * a] != k[2 * b]) return k[2 * a] < k[2 * b];
    if (k[2 * a + 1] != k[2 * b + 1]) return k[2 * a + 1] > k[2 * b + 1];
    return a < b;
  });
  int64_t n_dropped = 0, rank_in_expert = 0;
  for (int64_t i = 0; i < G; ++i) {
    const int64_t g = order[size_t(i)];
    rank_in_expert = (i > 0 && k[2 * order[size_t(i - 1)]] == k[2 * g]) ? rank_in_expert + 1 : 0;
    const bool kept = rank_in_expert < capacity;
    n_dropped += kept ? 0 : 1;
    if (g >= first && g < first + n_slots) keep.data[g - first] = kept ? 1 : 0;
  }
  dropped.data[0] = n_dropped;
}

// ---- dispatch and combine --------------------------------------------------------
template <class T>
void moe_gather(Tensor<T> xs, In<T> x, Tensor<const int32_t> slot_token) {
  const int64_t N = slot_token.numel(), d = x.cols();
  RMOE_CHECK(xs.rows() == N && xs.cols() == d, "moe_gather: xs " << xs.shape_str() << " x " << x.shape_str());
  check_indices(slot_token, x.rows(), "moe_gather", "slot_token", "the tokens of x");
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
  for (int64_t s = 0; s < N; ++s) std::copy_n(x.data + int64_t(slot_token.data[s]) * d, d, xs.data + s * d);
}

template <class T>
void moe_combine(Tensor<T> out, In<T> ys, Tensor<const int32_t> slot_of, In<T> gate) {
  const int64_t n_tok = slot_of.rows(), K = slot_of.cols(), d = ys.cols();
  RMOE_CHECK(out.rows() == n_tok && out.cols() == d && gate.numel() == n_tok * K,
             "moe_combine: out " << out.shape_str() << " slot_of " << slot_of.shape_str() << " gate "
                                 << gate.shape_str());
  check_slots(slot_of, ys.rows(), "moe_combine", "the slots of ys");
#pragma omp parallel for schedule(static) if (worth_threads(n_tok * K * d))
  for (int64_t t = 0; t < n_tok; ++t) {
    T* o = out.data + t * d;
    std::fill_n(o, d, T(0));
    for (int64_t j = 0; j < K; ++j) {
      if (slot_of.data[t * K + j] < 0) continue;  // dropped by the capacity
      const T g = gate.data[t * K + j];
      const T* y = ys.data + int64_t(slot_of.data[t * K + j]) * d;
      for (int64_t c = 0; c < d; ++c) o[c] += g * y[c];
    }
  }
}

template <class T>
void moe_combine_backward(Tensor<T> dys, Tensor<T> dgate, In<T> dout, In<T> ys, Tensor<const int32_t> slot_of,
                          In<T> gate) {
  const int64_t n_tok = slot_of.rows(), K = slot_of.cols(), d = ys.cols();
  RMOE_CHECK(dout.rows() == n_tok && dout.cols() == d && gate.numel() == n_tok * K,
             "moe_combine_backward: dout " << dout.shape_str() << " slot_of " << slot_of.shape_str());
  check_slots(slot_of, ys.rows(), "moe_combine_backward", "the slots of ys");
#pragma omp parallel for schedule(static) if (worth_threads(n_tok * K * d))
  for (int64_t t = 0; t < n_tok; ++t) {
    const T* g = dout.data + t * d;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t s = slot_of.data[t * K + j];
      if (s < 0) continue;  // dropped: no output, so no gradient either
      const T gt = gate.data[t * K + j];
      const T* y = ys.data + s * d;
      if (!dys.is_null()) {
        T* dy = dys.data + s * d;
        for (int64_t c = 0; c < d; ++c) dy[c] += gt * g[c];
      }
      if (!dgate.is_null()) {
        T dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += g[c] * y[c];
        dgate.data[t * K + j] += dot;
      }
    }
  }
}

template <class T>
void moe_gather_backward(Tensor<T> dx, In<T> dxs, Tensor<const int32_t> slot_of) {
  if (dx.is_null()) return;
  const int64_t n_tok = slot_of.rows(), K = slot_of.cols(), d = dx.cols();
  RMOE_CHECK(dx.rows() == n_tok && dxs.cols() == d,
             "moe_gather_backward: dx " << dx.shape_str() << " dxs " << dxs.shape_str() << " slot_of "
                                        << slot_of.shape_str());
  check_slots(slot_of, dxs.rows(), "moe_gather_backward", "the slots of dxs");
#pragma omp parallel for schedule(static) if (worth_threads(n_tok * K * d))
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t j = 0; j < K; ++j) {
      if (slot_of.data[t * K + j] < 0) continue;  // dropped
      const T* g = dxs.data + int64_t(slot_of.data[t * K + j]) * d;
      T* o = dx.data + t * d;
      for (int64_t c = 0; c < d; ++c) o[c] += g[c];
    }
}

// ---- grouped SwiGLU experts --------------------------------------------------------
// The multiply-adds below which experts run one after the other even with
// threads: waking an OpenMP team costs tens of microseconds under the passive
// wait policy (core/threads.h), about the whole op at the tiny config's shape
// (32 rows of d = f = 64 per expert: 0.24 ms per step's expert forwards at 1
// thread, 0.85 ms concurrent at 2). 2^22 is about 40 us of GEMM.
constexpr int64_t kConcurrentExpertsMacs = int64_t(1) << 22;

// Runs body(e) for every expert with rows; `macs` is the op's multiply-adds.
// With several threads and at least two non-empty experts per thread, every
// GEMM runs on one BLAS thread: many small GEMMs in a row scale poorly over
// BLAS threads, and single-threaded ones give the same bits either way. Then,
// with kConcurrentExpertsMacs of work, experts run concurrently, largest
// first, one per thread; below it, in order. Each expert writes only its own
// rows and its own weights' gradients, so these schedules give the bits of
// one thread (CpuVsRef.ExpertsThreadsSameBits,
// Trainer.ThreadCountDoesNotChangeBits). With fewer experts, in order, each
// GEMM on BLAS's threads (which may round differently).
template <class Body>
static void for_each_expert(const int64_t* offsets, int64_t E, int64_t macs, Body&& body) {
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (offsets[e + 1] > offsets[e]) active.push_back(e);
  const int threads = omp_get_max_threads();
  if (threads > 1 && int64_t(active.size()) >= 2 * threads && !omp_in_parallel()) {
    OneBlasThread one;
    if (macs < kConcurrentExpertsMacs) {
      for (int64_t e : active) body(e);
      return;
    }
    std::stable_sort(active.begin(), active.end(), [&](int64_t x, int64_t y) {
      return offsets[x + 1] - offsets[x] > offsets[y + 1] - offsets[y];
    });
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < active.size(); ++i) body(active[i]);
  } else {
    for (int64_t e : active) body(e);
  }
}

template <class T>
void experts_forward(Tensor<T> ys, Tensor<T> a, Tensor<T> b, Tensor<T> h, In<T> xs, Tensor<const int64_t> offsets,
                     In<T> W1, In<T> W3, In<T> W2) {
  const int64_t E = W1.size(0), f = W1.size(1), d = W1.size(2);
  RMOE_CHECK(xs.cols() == d && W2.size(1) == d && W2.size(2) == f,
             "experts_forward: W1 " << W1.shape_str() << " W2 " << W2.shape_str() << " xs " << xs.shape_str());
  check_offsets(offsets, E, xs.rows(), "experts_forward");
  for_each_expert(offsets.data, E, 3 * xs.rows() * f * d, [&](int64_t e) {
    const int64_t r0 = offsets.data[e], n = offsets.data[e + 1] - r0;
    gemm(false, true, n, f, d, T(1), xs.data + r0 * d, d, W1.data + e * f * d, d, T(0), a.data + r0 * f, f);
    gemm(false, true, n, f, d, T(1), xs.data + r0 * d, d, W3.data + e * f * d, d, T(0), b.data + r0 * f, f);
    T* hh = h.data + r0 * f;
    const T *aa = a.data + r0 * f, *bb = b.data + r0 * f;
#pragma omp parallel for schedule(static) if (worth_threads(n * f))
    for (int64_t i = 0; i < n * f; ++i) hh[i] = pw::swiglu(aa[i], bb[i]);
    gemm(false, true, n, d, f, T(1), hh, f, W2.data + e * d * f, f, T(0), ys.data + r0 * d, d);
  });
}

template <class T>
void experts_backward(Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2, Tensor<T> scratch_da,
                      Tensor<T> scratch_db, In<T> dys, In<T> xs, Tensor<const int64_t> offsets, In<T> a, In<T> b,
                      In<T> h, In<T> W1, In<T> W3, In<T> W2) {
  const int64_t E = W1.size(0), f = W1.size(1), d = W1.size(2);
  check_offsets(offsets, E, xs.rows(), "experts_backward");
  RMOE_CHECK(dys.cols() == d && xs.cols() == d && scratch_da.numel() >= xs.rows() * f &&
                 scratch_db.numel() >= xs.rows() * f,
             "experts_backward: W1 " << W1.shape_str() << " dys " << dys.shape_str() << " scratch "
                                     << scratch_da.shape_str());
  for_each_expert(offsets.data, E, 6 * xs.rows() * f * d, [&](int64_t e) {
    const int64_t r0 = offsets.data[e], n = offsets.data[e + 1] - r0;
    const T* dy = dys.data + r0 * d;
    const T* x = xs.data + r0 * d;
    T* da = scratch_da.data + r0 * f;
    T* db = scratch_db.data + r0 * f;  // holds dh first, then db
    if (!dW2.is_null()) gemm(true, false, d, f, n, T(1), dy, d, h.data + r0 * f, f, T(1), dW2.data + e * d * f, f);
    gemm(false, false, n, f, d, T(1), dy, d, W2.data + e * d * f, f, T(0), db, f);  // dh = dy W2 (into db)
    const T *aa = a.data + r0 * f, *bb = b.data + r0 * f;
#pragma omp parallel for schedule(static) if (worth_threads(n * f))
    for (int64_t i = 0; i < n * f; ++i) {
      T ga, gb;
      pw::swiglu_grad(aa[i], bb[i], db[i], ga, gb);
      da[i] = ga;
      db[i] = gb;
    }
    if (!dW1.is_null()) gemm(true, false, f, d, n, T(1), da, f, x, d, T(1), dW1.data + e * f * d, d);  // += da^T x
    if (!dW3.is_null()) gemm(true, false, f, d, n, T(1), db, f, x, d, T(1), dW3.data + e * f * d, d);  // += db^T x
    if (dxs.is_null()) return;
    T* dx = dxs.data + r0 * d;
    gemm(false, false, n, d, f, T(1), da, f, W1.data + e * f * d, d, T(1), dx, d);  // dx += da W1
    gemm(false, false, n, d, f, T(1), db, f, W3.data + e * f * d, d, T(1), dx, d);  // dx += db W3
  });
}

RMOE_INSTANTIATE_OPS(RMOE_OPS_MOE)

}  // namespace rmoe::cpu
