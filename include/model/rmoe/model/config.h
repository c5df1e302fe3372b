// config.h — the model's shape and router choice (one typed struct, validated
// once by validate(); the CLI in train/config.h fills it).
#pragma once
#include <cstdint>
#include <string>

namespace rmoe {

enum class RouterType { linear, mlp, gru, rnn };

RouterType parse_router_type(const std::string& s);  // throws UsageError
const char* router_type_name(RouterType r);

struct ModelConfig {
  int num_layers = 4;          // L
  int hidden_size = 128;       // d
  int num_heads = 4;           // H (D = d / H, must be even for RoPE)
  int num_experts = 8;         // E
  int topk = 2;                // k
  int ffn_hidden_size = 128;   // f (each expert's SwiGLU width)
  int router_dim = 128;        // p (mlp, gru, rnn routers)
  int vocab_size = 256;        // V
  int seq_length = 128;        // S
  RouterType router_type = RouterType::gru;
  bool router_detach = false;  // cut the gradient through h_{i-1} (ablation)
  bool tie_embeddings = false; // head shares the embedding matrix
  double aux_loss_coeff = 0.01;
  double z_loss_coeff = 0.0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  double init_std = 0.02;

  int head_dim() const { return hidden_size / num_heads; }
  // Throws UsageError naming the first bad field, its value and what is
  // allowed: sizes, and real values outside float's range (check_float_range).
  void validate() const;
};

// Real options are computed in 32-bit float (weights, gradients, AdamW):
// throws UsageError "<flag>=<value> is outside the range of 32-bit float ..."
// unless value is 0 or its magnitude lies in float's normal range
// [1.17549e-38, 3.40282e+38] (a smaller one flushes to 0, a larger one is inf).
void check_float_range(const char* flag, double value);

}  // namespace rmoe
