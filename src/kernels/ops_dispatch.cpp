// ops_dispatch.cpp — rmoe::ops: picks the backend from the output view's device.
//
// Model code calls only rmoe::ops; it never names a backend. The cpu backend is
// complete; the CUDA backend has its element-wise ops so far (RMOE_DISPATCH_CUDA)
// and every other op throws on a cuda view.
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#ifdef RMOE_WITH_CUDA
#include "rmoe/kernels/cuda_ops.h"
#endif

namespace rmoe::ops {

[[noreturn]] static void no_backend(const char* op, Device dev) {
  RMOE_CHECK(false, "op " << op << " has no implementation for device " << (dev == Device::cuda ? "cuda" : "?")
                          << " in this build; use --device cpu");
  __builtin_unreachable();
}

#define RMOE_DISPATCH(op, dev_view, ...)                        \
  do {                                                          \
    if ((dev_view).device == Device::cpu) return cpu::op(__VA_ARGS__); \
    no_backend(#op, (dev_view).device);                         \
  } while (0)

#ifdef RMOE_WITH_CUDA
#define RMOE_DISPATCH_CUDA(op, dev_view, ...)                            \
  do {                                                                   \
    if ((dev_view).device == Device::cpu) return cpu::op(__VA_ARGS__);   \
    return cuda::op(__VA_ARGS__);                                        \
  } while (0)
#else
#define RMOE_DISPATCH_CUDA RMOE_DISPATCH
#endif

template <class T>
void linear_forward(Tensor<T> y, In<T> x, In<T> W, In<T> b) { RMOE_DISPATCH(linear_forward, y, y, x, W, b); }
template <class T>
void linear_backward(Tensor<T> dx, Tensor<T> dW, Tensor<T> db, In<T> dy, In<T> x, In<T> W) {
  RMOE_DISPATCH(linear_backward, dy, dx, dW, db, dy, x, W);
}
template <class T>
void embedding_forward(Tensor<T> out, Tensor<const int32_t> tokens, In<T> W) {
  RMOE_DISPATCH(embedding_forward, out, out, tokens, W);
}
template <class T>
void embedding_backward(Tensor<T> dW, Tensor<const int32_t> tokens, In<T> dout) {
  RMOE_DISPATCH(embedding_backward, dW, dW, tokens, dout);
}
template <class T>
void rmsnorm_forward(Tensor<T> out, Tensor<T> rstd, In<T> x, In<T> w, double eps) {
  RMOE_DISPATCH(rmsnorm_forward, out, out, rstd, x, w, eps);
}
template <class T>
void rmsnorm_backward(Tensor<T> dx, Tensor<T> dw, In<T> dout, In<T> x, In<T> w, In<T> rstd) {
  RMOE_DISPATCH(rmsnorm_backward, dout, dx, dw, dout, x, w, rstd);
}
template <class T>
void rope_forward(Tensor<T> x, double theta) { RMOE_DISPATCH(rope_forward, x, x, theta); }
template <class T>
void rope_backward(Tensor<T> dx, double theta) { RMOE_DISPATCH(rope_backward, dx, dx, theta); }
template <class T>
void attention_forward(Tensor<T> out, Tensor<T> P, In<T> q, In<T> k, In<T> v) {
  RMOE_DISPATCH(attention_forward, out, out, P, q, k, v);
}
template <class T>
void attention_backward(Tensor<T> dq, Tensor<T> dk, Tensor<T> dv, Tensor<T> scratch, In<T> dout, In<T> P, In<T> q,
                        In<T> k, In<T> v) {
  RMOE_DISPATCH(attention_backward, dout, dq, dk, dv, scratch, dout, P, q, k, v);
}
template <class T>
void swiglu_forward(Tensor<T> h, In<T> a, In<T> b) { RMOE_DISPATCH_CUDA(swiglu_forward, h, h, a, b); }
template <class T>
void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh, In<T> a, In<T> b) {
  RMOE_DISPATCH_CUDA(swiglu_backward, dh, da, db, dh, a, b);
}
template <class T>
void tanh_forward(Tensor<T> y, In<T> x) { RMOE_DISPATCH(tanh_forward, y, y, x); }
template <class T>
void tanh_backward(Tensor<T> dx, In<T> dy, In<T> y) { RMOE_DISPATCH(tanh_backward, dy, dx, dy, y); }
template <class T>
void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h) {
  RMOE_DISPATCH_CUDA(gru_forward, hnew, hnew, gates, gi, gh, h);
}
template <class T>
void gru_backward(Tensor<T> dgi, Tensor<T> dgh, Tensor<T> dh, In<T> dhnew, In<T> gates, In<T> gh, In<T> h) {
  RMOE_DISPATCH(gru_backward, dhnew, dgi, dgh, dh, dhnew, gates, gh, h);
}
template <class T>
void router_topk_forward(Tensor<T> probs, Tensor<int32_t> idx, Tensor<T> gate, Tensor<T> lse, In<T> logits) {
  RMOE_DISPATCH(router_topk_forward, probs, probs, idx, gate, lse, logits);
}
template <class T>
void router_topk_backward(Tensor<T> dlogits, In<T> dgate, In<T> dprobs_extra, double dlse_scale, In<T> probs,
                          Tensor<const int32_t> idx, In<T> lse) {
  RMOE_DISPATCH(router_topk_backward, dlogits, dlogits, dgate, dprobs_extra, dlse_scale, probs, idx, lse);
}
template <class T>
void experts_forward(Tensor<T> ys, Tensor<T> a, Tensor<T> b, Tensor<T> h, In<T> xs, Tensor<const int64_t> offsets,
                     In<T> W1, In<T> W3, In<T> W2) {
  RMOE_DISPATCH(experts_forward, ys, ys, a, b, h, xs, offsets, W1, W3, W2);
}
template <class T>
void experts_backward(Tensor<T> dxs, Tensor<T> dW1, Tensor<T> dW3, Tensor<T> dW2, Tensor<T> scratch_da,
                      Tensor<T> scratch_db, In<T> dys, In<T> xs, Tensor<const int64_t> offsets, In<T> a, In<T> b,
                      In<T> h, In<T> W1, In<T> W3, In<T> W2) {
  RMOE_DISPATCH(experts_backward, dys, dxs, dW1, dW3, dW2, scratch_da, scratch_db, dys, xs, offsets, a, b, h, W1,
                W3, W2);
}
template <class T>
void moe_gather(Tensor<T> xs, In<T> x, Tensor<const int32_t> slot_token) {
  RMOE_DISPATCH(moe_gather, xs, xs, x, slot_token);
}
template <class T>
void moe_combine(Tensor<T> out, In<T> ys, Tensor<const int32_t> slot_of, In<T> gate) {
  RMOE_DISPATCH(moe_combine, out, out, ys, slot_of, gate);
}
template <class T>
void moe_combine_backward(Tensor<T> dys, Tensor<T> dgate, In<T> dout, In<T> ys, Tensor<const int32_t> slot_of,
                          In<T> gate) {
  RMOE_DISPATCH(moe_combine_backward, dout, dys, dgate, dout, ys, slot_of, gate);
}
template <class T>
void moe_gather_backward(Tensor<T> dx, In<T> dxs, Tensor<const int32_t> slot_of) {
  RMOE_DISPATCH(moe_gather_backward, dxs, dx, dxs, slot_of);
}
template <class T>
void cross_entropy(Tensor<T> losses, Tensor<T> dlogits, In<T> logits, Tensor<const int32_t> targets,
                   double dloss_scale) {
  RMOE_DISPATCH(cross_entropy, logits, losses, dlogits, logits, targets, dloss_scale);
}

