// cpu_attention.cpp — causal multi-head attention on the cpu backend: the
// blocked algorithm of rmoe/kernels/flash_attention.h (online softmax, lse
// saved instead of P), block GEMMs on OpenBLAS, blocks on OpenMP threads.
//
// q, k, v, out are [B,S,H,D]: one head's rows are strided by H*D and the GEMMs
// read them in place. Blocks above the diagonal are never computed. Every
// output element is produced by one thread in a fixed order, so the result
// does not depend on the thread count (each task runs single-threaded GEMMs).
// Tested against rmoe::ref and by finite differences in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../instantiate.h"
#include "blas.h"
#include "checks.h"  // worth_threads
#include "rmoe/core/error.h"
#include "rmoe/kernels/flash_attention.h"
#include "rmoe/kernels/ops.h"

namespace rmoe::cpu {
namespace {

constexpr int64_t kBq = flash::kCpuBlockQ, kBk = flash::kCpuBlockK;

template <class U>
void check_bshd(const Tensor<U>& t, int64_t B, int64_t S, int64_t H, int64_t D, const char* op, const char* name) {
  RMOE_CHECK(t.ndim == 4 && t.size(0) == B && t.size(1) == S && t.size(2) == H && t.size(3) == D,
             "cpu::" << op << ": " << name << " is " << t.shape_str() << ", want [B, S, H, D] = [" << B << ", " << S
                     << ", " << H << ", " << D << "] as q");
}
template <class U>
void check_lse(const Tensor<U>& lse, int64_t B, int64_t S, int64_t H, const char* op) {
  RMOE_CHECK(lse.ndim == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == S,
             "cpu::" << op << ": lse is " << lse.shape_str() << ", want [B, H, S] = [" << B << ", " << H << ", " << S
                     << "]");
}

// One query block [r0, r1) of one head: out rows and lse, visiting key blocks
// 0 .. key_blocks_visited - 1. out's rows are the accumulator.
template <class T>
void forward_block(const T* q, const T* k, const T* v, T* out, T* lse, int64_t S, int64_t D, int64_t ld, int64_t qb) {
  const T scale = T(1.0 / std::sqrt(double(D)));
  thread_local std::vector<T> buf;  // scores, then probabilities [rq, ck]; m, l [rq]
  buf.resize(size_t(kBq * kBk + 2 * kBq));
  T *s = buf.data(), *m = s + kBq * kBk, *l = m + kBq;
  const int64_t r0 = flash::block_begin(qb, kBq), r1 = flash::block_end(qb, kBq, S), rq = r1 - r0;
  const T* qi = q + r0 * ld;
  T* oi = out + r0 * ld;
  for (int64_t r = 0; r < rq; ++r) m[r] = flash::neg_inf<T>(), l[r] = T(0);
  const int64_t nk = flash::key_blocks_visited(r1, kBk);
  for (int64_t kb = 0; kb < nk; ++kb) {
    const int64_t c0 = flash::block_begin(kb, kBk), c1 = flash::key_block_end(kb, kBk, r1), ck = c1 - c0;
    gemm(false, true, rq, ck, D, scale, qi, ld, k + c0 * ld, ld, T(0), s, kBk);
    for (int64_t r = 0; r < rq; ++r) {
      const T alpha = flash::online_softmax_row(s + r * kBk, flash::visible_keys(r0 + r, c0, c1), ck, m[r], l[r]);
      if (kb > 0) flash::rescale(oi + r * ld, D, alpha);
    }
    // acc = acc * alpha + P v (beta 0 on the first block: out starts unset)
    gemm(false, false, rq, D, ck, T(1), s, kBk, v + c0 * ld, ld, kb == 0 ? T(0) : T(1), oi, ld);
  }
  for (int64_t r = 0; r < rq; ++r) flash::rescale(oi + r * ld, D, flash::finish_row(m[r], l[r], lse[r0 + r]));
}

// The gradients wanted (null pointers: not wanted) and what a worker holds.
template <class T>
struct Bwd {
  const T *q, *k, *v, *dout, *out, *lse;  // of one head (offset applied)
  T *dq, *dk, *dv;
  int64_t S, D, ld;
  T scale;
  int64_t pl;  // leading dimension of the worker's P and dS blocks
};

// D_i of query block qb's rows into dd[rq].
template <class T>
void block_delta(const Bwd<T>& a, int64_t qb, T* dd) {
  const int64_t r0 = flash::block_begin(qb, kBq), r1 = flash::block_end(qb, kBq, a.S);
  for (int64_t r = r0; r < r1; ++r) dd[r - r0] = flash::row_delta(a.dout + r * a.ld, a.out + r * a.ld, a.D);
}

// The block pair (query block qb, keys [c0, c1) with c1 <= its end r1): adds
// its part to dq (if want_q) and to dk, dv (if want_kv). p, ds: the worker's
// P and dS blocks [rq, ck] (leading dimension pl = min(kBk, S)); dd: D_i of
// qb (read only when dq or dk is added to). With query blocks of 32 rows
// every GEMM here has 32 rows or reads 32 (OpenBLAS's small-matrix kernels).
template <class T>
void backward_pair(const Bwd<T>& a, int64_t qb, int64_t c0, int64_t c1, bool want_q, bool want_kv, T* p, T* ds,
                   const T* dd) {
  const int64_t r0 = flash::block_begin(qb, kBq), r1 = flash::block_end(qb, kBq, a.S), rq = r1 - r0, ck = c1 - c0;
  const int64_t ld = a.ld, D = a.D, pl = a.pl;
  const T *qi = a.q + r0 * ld, *kj = a.k + c0 * ld, *vj = a.v + c0 * ld, *doi = a.dout + r0 * ld;
  T* dq = want_q ? a.dq : nullptr;
  T* dk = want_kv ? a.dk : nullptr;
  T* dv = want_kv ? a.dv : nullptr;
  gemm(false, true, rq, ck, D, a.scale, qi, ld, kj, ld, T(0), p, pl);  // s = q_i k_j^T scale
  for (int64_t r = 0; r < rq; ++r) flash::probs_row(p + r * pl, flash::visible_keys(r0 + r, c0, c1), ck, a.lse[r0 + r]);
  if (dv) gemm(true, false, ck, D, rq, T(1), p, pl, doi, ld, T(1), dv + c0 * ld, ld);  // dv_j += P^T dout_i
  if (!dq && !dk) return;
  gemm(false, true, rq, ck, D, T(1), doi, ld, vj, ld, T(0), ds, pl);  // dP = dout_i v_j^T
  for (int64_t r = 0; r < rq; ++r) flash::dscores_row(ds + r * pl, p + r * pl, ck, dd[r], a.scale);
  if (dq) gemm(false, false, rq, D, ck, T(1), ds, pl, kj, ld, T(1), dq + r0 * ld, ld);  // dq_i += dS k_j
  if (dk) gemm(true, false, ck, D, rq, T(1), ds, pl, qi, ld, T(1), dk + c0 * ld, ld);   // dk_j += dS^T q_i
}

// Whether B H S^2 D multiply-adds (a score GEMM over every head) repay an
// OpenMP team: GEMM work runs ~30 times faster per element than the loops
// worth_threads is tuned for (in double: the product may pass 2^63).
inline bool worth_team(int64_t B, int64_t H, int64_t S, int64_t D) {
  const double w = double(B) * double(H) * double(S) * double(S) * double(D) / 32;
  return worth_threads(w < 9e18 ? int64_t(w) : int64_t(9e18));
}

}  // namespace

template <class T>
void attention_forward(Tensor<T> out, Tensor<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "attention_forward";
  RMOE_CHECK(q.ndim == 4, "cpu::" << op << ": q is " << q.shape_str() << ", want [B, S, H, D]");
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), ld = H * D;
  check_bshd(k, B, S, H, D, op, "k");
  check_bshd(v, B, S, H, D, op, "v");
  check_bshd(out, B, S, H, D, op, "out");
  check_lse(lse, B, S, H, op);
  if (q.numel() == 0) return;
  const int64_t nq = flash::num_blocks(S, kBq), tasks = B * H * nq;
  OneBlasThread one;  // tasks run single-threaded GEMMs side by side
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1 && worth_team(B, H, S, D))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t bh = t / nq, qb = nq - 1 - t % nq;  // the longest (last) query blocks first
    const int64_t b = bh / H, h = bh % H, off = b * S * ld + h * D;
    forward_block(q.data + off, k.data + off, v.data + off, out.data + off, lse.data + bh * S, S, D, ld, qb);
  }
}

