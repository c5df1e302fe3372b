// ref_ops.cpp — rmoe::ref, the reference backend: the oracle the tests compare
// every other backend against (tests/test_ops.cpp).
//
// Plain loops, one formula per line, written from the math in ops.h and
// docs/MODEL.md and deliberately NOT sharing code with the fast backends (no
// rmoe/kernels/pointwise.h). Every sum is accumulated in double, starting from
// the existing value for backward outputs (they ACCUMULATE, +=), and stored in
// T once. Forward outputs are overwritten. A null gradient view is skipped.
// Clarity over speed; only attention and the GEMM-like ops loop enough to
// matter, and they stay well under a second at test sizes.
//
// Legend as in ops.h: N rows, d width, f expert width, E experts, k top-k,
// V vocabulary, B/S/H/D attention batch/sequence/heads/head dim, p GRU width.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <vector>

#include "../instantiate.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe::ref {
namespace {

// ---- shape checks -------------------------------------------------------------

template <class U>
void check_cpu(const Tensor<U>& t, const char* op, const char* name) {
  RMOE_CHECK(!t.is_null() || t.numel() == 0, op << ": " << name << " is a null view but required");
  RMOE_CHECK(t.device == Device::cpu, op << ": " << name << " is not a cpu view");
}

// t must hold rows x cols elements laid out as rows of cols (any ndim >= 1).
template <class U>
void check_rc(const Tensor<U>& t, int64_t rows, int64_t cols, const char* op, const char* name) {
  check_cpu(t, op, name);
  RMOE_CHECK(t.cols() == cols && t.numel() == rows * cols, op << ": " << name << " is "
                                                              << t.shape_str() << ", want " << rows
                                                              << " rows of " << cols);
}

// t must hold exactly n elements (a vector, any ndim).
template <class U>
void check_n(const Tensor<U>& t, int64_t n, const char* op, const char* name) {
  check_cpu(t, op, name);
  RMOE_CHECK(t.numel() == n,
             op << ": " << name << " is " << t.shape_str() << ", want " << n << " elements");
}

template <class U>
void check_shape(const Tensor<U>& t, std::initializer_list<int64_t> want, const char* op,
                 const char* name) {
  check_cpu(t, op, name);
  bool ok = t.ndim == static_cast<int>(want.size());
  int i = 0;
  for (int64_t w : want) ok = ok && t.shape[i++] == w;
  if (ok) return;
  std::ostringstream ws;
  i = 0;
  for (int64_t w : want) ws << (i++ ? ", " : "") << w;
  RMOE_CHECK(ok, op << ": " << name << " is " << t.shape_str() << ", want [" << ws.str() << "]");
}

// Every expert id of idx in [0, E).
void check_experts(Tensor<const int32_t> idx, int64_t E, const char* op) {
  for (int64_t i = 0; i < idx.numel(); ++i)
    RMOE_CHECK(idx.data[i] >= 0 && idx.data[i] < E,
               op << ": idx " << idx.data[i] << " at " << i << " outside [0, " << E << ")");
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

// ---- fill, copy, add, sums ----------------------------------------------------

template <class T>
void fill(Tensor<T> y, double value) {
  check_cpu(y, "ref::fill", "y");
  for (int64_t i = 0; i < y.numel(); ++i) y.data[i] = T(value);
}

template <class T>
void copy(Tensor<T> dst, In<T> src) {
  const char* op = "ref::copy";
  check_cpu(src, op, "src");
  check_n(dst, src.numel(), op, "dst");
  for (int64_t i = 0; i < src.numel(); ++i) dst.data[i] = src.data[i];
}

template <class T>
void add(Tensor<T> y, In<T> a, In<T> b) {
  const char* op = "ref::add";
  check_cpu(y, op, "y");
  check_n(a, y.numel(), op, "a");
  check_n(b, y.numel(), op, "b");
  for (int64_t i = 0; i < y.numel(); ++i) y.data[i] = T(double(a.data[i]) + double(b.data[i]));
}

template <class T>
void add_scaled(Tensor<T> y, In<T> a, In<T> b, double alpha) {
  const char* op = "ref::add_scaled";
  check_cpu(y, op, "y");
  check_n(a, y.numel(), op, "a");
  check_n(b, y.numel(), op, "b");
  for (int64_t i = 0; i < y.numel(); ++i) y.data[i] = T(double(a.data[i]) + alpha * double(b.data[i]));
}

template <class T>
void sum(Tensor<double> out, In<T> x) {
  const char* op = "ref::sum";
  check_cpu(x, op, "x");
  check_n(out, 1, op, "out");
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) s += double(x.data[i]);
  out.data[0] = s;
}

template <class T>
void sum_squares(Tensor<double> out, In<T> x) {
  const char* op = "ref::sum_squares";
  check_cpu(x, op, "x");
  check_n(out, 1, op, "out");
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) s += double(x.data[i]) * double(x.data[i]);
  out.data[0] = s;
}

// ---- linear -------------------------------------------------------------------

template <class T>
void linear_forward(Tensor<T> y, In<T> x, In<T> W, In<T> b) {
  const char* op = "ref::linear_forward";
  check_cpu(W, op, "W");
  RMOE_CHECK(W.ndim == 2, op << ": W is " << W.shape_str() << ", want [out, in]");
  const int64_t out = W.shape[0], in = W.shape[1];
  check_cpu(x, op, "x");
  RMOE_CHECK(x.cols() == in, op << ": x is " << x.shape_str() << ", W is " << W.shape_str());
  const int64_t N = x.rows();
  check_rc(y, N, out, op, "y");
  if (!b.is_null()) check_n(b, out, op, "b");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.is_null() ? 0.0 : double(b.data[o]);
      for (int64_t i = 0; i < in; ++i)
        acc += double(x.data[n * in + i]) * double(W.data[o * in + i]);
      y.data[n * out + o] = T(acc);
    }
}

template <class T>
void linear_backward(Tensor<T> dx, Tensor<T> dW, Tensor<T> db, In<T> dy, In<T> x, In<T> W) {
  const char* op = "ref::linear_backward";
  check_cpu(W, op, "W");
  RMOE_CHECK(W.ndim == 2, op << ": W is " << W.shape_str() << ", want [out, in]");
  const int64_t out = W.shape[0], in = W.shape[1];
  check_cpu(x, op, "x");
  RMOE_CHECK(x.cols() == in, op << ": x is " << x.shape_str() << ", W is " << W.shape_str());
  const int64_t N = x.rows();
  check_rc(dy, N, out, op, "dy");
  if (!dx.is_null()) {  // dx[n,i] += sum_o dy[n,o] W[o,i]
    check_rc(dx, N, in, op, "dx");
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < in; ++i) {
        double acc = double(dx.data[n * in + i]);
        for (int64_t o = 0; o < out; ++o)
          acc += double(dy.data[n * out + o]) * double(W.data[o * in + i]);
        dx.data[n * in + i] = T(acc);
      }
  }
  if (!dW.is_null()) {  // dW[o,i] += sum_n dy[n,o] x[n,i]
    check_shape(dW, {out, in}, op, "dW");
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double acc = double(dW.data[o * in + i]);
        for (int64_t n = 0; n < N; ++n)
          acc += double(dy.data[n * out + o]) * double(x.data[n * in + i]);
        dW.data[o * in + i] = T(acc);
      }
  }
  if (!db.is_null()) {  // db[o] += sum_n dy[n,o]
    check_n(db, out, op, "db");
    for (int64_t o = 0; o < out; ++o) {
      double acc = double(db.data[o]);
      for (int64_t n = 0; n < N; ++n) acc += double(dy.data[n * out + o]);
      db.data[o] = T(acc);
    }
  }
}

