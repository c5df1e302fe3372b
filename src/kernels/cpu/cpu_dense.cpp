// cpu_dense.cpp — the cpu backend's token-wise ops: linear, embedding, RMSNorm,
// RoPE, row L2 normalisation and the exp scale (cosine routers), SwiGLU, tanh,
// GELU, the GRU and LSTM cells, cross-entropy.
//
// GEMMs go to OpenBLAS; row-wise loops are OpenMP-parallel over rows. Column
// reductions (bias, norm-weight and embedding gradients) are parallel over
// columns and loop rows in order, so results do not depend on thread count.
// Tested against rmoe::ref and by finite differences in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "../instantiate.h"
#include "blas.h"
#include "checks.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/kernels/pointwise.h"

namespace rmoe::cpu {

// ---- linear: y[N,out] = x[N,in] W[out,in]^T + b ------------------------------
template <class T>
void linear_forward(Tensor<T> y, In<T> x, In<T> W, In<T> b) {
  const int64_t N = x.rows(), in = x.cols(), out = W.size(0);
  RMOE_CHECK(W.cols() == in && y.rows() == N && y.cols() == out,
             "linear_forward: x " << x.shape_str() << " W " << W.shape_str() << " y "
                                  << y.shape_str());
  gemm(false, true, N, out, in, T(1), x.data, in, W.data, in, T(0), y.data, out);
  if (!b.is_null()) {
#pragma omp parallel for schedule(static) if (worth_threads(N * out))
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) y.data[n * out + o] += b.data[o];
  }
}

// Column sums of a [N, C] matrix added into acc[C]; rows in order per column.
template <class T>
static void add_column_sums(T* acc, const T* m, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (worth_threads(N * C))
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    const int64_t c1 = std::min(C, c0 + 16);
    T s[16] = {};
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) s[c - c0] += m[n * C + c];
    for (int64_t c = c0; c < c1; ++c) acc[c] += s[c - c0];
  }
}

template <class T>
void linear_backward(Tensor<T> dx, Tensor<T> dW, Tensor<T> db, In<T> dy, In<T> x, In<T> W) {
  const int64_t N = x.rows(), in = x.cols(), out = W.size(0);
  RMOE_CHECK(dy.rows() == N && dy.cols() == out, "linear_backward: dy " << dy.shape_str());
  if (!dx.is_null()) gemm(false, false, N, in, out, T(1), dy.data, out, W.data, in, T(1), dx.data, in);
  if (!dW.is_null()) gemm(true, false, out, in, N, T(1), dy.data, out, x.data, in, T(1), dW.data, in);
  if (!db.is_null()) add_column_sums(db.data, dy.data, N, out);
}

// ---- embedding ---------------------------------------------------------------
template <class T>
void embedding_forward(Tensor<T> out, Tensor<const int32_t> tokens, In<T> W) {
  const int64_t N = tokens.numel(), V = W.size(0), d = W.cols();
  RMOE_CHECK(out.rows() == N && out.cols() == d, "embedding_forward: out " << out.shape_str());
  check_indices(tokens, V, "embedding_forward", "tokens", "the vocabulary");
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
  for (int64_t n = 0; n < N; ++n)
    std::copy_n(W.data + tokens.data[n] * d, d, out.data + n * d);
}