// Two schedules with the same result: a whole head per task when there are
// enough heads for the workers (every block pair computed once), else a
// key-block pass (dk, dv) and a query-block pass (dq) that recompute P and dP
// but give every worker blocks. Either way dq_i receives its key blocks in
// increasing order and dk_j, dv_j their query blocks in increasing order,
// from the same block GEMMs (same shapes, same operands): bit-identical
// results (CpuVsRef.AttentionThreadsSameBits). Splitting the passes' blocks
// further would change GEMM shapes, and OpenBLAS's bits with them.
template <class T>
void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> scratch, In<T> dout, In<T> out,
                        In<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "attention_backward";
  RMOE_CHECK(q.ndim == 4, "cpu::" << op << ": q is " << q.shape_str() << ", want [B, S, H, D]");
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), ld = H * D;
  check_bshd(k, B, S, H, D, op, "k");
  check_bshd(v, B, S, H, D, op, "v");
  check_bshd(dout, B, S, H, D, op, "dout");
  check_bshd(out, B, S, H, D, op, "out");
  check_lse(lse, B, S, H, op);
  if (!dq.is_null()) check_bshd(dq, B, S, H, D, op, "dq");
  if (!dk.is_null()) check_bshd(dk, B, S, H, D, op, "dk");
  if (!dv.is_null()) check_bshd(dv, B, S, H, D, op, "dv");
  if (q.numel() == 0 || (dq.is_null() && dk.is_null() && dv.is_null())) return;
  const int64_t per_worker = flash::cpu_scratch_per_worker(S);
  RMOE_CHECK(scratch.numel() >= per_worker,
             "cpu::" << op << ": scratch holds " << scratch.numel() << " elements, want at least " << per_worker
                     << " (flash::cpu_scratch_elements(S = " << S << ", workers = 1))");
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), scratch.numel() / per_worker));
  const int64_t nq = flash::num_blocks(S, kBq), nk = flash::num_blocks(S, kBk);
  const bool want_q = !dq.is_null(), want_kv = !dk.is_null() || !dv.is_null();
  const bool want_dd = want_q || !dk.is_null();
  const bool threads = workers > 1 && worth_team(B, H, S, D);
  auto head = [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H, off = b * S * ld + h * D;
    auto at = [&](T* g) { return g ? g + off : nullptr; };
    return Bwd<T>{q.data + off,  k.data + off,  v.data + off,  dout.data + off, out.data + off, lse.data + bh * S,
                  at(dq.data),   at(dk.data),   at(dv.data),   S,               D,              ld,
                  T(1.0 / std::sqrt(double(D))), std::min(kBk, S)};
  };
  // A worker's blocks: P [kBq, kBk], dS [kBq, kBk], D_i [kBq] (kBq, kBk capped at S).
  // (omp_get_thread_num() is 0 in a region run by one thread, nested or not.)
  auto buffers = [&](T*& p, T*& ds, T*& dd) {
    const int64_t w = omp_get_thread_num(), blk = std::min(kBq, S) * std::min(kBk, S);
    p = scratch.data + w * per_worker;
    ds = p + blk;
    dd = ds + blk;
  };
  OneBlasThread one;
  // Passes pay off (7 block GEMMs per pair instead of 5) with threads that
  // would idle otherwise, and only with two key blocks or more per head.
  if (B * H >= workers || nk < 2) {
#pragma omp parallel for num_threads(int(workers)) schedule(dynamic, 1) if (threads)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      T *p, *ds, *dd;
      buffers(p, ds, dd);
      const Bwd<T> a = head(bh);
      for (int64_t qb = 0; qb < nq; ++qb) {
        if (want_dd) block_delta(a, qb, dd);
        const int64_t r1 = flash::block_end(qb, kBq, S);
        for (int64_t kb = 0; kb < flash::key_blocks_visited(r1, kBk); ++kb)
          backward_pair(a, qb, flash::block_begin(kb, kBk), flash::key_block_end(kb, kBk, r1), want_q, want_kv, p, ds,
                        dd);
      }
    }
    return;
  }
  // One team for both passes (waking it costs more than a small head's work).