// ---- embedding ----------------------------------------------------------------

template <class T>
void embedding_forward(Tensor<T> out, Tensor<const int32_t> tokens, In<T> W) {
  const char* op = "ref::embedding_forward";
  check_cpu(W, op, "W");
  check_cpu(tokens, op, "tokens");
  const int64_t V = W.rows(), d = W.cols(), N = tokens.numel();
  check_rc(out, N, d, op, "out");
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = tokens.data[n];
    RMOE_CHECK(t >= 0 && t < V,
               op << ": token " << t << " at " << n << " is outside [0, " << V << ")");
    for (int64_t j = 0; j < d; ++j) out.data[n * d + j] = W.data[t * d + j];
  }
}

template <class T>
void embedding_backward(Tensor<T> dW, Tensor<const int32_t> tokens, In<T> dout) {
  const char* op = "ref::embedding_backward";
  if (dW.is_null()) return;
  check_cpu(dW, op, "dW");
  check_cpu(tokens, op, "tokens");
  const int64_t V = dW.rows(), d = dW.cols(), N = tokens.numel();
  check_rc(dout, N, d, op, "dout");
  // Accumulate in double over the whole table, rows added in token order.
  std::vector<double> acc(dW.data, dW.data + V * d);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = tokens.data[n];
    RMOE_CHECK(t >= 0 && t < V,
               op << ": token " << t << " at " << n << " is outside [0, " << V << ")");
    for (int64_t j = 0; j < d; ++j) acc[t * d + j] += double(dout.data[n * d + j]);
  }
  for (int64_t i = 0; i < V * d; ++i) dW.data[i] = T(acc[i]);
}

// ---- rmsnorm ------------------------------------------------------------------

template <class T>
void rmsnorm_forward(Tensor<T> out, Tensor<T> rstd, In<T> x, In<T> w, double eps) {
  const char* op = "ref::rmsnorm_forward";
  check_cpu(x, op, "x");
  const int64_t N = x.rows(), d = x.cols();
  check_rc(out, N, d, op, "out");
  check_n(rstd, N, op, "rstd");
  check_n(w, d, op, "w");
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x.data + n * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(xr[j]) * double(xr[j]);
    const double r = 1.0 / std::sqrt(ss / double(d) + eps);
    rstd.data[n] = T(r);
    for (int64_t j = 0; j < d; ++j) out.data[n * d + j] = T(double(xr[j]) * r * double(w.data[j]));
  }
}

// out_j = x_j r w_j with r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / d:
//   dx_j = r w_j dout_j - (r^3 / d) x_j sum_i dout_i w_i x_i,
//   dw_j = sum_n dout_nj x_nj r_n.
template <class T>
void rmsnorm_backward(Tensor<T> dx, Tensor<T> dw, In<T> dout, In<T> x, In<T> w, In<T> rstd) {
  const char* op = "ref::rmsnorm_backward";
  check_cpu(x, op, "x");
  const int64_t N = x.rows(), d = x.cols();
  check_rc(dout, N, d, op, "dout");
  check_n(w, d, op, "w");
  check_n(rstd, N, op, "rstd");
  if (!dx.is_null()) {
    check_rc(dx, N, d, op, "dx");
    for (int64_t n = 0; n < N; ++n) {
      const double r = double(rstd.data[n]);
      double dot = 0.0;  // sum_i dout_i w_i x_i
      for (int64_t i = 0; i < d; ++i)
        dot += double(dout.data[n * d + i]) * double(w.data[i]) * double(x.data[n * d + i]);
      for (int64_t j = 0; j < d; ++j) {
        const double g = r * double(w.data[j]) * double(dout.data[n * d + j]) -
                         r * r * r / double(d) * double(x.data[n * d + j]) * dot;
        dx.data[n * d + j] = T(double(dx.data[n * d + j]) + g);
      }
    }
  }
  if (!dw.is_null()) {
    check_n(dw, d, op, "dw");
    for (int64_t j = 0; j < d; ++j) {
      double acc = double(dw.data[j]);
      for (int64_t n = 0; n < N; ++n)
        acc += double(dout.data[n * d + j]) * double(x.data[n * d + j]) * double(rstd.data[n]);
      dw.data[j] = T(acc);
    }
  }
}

// ---- l2norm, exp_scale (the cosine routers) --------------------------------------

// y_j = x_j / n, n = max(||x||, eps) (torch.nn.functional.normalize).
template <class T>
void l2norm_forward(Tensor<T> y, Tensor<T> norm, In<T> x, double eps) {
  const char* op = "ref::l2norm_forward";
  check_cpu(x, op, "x");
  const int64_t N = x.rows(), C = x.cols();
  check_rc(y, N, C, op, "y");
  check_n(norm, N, op, "norm");
  for (int64_t r = 0; r < N; ++r) {
    double ss = 0.0;
    for (int64_t j = 0; j < C; ++j) ss += double(x.data[r * C + j]) * double(x.data[r * C + j]);
    const double n = std::max(std::sqrt(ss), eps);
    norm.data[r] = T(n);
    for (int64_t j = 0; j < C; ++j) y.data[r * C + j] = T(double(x.data[r * C + j]) / n);
  }
}

// Unclamped (n = ||x|| > eps): dy_i/dx_j = delta_ij / n - x_i x_j / n^3 = (delta_ij - y_i y_j) / n.
// Clamped (n = eps, a constant): dy_i/dx_j = delta_ij / eps.
template <class T>
void l2norm_backward(Tensor<T> dx, In<T> dy, In<T> y, In<T> norm, double eps) {
  const char* op = "ref::l2norm_backward";
  if (dx.is_null()) return;
  check_cpu(y, op, "y");
  const int64_t N = y.rows(), C = y.cols();
  check_rc(dy, N, C, op, "dy");
  check_rc(dx, N, C, op, "dx");
  check_n(norm, N, op, "norm");
  for (int64_t r = 0; r < N; ++r) {
    const double n = double(norm.data[r]);
    const bool clamped = !(n > eps);
    for (int64_t j = 0; j < C; ++j) {
      double acc = 0.0;
      for (int64_t i = 0; i < C; ++i) {
        const double jac = ((i == j) ? 1.0 : 0.0) / n -
                           (clamped ? 0.0 : double(y.data[r * C + i]) * double(y.data[r * C + j]) / n);
        acc += double(dy.data[r * C + i]) * jac;
      }
      dx.data[r * C + j] = T(double(dx.data[r * C + j]) + acc);
    }
  }
}

// y = c x, c = exp(min(s, max)).
template <class T>
void exp_scale_forward(Tensor<T> y, In<T> x, In<T> log_scale, double max_log_scale) {
  const char* op = "ref::exp_scale_forward";
  check_cpu(x, op, "x");
  check_n(log_scale, 1, op, "log_scale");
  check_n(y, x.numel(), op, "y");
  const double c = std::exp(std::min(double(log_scale.data[0]), max_log_scale));
  for (int64_t i = 0; i < x.numel(); ++i) y.data[i] = T(c * double(x.data[i]));
}