template <class T>
void embedding_backward(Tensor<T> dW, Tensor<const int32_t> tokens, In<T> dout) {
  if (dW.is_null()) return;
  const int64_t N = tokens.numel(), d = dW.cols();
  RMOE_CHECK(dout.rows() == N && dout.cols() == d,
             "embedding_backward: dout " << dout.shape_str() << " for dW " << dW.shape_str());
  check_indices(tokens, dW.size(0), "embedding_backward", "tokens", "the vocabulary");
  // Parallel over column blocks; each block walks tokens in order (repeats are
  // summed in a fixed order, no races).
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
  for (int64_t c0 = 0; c0 < d; c0 += 32) {
    const int64_t c1 = std::min(d, c0 + 32);
    for (int64_t n = 0; n < N; ++n) {
      T* row = dW.data + tokens.data[n] * d;
      const T* g = dout.data + n * d;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

// ---- RMSNorm -----------------------------------------------------------------
template <class T>
void rmsnorm_forward(Tensor<T> out, Tensor<T> rstd, In<T> x, In<T> w, double eps) {
  const int64_t N = x.rows(), d = x.cols();
  RMOE_CHECK(w.numel() == d && out.numel() == x.numel() && rstd.numel() == N,
             "rmsnorm_forward: x " << x.shape_str() << " w " << w.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x.data + n * d;
    double ss = 0;
    for (int64_t c = 0; c < d; ++c) ss += double(xr[c]) * xr[c];
    const T r = T(1.0 / std::sqrt(ss / d + eps));
    rstd.data[n] = r;
    T* o = out.data + n * d;
    for (int64_t c = 0; c < d; ++c) o[c] = xr[c] * r * w.data[c];
  }
}

template <class T>
void rmsnorm_backward(Tensor<T> dx, Tensor<T> dw, In<T> dout, In<T> x, In<T> w, In<T> rstd) {
  const int64_t N = x.rows(), d = x.cols();
  if (!dx.is_null()) {
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x.data + n * d;
      const T* g = dout.data + n * d;
      const T r = rstd.data[n];
      double dot = 0;  // sum_c g_c w_c x_c
      for (int64_t c = 0; c < d; ++c) dot += double(g[c]) * w.data[c] * xr[c];
      const T coef = T(dot * r * r * r / d);
      T* o = dx.data + n * d;
      for (int64_t c = 0; c < d; ++c) o[c] += r * w.data[c] * g[c] - coef * xr[c];
    }
  }
  if (!dw.is_null()) {
#pragma omp parallel for schedule(static) if (worth_threads(N * d))
    for (int64_t c0 = 0; c0 < d; c0 += 16) {
      const int64_t c1 = std::min(d, c0 + 16);
      T s[16] = {};
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = c0; c < c1; ++c) s[c - c0] += dout.data[n * d + c] * x.data[n * d + c] * rstd.data[n];
      for (int64_t c = c0; c < c1; ++c) dw.data[c] += s[c - c0];
    }
  }
}

// ---- row L2 normalisation and the exp scale (the cosine routers) -------------
// y = x / max(||x||, eps); each row's sum of squares in double.
template <class T>
void l2norm_forward(Tensor<T> y, Tensor<T> norm, In<T> x, double eps) {
  const int64_t N = x.rows(), C = x.cols();
  RMOE_CHECK(y.numel() == x.numel() && norm.numel() == N,
             "l2norm_forward: x " << x.shape_str() << " y " << y.shape_str() << " norm " << norm.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * C))
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x.data + n * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
    const double nrm = std::max(std::sqrt(ss), eps);
    norm.data[n] = T(nrm);
    const T inv = T(1.0 / nrm);
    for (int64_t c = 0; c < C; ++c) y.data[n * C + c] = xr[c] * inv;
  }
}

template <class T>
void l2norm_backward(Tensor<T> dx, In<T> dy, In<T> y, In<T> norm, double eps) {
  if (dx.is_null()) return;
  const int64_t N = y.rows(), C = y.cols();
  RMOE_CHECK(dy.numel() == y.numel() && dx.numel() == y.numel() && norm.numel() == N,
             "l2norm_backward: y " << y.shape_str() << " dy " << dy.shape_str() << " dx " << dx.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * C))
  for (int64_t n = 0; n < N; ++n) {
    const T* yr = y.data + n * C;
    const T* g = dy.data + n * C;
    T* o = dx.data + n * C;
    const double nrm = double(norm.data[n]);
    double dot = 0;  // y . dy; 0 where clamped (the norm is a constant there)
    if (nrm > eps)
      for (int64_t c = 0; c < C; ++c) dot += double(yr[c]) * g[c];
    const T inv = T(1.0 / nrm), tdot = T(dot);
    for (int64_t c = 0; c < C; ++c) o[c] += (g[c] - yr[c] * tdot) * inv;
  }
}

