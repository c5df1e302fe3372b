// cuda_attention.cu — causal attention on the GPU: the blocked algorithm of
// rmoe/kernels/flash_attention.h (the same block geometry, online softmax and
// backward formulas the cpu backend runs and tests/test_ops.cpp checks).
//
// One thread block per (query block, h, b) for the forward and for dq, one
// per (key block, h, b) for dk and dv: every output element is summed by one
// thread in a fixed order (no atomics, repeatable bit for bit). Tiles of q,
// k, v, dout live in shared memory with rows of D + 1 elements (no bank
// conflicts on column reads), rows past S zero-filled; D is any value up to
// 128. Accumulation in T (fp32 for float). Views must be device memory.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "../instantiate.h"
#include "cuda_check.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/flash_attention.h"
#include "rmoe/kernels/ops.h"

namespace rmoe::cuda {

namespace {
// ---- kernels (plain C++ apart from the CUDA keywords) ---------------------------
constexpr int kThreads = 128;
constexpr int64_t kMaxHeadDim = 128;

// Shared memory of each kernel, in elements, for square tiles of `t` rows.
constexpr int64_t fwd_smem(int64_t t, int64_t D) { return 4 * t * (D + 1) + t * t + 3 * t; }
constexpr int64_t dkdv_smem(int64_t t, int64_t D) { return 6 * t * (D + 1) + 2 * t * t + 2 * t; }
constexpr int64_t dq_smem(int64_t t, int64_t D) { return 5 * t * (D + 1) + 2 * t * t + 2 * t; }

// rows [r0, r0 + n) of a [*, D] head (row stride ld) into a tile [TILE][D+1];
// rows n..TILE-1 zero.
template <class T, int TILE>
__device__ void load_tile(T* tile, const T* src, int64_t r0, int64_t n, int64_t ld, int D) {
  for (int e = threadIdx.x; e < TILE * D; e += kThreads) {
    const int r = e / D, d = e % D;
    tile[r * (D + 1) + d] = r < n ? src[(r0 + r) * ld + d] : T(0);
  }
}
// dst[r][c] = scale * a_r . b_c for r < TILE, c < TILE (tiles [TILE][D+1]).
template <class T, int TILE>
__device__ void tile_dots(T* dst, const T* a, const T* b, int D, T scale) {
  for (int e = threadIdx.x; e < TILE * TILE; e += kThreads) {
    const int r = e / TILE, c = e % TILE;
    T acc = T(0);
    for (int d = 0; d < D; ++d) acc += a[r * (D + 1) + d] * b[c * (D + 1) + d];
    dst[e] = acc * scale;
  }
}

// grid (query blocks, H, B). out [B,S,H,D], lse [B,H,S].
template <class T, int TILE>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(T* out, T* lse, const T* q, const T* k, const T* v, int64_t S, int64_t H, int D, T scale) {
  extern __shared__ unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [TILE][D+1] each
  T* Ks = Qs + TILE * (D + 1);
  T* Vs = Ks + TILE * (D + 1);
  T* Os = Vs + TILE * (D + 1);             // the accumulator
  T* Ss = Os + TILE * (D + 1);             // [TILE][TILE] scores, then P
  T* ms = Ss + TILE * TILE;                // [TILE] running max, sum, rescale factor
  T* ls = ms + TILE;
  T* as = ls + TILE;
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * D, off = b * S * ld + h * D;
  const int64_t r0 = flash::block_begin(qb, TILE), r1 = flash::block_end(qb, TILE, S), rq = r1 - r0;
  T* lse_bh = lse + (b * H + h) * S;
  load_tile<T, TILE>(Qs, q + off, r0, rq, ld, D);
  for (int e = threadIdx.x; e < TILE * (D + 1); e += kThreads) Os[e] = T(0);
  for (int r = threadIdx.x; r < TILE; r += kThreads) ms[r] = flash::neg_inf<T>(), ls[r] = T(0);
  const int64_t nk = flash::key_blocks_visited(r1, TILE);
  for (int64_t kb = 0; kb < nk; ++kb) {
    const int64_t c0 = flash::block_begin(kb, TILE), c1 = flash::block_end(kb, TILE, S), ck = c1 - c0;
    __syncthreads();  // the previous block is done with Ks, Vs, Ss
    load_tile<T, TILE>(Ks, k + off, c0, ck, ld, D);
    load_tile<T, TILE>(Vs, v + off, c0, ck, ld, D);
    __syncthreads();
    tile_dots<T, TILE>(Ss, Qs, Ks, D, scale);
    __syncthreads();
    for (int r = threadIdx.x; r < TILE; r += kThreads) {
      const int64_t n = r < rq ? flash::visible_keys(r0 + r, c0, c1) : 0;  // padding rows see nothing
      as[r] = flash::online_softmax_row(Ss + r * TILE, n, int64_t(TILE), ms[r], ls[r]);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < TILE * D; e += kThreads) {
      const int r = e / D, d = e % D;
      T acc = Os[r * (D + 1) + d] * as[r];
      for (int c = 0; c < ck; ++c) acc += Ss[r * TILE + c] * Vs[c * (D + 1) + d];
      Os[r * (D + 1) + d] = acc;
    }
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rq; r += kThreads) as[r] = flash::finish_row(ms[r], ls[r], lse_bh[r0 + r]);
  __syncthreads();
  for (int e = threadIdx.x; e < rq * D; e += kThreads) {
    const int r = e / D, d = e % D;
    out[off + (r0 + r) * ld + d] = Os[r * (D + 1) + d] * as[r];
  }
}

// lse and D_i of query rows [r0, r0 + rq) into lse_s, dd_s [TILE] (0 past rq;
// D_i only if want_dd).
template <class T, int TILE>
__device__ void load_row_stats(T* lse_s, T* dd_s, const T* lse_bh, const T* dout, const T* out, int64_t r0,
                               int64_t rq, int64_t ld, int D, bool want_dd) {
  for (int r = threadIdx.x; r < TILE; r += kThreads) {
    lse_s[r] = r < rq ? lse_bh[r0 + r] : T(0);
    dd_s[r] = r < rq && want_dd ? flash::row_delta(dout + (r0 + r) * ld, out + (r0 + r) * ld, int64_t(D)) : T(0);
  }
}

// grid (key blocks, H, B): dk, dv rows of one key block (either may be null),
// over the query blocks that see it, in increasing order.
template <class T, int TILE>
__global__ void __launch_bounds__(kThreads)
    attn_dkdv_kernel(T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q, const T* k, const T* v,
                     int64_t S, int64_t H, int D, T scale) {
  extern __shared__ unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);  // [TILE][D+1] each
  T* Vs = Ks + TILE * (D + 1);
  T* Qs = Vs + TILE * (D + 1);
  T* dOs = Qs + TILE * (D + 1);
  T* dKs = dOs + TILE * (D + 1);
  T* dVs = dKs + TILE * (D + 1);
  T* Ps = dVs + TILE * (D + 1);  // [TILE][TILE] each
  T* dSs = Ps + TILE * TILE;
  T* lse_s = dSs + TILE * TILE;  // [TILE] each
  T* dd_s = lse_s + TILE;
  const int64_t kb = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * D, off = b * S * ld + h * D;
  const int64_t c0 = flash::block_begin(kb, TILE), c1 = flash::block_end(kb, TILE, S), ck = c1 - c0;
  const int64_t nq = flash::num_blocks(S, TILE);
  const bool want_dk = dk != nullptr, want_dv = dv != nullptr;
  load_tile<T, TILE>(Ks, k + off, c0, ck, ld, D);
  load_tile<T, TILE>(Vs, v + off, c0, ck, ld, D);
  for (int e = threadIdx.x; e < TILE * (D + 1); e += kThreads) dKs[e] = T(0), dVs[e] = T(0);
  for (int64_t qb = flash::first_query_block(c0, TILE); qb < nq; ++qb) {
    const int64_t r0 = flash::block_begin(qb, TILE), r1 = flash::block_end(qb, TILE, S), rq = r1 - r0;
    __syncthreads();  // the previous block is done with Qs, dOs, Ps, dSs
    load_tile<T, TILE>(Qs, q + off, r0, rq, ld, D);
    load_tile<T, TILE>(dOs, dout + off, r0, rq, ld, D);
    load_row_stats<T, TILE>(lse_s, dd_s, lse + (b * H + h) * S, dout + off, out + off, r0, rq, ld, D, want_dk);
    __syncthreads();
    tile_dots<T, TILE>(Ps, Qs, Ks, D, scale);
    if (want_dk) tile_dots<T, TILE>(dSs, dOs, Vs, D, T(1));  // dP
    __syncthreads();
    for (int r = threadIdx.x; r < TILE; r += kThreads) {
      const int64_t n = r < rq ? flash::visible_keys(r0 + r, c0, c1) : 0;
      flash::probs_row(Ps + r * TILE, n, int64_t(TILE), lse_s[r]);
      if (want_dk) flash::dscores_row(dSs + r * TILE, Ps + r * TILE, int64_t(TILE), dd_s[r], scale);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < TILE * D; e += kThreads) {
      const int c = e / D, d = e % D;
      if (want_dv) {
        T acc = dVs[c * (D + 1) + d];
        for (int r = 0; r < rq; ++r) acc += Ps[r * TILE + c] * dOs[r * (D + 1) + d];  // P^T dout
        dVs[c * (D + 1) + d] = acc;
      }
      if (want_dk) {
        T acc = dKs[c * (D + 1) + d];
        for (int r = 0; r < rq; ++r) acc += dSs[r * TILE + c] * Qs[r * (D + 1) + d];  // dS^T q
        dKs[c * (D + 1) + d] = acc;
      }
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < ck * D; e += kThreads) {
    const int c = e / D, d = e % D;
    if (want_dk) dk[off + (c0 + c) * ld + d] += dKs[c * (D + 1) + d];
    if (want_dv) dv[off + (c0 + c) * ld + d] += dVs[c * (D + 1) + d];
  }
}

// grid (query blocks, H, B): dq rows of one query block, over its key blocks
// in increasing order.
template <class T, int TILE>
__global__ void __launch_bounds__(kThreads)
    attn_dq_kernel(T* dq, const T* dout, const T* out, const T* lse, const T* q, const T* k, const T* v, int64_t S,
                   int64_t H, int D, T scale) {
  extern __shared__ unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [TILE][D+1] each
  T* dOs = Qs + TILE * (D + 1);
  T* Ks = dOs + TILE * (D + 1);
  T* Vs = Ks + TILE * (D + 1);
  T* dQs = Vs + TILE * (D + 1);
  T* Ps = dQs + TILE * (D + 1);  // [TILE][TILE] each
  T* dSs = Ps + TILE * TILE;
  T* lse_s = dSs + TILE * TILE;  // [TILE] each
  T* dd_s = lse_s + TILE;
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ld = H * D, off = b * S * ld + h * D;
  const int64_t r0 = flash::block_begin(qb, TILE), r1 = flash::block_end(qb, TILE, S), rq = r1 - r0;
  load_tile<T, TILE>(Qs, q + off, r0, rq, ld, D);
  load_tile<T, TILE>(dOs, dout + off, r0, rq, ld, D);
  load_row_stats<T, TILE>(lse_s, dd_s, lse + (b * H + h) * S, dout + off, out + off, r0, rq, ld, D, true);
  for (int e = threadIdx.x; e < TILE * (D + 1); e += kThreads) dQs[e] = T(0);
  const int64_t nk = flash::key_blocks_visited(r1, TILE);
  for (int64_t kb = 0; kb < nk; ++kb) {
    const int64_t c0 = flash::block_begin(kb, TILE), c1 = flash::block_end(kb, TILE, S), ck = c1 - c0;
    __syncthreads();  // the previous block is done with Ks, Vs, Ps, dSs
    load_tile<T, TILE>(Ks, k + off, c0, ck, ld, D);
    load_tile<T, TILE>(Vs, v + off, c0, ck, ld, D);
    __syncthreads();
    tile_dots<T, TILE>(Ps, Qs, Ks, D, scale);
    tile_dots<T, TILE>(dSs, dOs, Vs, D, T(1));  // dP
    __syncthreads();
    for (int r = threadIdx.x; r < TILE; r += kThreads) {
      const int64_t n = r < rq ? flash::visible_keys(r0 + r, c0, c1) : 0;
      flash::probs_row(Ps + r * TILE, n, int64_t(TILE), lse_s[r]);
      flash::dscores_row(dSs + r * TILE, Ps + r * TILE, int64_t(TILE), dd_s[r], scale);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < TILE * D; e += kThreads) {
      const int r = e / D, d = e % D;
      T acc = dQs[r * (D + 1) + d];
      for (int c = 0; c < ck; ++c) acc += dSs[r * TILE + c] * Ks[c * (D + 1) + d];  // dS k
      dQs[r * (D + 1) + d] = acc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < rq * D; e += kThreads) {
    const int r = e / D, d = e % D;
    dq[off + (r0 + r) * ld + d] += dQs[r * (D + 1) + d];
  }
}
// ---- end of kernels ----------------------------------------------------------------

// The tile (64, 32, 16 or 8 rows; at most 32 for double) whose shared memory
// fits the device's per-block limit: the largest that leaves room for two
// blocks per SM, else the largest that fits at all.
template <class T>
int pick_tile(int64_t (*smem)(int64_t, int64_t), int64_t D, const char* op) {
  int dev = 0, optin = 0;
  RMOE_CUDA_CHECK(cudaGetDevice(&dev));
  RMOE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  for (int64_t limit : {int64_t(optin) / 2, int64_t(optin)})
    for (int t = sizeof(T) == 4 ? 64 : 32; t >= 8; t /= 2)
      if (smem(t, D) * int64_t(sizeof(T)) <= limit) return t;
  RMOE_CHECK(false, "cuda::" << op << ": head dim " << D << " needs more shared memory than the device's " << optin
                             << " bytes per block");
  return 0;
}

// Launches kernel<T, tile> on grid with its dynamic shared memory (raising the
// kernel's limit past the 48 KiB default where needed).
template <class Kernel, class... Args>
void launch(Kernel kernel, dim3 grid, int64_t smem_bytes, Args... args) {
  RMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)));
  kernel<<<grid, kThreads, size_t(smem_bytes)>>>(args...);
  RMOE_CUDA_CHECK(cudaGetLastError());
}