// dy_i/dx_i = c; dy_i/ds = c x_i = y_i for s <= max, 0 above (the clamp holds s at max).
template <class T>
void exp_scale_backward(Tensor<T> dx, Tensor<T> dlog_scale, In<T> dy, In<T> y, In<T> log_scale,
                        double max_log_scale) {
  const char* op = "ref::exp_scale_backward";
  check_cpu(y, op, "y");
  check_n(log_scale, 1, op, "log_scale");
  check_n(dy, y.numel(), op, "dy");
  const double s = double(log_scale.data[0]);
  if (!dx.is_null()) {
    check_n(dx, y.numel(), op, "dx");
    const double c = std::exp(std::min(s, max_log_scale));
    for (int64_t i = 0; i < y.numel(); ++i) dx.data[i] = T(double(dx.data[i]) + c * double(dy.data[i]));
  }
  if (!dlog_scale.is_null()) {
    check_n(dlog_scale, 1, op, "dlog_scale");
    double acc = double(dlog_scale.data[0]);
    if (s <= max_log_scale)
      for (int64_t i = 0; i < y.numel(); ++i) acc += double(dy.data[i]) * double(y.data[i]);
    dlog_scale.data[0] = T(acc);
  }
}

// ---- rope ---------------------------------------------------------------------

namespace {
// Rotates each pair (j, j + D/2) of x[B,S,H,D] at position s by angle
// sign * s * theta^(-2j/D).
template <class T>
void rope_rotate(Tensor<T> x, double theta, double sign, const char* op) {
  check_cpu(x, op, "x");
  RMOE_CHECK(x.ndim == 4, op << ": x is " << x.shape_str() << ", want [B, S, H, D]");
  const int64_t B = x.shape[0], S = x.shape[1], H = x.shape[2], D = x.shape[3];
  RMOE_CHECK(D % 2 == 0, op << ": head dim " << D << " must be even");
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        T* v = x.data + ((b * S + s) * H + h) * D;
        for (int64_t j = 0; j < half; ++j) {
          const double angle = double(s) * std::pow(theta, -2.0 * double(j) / double(D));
          const double c = std::cos(angle), sn = sign * std::sin(angle);
          const double x0 = double(v[j]), x1 = double(v[j + half]);
          v[j] = T(x0 * c - x1 * sn);
          v[j + half] = T(x0 * sn + x1 * c);
        }
      }
}
}  // namespace

template <class T>
void rope_forward(Tensor<T> x, double theta) {
  rope_rotate(x, theta, +1.0, "ref::rope_forward");
}

template <class T>
void rope_backward(Tensor<T> dx, double theta) {
  rope_rotate(dx, theta, -1.0, "ref::rope_backward");  // the inverse (= transpose) rotation
}

// ---- attention ----------------------------------------------------------------

// Row i of (b, h): p[0..i] = softmax_j(s_ij), s_ij = q_i.k_j / sqrt(D), j <= i;
// returns lse_i = log sum_j exp(s_ij). Full rows, in double.
namespace {
template <class T>
double ref_attention_row(const T* q, const T* k, int64_t S, int64_t H, int64_t D, int64_t b, int64_t h, int64_t i,
                         std::vector<double>& p) {
  auto at = [&](int64_t s) { return ((b * S + s) * H + h) * D; };
  const double scale = 1.0 / std::sqrt(double(D));
  double mx = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    double dot = 0.0;
    for (int64_t c = 0; c < D; ++c) dot += double(q[at(i) + c]) * double(k[at(j) + c]);
    p[j] = dot * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j <= i; ++j) sum += std::exp(p[j] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t j = 0; j <= i; ++j) p[j] = std::exp(p[j] - lse);
  return lse;
}
}  // namespace

template <class T>
void attention_forward(Tensor<T> out, Tensor<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "ref::attention_forward";
  check_cpu(q, op, "q");
  RMOE_CHECK(q.ndim == 4, op << ": q is " << q.shape_str() << ", want [B, S, H, D]");
  const int64_t B = q.shape[0], S = q.shape[1], H = q.shape[2], D = q.shape[3];
  check_shape(k, {B, S, H, D}, op, "k");
  check_shape(v, {B, S, H, D}, op, "v");
  check_shape(out, {B, S, H, D}, op, "out");
  check_shape(lse, {B, H, S}, op, "lse");
  auto at = [&](int64_t b, int64_t s, int64_t h) { return ((b * S + s) * H + h) * D; };
  std::vector<double> p(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) {
        lse.data[(b * H + h) * S + i] = T(ref_attention_row(q.data, k.data, S, H, D, b, h, i, p));
        for (int64_t c = 0; c < D; ++c) {
          double acc = 0.0;
          for (int64_t j = 0; j <= i; ++j) acc += p[j] * double(v.data[at(b, j, h) + c]);
          out.data[at(b, i, h) + c] = T(acc);
        }
      }
}

// With s_ij = q_i.k_j / sqrt(D), P_ij = exp(s_ij - lse_i) (j <= i), out_i = sum_j P_ij v_j:
//   dv_j += sum_i P_ij dout_i,   dP_ij = dout_i.v_j,   D_i = dout_i.out_i (= sum_j P_ij dP_ij),
//   ds_ij = P_ij (dP_ij - D_i),
//   dq_i += sum_j ds_ij k_j / sqrt(D),   dk_j += sum_i ds_ij q_i / sqrt(D).
// P is recomputed here from the saved lse, in double; the ref backend needs no
// scratch (it keeps P and ds in its own double buffers).
template <class T>
void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> /*scratch*/, In<T> dout, In<T> out,
                        In<T> lse, In<T> q, In<T> k, In<T> v) {
  const char* op = "ref::attention_backward";
  check_cpu(q, op, "q");
  RMOE_CHECK(q.ndim == 4, op << ": q is " << q.shape_str() << ", want [B, S, H, D]");
  const int64_t B = q.shape[0], S = q.shape[1], H = q.shape[2], D = q.shape[3];
  check_shape(k, {B, S, H, D}, op, "k");
  check_shape(v, {B, S, H, D}, op, "v");
  check_shape(dout, {B, S, H, D}, op, "dout");
  check_shape(out, {B, S, H, D}, op, "out");
  check_shape(lse, {B, H, S}, op, "lse");
  if (!dq.is_null()) check_shape(dq, {B, S, H, D}, op, "dq");
  if (!dk.is_null()) check_shape(dk, {B, S, H, D}, op, "dk");
  if (!dv.is_null()) check_shape(dv, {B, S, H, D}, op, "dv");
  const double scale = 1.0 / std::sqrt(double(D));
  auto at = [&](int64_t b, int64_t s, int64_t h) { return ((b * S + s) * H + h) * D; };
  std::vector<double> P(S * S), ds(S * S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < S; ++i) {
        const double l = double(lse.data[(b * H + h) * S + i]);
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < D; ++c) dot += double(q.data[at(b, i, h) + c]) * double(k.data[at(b, j, h) + c]);
          P[i * S + j] = std::exp(dot * scale - l);
        }
      }
      if (!dv.is_null())
        for (int64_t j = 0; j < S; ++j)
          for (int64_t c = 0; c < D; ++c) {
            double acc = double(dv.data[at(b, j, h) + c]);
            for (int64_t i = j; i < S; ++i) acc += P[i * S + j] * double(dout.data[at(b, i, h) + c]);
            dv.data[at(b, j, h) + c] = T(acc);
          }
      if (dq.is_null() && dk.is_null()) continue;
      for (int64_t i = 0; i < S; ++i) {
        double Di = 0.0;
        for (int64_t c = 0; c < D; ++c) Di += double(dout.data[at(b, i, h) + c]) * double(out.data[at(b, i, h) + c]);
        for (int64_t j = 0; j <= i; ++j) {
          double dP = 0.0;
          for (int64_t c = 0; c < D; ++c) dP += double(dout.data[at(b, i, h) + c]) * double(v.data[at(b, j, h) + c]);
          ds[i * S + j] = P[i * S + j] * (dP - Di);
        }
      }
      if (!dq.is_null())
        for (int64_t i = 0; i < S; ++i)
          for (int64_t c = 0; c < D; ++c) {
            double acc = 0.0;
            for (int64_t j = 0; j <= i; ++j) acc += ds[i * S + j] * double(k.data[at(b, j, h) + c]);
            dq.data[at(b, i, h) + c] = T(double(dq.data[at(b, i, h) + c]) + acc * scale);
          }
      if (!dk.is_null())
        for (int64_t j = 0; j < S; ++j)
          for (int64_t c = 0; c < D; ++c) {
            double acc = 0.0;
            for (int64_t i = j; i < S; ++i) acc += ds[i * S + j] * double(q.data[at(b, i, h) + c]);
            dk.data[at(b, j, h) + c] = T(double(dk.data[at(b, j, h) + c]) + acc * scale);
          }
    }
}