template <class T>
void exp_scale_forward(Tensor<T> y, In<T> x, In<T> log_scale, double max_log_scale) {
  RMOE_CHECK(log_scale.numel() == 1 && y.numel() == x.numel(),
             "exp_scale_forward: x " << x.shape_str() << " y " << y.shape_str() << " log_scale "
                                     << log_scale.shape_str());
  const T sc = T(std::exp(std::min(double(log_scale.data[0]), max_log_scale)));
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) y.data[i] = sc * x.data[i];
}

template <class T>
void exp_scale_backward(Tensor<T> dx, Tensor<T> dlog_scale, In<T> dy, In<T> y, In<T> log_scale,
                        double max_log_scale) {
  RMOE_CHECK(log_scale.numel() == 1 && dy.numel() == y.numel() && (dx.is_null() || dx.numel() == y.numel()) &&
                 (dlog_scale.is_null() || dlog_scale.numel() == 1),
             "exp_scale_backward: y " << y.shape_str() << " dy " << dy.shape_str() << " log_scale "
                                      << log_scale.shape_str());
  const double s = double(log_scale.data[0]);
  const int64_t n = y.numel();
  if (!dx.is_null()) {
    const T sc = T(std::exp(std::min(s, max_log_scale)));
#pragma omp parallel for schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) dx.data[i] += sc * dy.data[i];
  }
  if (!dlog_scale.is_null() && s <= max_log_scale) {
    double acc = 0;  // serial, in index order: the same bits for any thread count
    for (int64_t i = 0; i < n; ++i) acc += double(dy.data[i]) * y.data[i];
    dlog_scale.data[0] += T(acc);
  }
}

// ---- RoPE (half-split pairs), in place on [B,S,H,D] ---------------------------
template <class T>
static void rope_apply(Tensor<T> x, double theta, double sign) {
  RMOE_CHECK(x.ndim == 4 && x.size(3) % 2 == 0, "rope: expects [B,S,H,D] with D even, got " << x.shape_str());
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  // [S, D/2] cos and sin tables, kept per thread for the last (S, D, theta):
  // a model calls this 4 L times per micro-batch with the same shape.
  struct Tables {
    int64_t S = -1, D = -1;
    double theta = 0;
    std::vector<T> cs, sn;
  };
  thread_local Tables tab;
  if (tab.S != S || tab.D != D || tab.theta != theta) {
    tab.cs.resize(size_t(S * half));
    tab.sn.resize(size_t(S * half));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < half; ++j) {
        const double ang = double(s) * std::pow(theta, -2.0 * double(j) / double(D));
        tab.cs[s * half + j] = T(std::cos(ang));
        tab.sn[s * half + j] = T(std::sin(ang));
      }
    tab.S = S;
    tab.D = D;
    tab.theta = theta;
  }
  const T* cs = tab.cs.data();
  const T* sn = tab.sn.data();
  const T sgn = T(sign);  // the backward rotates by -angle: sin(-a) = -sin(a), exactly
#pragma omp parallel for collapse(2) schedule(static) if (worth_threads(B * S * H * D))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        T* v = x.data + ((b * S + s) * H + h) * D;
        for (int64_t j = 0; j < half; ++j) {
          const T c = cs[s * half + j], si = sgn * sn[s * half + j];
          const T a = v[j], bb = v[j + half];
          v[j] = a * c - bb * si;
          v[j + half] = a * si + bb * c;
        }
      }
}
template <class T>
void rope_forward(Tensor<T> x, double theta) { rope_apply(x, theta, +1.0); }
template <class T>
void rope_backward(Tensor<T> dx, double theta) { rope_apply(dx, theta, -1.0); }

// ---- SwiGLU, tanh, GRU cell ----------------------------------------------------
template <class T>
void swiglu_forward(Tensor<T> h, In<T> a, In<T> b) {
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) h.data[i] = pw::swiglu(a.data[i], b.data[i]);
}
template <class T>
void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh, In<T> a, In<T> b) {
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    T ga, gb;
    pw::swiglu_grad(a.data[i], b.data[i], dh.data[i], ga, gb);
    if (!da.is_null()) da.data[i] += ga;  // a null gradient output is not needed
    if (!db.is_null()) db.data[i] += gb;
  }
}

