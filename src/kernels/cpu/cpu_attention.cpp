// cpu_attention.cpp — causal multi-head attention on the cpu backend.
//
// Per (b, h): P = softmax(q k^T / sqrt(D)) with the causal mask, out = P v.
// q, k, v, out are [B,S,H,D], so one head's rows are strided by H*D and the
// GEMMs read them in place (no transposes). Heads run in order; the GEMMs use
// OpenBLAS's threads and the row softmax uses OpenMP.
// Tested against rmoe::ref and by finite differences in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "../instantiate.h"
#include "blas.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe::cpu {

template <class T>
void attention_forward(Tensor<T> out, Tensor<T> P, In<T> q, In<T> k, In<T> v) {
  RMOE_CHECK(q.ndim == 4 && P.ndim == 4, "attention_forward: q " << q.shape_str() << " P " << P.shape_str());
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), ld = H * D;
  RMOE_CHECK(P.size(0) == B && P.size(1) == H && P.size(2) == S && P.size(3) == S,
             "attention_forward: P " << P.shape_str() << " for q " << q.shape_str());
  const T scale = T(1.0 / std::sqrt(double(D)));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t off = b * S * ld + h * D;
      T* Pbh = P.data + (b * H + h) * S * S;  // [S,S]
      gemm(false, true, S, S, D, scale, q.data + off, ld, k.data + off, ld, T(0), Pbh, S);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S; ++i) {
        T* row = Pbh + i * S;
        T mx = row[0];
        for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
        T sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - mx));
        const T inv = T(1) / sum;
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        std::fill(row + i + 1, row + S, T(0));
      }
      gemm(false, false, S, D, S, T(1), Pbh, S, v.data + off, ld, T(0), out.data + off, ld);
    }
}

template <class T>
void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> scratch, In<T> dout, In<T> P,
                        In<T> q, In<T> k, In<T> v) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), ld = H * D;
  RMOE_CHECK(scratch.numel() >= S * S, "attention_backward: scratch needs " << S * S << " elements");
  RMOE_CHECK(dout.numel() == q.numel() && (dq.is_null() || dq.numel() == q.numel()) &&
                 (dk.is_null() || dk.numel() == q.numel()) && (dv.is_null() || dv.numel() == q.numel()),
             "attention_backward: dout " << dout.shape_str() << " for q " << q.shape_str());
  const T scale = T(1.0 / std::sqrt(double(D)));
  T* dP = scratch.data;  // [S,S], becomes dScores in place
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t off = b * S * ld + h * D;
      const T* Pbh = P.data + (b * H + h) * S * S;
      // dv += P^T dout ; dP = dout v^T
      if (!dv.is_null()) gemm(true, false, S, D, S, T(1), Pbh, S, dout.data + off, ld, T(1), dv.data + off, ld);
      if (dq.is_null() && dk.is_null()) continue;
      gemm(false, true, S, S, D, T(1), dout.data + off, ld, v.data + off, ld, T(0), dP, S);
      // softmax backward: dS_ij = P_ij (dP_ij - sum_l P_il dP_il) * scale, masked.
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S; ++i) {
        const T* pr = Pbh + i * S;
        T* g = dP + i * S;
        T dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += pr[j] * g[j];
        for (int64_t j = 0; j <= i; ++j) g[j] = pr[j] * (g[j] - dot) * scale;
        std::fill(g + i + 1, g + S, T(0));
      }
      // dq += dS k ; dk += dS^T q
      if (!dq.is_null()) gemm(false, false, S, D, S, T(1), dP, S, k.data + off, ld, T(1), dq.data + off, ld);
      if (!dk.is_null()) gemm(true, false, S, D, S, T(1), dP, S, q.data + off, ld, T(1), dk.data + off, ld);
    }
}

RMOE_INSTANTIATE_OPS(RMOE_OPS_ATTENTION)

}  // namespace rmoe::cpu