// ---- swiglu, tanh -------------------------------------------------------------

template <class T>
void swiglu_forward(Tensor<T> h, In<T> a, In<T> b) {
  const char* op = "ref::swiglu_forward";
  check_cpu(a, op, "a");
  const int64_t N = a.rows(), f = a.cols();
  check_rc(b, N, f, op, "b");
  check_rc(h, N, f, op, "h");
  for (int64_t i = 0; i < N * f; ++i) {
    const double av = double(a.data[i]);
    h.data[i] = T(av * sigmoid(av) * double(b.data[i]));
  }
}

// h = a s(a) b:  dh/da = b (s + a s (1 - s)),  dh/db = a s.
template <class T>
void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh, In<T> a, In<T> b) {
  const char* op = "ref::swiglu_backward";
  check_cpu(a, op, "a");
  const int64_t N = a.rows(), f = a.cols();
  check_rc(b, N, f, op, "b");
  check_rc(dh, N, f, op, "dh");
  if (!da.is_null()) check_rc(da, N, f, op, "da");
  if (!db.is_null()) check_rc(db, N, f, op, "db");
  for (int64_t i = 0; i < N * f; ++i) {
    const double av = double(a.data[i]), bv = double(b.data[i]), g = double(dh.data[i]);
    const double s = sigmoid(av);
    if (!da.is_null()) da.data[i] = T(double(da.data[i]) + g * bv * (s + av * s * (1.0 - s)));
    if (!db.is_null()) db.data[i] = T(double(db.data[i]) + g * av * s);
  }
}

template <class T>
void tanh_forward(Tensor<T> y, In<T> x) {
  const char* op = "ref::tanh_forward";
  check_cpu(x, op, "x");
  check_rc(y, x.rows(), x.cols(), op, "y");
  for (int64_t i = 0; i < x.numel(); ++i) y.data[i] = T(std::tanh(double(x.data[i])));
}

template <class T>
void tanh_backward(Tensor<T> dx, In<T> dy, In<T> y) {
  const char* op = "ref::tanh_backward";
  if (dx.is_null()) return;
  check_cpu(y, op, "y");
  check_rc(dy, y.rows(), y.cols(), op, "dy");
  check_rc(dx, y.rows(), y.cols(), op, "dx");
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double yv = double(y.data[i]);
    dx.data[i] = T(double(dx.data[i]) + double(dy.data[i]) * (1.0 - yv * yv));
  }
}

// gelu(x) = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2 (the
// form without cancellation for x << 0); gelu'(x) = Phi(x) + x phi(x),
// phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
template <class T>
void gelu_forward(Tensor<T> y, In<T> x) {
  const char* op = "ref::gelu_forward";
  check_cpu(x, op, "x");
  check_rc(y, x.rows(), x.cols(), op, "y");
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = double(x.data[i]);
    y.data[i] = T(v * 0.5 * std::erfc(-v / std::sqrt(2.0)));
  }
}

template <class T>
void gelu_backward(Tensor<T> dx, In<T> dy, In<T> x) {
  const char* op = "ref::gelu_backward";
  if (dx.is_null()) return;
  check_cpu(x, op, "x");
  check_rc(dy, x.rows(), x.cols(), op, "dy");
  check_rc(dx, x.rows(), x.cols(), op, "dx");
  const double pi = std::acos(-1.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = double(x.data[i]);
    const double Phi = 0.5 * std::erfc(-v / std::sqrt(2.0)), phi = std::exp(-0.5 * v * v) / std::sqrt(2.0 * pi);
    dx.data[i] = T(double(dx.data[i]) + double(dy.data[i]) * (Phi + v * phi));
  }
}

// ---- GRU cell (pointwise part, PyTorch GRUCell) -------------------------------
// r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r gh_n),
// hnew = (1 - z) n + z h.

template <class T>
void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h) {
  const char* op = "ref::gru_forward";
  check_cpu(h, op, "h");
  const int64_t N = h.rows(), p = h.cols();
  check_rc(gi, N, 3 * p, op, "gi");
  check_rc(gh, N, 3 * p, op, "gh");
  check_rc(hnew, N, p, op, "hnew");
  check_rc(gates, N, 3 * p, op, "gates");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < p; ++j) {
      const T* i3 = gi.data + n * 3 * p;
      const T* h3 = gh.data + n * 3 * p;
      const double r = sigmoid(double(i3[j]) + double(h3[j]));
      const double z = sigmoid(double(i3[p + j]) + double(h3[p + j]));
      const double nn = std::tanh(double(i3[2 * p + j]) + r * double(h3[2 * p + j]));
      hnew.data[n * p + j] = T((1.0 - z) * nn + z * double(h.data[n * p + j]));
      gates.data[n * 3 * p + j] = T(r);
      gates.data[n * 3 * p + p + j] = T(z);
      gates.data[n * 3 * p + 2 * p + j] = T(nn);
    }
}