template <class U>
void check_view(const Tensor<U>& t, int64_t B, int64_t S, int64_t H, int64_t D, const char* op, const char* name) {
  RMOE_CHECK(t.device == Device::cuda, "cuda::" << op << ": " << name << " is not a cuda view");
  RMOE_CHECK(t.ndim == 4 && t.size(0) == B && t.size(1) == S && t.size(2) == H && t.size(3) == D,
             "cuda::" << op << ": " << name << " is " << t.shape_str() << ", want [B, S, H, D] = [" << B << ", " << S
                      << ", " << H << ", " << D << "] as q");
}
template <class U>
void check_lse(const Tensor<U>& lse, int64_t B, int64_t S, int64_t H, const char* op) {
  RMOE_CHECK(lse.device == Device::cuda, "cuda::" << op << ": lse is not a cuda view");
  RMOE_CHECK(lse.ndim == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == S,
             "cuda::" << op << ": lse is " << lse.shape_str() << ", want [B, H, S] = [" << B << ", " << H << ", " << S
                      << "]");
}
// q's shape, checked against the kernels' limits: D <= 128, B and H within a
// grid's y and z (65535).
template <class U>
void check_q(const Tensor<U>& q, const char* op) {
  RMOE_CHECK(q.device == Device::cuda, "cuda::" << op << ": q is not a cuda view");
  RMOE_CHECK(q.ndim == 4, "cuda::" << op << ": q is " << q.shape_str() << ", want [B, S, H, D]");
  RMOE_CHECK(q.size(3) <= kMaxHeadDim, "cuda::" << op << ": head dim D = " << q.size(3) << " is above "
                                                << kMaxHeadDim << " (the kernels' limit)");
  RMOE_CHECK(q.size(0) <= 65535 && q.size(2) <= 65535 && q.size(1) <= (int64_t(1) << 31) - 1,
             "cuda::" << op << ": q " << q.shape_str() << " is past the grid's limits (B, H <= 65535)");
}

