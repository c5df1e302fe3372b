// pointwise.h — element- and row-wise math written once, for every backend.
//
// These inline functions are the single definition of each scalar formula.
// The CPU kernels call them in OpenMP loops; the CUDA kernels call the same
// functions from device code (RMOE_HD expands to __host__ __device__ there).
// The ref backend deliberately does NOT use them: it is the independent oracle.
#pragma once
#include <cmath>

#include "rmoe/kernels/host_device.h"  // RMOE_HD

namespace rmoe::pw {

// In float through hd::fexp (within 2 ulp of exp, and it vectorises: the
// experts' SwiGLU loops run it over every slot's f values); exp in double.
template <class T> RMOE_HD T sigmoid(T x) { return T(1) / (T(1) + hd::fexp(-x)); }

// SwiGLU: h = silu(a) * b.
template <class T> RMOE_HD T swiglu(T a, T b) { return a * sigmoid(a) * b; }
// Gradients of h = silu(a) * b given dh.
template <class T> RMOE_HD void swiglu_grad(T a, T b, T dh, T& da, T& db) {
  T s = sigmoid(a);
  T silu = a * s;
  db = dh * silu;
  da = dh * b * (s + silu * (T(1) - s));
}

// GRU cell pointwise part. gi = W_i x + b_i, gh = W_h h + b_h, each split in
// (r, z, n) thirds. Returns h' and the gates needed by the backward pass.
template <class T>
RMOE_HD T gru_cell(T gi_r, T gi_z, T gi_n, T gh_r, T gh_z, T gh_n, T h, T& r, T& z, T& n) {
  r = sigmoid(gi_r + gh_r);
  z = sigmoid(gi_z + gh_z);
  n = std::tanh(gi_n + r * gh_n);
  return (T(1) - z) * n + z * h;
}
// Backward of gru_cell given dh' = dout. Produces d(gi_*), d(gh_*), and dh.
template <class T>
RMOE_HD void gru_cell_grad(T r, T z, T n, T gh_n, T h, T dout, T& dgi_r, T& dgi_z,
                           T& dgi_n, T& dgh_r, T& dgh_z, T& dgh_n, T& dh) {
  T dn = dout * (T(1) - z);
  T dz = dout * (h - n);
  T dpre_n = dn * (T(1) - n * n);           // through tanh
  T dpre_z = dz * z * (T(1) - z);           // through sigmoid
  T dpre_r = dpre_n * gh_n * r * (T(1) - r);
  dgi_r = dpre_r; dgh_r = dpre_r;
  dgi_z = dpre_z; dgh_z = dpre_z;
  dgi_n = dpre_n; dgh_n = dpre_n * r;
  dh = dout * z;
}

// LSTM cell pointwise part (PyTorch LSTMCell). pre = gi + gh, each split in
// (i, f, g, o) quarters: i, f, o = sigmoid, g = tanh; c' = f c + i g,
// h' = o tanh(c'). Returns h', writes c' and the activated gates.
template <class T>
RMOE_HD T lstm_cell(T pre_i, T pre_f, T pre_g, T pre_o, T c, T& cnew, T& i, T& f, T& g, T& o) {
  i = sigmoid(pre_i);
  f = sigmoid(pre_f);
  g = std::tanh(pre_g);
  o = sigmoid(pre_o);
  cnew = f * c + i * g;
  return o * std::tanh(cnew);
}
// Backward of lstm_cell given dh' and dc' (c' also feeds the layer above):
// dc' total = dc' + dh' o (1 - tanh(c')^2). Produces d(pre_*) and dc.
template <class T>
RMOE_HD void lstm_cell_grad(T i, T f, T g, T o, T c, T cnew, T dhnew, T dcnew, T& dpre_i, T& dpre_f,
                            T& dpre_g, T& dpre_o, T& dc) {
  const T tc = std::tanh(cnew);
  const T dct = dcnew + dhnew * o * (T(1) - tc * tc);
  dpre_i = dct * g * i * (T(1) - i);
  dpre_f = dct * c * f * (T(1) - f);
  dpre_g = dct * i * (T(1) - g * g);
  dpre_o = dhnew * tc * o * (T(1) - o);
  dc = dct * f;
}

}  // namespace rmoe::pw