// From the saved (r, z, n), with g = dhnew:
//   dn = g (1 - z),  dz = g (h - n),  dh += g z,
//   d(pre_n) = dn (1 - n^2), d(pre_z) = dz z (1 - z), d(pre_r) = d(pre_n) gh_n r (1 - r);
//   dgi = (d pre_r, d pre_z, d pre_n),  dgh = (d pre_r, d pre_z, d pre_n * r).
template <class T>
void gru_backward(Tensor<T> dgi, Tensor<T> dgh, Tensor<T> dh, In<T> dhnew, In<T> gates, In<T> gh,
                  In<T> h) {
  const char* op = "ref::gru_backward";
  check_cpu(h, op, "h");
  const int64_t N = h.rows(), p = h.cols();
  check_rc(dhnew, N, p, op, "dhnew");
  check_rc(gates, N, 3 * p, op, "gates");
  check_rc(gh, N, 3 * p, op, "gh");
  if (!dgi.is_null()) check_rc(dgi, N, 3 * p, op, "dgi");
  if (!dgh.is_null()) check_rc(dgh, N, 3 * p, op, "dgh");
  if (!dh.is_null()) check_rc(dh, N, p, op, "dh");
  auto add = [](Tensor<T>& t, int64_t i, double g) {
    if (!t.is_null()) t.data[i] = T(double(t.data[i]) + g);
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < p; ++j) {
      const int64_t o = n * 3 * p;
      const double r = double(gates.data[o + j]), z = double(gates.data[o + p + j]),
                   nn = double(gates.data[o + 2 * p + j]);
      const double g = double(dhnew.data[n * p + j]), hv = double(h.data[n * p + j]);
      const double ghn = double(gh.data[o + 2 * p + j]);
      const double dpre_n = g * (1.0 - z) * (1.0 - nn * nn);
      const double dpre_z = g * (hv - nn) * z * (1.0 - z);
      const double dpre_r = dpre_n * ghn * r * (1.0 - r);
      add(dgi, o + j, dpre_r);
      add(dgi, o + p + j, dpre_z);
      add(dgi, o + 2 * p + j, dpre_n);
      add(dgh, o + j, dpre_r);
      add(dgh, o + p + j, dpre_z);
      add(dgh, o + 2 * p + j, dpre_n * r);
      add(dh, n * p + j, g * z);
    }
}

// ---- LSTM cell (pointwise part, PyTorch LSTMCell) ------------------------------
// With a = gi + gh split in quarters (i, f, g, o):
// i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o),
// cnew = f c + i g, hnew = o tanh(cnew).

template <class T>
void lstm_forward(Tensor<T> hnew, Tensor<T> cnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> c) {
  const char* op = "ref::lstm_forward";
  check_cpu(c, op, "c");
  const int64_t N = c.rows(), p = c.cols();
  check_rc(gi, N, 4 * p, op, "gi");
  check_rc(gh, N, 4 * p, op, "gh");
  check_rc(hnew, N, p, op, "hnew");
  check_rc(cnew, N, p, op, "cnew");
  check_rc(gates, N, 4 * p, op, "gates");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < p; ++j) {
      double a[4];
      for (int q = 0; q < 4; ++q)
        a[q] = double(gi.data[n * 4 * p + q * p + j]) + double(gh.data[n * 4 * p + q * p + j]);
      const double i = sigmoid(a[0]), f = sigmoid(a[1]), g = std::tanh(a[2]), o = sigmoid(a[3]);
      const double cn = f * double(c.data[n * p + j]) + i * g;
      cnew.data[n * p + j] = T(cn);
      hnew.data[n * p + j] = T(o * std::tanh(cn));
      const double act[4] = {i, f, g, o};
      for (int q = 0; q < 4; ++q) gates.data[n * 4 * p + q * p + j] = T(act[q]);
    }
}

// Both hnew = o tanh(cnew) and cnew reach the loss, so with t = tanh(cnew):
//   dcnew_total = dcnew + dhnew o (1 - t^2),
//   d a_i = dcnew_total g i (1 - i),  d a_f = dcnew_total c f (1 - f),
//   d a_g = dcnew_total i (1 - g^2),  d a_o = dhnew t o (1 - o),
//   dc += dcnew_total f.
template <class T>
void lstm_backward(Tensor<T> dpre, Tensor<T> dc, In<T> dhnew, In<T> dcnew, In<T> gates, In<T> c, In<T> cnew) {
  const char* op = "ref::lstm_backward";
  check_cpu(c, op, "c");
  const int64_t N = c.rows(), p = c.cols();
  check_rc(dhnew, N, p, op, "dhnew");
  check_rc(dcnew, N, p, op, "dcnew");
  check_rc(cnew, N, p, op, "cnew");
  check_rc(gates, N, 4 * p, op, "gates");
  if (!dpre.is_null()) check_rc(dpre, N, 4 * p, op, "dpre");
  if (!dc.is_null()) check_rc(dc, N, p, op, "dc");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < p; ++j) {
      const int64_t o4 = n * 4 * p;
      const double i = double(gates.data[o4 + j]), f = double(gates.data[o4 + p + j]),
                   g = double(gates.data[o4 + 2 * p + j]), o = double(gates.data[o4 + 3 * p + j]);
      const double t = std::tanh(double(cnew.data[n * p + j]));
      const double dh = double(dhnew.data[n * p + j]);
      const double dct = double(dcnew.data[n * p + j]) + dh * o * (1.0 - t * t);
      const double da[4] = {dct * g * i * (1.0 - i), dct * double(c.data[n * p + j]) * f * (1.0 - f),
                            dct * i * (1.0 - g * g), dh * t * o * (1.0 - o)};
      if (!dpre.is_null())
        for (int q = 0; q < 4; ++q) dpre.data[o4 + q * p + j] = T(double(dpre.data[o4 + q * p + j]) + da[q]);
      if (!dc.is_null()) dc.data[n * p + j] = T(double(dc.data[n * p + j]) + dct * f);
    }
}

// ---- router head --------------------------------------------------------------

template <class T>
void router_topk_forward(Tensor<T> probs, Tensor<int32_t> idx, Tensor<T> gate, Tensor<T> lse,
                         In<T> logits) {
  const char* op = "ref::router_topk_forward";
  check_cpu(logits, op, "logits");
  const int64_t N = logits.rows(), E = logits.cols();
  check_cpu(idx, op, "idx");
  const int64_t k = idx.cols();
  RMOE_CHECK(k >= 1 && k <= E, op << ": top-k " << k << " with " << E << " experts");
  check_rc(probs, N, E, op, "probs");
  check_rc(idx, N, k, op, "idx");
  check_rc(gate, N, k, op, "gate");
  check_n(lse, N, op, "lse");
  std::vector<bool> taken(E);
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits.data + n * E;
    T* pr = probs.data + n * E;
    double mx = -INFINITY;
    for (int64_t e = 0; e < E; ++e) mx = std::max(mx, double(l[e]));
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(double(l[e]) - mx);
    const double lz = mx + std::log(sum);
    lse.data[n] = T(lz);
    for (int64_t e = 0; e < E; ++e) pr[e] = T(std::exp(double(l[e]) - lz));
    // Top-k on the stored probabilities: the largest untaken one each time,
    // the lower expert on a tie (strict >).
    std::fill(taken.begin(), taken.end(), false);
    double chosen = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (!taken[e] && (best < 0 || pr[e] > pr[best])) best = e;
      taken[best] = true;
      idx.data[n * k + j] = int32_t(best);
      chosen += double(pr[best]);
    }
    for (int64_t j = 0; j < k; ++j)
      gate.data[n * k + j] = T(double(pr[idx.data[n * k + j]]) / chosen);
  }
}