template <class T>
void tanh_forward(Tensor<T> y, In<T> x) {
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n * 8))
  for (int64_t i = 0; i < n; ++i) y.data[i] = std::tanh(x.data[i]);
}
template <class T>
void tanh_backward(Tensor<T> dx, In<T> dy, In<T> y) {
  if (dx.is_null()) return;
  const int64_t n = y.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) dx.data[i] += dy.data[i] * (T(1) - y.data[i] * y.data[i]);
}

// gelu(x) = x Phi(x), Phi the standard normal CDF; d/dx = Phi(x) + x phi(x).
// Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation for x << 0 (1 + erf would lose
// every digit in float).
template <class T>
void gelu_forward(Tensor<T> y, In<T> x) {
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n * 8))
  for (int64_t i = 0; i < n; ++i) y.data[i] = T(0.5) * x.data[i] * std::erfc(-x.data[i] * T(1 / std::numbers::sqrt2));
}
template <class T>
void gelu_backward(Tensor<T> dx, In<T> dy, In<T> x) {
  if (dx.is_null()) return;
  const int64_t n = x.numel();
  const T inv_sqrt_2pi = T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);  // 1/sqrt(2 pi)
#pragma omp parallel for schedule(static) if (worth_threads(n * 8))
  for (int64_t i = 0; i < n; ++i) {
    const T v = x.data[i];
    const T cdf = T(0.5) * std::erfc(-v * T(1 / std::numbers::sqrt2));
    dx.data[i] += dy.data[i] * (cdf + v * inv_sqrt_2pi * std::exp(T(-0.5) * v * v));
  }
}

template <class T>
void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h) {
  const int64_t N = h.rows(), p = h.cols();
  RMOE_CHECK(gi.cols() == 3 * p && gh.cols() == 3 * p && gates.cols() == 3 * p,
             "gru_forward: gi " << gi.shape_str() << " h " << h.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * p * 8))
  for (int64_t n = 0; n < N; ++n) {
    const T* i3 = gi.data + n * 3 * p;
    const T* h3 = gh.data + n * 3 * p;
    T* g3 = gates.data + n * 3 * p;
    for (int64_t j = 0; j < p; ++j)
      hnew.data[n * p + j] = pw::gru_cell(i3[j], i3[p + j], i3[2 * p + j], h3[j], h3[p + j], h3[2 * p + j],
                                          h.data[n * p + j], g3[j], g3[p + j], g3[2 * p + j]);
  }
}
template <class T>
void gru_backward(Tensor<T> dgi, Tensor<T> dgh, Tensor<T> dh, In<T> dhnew, In<T> gates, In<T> gh,
                  In<T> h) {
  const int64_t N = h.rows(), p = h.cols();
#pragma omp parallel for schedule(static) if (worth_threads(N * p * 8))
  for (int64_t n = 0; n < N; ++n) {
    const T* g3 = gates.data + n * 3 * p;
    T* di = dgi.is_null() ? nullptr : dgi.data + n * 3 * p;  // null: not needed
    T* dhh = dgh.is_null() ? nullptr : dgh.data + n * 3 * p;
    T* dhp = dh.is_null() ? nullptr : dh.data + n * p;
    for (int64_t j = 0; j < p; ++j) {
      T ir, iz, in, hr, hz, hn, dprev;
      pw::gru_cell_grad(g3[j], g3[p + j], g3[2 * p + j], gh.data[n * 3 * p + 2 * p + j], h.data[n * p + j],
                        dhnew.data[n * p + j], ir, iz, in, hr, hz, hn, dprev);
      if (di) {
        di[j] += ir;
        di[p + j] += iz;
        di[2 * p + j] += in;
      }
      if (dhh) {
        dhh[j] += hr;
        dhh[p + j] += hz;
        dhh[2 * p + j] += hn;
      }
      if (dhp) dhp[j] += dprev;
    }
  }
}

