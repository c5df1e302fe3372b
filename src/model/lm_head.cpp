// lm_head.cpp — logits = RMSNorm(x_L) head^T, mean cross-entropy over tokens.
// With tie_embeddings the head is the embedding matrix (and shares its gradient).
#include "model_util.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::head_forward() {
  const int64_t n_tok = num_tokens_;
  ops::rmsnorm_forward(first_rows(xf_, n_tok), first_rows(rstd_f_, n_tok), first_rows(x_final_, n_tok),
                       global_weights_.final_norm, cfg_.rms_eps);
  ops::linear_forward(first_rows(logits_, n_tok), first_rows(xf_, n_tok), global_weights_.head, {});
  ops::cross_entropy(first_rows(losses_, n_tok), Tensor<T>{}, first_rows(logits_, n_tok), first_rows(targets_, n_tok),
                     0.0);
  ops::sum<T>(ce_sum_, first_rows(losses_, n_tok));  // forward() reads it on the host
}

template <class T>
void Model<T>::head_backward(double loss_scale) {
  const int64_t n_tok = num_tokens_;
  Tensor<T> dlogits = first_rows(scratch_.dlogits, n_tok), dxf = first_rows(scratch_.dxf, n_tok),
            dx = first_rows(scratch_.dx, n_tok);
  zero(dlogits);
  // CE of the global batch is the mean over every rank's tokens.
  ops::cross_entropy(first_rows(losses_, n_tok), dlogits, first_rows(logits_, n_tok), first_rows(targets_, n_tok),
                     loss_scale / double(num_tokens_global_));
  zero(dxf);
  ops::linear_backward(dxf, global_grads_.head, Tensor<T>{}, dlogits, first_rows(xf_, n_tok), global_weights_.head);
  zero(dx);
  ops::rmsnorm_backward(dx, global_grads_.final_norm, dxf, first_rows(x_final_, n_tok), global_weights_.final_norm,
                        first_rows(rstd_f_, n_tok));
}

template void Model<float>::head_forward();
template void Model<double>::head_forward();
template void Model<float>::head_backward(double);
template void Model<double>::head_backward(double);

}  // namespace rmoe