// Per row, with p the saved probs, c = the k chosen experts, S = sum_c p:
//   gate_j = p_cj / S  =>  dp_cj += (dgate_j - sum_l dgate_l gate_l) / S,
//   dp_e += dprobs_extra[e],
//   dlogit_e = p_e (dp_e - sum_e' p_e' dp_e') + dlse_scale * 2 lse p_e.
template <class T>
void router_topk_backward(Tensor<T> dlogits, In<T> dgate, In<T> dprobs_extra, double dlse_scale,
                          In<T> probs, Tensor<const int32_t> idx, In<T> lse) {
  const char* op = "ref::router_topk_backward";
  if (dlogits.is_null()) return;
  check_cpu(probs, op, "probs");
  const int64_t N = probs.rows(), E = probs.cols();
  check_cpu(idx, op, "idx");
  const int64_t k = idx.cols();
  check_rc(idx, N, k, op, "idx");
  check_rc(dlogits, N, E, op, "dlogits");
  if (!dgate.is_null()) check_rc(dgate, N, k, op, "dgate");
  if (!dprobs_extra.is_null()) check_n(dprobs_extra, E, op, "dprobs_extra");
  if (dlse_scale != 0.0) check_n(lse, N, op, "lse");
  check_experts(idx, E, op);
  std::vector<double> dp(E);
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs.data + n * E;
    for (int64_t e = 0; e < E; ++e)
      dp[e] = dprobs_extra.is_null() ? 0.0 : double(dprobs_extra.data[e]);
    if (!dgate.is_null()) {
      double S = 0.0;
      for (int64_t j = 0; j < k; ++j) S += double(p[idx.data[n * k + j]]);
      double dot = 0.0;  // sum_l dgate_l gate_l
      for (int64_t j = 0; j < k; ++j)
        dot += double(dgate.data[n * k + j]) * double(p[idx.data[n * k + j]]) / S;
      for (int64_t j = 0; j < k; ++j)
        dp[idx.data[n * k + j]] += (double(dgate.data[n * k + j]) - dot) / S;
    }
    double pdp = 0.0;
    for (int64_t e = 0; e < E; ++e) pdp += double(p[e]) * dp[e];
    const double dlse = dlse_scale == 0.0 ? 0.0 : dlse_scale * 2.0 * double(lse.data[n]);
    for (int64_t e = 0; e < E; ++e) {
      const double g = double(p[e]) * (dp[e] - pdp) + dlse * double(p[e]);
      dlogits.data[n * E + e] = T(double(dlogits.data[n * E + e]) + g);
    }
  }
}

// gate[n,j] = probs[n, idx[n,j]] / sum_l probs[n, idx[n,l]].
template <class T>
void router_gates(Tensor<T> gate, In<T> probs, Tensor<const int32_t> idx) {
  const char* op = "ref::router_gates";
  check_cpu(probs, op, "probs");
  check_cpu(idx, op, "idx");
  const int64_t N = probs.rows(), E = probs.cols(), k = idx.cols();
  check_rc(idx, N, k, op, "idx");
  check_rc(gate, N, k, op, "gate");
  check_experts(idx, E, op);
  for (int64_t n = 0; n < N; ++n) {
    double S = 0.0;
    for (int64_t j = 0; j < k; ++j) S += double(probs.data[n * E + idx.data[n * k + j]]);
    for (int64_t j = 0; j < k; ++j) gate.data[n * k + j] = T(double(probs.data[n * E + idx.data[n * k + j]]) / S);
  }
}

// stats = [count_e | sum_n probs[n,e] | sum_n lse[n]^2 | N].
template <class T>
void router_stats(Tensor<double> stats, In<T> probs, In<T> lse, Tensor<const int32_t> idx) {
  const char* op = "ref::router_stats";
  check_cpu(probs, op, "probs");
  check_cpu(idx, op, "idx");
  const int64_t N = probs.rows(), E = probs.cols();
  check_n(stats, 2 * E + 2, op, "stats");
  check_n(lse, N, op, "lse");
  RMOE_CHECK(idx.rows() == N, op << ": idx is " << idx.shape_str() << ", want " << N << " rows");
  check_experts(idx, E, op);
  for (int64_t e = 0; e < E; ++e) {
    double count = 0.0, psum = 0.0;
    for (int64_t i = 0; i < idx.numel(); ++i) count += idx.data[i] == e ? 1.0 : 0.0;
    for (int64_t n = 0; n < N; ++n) psum += double(probs.data[n * E + e]);
    stats.data[e] = count;
    stats.data[E + e] = psum;
  }
  double z = 0.0;
  for (int64_t n = 0; n < N; ++n) z += double(lse.data[n]) * double(lse.data[n]);
  stats.data[2 * E] = z;
  stats.data[2 * E + 1] = double(N);
}

// d/dprobs[n,e] of scale * sum_e f_e * (sum_n probs[n,e]) / Tg = scale * f_e / Tg.
template <class T>
void load_balance_backward(Tensor<T> dprobs, Tensor<const double> stats, int64_t topk, double scale) {
  const char* op = "ref::load_balance_backward";
  if (dprobs.is_null()) return;
  check_cpu(dprobs, op, "dprobs");
  const int64_t E = dprobs.numel();
  check_n(stats, 2 * E + 2, op, "stats");
  const double Tg = stats.data[2 * E + 1];
  for (int64_t e = 0; e < E; ++e) {
    const double f = stats.data[e] / (Tg * double(topk));
    dprobs.data[e] = T(double(dprobs.data[e]) + scale * f / Tg);
  }
}

// Expert by expert, the kept slots (t, j) choosing it in token order.
void moe_route_plan(Tensor<int64_t> offsets, Tensor<int32_t> slot_token, Tensor<int32_t> slot_of,
                    Tensor<const int32_t> idx, Tensor<const int32_t> keep) {
  const char* op = "ref::moe_route_plan";
  check_cpu(idx, op, "idx");
  check_cpu(offsets, op, "offsets");
  const int64_t n_tok = idx.rows(), k = idx.cols(), E = offsets.numel() - 1;
  RMOE_CHECK(E >= 1, op << ": offsets is " << offsets.shape_str() << ", want E + 1 >= 2 elements");
  check_n(slot_token, n_tok * k, op, "slot_token");
  check_n(slot_of, n_tok * k, op, "slot_of");
  check_experts(idx, E, op);
  if (!keep.is_null()) {
    check_n(keep, n_tok * k, op, "keep");
    for (int64_t s = 0; s < n_tok * k; ++s)
      RMOE_CHECK(keep.data[s] == 0 || keep.data[s] == 1, op << ": keep[" << s << "] = " << keep.data[s]
                                                            << ", outside [0, 2) (0 = dropped, 1 = kept)");
  }
  int64_t slot = 0;
  for (int64_t e = 0; e < E; ++e) {
    offsets.data[e] = slot;
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (idx.data[t * k + j] == e) {
          if (!keep.is_null() && keep.data[t * k + j] == 0) {
            slot_of.data[t * k + j] = -1;
            continue;
          }
          slot_token.data[slot] = int32_t(t);
          slot_of.data[t * k + j] = int32_t(slot);
          ++slot;
        }
  }
  offsets.data[E] = slot;
}

// ---- capacity --------------------------------------------------------------------

template <class T>
void moe_slot_keys(Tensor<double> keys, In<T> probs, Tensor<const int32_t> idx) {
  const char* op = "ref::moe_slot_keys";
  check_cpu(probs, op, "probs");
  const int64_t n_tok = idx.rows(), k = idx.cols(), E = probs.cols();
  check_rc(probs, n_tok, E, op, "probs");
  check_n(keys, 2 * n_tok * k, op, "keys");
  check_experts(idx, E, op);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = idx.data[t * k + j];
      keys.data[2 * (t * k + j)] = double(e);
      keys.data[2 * (t * k + j) + 1] = double(probs.data[t * E + e]);
    }
}