#define RMOE_ATTN_TILES(X) X(64) X(32) X(16) X(8)
}  // namespace

template <class T>
void attention_forward(Tensor<T> out, Tensor<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "attention_forward";
  check_q(q, op);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  check_view(k, B, S, H, D, op, "k");
  check_view(v, B, S, H, D, op, "v");
  check_view(out, B, S, H, D, op, "out");
  check_lse(lse, B, S, H, op);
  if (q.numel() == 0) return;
  const T scale = T(1.0 / std::sqrt(double(D)));
  const int tile = pick_tile<T>(fwd_smem, D, op);
  const dim3 grid(unsigned(flash::num_blocks(S, tile)), unsigned(H), unsigned(B));
  const int64_t bytes = fwd_smem(tile, D) * int64_t(sizeof(T));
#define RMOE_ATTN_FWD(t) \
  if (tile == t) launch(attn_fwd_kernel<T, t>, grid, bytes, out.data, lse.data, q.data, k.data, v.data, S, H, int(D), scale);
  RMOE_ATTN_TILES(RMOE_ATTN_FWD)
#undef RMOE_ATTN_FWD
}

template <class T>
void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> /*scratch: unused*/, In<T> dout,
                        In<T> out, In<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "attention_backward";
  check_q(q, op);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  check_view(k, B, S, H, D, op, "k");
  check_view(v, B, S, H, D, op, "v");
  check_view(dout, B, S, H, D, op, "dout");
  check_view(out, B, S, H, D, op, "out");
  check_lse(lse, B, S, H, op);
  if (!dq.is_null()) check_view(dq, B, S, H, D, op, "dq");
  if (!dk.is_null()) check_view(dk, B, S, H, D, op, "dk");
  if (!dv.is_null()) check_view(dv, B, S, H, D, op, "dv");
  if (q.numel() == 0) return;
  const T scale = T(1.0 / std::sqrt(double(D)));
  if (!dk.is_null() || !dv.is_null()) {
    const int tile = pick_tile<T>(dkdv_smem, D, op);
    const dim3 grid(unsigned(flash::num_blocks(S, tile)), unsigned(H), unsigned(B));
    const int64_t bytes = dkdv_smem(tile, D) * int64_t(sizeof(T));
#define RMOE_ATTN_DKDV(t)                                                                                          \
  if (tile == t)                                                                                                   \
    launch(attn_dkdv_kernel<T, t>, grid, bytes, dk.data, dv.data, dout.data, out.data, lse.data, q.data, k.data, \
           v.data, S, H, int(D), scale);
    RMOE_ATTN_TILES(RMOE_ATTN_DKDV)
#undef RMOE_ATTN_DKDV
  }
  if (!dq.is_null()) {
    const int tile = pick_tile<T>(dq_smem, D, op);
    const dim3 grid(unsigned(flash::num_blocks(S, tile)), unsigned(H), unsigned(B));
    const int64_t bytes = dq_smem(tile, D) * int64_t(sizeof(T));
#define RMOE_ATTN_DQ(t) \
  if (tile == t)        \
    launch(attn_dq_kernel<T, t>, grid, bytes, dq.data, dout.data, out.data, lse.data, q.data, k.data, v.data, S, H, int(D), scale);
    RMOE_ATTN_TILES(RMOE_ATTN_DQ)
#undef RMOE_ATTN_DQ
  }
}

RMOE_INSTANTIATE_CUDA_OPS(RMOE_OPS_ATTENTION)

}  // namespace rmoe::cuda