template <class T>
void lstm_forward(Tensor<T> hnew, Tensor<T> cnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> c) {
  const int64_t N = c.rows(), p = c.cols();
  RMOE_CHECK(gi.cols() == 4 * p && gi.rows() == N && gh.cols() == 4 * p && gh.rows() == N &&
                 gates.cols() == 4 * p && gates.rows() == N && hnew.numel() == N * p && cnew.numel() == N * p,
             "lstm_forward: gi " << gi.shape_str() << " gh " << gh.shape_str() << " gates " << gates.shape_str()
                                 << " c " << c.shape_str() << " hnew " << hnew.shape_str() << " cnew "
                                 << cnew.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * p * 8))
  for (int64_t n = 0; n < N; ++n) {
    const T* i4 = gi.data + n * 4 * p;
    const T* h4 = gh.data + n * 4 * p;
    T* g4 = gates.data + n * 4 * p;
    for (int64_t j = 0; j < p; ++j)
      hnew.data[n * p + j] =
          pw::lstm_cell(i4[j] + h4[j], i4[p + j] + h4[p + j], i4[2 * p + j] + h4[2 * p + j],
                        i4[3 * p + j] + h4[3 * p + j], c.data[n * p + j], cnew.data[n * p + j], g4[j], g4[p + j],
                        g4[2 * p + j], g4[3 * p + j]);
  }
}
template <class T>
void lstm_backward(Tensor<T> dpre, Tensor<T> dc, In<T> dhnew, In<T> dcnew, In<T> gates, In<T> c, In<T> cnew) {
  const int64_t N = c.rows(), p = c.cols();
  RMOE_CHECK(gates.cols() == 4 * p && gates.rows() == N && dhnew.numel() == N * p && dcnew.numel() == N * p &&
                 cnew.numel() == N * p && (dpre.is_null() || (dpre.cols() == 4 * p && dpre.rows() == N)) &&
                 (dc.is_null() || dc.numel() == N * p),
             "lstm_backward: gates " << gates.shape_str() << " c " << c.shape_str() << " dpre " << dpre.shape_str()
                                     << " dc " << dc.shape_str());
#pragma omp parallel for schedule(static) if (worth_threads(N * p * 8))
  for (int64_t n = 0; n < N; ++n) {
    const T* g4 = gates.data + n * 4 * p;
    T* dp = dpre.is_null() ? nullptr : dpre.data + n * 4 * p;  // null: not needed
    T* dcp = dc.is_null() ? nullptr : dc.data + n * p;
    for (int64_t j = 0; j < p; ++j) {
      T di, df, dg, dout, dprev;
      pw::lstm_cell_grad(g4[j], g4[p + j], g4[2 * p + j], g4[3 * p + j], c.data[n * p + j], cnew.data[n * p + j],
                         dhnew.data[n * p + j], dcnew.data[n * p + j], di, df, dg, dout, dprev);
      if (dp) {
        dp[j] += di;
        dp[p + j] += df;
        dp[2 * p + j] += dg;
        dp[3 * p + j] += dout;
      }
      if (dcp) dcp[j] += dprev;
    }
  }
}

// ---- cross-entropy ----------------------------------------------------------------
template <class T>
void cross_entropy(Tensor<T> losses, Tensor<T> dlogits, In<T> logits, Tensor<const int32_t> targets,
                   double dloss_scale) {
  const int64_t N = logits.rows(), V = logits.cols();
  RMOE_CHECK(targets.numel() == N && losses.numel() == N, "cross_entropy: logits " << logits.shape_str());
  check_indices(targets, V, "cross_entropy", "targets", "the vocabulary");
#pragma omp parallel for schedule(static) if (worth_threads(N * V))
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits.data + n * V;
    const int32_t t = targets.data[n];
    T mx = l[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, l[v]);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(l[v] - mx));
    const double lse = double(mx) + std::log(sum);
    losses.data[n] = T(lse - double(l[t]));
    if (!dlogits.is_null()) {
      T* g = dlogits.data + n * V;
      const T inv = T(1.0 / sum), sc = T(dloss_scale);
      for (int64_t v = 0; v < V; ++v) g[v] += sc * std::exp(l[v] - mx) * inv;
      g[t] -= sc;
    }
  }
}

RMOE_INSTANTIATE_OPS(RMOE_OPS_DENSE)

}  // namespace rmoe::cpu