// Slot g is kept when fewer than `capacity` slots of its expert beat it
// (higher probability, or equal probability and a lower row): a count per
// slot, quadratic, independent of the cpu backend's sort.
void moe_capacity_keep(Tensor<int32_t> keep, Tensor<int64_t> dropped, Tensor<const double> keys, int64_t first,
                       int64_t capacity, int64_t num_experts) {
  const char* op = "ref::moe_capacity_keep";
  RMOE_CHECK(keys.numel() % 2 == 0, op << ": keys is " << keys.shape_str() << ", want [G, 2]");
  const int64_t G = keys.numel() / 2, n = keep.numel();
  RMOE_CHECK(first >= 0 && first + n <= G, op << ": this rank's slots [" << first << ", " << first + n
                                               << ") are not inside the " << G << " keys");
  check_n(dropped, 1, op, "dropped");
  for (int64_t g = 0; g < G; ++g) {
    const double e = keys.data[2 * g];
    RMOE_CHECK(e >= 0 && e < double(num_experts) && e == double(int64_t(e)),
               op << ": keys[" << g << "] asks for expert " << e << ", outside [0, " << num_experts << ")");
  }
  int64_t n_dropped = 0;
  for (int64_t g = 0; g < G; ++g) {
    const double e = keys.data[2 * g], p = keys.data[2 * g + 1];
    int64_t better = 0;
    for (int64_t h = 0; h < G; ++h) {
      if (h == g || keys.data[2 * h] != e) continue;
      const double q = keys.data[2 * h + 1];
      if (q > p || (q == p && h < g)) ++better;
    }
    const bool kept = better < capacity;
    if (!kept) ++n_dropped;
    if (g >= first && g < first + n) keep.data[g - first] = kept ? 1 : 0;
  }
  dropped.data[0] = n_dropped;
}

// ---- experts (SwiGLU FFN per expert over its sorted rows) ---------------------

namespace {
void check_offsets(Tensor<const int64_t> offsets, int64_t E, int64_t N, const char* op) {
  check_n(offsets, E + 1, op, "offsets");
  RMOE_CHECK(offsets.data[0] == 0 && offsets.data[E] == N, op << ": offsets run " << offsets.data[0]
                                                              << ".." << offsets.data[E]
                                                              << ", want 0.." << N);
  for (int64_t e = 0; e < E; ++e)
    RMOE_CHECK(offsets.data[e] <= offsets.data[e + 1], op << ": offsets decrease at expert " << e << " ("
                                                              << offsets.data[e] << " > " << offsets.data[e + 1]
                                                              << "; rows [0, " << N << "))");
}
}  // namespace

namespace {
struct ExpertDims {
  int64_t E, f, d, N;
};
// The arguments both experts ops share: weights W1, W3 [E,f,d], W2 [E,d,f],
// rows xs [N,d] with their offsets, and a, b, h [N,f].
template <class T>
ExpertDims check_experts(In<T> xs, Tensor<const int64_t> offsets, In<T> a, In<T> b, In<T> h, In<T> W1, In<T> W3,
                         In<T> W2, const char* op) {
  check_cpu(W1, op, "W1");
  RMOE_CHECK(W1.ndim == 3, op << ": W1 is " << W1.shape_str() << ", want [E, f, d]");
  const int64_t E = W1.shape[0], f = W1.shape[1], d = W1.shape[2];
  check_shape(W3, {E, f, d}, op, "W3");
  check_shape(W2, {E, d, f}, op, "W2");
  check_cpu(xs, op, "xs");
  const int64_t N = xs.rows();
  check_rc(xs, N, d, op, "xs");
  check_rc(a, N, f, op, "a");
  check_rc(b, N, f, op, "b");
  check_rc(h, N, f, op, "h");
  check_offsets(offsets, E, N, op);
  return {E, f, d, N};
}
}  // namespace

template <class T>
void experts_forward(Tensor<T> ys, Tensor<T> a, Tensor<T> b, Tensor<T> h, In<T> xs,
                     Tensor<const int64_t> offsets, In<T> W1, In<T> W3, In<T> W2) {
  const char* op = "ref::experts_forward";
  const auto [E, f, d, N] = check_experts<T>(xs, offsets, a, b, h, W1, W3, W2, op);
  check_rc(ys, N, d, op, "ys");
  std::vector<double> hrow(f);
  for (int64_t e = 0; e < E; ++e) {
    const T* w1 = W1.data + e * f * d;
    const T* w3 = W3.data + e * f * d;
    const T* w2 = W2.data + e * d * f;
    for (int64_t n = offsets.data[e]; n < offsets.data[e + 1]; ++n) {
      const T* x = xs.data + n * d;
      for (int64_t c = 0; c < f; ++c) {
        double av = 0.0, bv = 0.0;
        for (int64_t i = 0; i < d; ++i) {
          av += double(w1[c * d + i]) * double(x[i]);
          bv += double(w3[c * d + i]) * double(x[i]);
        }
        hrow[c] = av * sigmoid(av) * bv;
        a.data[n * f + c] = T(av);
        b.data[n * f + c] = T(bv);
        h.data[n * f + c] = T(hrow[c]);
      }
      for (int64_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (int64_t c = 0; c < f; ++c) acc += double(w2[i * f + c]) * hrow[c];
        ys.data[n * d + i] = T(acc);
      }
    }
  }
}

// Per expert e over its rows n, from the saved a, b, h:
//   dh = dys W2_e,  dW2_e += dys^T h,
//   da = dh b (s + a s (1 - s)),  db = dh a s   (s = sigmoid(a)),
//   dW1_e += da^T xs,  dW3_e += db^T xs,  dxs += da W1_e + db W3_e.
// The ref backend keeps dh, da, db in its own double buffers (scratch unused).
template <class T>
void experts_backward(Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2,
                      Tensor<T> /*scratch_da*/, Tensor<T> /*scratch_db*/, In<T> dys, In<T> xs,
                      Tensor<const int64_t> offsets, In<T> a, In<T> b, In<T> h, In<T> W1, In<T> W3,
                      In<T> W2) {
  const char* op = "ref::experts_backward";
  const auto [E, f, d, N] = check_experts<T>(xs, offsets, a, b, h, W1, W3, W2, op);
  check_rc(dys, N, d, op, "dys");
  if (!dxs.is_null()) check_rc(dxs, N, d, op, "dxs");
  if (!dW1.is_null()) check_shape(dW1, {E, f, d}, op, "dW1");
  if (!dW3.is_null()) check_shape(dW3, {E, f, d}, op, "dW3");
  if (!dW2.is_null()) check_shape(dW2, {E, d, f}, op, "dW2");
  std::vector<double> da(N * f), db(N * f);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n0 = offsets.data[e], n1 = offsets.data[e + 1];
    const T* w1 = W1.data + e * f * d;
    const T* w3 = W3.data + e * f * d;
    const T* w2 = W2.data + e * d * f;
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t c = 0; c < f; ++c) {
        double dh = 0.0;
        for (int64_t i = 0; i < d; ++i) dh += double(dys.data[n * d + i]) * double(w2[i * f + c]);
        const double av = double(a.data[n * f + c]), bv = double(b.data[n * f + c]);
        const double s = sigmoid(av);
        da[n * f + c] = dh * bv * (s + av * s * (1.0 - s));
        db[n * f + c] = dh * av * s;
      }
    if (!dW2.is_null())
      for (int64_t i = 0; i < d; ++i)
        for (int64_t c = 0; c < f; ++c) {
          T& g = dW2.data[e * d * f + i * f + c];
          double acc = double(g);
          for (int64_t n = n0; n < n1; ++n)
            acc += double(dys.data[n * d + i]) * double(h.data[n * f + c]);
          g = T(acc);
        }
    for (int64_t c = 0; c < f; ++c)
      for (int64_t i = 0; i < d; ++i) {
        if (!dW1.is_null()) {
          T& g = dW1.data[e * f * d + c * d + i];
          double acc = double(g);
          for (int64_t n = n0; n < n1; ++n) acc += da[n * f + c] * double(xs.data[n * d + i]);
          g = T(acc);
        }
        if (!dW3.is_null()) {
          T& g = dW3.data[e * f * d + c * d + i];
          double acc = double(g);
          for (int64_t n = n0; n < n1; ++n) acc += db[n * f + c] * double(xs.data[n * d + i]);
          g = T(acc);
        }
      }
    if (!dxs.is_null())
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t i = 0; i < d; ++i) {
          double acc = double(dxs.data[n * d + i]);
          for (int64_t c = 0; c < f; ++c)
            acc += da[n * f + c] * double(w1[c * d + i]) + db[n * f + c] * double(w3[c * d + i]);
          dxs.data[n * d + i] = T(acc);
        }
  }
}

