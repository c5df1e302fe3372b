// test_dry_run.cpp — compute_model_stats (include/rmoe/train/dry_run.h)
// against parameter counts written out by hand from docs/MODEL.md's table, for
// the paper's 0.91B configuration, plus consistency checks on every router
// type and the printed report.
#include <gtest/gtest.h>

#include "rmoe/train/dry_run.h"

namespace rmoe {
namespace {

// The paper's 24-layer configuration: L=24, d=1280, H=20, E=16, f=448, k=4,
// p=128, V=96512, S=4096, GRU router, untied head, micro-batch 1.
TrainConfig paper_config() {
  TrainConfig c;
  c.model.num_layers = 24;
  c.model.hidden_size = 1280;
  c.model.num_heads = 20;
  c.model.num_experts = 16;
  c.model.ffn_hidden_size = 448;
  c.model.topk = 4;
  c.model.router_dim = 128;
  c.model.vocab_size = 96512;
  c.model.seq_length = 4096;
  c.model.router_type = RouterType::gru;
  c.model.tie_embeddings = false;
  c.micro_batch_size = 1;
  c.global_batch_size = 1120;
  return c;
}

TEST(DryRun, PaperConfigMatchesHandCount) {
  const ModelStats s = compute_model_stats(paper_config());

  // Written out from MODEL.md's table with the numbers substituted.
  const int64_t embedding = 96512LL * 1280;                      // wte [V, d]
  const int64_t head = 96512LL * 1280;                           // head [V, d]
  const int64_t attention = 24LL * 4 * 1280 * 1280;              // wq wk wv wo [d, d] per layer
  const int64_t norms = (24LL * 2 + 1) * 1280;                   // attn_norm, moe_norm per layer + final_norm
  const int64_t router_layer = 128LL * 1280 + 128 + 16 * 128 + 16;  // proj_w [p,d], proj_b [p], gate_w [E,p], gate_b [E]
  const int64_t gru_cell = 2LL * (384 * 128) + 2 * 384;         // w_ih, w_hh [3p, p]; b_ih, b_hh [3p]
  const int64_t experts = 24LL * 16 * 3 * 448 * 1280;            // w1, w3 [E, f, d], w2 [E, d, f] per layer
  const int64_t total = embedding + head + attention + norms + 24 * router_layer + gru_cell + experts;

  EXPECT_EQ(embedding, 123535360);
  EXPECT_EQ(total, 1069106560);
  EXPECT_EQ(s.embedding_params, embedding);
  EXPECT_EQ(s.head_params, head);
  EXPECT_EQ(s.attention_params, attention);
  EXPECT_EQ(s.norm_params, norms);
  EXPECT_EQ(s.expert_params, experts);
  EXPECT_EQ(s.router_params, 24 * router_layer + gru_cell);
  EXPECT_EQ(s.router_params, 4083840);
  EXPECT_EQ(s.router_params_linear_equivalent, 24LL * 16 * 1280);  // gate_w [E, d] per layer
  EXPECT_EQ(s.total_params, total);
  // Active: 4 of the 16 experts per layer.
  EXPECT_EQ(s.active_params_per_token, total - experts + 24LL * 4 * 3 * 448 * 1280);
  EXPECT_EQ(s.active_params_per_token, 573654400);

  // FLOPs: 6 * (matmul weights one token meets) + 6 L S d. The GRU cell's
  // two [3p, p] matrices run at every layer; the head counts once.
  const double matmul_per_token =
      24.0 * (4.0 * 1280 * 1280 + 3.0 * 4 * 448 * 1280 + (128.0 * 1280 + 16 * 128 + 2 * 384 * 128)) + 96512.0 * 1280;
  const double flops = 6.0 * matmul_per_token + 6.0 * 24 * 4096 * 1280;
  EXPECT_DOUBLE_EQ(s.flops_per_token, flops);
  EXPECT_DOUBLE_EQ(s.flops_per_token, 3468853248.0);

  // Memory: 16 bytes per parameter + 4 bytes per kept activation of one
  // micro-batch (1 x 4096 tokens), per token:
  //   24 * (8 d + H S + 7 p + 2 E + k (2 d + 3 f)) + 2 d + 2 V
  const int64_t act_floats_per_token =
      24LL * (8 * 1280 + 20 * 4096 + 7 * 128 + 2 * 16 + 4 * (2 * 1280 + 3 * 448)) + 2 * 1280 + 2 * 96512;
  const int64_t activation_bytes = 4LL * 4096 * act_floats_per_token;
  EXPECT_EQ(s.activation_bytes_estimate, activation_bytes);
  EXPECT_EQ(s.memory_bytes_estimate, 16 * total + activation_bytes);
}

TEST(DryRun, PartsAddUpForEveryRouter) {
  TrainConfig c;  // small defaults
  for (RouterType r : {RouterType::linear, RouterType::mlp, RouterType::gru, RouterType::rnn}) {
    for (bool tied : {false, true}) {
      c.model.router_type = r;
      c.model.tie_embeddings = tied;
      const ModelStats s = compute_model_stats(c);
      EXPECT_EQ(s.total_params, s.embedding_params + s.head_params + s.attention_params + s.norm_params +
                                    s.router_params + s.expert_params);
      EXPECT_EQ(s.head_params, tied ? 0 : s.embedding_params);
      EXPECT_LT(s.active_params_per_token, s.total_params);
      EXPECT_GT(s.flops_per_token, 6.0 * s.attention_params);
    }
  }
  const int64_t L = c.model.num_layers, d = c.model.hidden_size, E = c.model.num_experts, p = c.model.router_dim;
  c.model.router_type = RouterType::linear;
  const ModelStats lin = compute_model_stats(c);
  EXPECT_EQ(lin.router_params, L * E * d);
  EXPECT_EQ(lin.router_params, lin.router_params_linear_equivalent);
  c.model.router_type = RouterType::mlp;
  const ModelStats mlp = compute_model_stats(c);
  EXPECT_EQ(mlp.router_params, L * (p * d + p + E * p + E));
  c.model.router_type = RouterType::rnn;
  EXPECT_EQ(compute_model_stats(c).router_params, mlp.router_params + 2 * p * p + 2 * p);
  c.model.router_type = RouterType::gru;
  EXPECT_EQ(compute_model_stats(c).router_params, mlp.router_params + 6 * p * p + 6 * p);
  // k = E: every expert is active.
  c.model.topk = c.model.num_experts;
  const ModelStats all = compute_model_stats(c);
  EXPECT_EQ(all.active_params_per_token, all.total_params);
}

TEST(DryRun, ReportShowsTheRouterOverhead) {
  const TrainConfig c = paper_config();
  const std::string text = format_dry_run(c, compute_model_stats(c));
  EXPECT_NE(text.find("what the router adds over a linear router"), std::string::npos) << text;
  EXPECT_NE(text.find("1,069,106,560"), std::string::npos) << text;  // total
  EXPECT_NE(text.find("4,083,840"), std::string::npos) << text;      // GRU router
  EXPECT_NE(text.find("491,520"), std::string::npos) << text;        // linear router
  EXPECT_NE(text.find("3,592,320"), std::string::npos) << text;      // difference
  EXPECT_NE(text.find("0.336%"), std::string::npos) << text;         // of the total
  std::printf("%s", text.c_str());
}

}  // namespace
}  // namespace rmoe