#pragma omp parallel num_threads(int(workers)) if (threads)
  {
    T *p, *ds, *dd;
    buffers(p, ds, dd);
    if (want_kv) {
      // key block kb of every head; the longest (first) key blocks first
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < B * H * nk; ++t) {
        const Bwd<T> a = head(t / nk);
        const int64_t kb = t % nk, c0 = flash::block_begin(kb, kBk);
        for (int64_t qb = flash::first_query_block(c0, kBq); qb < nq; ++qb) {
          if (!dk.is_null()) block_delta(a, qb, dd);
          backward_pair(a, qb, c0, flash::key_block_end(kb, kBk, flash::block_end(qb, kBq, S)), false, true, p, ds,
                        dd);
        }
      }
    }
    if (want_q) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < B * H * nq; ++t) {
        const Bwd<T> a = head(t / nq);
        const int64_t qb = nq - 1 - t % nq;  // the longest (last) query blocks first
        block_delta(a, qb, dd);
        const int64_t r1 = flash::block_end(qb, kBq, S);
        for (int64_t kb = 0; kb < flash::key_blocks_visited(r1, kBk); ++kb)
          backward_pair(a, qb, flash::block_begin(kb, kBk), flash::key_block_end(kb, kBk, r1), true, false, p, ds,
                        dd);
      }
    }
  }
}

RMOE_INSTANTIATE_OPS(RMOE_OPS_ATTENTION)

}  // namespace rmoe::cpu