// Instantiates every op for float and double: an emitted function that stores
// their addresses makes the compiler emit them.
template <class T>
const void* const* instantiate_ops_dispatch() {
  static const void* const fns[] = {
      (const void*)&linear_forward<T>,
      (const void*)&linear_backward<T>,
      (const void*)&embedding_forward<T>,
      (const void*)&embedding_backward<T>,
      (const void*)&rmsnorm_forward<T>,
      (const void*)&rmsnorm_backward<T>,
      (const void*)&rope_forward<T>,
      (const void*)&rope_backward<T>,
      (const void*)&attention_forward<T>,
      (const void*)&attention_backward<T>,
      (const void*)&swiglu_forward<T>,
      (const void*)&swiglu_backward<T>,
      (const void*)&tanh_forward<T>,
      (const void*)&tanh_backward<T>,
      (const void*)&gru_forward<T>,
      (const void*)&gru_backward<T>,
      (const void*)&router_topk_forward<T>,
      (const void*)&router_topk_backward<T>,
      (const void*)&experts_forward<T>,
      (const void*)&experts_backward<T>,
      (const void*)&moe_gather<T>,
      (const void*)&moe_combine<T>,
      (const void*)&moe_combine_backward<T>,
      (const void*)&moe_gather_backward<T>,
      (const void*)&cross_entropy<T>};
  return fns;
}
template const void* const* instantiate_ops_dispatch<float>();
template const void* const* instantiate_ops_dispatch<double>();

}  // namespace rmoe::ops
