// lm_head.cpp — logits = RMSNorm(x_L) head^T, mean cross-entropy over tokens.
// With tie_embeddings the head is the embedding matrix (and shares its gradient).
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::head_forward() {
  const int64_t Tn = T_;
  ops::rmsnorm_forward(rows(xf_, Tn), rows(rstd_f_, Tn), rows(x_final_, Tn), gw_.final_norm, cfg_.rms_eps);
  ops::linear_forward(rows(logits_, Tn), rows(xf_, Tn), gw_.head, {});
  ops::cross_entropy(rows(losses_, Tn), Tensor<T>{}, rows(logits_, Tn), rows(targets_, Tn), 0.0);
  ops::sum<T>(ce_sum_, rows(losses_, Tn));  // forward() reads it on the host
}

template <class T>
void Model<T>::head_backward(double loss_scale) {
  const int64_t Tn = T_;
  Tensor<T> dlogits = rows(s_.dlogits, Tn), dxf = rows(s_.dxf, Tn), dx = rows(s_.dx, Tn);
  zero(dlogits);
  // CE of the global batch is the mean over every rank's tokens.
  ops::cross_entropy(rows(losses_, Tn), dlogits, rows(logits_, Tn), rows(targets_, Tn), loss_scale / double(T_global_));
  zero(dxf);
  ops::linear_backward(dxf, gg_.head, Tensor<T>{}, dlogits, rows(xf_, Tn), gw_.head);
  zero(dx);
  ops::rmsnorm_backward(dx, gg_.final_norm, dxf, rows(x_final_, Tn), gw_.final_norm, rows(rstd_f_, Tn));
}

template void Model<float>::head_forward();
template void Model<double>::head_forward();
template void Model<float>::head_backward(double);
template void Model<double>::head_backward(double);

}  // namespace rmoe
