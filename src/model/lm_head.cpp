// lm_head.cpp — logits = RMSNorm(x_L) head^T, mean cross-entropy over tokens.
// With tie_embeddings the head is the embedding matrix (and shares its gradient).
//
// By chunks of head_chunk_ token rows, so the head holds [chunk, V] logits
// (and their gradient), not [T, V]: at V = 96512 and T = 4096 the whole
// logits are 1.6 GB in fp32. Forward: logits and CE chunk by chunk; the
// buffer keeps the last chunk. Backward, last chunk first: the logits of
// every other chunk are computed again (one more head GEMM over those rows),
// then CE's gradient, dxf and dhead (+=, chunk by chunk). A micro-batch that
// fits one chunk (every small vocabulary) computes nothing twice.
#include <algorithm>

#include "model_util.h"
#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"

namespace rmoe {

template <class T>
void Model<T>::head_forward() {
  const int64_t n_tok = num_tokens_;
  ops::rmsnorm_forward(first_rows(xf_, n_tok), first_rows(rstd_f_, n_tok), first_rows(x_final_, n_tok),
                       global_weights_.final_norm, cfg_.rms_eps);
  for (int64_t r0 = 0; r0 < n_tok; r0 += head_chunk_) {
    const int64_t n = std::min(head_chunk_, n_tok - r0);
    Tensor<T> logits = first_rows(logits_, n);
    ops::linear_forward(logits, xf_.slice(r0, n), global_weights_.head, {});
    ops::cross_entropy(losses_.slice(r0, n), Tensor<T>{}, logits, targets_.slice(r0, n), 0.0);
    held_first_ = r0;
    held_rows_ = n;
  }
  ops::sum<T>(ce_sum_, first_rows(losses_, n_tok));  // forward() reads it on the host
}

template <class T>
Tensor<T> Model<T>::logits(int64_t first, int64_t n) {
  RMOE_CHECK(num_tokens_ > 0, "logits asked for before any forward");
  RMOE_CHECK(first >= 0 && n >= 1 && first + n <= num_tokens_ && n <= head_chunk_,
             "logits of rows [" << first << ", " << first + n << "): the last forward has " << num_tokens_
                                << " rows and the head holds at most " << head_chunk_ << " at once");
  if (first < held_first_ || first + n > held_first_ + held_rows_) {
    ops::linear_forward(first_rows(logits_, n), xf_.slice(first, n), global_weights_.head, {});
    held_first_ = first;
    held_rows_ = n;
  }
  return logits_.slice(first - held_first_, n);
}

template <class T>
void Model<T>::head_backward(double loss_scale) {
  const int64_t n_tok = num_tokens_;
  Tensor<T> dxf = first_rows(scratch_.dxf, n_tok), dx = first_rows(scratch_.dx, n_tok);
  zero(dxf);
  const int64_t last = (n_tok - 1) / head_chunk_ * head_chunk_;  // first row of the last chunk
  for (int64_t r0 = last; r0 >= 0; r0 -= head_chunk_) {
    const int64_t n = std::min(head_chunk_, n_tok - r0);
    Tensor<T> logits = first_rows(logits_, n), dlogits = first_rows(scratch_.dlogits, n);
    if (held_first_ != r0 || held_rows_ != n) {  // not the chunk the forward left: compute it again
      ops::linear_forward(logits, xf_.slice(r0, n), global_weights_.head, {});
      held_first_ = r0;
      held_rows_ = n;
    }
    zero(dlogits);
    // CE of the global batch is the mean over every rank's tokens.
    ops::cross_entropy(losses_.slice(r0, n), dlogits, logits, targets_.slice(r0, n),
                       loss_scale / double(num_tokens_global_));
    ops::linear_backward(dxf.slice(r0, n), global_grads_.head, Tensor<T>{}, dlogits, xf_.slice(r0, n),
                         global_weights_.head);
  }
  zero(dx);
  ops::rmsnorm_backward(dx, global_grads_.final_norm, dxf, first_rows(x_final_, n_tok), global_weights_.final_norm,
                        first_rows(rstd_f_, n_tok));
}

template void Model<float>::head_forward();
template void Model<double>::head_forward();
template Tensor<float> Model<float>::logits(int64_t, int64_t);
template Tensor<double> Model<double>::logits(int64_t, int64_t);
template void Model<float>::head_backward(double);
template void Model<double>::head_backward(double);

}  // namespace rmoe