// ---- dispatch / combine -------------------------------------------------------

template <class T>
void moe_gather(Tensor<T> xs, In<T> x, Tensor<const int32_t> slot_token) {
  const char* op = "ref::moe_gather";
  check_cpu(x, op, "x");
  check_cpu(slot_token, op, "slot_token");
  const int64_t n_tok = x.rows(), d = x.cols(), N = slot_token.numel();
  check_rc(xs, N, d, op, "xs");
  for (int64_t s = 0; s < N; ++s) {
    const int64_t t = slot_token.data[s];
    RMOE_CHECK(t >= 0 && t < n_tok,
               op << ": slot " << s << " -> token " << t << " outside [0, " << n_tok << ")");
    for (int64_t i = 0; i < d; ++i) xs.data[s * d + i] = x.data[t * d + i];
  }
}

namespace {
void check_slot_of(Tensor<const int32_t> slot_of, int64_t n_tok, int64_t nslots, const char* op) {
  check_cpu(slot_of, op, "slot_of");
  RMOE_CHECK(slot_of.rows() == n_tok,
             op << ": slot_of is " << slot_of.shape_str() << ", want " << n_tok << " rows");
  for (int64_t i = 0; i < slot_of.numel(); ++i)
    RMOE_CHECK(slot_of.data[i] >= -1 && slot_of.data[i] < nslots,
               op << ": slot " << slot_of.data[i] << " outside [0, " << nslots << ") and not -1 (dropped)");
}
}  // namespace

template <class T>
void moe_combine(Tensor<T> out, In<T> ys, Tensor<const int32_t> slot_of, In<T> gate) {
  const char* op = "ref::moe_combine";
  check_cpu(out, op, "out");
  check_cpu(ys, op, "ys");
  const int64_t n_tok = out.rows(), d = out.cols();
  check_rc(ys, ys.rows(), d, op, "ys");
  check_slot_of(slot_of, n_tok, ys.rows(), op);
  const int64_t k = slot_of.cols();
  check_rc(gate, n_tok, k, op, "gate");
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t i = 0; i < d; ++i) {
      double acc = 0.0;
      for (int64_t j = 0; j < k; ++j)
        if (slot_of.data[t * k + j] >= 0)
          acc += double(gate.data[t * k + j]) * double(ys.data[slot_of.data[t * k + j] * d + i]);
      out.data[t * d + i] = T(acc);
    }
}

template <class T>
void moe_combine_backward(Tensor<T> dys, Tensor<T> dgate, In<T> dout, In<T> ys,
                          Tensor<const int32_t> slot_of, In<T> gate) {
  const char* op = "ref::moe_combine_backward";
  check_cpu(dout, op, "dout");
  check_cpu(ys, op, "ys");
  const int64_t n_tok = dout.rows(), d = dout.cols(), nslots = ys.rows();
  check_rc(ys, nslots, d, op, "ys");
  check_slot_of(slot_of, n_tok, nslots, op);
  const int64_t k = slot_of.cols();
  check_rc(gate, n_tok, k, op, "gate");
  if (!dys.is_null()) {
    check_rc(dys, nslots, d, op, "dys");
    std::vector<double> acc(dys.data, dys.data + nslots * d);
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t s = slot_of.data[t * k + j];
        if (s < 0) continue;
        for (int64_t i = 0; i < d; ++i)
          acc[s * d + i] += double(gate.data[t * k + j]) * double(dout.data[t * d + i]);
      }
    for (int64_t i = 0; i < nslots * d; ++i) dys.data[i] = T(acc[i]);
  }
  if (!dgate.is_null()) {
    check_rc(dgate, n_tok, k, op, "dgate");
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t s = slot_of.data[t * k + j];
        if (s < 0) continue;
        double acc = double(dgate.data[t * k + j]);
        for (int64_t i = 0; i < d; ++i)
          acc += double(dout.data[t * d + i]) * double(ys.data[s * d + i]);
        dgate.data[t * k + j] = T(acc);
      }
  }
}

template <class T>
void moe_gather_backward(Tensor<T> dx, In<T> dxs, Tensor<const int32_t> slot_of) {
  const char* op = "ref::moe_gather_backward";
  if (dx.is_null()) return;
  check_cpu(dx, op, "dx");
  check_cpu(dxs, op, "dxs");
  const int64_t n_tok = dx.rows(), d = dx.cols();
  check_rc(dxs, dxs.rows(), d, op, "dxs");
  check_slot_of(slot_of, n_tok, dxs.rows(), op);
  const int64_t k = slot_of.cols();
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t i = 0; i < d; ++i) {
      double acc = double(dx.data[t * d + i]);
      for (int64_t j = 0; j < k; ++j)
        if (slot_of.data[t * k + j] >= 0) acc += double(dxs.data[slot_of.data[t * k + j] * d + i]);
      dx.data[t * d + i] = T(acc);
    }
}

// ---- cross-entropy ------------------------------------------------------------

template <class T>
void cross_entropy(Tensor<T> losses, Tensor<T> dlogits, In<T> logits, Tensor<const int32_t> targets,
                   double dloss_scale) {
  const char* op = "ref::cross_entropy";
  check_cpu(logits, op, "logits");
  const int64_t N = logits.rows(), V = logits.cols();
  check_n(targets, N, op, "targets");
  check_n(losses, N, op, "losses");
  if (!dlogits.is_null()) check_rc(dlogits, N, V, op, "dlogits");
  for (int64_t n = 0; n < N; ++n) {
    const T* l = logits.data + n * V;
    const int64_t t = targets.data[n];
    RMOE_CHECK(t >= 0 && t < V,
               op << ": target " << t << " at " << n << " is outside [0, " << V << ")");
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(l[v]));
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(l[v]) - mx);
    const double lz = mx + std::log(sum);
    losses.data[n] = T(lz - double(l[t]));
    if (!dlogits.is_null())
      for (int64_t v = 0; v < V; ++v) {
        const double g = (std::exp(double(l[v]) - lz) - (v == t ? 1.0 : 0.0)) * dloss_scale;
        dlogits.data[n * V + v] = T(double(dlogits.data[n * V + v]) + g);
      }
  }
}

// ---- explicit instantiations ----------------------------------------------------

RMOE_INSTANTIATE_OPS(RMOE_OPS)

}  // namespace rmoe::ref
