// test_dry_run.cpp — compute_model_stats (include/rmoe/train/dry_run.h)
// against what the code really builds: the parameter parts against the
// parameter registry (model_param_specs), the activation figure against a
// built model's arena (Model<float>::activation_bytes), for every router and
// odd shapes; the paper's 0.91B configuration (1,069,106,560 parameters) as
// an independent anchor; 64-bit counts and their overflow; the memory check
// (check_memory_fits) and the apps calling it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "rmoe/core/error.h"
#include "rmoe/model/model.h"
#include "rmoe/model/params.h"
#include "rmoe/train/dry_run.h"
#include "test_util.h"

namespace rmoe {
namespace {

using testutil::expect_error;
using testutil::parse_args;

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

// Small shapes with odd sizes (nothing a multiple of 16), every router, tied
// and untied, one and several sequences per micro-batch.
std::vector<TrainConfig> varied_configs() {
  std::vector<TrainConfig> out;
  for (RouterType r : {RouterType::linear, RouterType::random, RouterType::mlp, RouterType::mlp_tanh, RouterType::gru,
                       RouterType::gru_np, RouterType::rnn,
                       RouterType::cosine, RouterType::xmoe, RouterType::gru_xmoe,
                       RouterType::lstm}) {
    for (bool tied : {false, true}) {
      for (int mb : {1, 3}) {
        TrainConfig c;
        c.model.num_layers = 3;
        c.model.hidden_size = 12;
        c.model.num_heads = 3;
        c.model.num_experts = 5;
        c.model.topk = 2;
        c.model.ffn_hidden_size = 7;
        c.model.router_dim = 9;
        c.model.xmoe_dim = 5;
        c.model.vocab_size = 29;
        c.model.seq_length = 11;
        c.model.router_type = r;
        c.model.tie_embeddings = tied;
        c.micro_batch_size = mb;
        c.global_batch_size = 3 * mb;
        out.push_back(c);
      }
    }
  }
  for (RouterType r : {RouterType::mlp, RouterType::gru, RouterType::lstm}) {  // --router-shared-proj
    TrainConfig c = out.front();
    c.model.router_type = r;
    c.model.router_shared_proj = true;
    out.push_back(c);
  }
  for (bool detach : {false, true}) {  // --router-logit-residual (its backward buffer)
    TrainConfig c = out.front();
    c.model.router_logit_residual = 0.5;
    c.model.router_logit_residual_detach = detach;
    out.push_back(c);
  }
  TrainConfig defaults;  // the defaults (multiples of 16 everywhere)
  out.push_back(defaults);
  return out;
}

std::string describe(const TrainConfig& c) {
  return std::string(router_type_name(c.model.router_type)) + (c.model.router_shared_proj ? " shared-proj" : "") +
         (c.model.router_logit_residual != 0 ? " logit-residual" : "") +
         (c.model.router_logit_residual_detach ? "-detached" : "") +
         (c.model.tie_embeddings ? " tied" : " untied") +
         " mb=" + std::to_string(c.micro_batch_size) + " d=" + std::to_string(c.model.hidden_size);
}

// Which part of the dry-run table a registry tensor belongs to.
std::string part_of(const std::string& name) {
  if (name == "embed/wte") return "embedding";
  if (name == "head") return "head";
  if (name.find("/attn/") != std::string::npos) return "attention";
  if (name.find("norm") != std::string::npos) return "norms";
  if (name.find("router/") != std::string::npos) return "router";
  if (name.find("/experts/") != std::string::npos) return "experts";
  return "unknown: " + name;
}

// The dry run counts exactly the tensors the model registers, part by part.
TEST(DryRun, PartsAreTheParameterRegistrys) {
  for (const TrainConfig& c : varied_configs()) {
    std::map<std::string, int64_t> parts;
    int64_t all = 0;
    for (const ParamSpec& p : model_param_specs(c.model)) {
      parts[part_of(p.name)] += p.numel();
      all += p.numel();
    }
    const ModelStats s = compute_model_stats(c);
    EXPECT_EQ(parts.size(), c.model.tie_embeddings ? 5u : 6u) << describe(c);  // no "unknown: ..."
    EXPECT_EQ(s.embedding_params, parts["embedding"]) << describe(c);
    EXPECT_EQ(s.head_params, parts["head"]) << describe(c);
    EXPECT_EQ(s.attention_params, parts["attention"]) << describe(c);
    EXPECT_EQ(s.norm_params, parts["norms"]) << describe(c);
    EXPECT_EQ(s.router_params, parts["router"]) << describe(c);
    EXPECT_EQ(s.expert_params, parts["experts"]) << describe(c);
    EXPECT_EQ(s.total_params, all) << describe(c);
    // What ParamStore allocates: the same count, split into its two buffers.
    ParamStore<float> store(model_param_specs(c.model));
    EXPECT_EQ(int64_t(store.replicated().size() + store.expert().size()), s.total_params) << describe(c);
    EXPECT_EQ(int64_t(store.expert().size()), s.expert_params) << describe(c);
    // Active: k of E experts per layer.
    EXPECT_EQ(s.active_params_per_token, s.total_params - s.expert_params / c.model.num_experts *
                                                              (c.model.num_experts - c.model.topk))
        << describe(c);
    // A linear router is L gate matrices [E, d].
    TrainConfig lin = c;
    lin.model.router_type = RouterType::linear;
    lin.model.router_shared_proj = false;  // a linear router has no projection to share
    int64_t linear_router = 0;
    for (const ParamSpec& p : model_param_specs(lin.model))
      if (part_of(p.name) == "router") linear_router += p.numel();
    EXPECT_EQ(s.router_params_linear_equivalent, linear_router) << describe(c);
  }
}

// The activation figure is the model's arena for that micro-batch, exactly.
TEST(DryRun, ActivationFigureIsTheModelsArena) {
  for (const TrainConfig& c : varied_configs()) {
    const ModelStats s = compute_model_stats(c);
    const Model<float> model(c.model, c.micro_batch_size);
    EXPECT_EQ(s.activation_bytes_estimate, model.activation_bytes()) << describe(c);
    EXPECT_GT(s.index_bytes_estimate, 0) << describe(c);
    EXPECT_EQ(s.memory_bytes_estimate, 16 * s.total_params + s.activation_bytes_estimate + s.index_bytes_estimate)
        << describe(c);
  }
}

// An independent anchor: the paper's configuration, counted by hand from
// docs/MODEL.md's table.
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

  // Memory: 16 bytes per parameter plus the model's buffers. Attention keeps
  // lse (24 layers x H S floats), not the probabilities (24 x H S^2 floats,
  // 6 GiB, more than all the activations now).
  EXPECT_EQ(s.memory_bytes_estimate, 16 * total + s.activation_bytes_estimate + s.index_bytes_estimate);
  EXPECT_LT(s.activation_bytes_estimate, 4LL * 24 * 20 * 4096 * 4096);
}

// The cosine routers at the paper's shape (r = 16, X-MoE's), counted by hand
// from docs/MODEL.md's table: parameters and the router's FLOPs per token.
TEST(DryRun, CosineRoutersMatchHandCount) {
  struct Case {
    RouterType r;
    int64_t per_layer, cell;
    double matmul;  // the router's matrix weights one token meets per layer
  };
  const Case cases[] = {
      {RouterType::cosine, 16LL * 1280 + 1, 0, 16.0 * 1280},                    // expert_emb [E, d], log_scale [1]
      {RouterType::xmoe, 16LL * 1280 + 16 * 16 + 1, 0, 16.0 * 1280 + 16 * 16},  // + xmoe_proj [r, d]; emb [E, r]
      {RouterType::gru_xmoe, 128LL * 1280 + 128 + 16 * 128 + 16 * 16 + 1, 2LL * (384 * 128) + 2 * 384,
       128.0 * 1280 + 2 * 384 * 128 + 16 * 128 + 16 * 16},  // proj_w/b, xmoe_proj [r, p], emb, log_scale; cell
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(router_type_name(k.r));
    TrainConfig c = paper_config();
    c.model.router_type = k.r;
    const ModelStats s = compute_model_stats(c);
    EXPECT_EQ(s.router_params, 24 * k.per_layer + k.cell);
    const double matmul_per_token =
        24.0 * (4.0 * 1280 * 1280 + 3.0 * 4 * 448 * 1280 + k.matmul) + 96512.0 * 1280;
    EXPECT_DOUBLE_EQ(s.flops_per_token, 6.0 * matmul_per_token + 6.0 * 24 * 4096 * 1280);
    const std::string text = format_dry_run(c, s);
    EXPECT_NE(text.find(std::string("router: ") + router_type_name(k.r)), std::string::npos) << text;
    EXPECT_EQ(text.find(" r=16") != std::string::npos, k.r != RouterType::cosine) << text;
  }
}

// The LSTM router of the paper's shapes, by hand: the GRU's projections and
// gates, and a cell of four gates (w_ih, w_hh [4p, p]; b_ih, b_hh [4p]) whose
// two matrices every layer applies.
TEST(DryRun, LstmRouterHandCount) {
  TrainConfig c = paper_config();
  c.model.router_type = RouterType::lstm;
  const ModelStats s = compute_model_stats(c);
  const int64_t router_layer = 128LL * 1280 + 128 + 16 * 128 + 16;
  const int64_t lstm_cell = 2LL * (512 * 128) + 2 * 512;
  EXPECT_EQ(s.router_params, 24 * router_layer + lstm_cell);
  EXPECT_EQ(s.router_params, 4116864);
  const double matmul_per_token =
      24.0 * (4.0 * 1280 * 1280 + 3.0 * 4 * 448 * 1280 + (128.0 * 1280 + 16 * 128 + 2 * 512 * 128)) + 96512.0 * 1280;
  EXPECT_DOUBLE_EQ(s.flops_per_token, 6.0 * matmul_per_token + 6.0 * 24 * 4096 * 1280);
}

// --router-shared-proj: one projection [p, d] + [p] instead of L of them; every
// layer still applies it, so the FLOPs are the per-layer router's.
TEST(DryRun, SharedProjectionHandCount) {
  TrainConfig c = paper_config();
  const ModelStats per_layer = compute_model_stats(c);
  c.model.router_shared_proj = true;
  const ModelStats s = compute_model_stats(c);
  const int64_t proj = 128LL * 1280 + 128, gates = 16 * 128 + 16;
  const int64_t gru_cell = 2LL * (384 * 128) + 2 * 384;
  EXPECT_EQ(s.router_params, proj + 24 * gates + gru_cell);
  EXPECT_EQ(per_layer.router_params - s.router_params, 23 * proj);
  EXPECT_EQ(s.total_params, per_layer.total_params - 23 * proj);
  EXPECT_DOUBLE_EQ(s.flops_per_token, per_layer.flops_per_token);
  EXPECT_NE(format_dry_run(c, s).find("(shared projection)"), std::string::npos);
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

// 64-bit counts: shapes far past 2^31 elements count right; shapes past 2^63
// are refused with the options named (--dry-run printed negative counts).
// The paper's router parameter counts for the character-level medium model
// (Table 1: SMoE 0.04M, SMoE-MLP 0.75M, RMoE 0.47M), from the committed
// configs. rmoe's counts agree with the paper's figures cut (not rounded) to
// two decimals: linear 45,056 (no bias), mlp with hidden 256 755,840, gru
// 477,056 (per layer P [128,352] + b, G [16,128] + c; one shared GRU cell of
// 2 x [384,128] + 2 x [384]). The MLP's hidden width is not in the paper:
// 256 is the width that gives its 0.75M.
TEST(DryRun, PaperMediumRouterParameterCounts) {
  const std::string dir = std::string(RMOE_SOURCE_DIR) + "/configs/";
  const TrainConfig smoe = parse_args({"--config", dir + "medium_char_smoe.ini"});
  const TrainConfig rmoe = parse_args({"--config", dir + "medium_char_rmoe.ini"});
  const TrainConfig mlp = parse_args({"--config", dir + "medium_char_rmoe.ini", "--moe-router-type", "mlp",
                                      "--router-dim", "256"});
  auto millions_cut = [](const TrainConfig& c) { return double(model_param_counts(c.model).router / 10000) / 100; };
  EXPECT_EQ(model_param_counts(smoe.model).router, 45056);
  EXPECT_EQ(model_param_counts(rmoe.model).router, 477056);
  EXPECT_EQ(model_param_counts(mlp.model).router, 755840);
  EXPECT_EQ(millions_cut(smoe), 0.04);
  EXPECT_EQ(millions_cut(rmoe), 0.47);
  EXPECT_EQ(millions_cut(mlp), 0.75);
  // And the registry the model builds agrees (dry run and model share nothing but the specs).
  for (const TrainConfig* c : {&smoe, &rmoe, &mlp}) {
    int64_t router = 0;
    for (const ParamSpec& s : model_param_specs(c->model))
      if (s.name.find("/router/") != std::string::npos || s.name.rfind("router/", 0) == 0) router += s.numel();
    EXPECT_EQ(router, model_param_counts(c->model).router) << router_type_name(c->model.router_type);
  }
}

// --dry-run --device cuda: the per-GPU plan. Weights, gradients and moments
// are 4 + 2 + 4 + 8 bytes per parameter of this GPU (EP splits the experts);
// activations and the all-to-all grow with the micro-batch; the link bytes by
// hand; the paper's 24-layer model at micro-batch 1 and S 4096 fits one 80 GB
// GPU without recomputation.
TEST(GpuPlan, PartsByHand) {
  TrainConfig c = paper_config();
  const ModelStats s = compute_model_stats(c);
  for (int ep : {1, 8}) {
    const GpuMemoryPlan g = plan_gpu_memory(c, ep);
    EXPECT_EQ(g.params, s.total_params - s.expert_params + s.expert_params / ep);
    EXPECT_EQ(g.weights_fp32, 4 * g.params);
    EXPECT_EQ(g.weights_bf16, 2 * g.params);
    EXPECT_EQ(g.grads, 4 * g.params);
    EXPECT_EQ(g.moments, 8 * g.params);
    EXPECT_EQ(g.total, 18 * g.params + g.activations + g.workspace);
  }
  const GpuMemoryPlan one = plan_gpu_memory(c, 1);
  EXPECT_LT(one.total + (int64_t(1) << 30), int64_t(80) << 30) << "the 24-layer model must fit an 80 GB GPU";
  EXPECT_GT(one.activations, int64_t(4) << 30);  // ~6 GiB: the plan counts every layer's saved tensors
  TrainConfig two = c;
  two.micro_batch_size = 2;
  EXPECT_NEAR(double(plan_gpu_memory(two, 1).activations), 2.0 * double(one.activations), 64.0);
  // The head holds one chunk of V logits, not [T, V] (1.5 GiB at S 4096).
  EXPECT_LT(one.workspace, int64_t(1) << 30);

  // 8 GPUs, EP 8: each of the 140 micro-steps of a GPU sends 7/8 of its
  // 4096 x 4 slots four times per layer as 1280 bf16 values.
  const GpuCommPlan m = plan_gpu_comm(c, 8, 8);
  EXPECT_EQ(m.micro_steps, 140);
  EXPECT_EQ(m.a2a_bytes, int64_t(4.0 * 4096 * 4 * 7 / 8 * 1280 * 2 * 24 * 140));
  const double replicated = double(s.total_params - s.expert_params);
  EXPECT_EQ(m.allreduce_bytes, int64_t(2.0 * 7 / 8 * 4 * replicated));  // experts: one replica each, nothing to sum
  EXPECT_EQ(m.a2a_gbps, kNvlinkGBps);
  EXPECT_DOUBLE_EQ(m.a2a_seconds, double(m.a2a_bytes) / (kNvlinkGBps * 1e9));
  const GpuCommPlan nodes = plan_gpu_comm(c, 16, 16);  // EP over two nodes of 8: InfiniBand
  EXPECT_EQ(nodes.a2a_gbps, kInfinibandGBps);
  EXPECT_EQ(plan_gpu_comm(c, 8, 1).a2a_bytes, 0);  // EP 1: every expert at home
  EXPECT_EQ(plan_gpu_comm(c, 1, 1).allreduce_bytes, 0);
  const std::string text = format_gpu_plan(c, 8, 8);
  EXPECT_NE(text.find("fits a 80 GB GPU (+1 GiB context): yes"), std::string::npos) << text;
  EXPECT_NE(text.find("this is its plan, not a measurement"), std::string::npos) << text;
}

TEST(DryRun, CountsAre64BitAndOverflowIsRefused) {
  TrainConfig big;
  big.model.num_layers = 64;
  big.model.hidden_size = 65536;
  big.model.num_heads = 2;
  big.model.ffn_hidden_size = 65536;
  big.model.num_experts = 1024;
  big.model.topk = 1;
  big.model.vocab_size = 1 << 20;
  big.micro_batch_size = 1;
  EXPECT_NO_THROW(validate_train_config(big));
  const ModelStats s = compute_model_stats(big);
  const __int128 d = 65536, f = 65536, E = 1024, L = 64, V = 1 << 20, p = 128;
  const __int128 expect = V * d * 2 + L * 4 * d * d + (2 * L + 1) * d + L * (p * d + p + E * p + E) +
                          (2 * 3 * p * p + 2 * 3 * p) + L * E * 3 * f * d;
  EXPECT_EQ(__int128(s.total_params), expect);
  EXPECT_EQ(__int128(s.expert_params), L * E * 3 * f * d);  // 8.4e14, far past 2^31
  EXPECT_GT(s.memory_bytes_estimate, 16 * s.total_params);

  const std::string out = format_dry_run(big, s);
  // No negative parameter count (the router's difference to a linear router may be).
  EXPECT_EQ(out.substr(0, out.find("what the router adds")).find(" -"), std::string::npos) << out;

  // Past 2^63: refused by compute_model_stats and already by parsing.
  TrainConfig huge = big;
  huge.model.hidden_size = 2147483646;
  huge.model.num_heads = 1;
  expect_error<UsageError>([&] { compute_model_stats(huge); },
                           {"the attention parameters (--num-layers x 4 x --hidden-size^2)", "2147483646",
                            "does not fit in 64-bit integers", "lower --hidden-size"});
  expect_error<UsageError>(
      [&] {
        parse_args({"--dry-run", "--hidden-size=2147483646", "--num-attention-heads=1", "--ffn-hidden-size=2147483647",
                    "--vocab-size=2147483647", "--seq-length=2147483647"});
      },
      {"--hidden-size", "64-bit"});
  huge = big;
  huge.model.num_experts = 2147483647;
  huge.model.ffn_hidden_size = 2147483647;
  expect_error<UsageError>([&] { compute_model_stats(huge); },
                           {"--num-experts", "--ffn-hidden-size", "does not fit in 64-bit integers"});
  EXPECT_THROW(huge.model.validate(), UsageError);  // ModelConfig alone refuses it too
  // Token slots past the model's 32-bit indices.
  TrainConfig slots;
  slots.model.seq_length = 2147483647;
  expect_error<UsageError>([&] { compute_model_stats(slots); },
                           {"--micro-batch-size=4 x --seq-length=2147483647 x --moe-router-topk=2", "32-bit"});
  // ParamSpec::numel is checked too (a shape only a bug could build).
  const ParamSpec wide{"w", {int64_t(1) << 40, int64_t(1) << 40}, Init::normal, true, false, 0};
  EXPECT_THROW(wide.numel(), Error);
}

// ---- the memory check -------------------------------------------------------

constexpr int64_t GiB = int64_t(1) << 30;

TEST(MemoryCheck, NeedsFollowTheUse) {
  TrainConfig c;
  c.micro_batch_size = 4;
  const ModelStats s = compute_model_stats(c);
  const MemoryNeed train = memory_need(c, MemoryUse::training);
  EXPECT_EQ(train.total, s.memory_bytes_estimate);
  EXPECT_EQ(train.weights, 16 * s.total_params);
  EXPECT_EQ(train.activations, s.activation_bytes_estimate);
  const MemoryNeed eval = memory_need(c, MemoryUse::evaluation);
  EXPECT_EQ(eval.weights, 8 * s.total_params);  // a Model holds parameters and gradients
  EXPECT_EQ(eval.activations, train.activations);
  TrainConfig one = c;
  one.micro_batch_size = 1;
  const MemoryNeed gen = memory_need(c, MemoryUse::generation);  // one sequence, whatever the micro-batch
  EXPECT_EQ(gen.activations, compute_model_stats(one).activation_bytes_estimate);
  EXPECT_LT(gen.activations, eval.activations);
  const MemoryNeed split = memory_need(c, MemoryUse::training, 4);  // 1/4 of the experts
  EXPECT_EQ(split.weights, 16 * (s.total_params - s.expert_params + s.expert_params / 4));
  EXPECT_GT(available_memory_bytes(), 0);  // Linux: /proc/meminfo or sysconf
}

TEST(MemoryCheck, RefusesWhatDoesNotFitNamingTheOptions) {
  TrainConfig c;
  c.micro_batch_size = 4;
  const int64_t need = memory_need(c).total;
  EXPECT_NO_THROW(check_memory_fits_in(need, c, 1, 1, MemoryUse::training));
  EXPECT_NO_THROW(check_memory_fits_in(-1, c, 1, 1, MemoryUse::training));  // unknown: no check
  // Activations are the larger part: the batch options are named.
  const std::string msg =
      expect_error<UsageError>([&] { check_memory_fits_in(need - 1, c, 1, 1, MemoryUse::training); },
                               {"this run needs about", "--micro-batch-size=4 x --seq-length=128",
                                "but the machine has", "available; lower --micro-batch-size or --seq-length"});
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Two processes on the node need twice as much.
  EXPECT_NO_THROW(check_memory_fits_in(2 * need, c, 2, 1, MemoryUse::training));
  expect_error<UsageError>([&] { check_memory_fits_in(2 * need - 1, c, 2, 1, MemoryUse::training); },
                           {"per process", "x 2 processes on this node", "fewer processes per node"});
  // Weights are the larger part: the shape options are named.
  TrainConfig wide = c;
  wide.model.num_experts = 256;
  wide.model.ffn_hidden_size = 1024;
  wide.micro_batch_size = 1;
  wide.global_batch_size = 8;
  expect_error<UsageError>([&] { check_memory_fits_in(GiB, wide, 1, 1, MemoryUse::training); },
                           {"weights, gradients and AdamW moments", "--num-experts=256", "--ffn-hidden-size=1024",
                            "lower --num-experts, --ffn-hidden-size"});
  // Split over 8 ranks of EP it fits where one rank does not.
  const int64_t split = memory_need(wide, MemoryUse::training, 8).total;
  EXPECT_NO_THROW(check_memory_fits_in(split, wide, 1, 8, MemoryUse::training));
  // Evaluation and generation hold no optimizer state.
  EXPECT_NO_THROW(check_memory_fits_in(memory_need(wide, MemoryUse::evaluation).total, wide, 1, 1,
                                       MemoryUse::evaluation));
  expect_error<UsageError>([&] { check_memory_fits_in(1, wide, 1, 1, MemoryUse::generation); },
                           {"weights and gradients", "one sequence of --seq-length=128", "more memory"});
  // The shape checks come first (the apps may change the micro-batch).
  TrainConfig slots = c;
  slots.micro_batch_size = 1 << 30;
  expect_error<UsageError>([&] { check_memory_fits_in(-1, slots, 1, 1, MemoryUse::evaluation); },
                           {"--micro-batch-size=1073741824", "32-bit"});
}

// The apps call the check before building anything: an impossible run is
// exit 2 with the options named (was exit 1, std::bad_alloc / "cannot create
// std::vector larger than max_size()").
int run_command(const std::string& cmd, std::string* output) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  output->clear();
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(MemoryCheck, AppsRefuseRunsThatCannotFit) {
  const std::string bin = RMOE_BINARY_DIR;
  if (!std::filesystem::exists(bin + "/rmoe_train") || !std::filesystem::exists(bin + "/rmoe_eval"))
    GTEST_SKIP() << "build rmoe_train and rmoe_eval first";
  std::string out;
  // About 800 TB of experts: no machine has it.
  EXPECT_EQ(run_command(bin + "/rmoe_train --hidden-size 65536 --num-attention-heads 2 --ffn-hidden-size 65536 "
                              "--num-experts 1024 --moe-router-topk 1",
                        &out),
            2)
      << out;
  EXPECT_NE(out.find("rmoe_train: this run needs about"), std::string::npos) << out;
  EXPECT_NE(out.find("--num-experts=1024"), std::string::npos) << out;
  EXPECT_EQ(run_command(bin + "/rmoe_train --seq-length 2147483647", &out), 2) << out;
  EXPECT_NE(out.find("--seq-length=2147483647"), std::string::npos) << out;
  // rmoe_eval's own --micro-batch-size on a tiny checkpoint: ~2 TB of activations.
  const std::string dir = ::testing::TempDir() + "rmoe_test_dry_run_ckpt";
  std::filesystem::remove_all(dir);
  ASSERT_EQ(run_command(bin + "/rmoe_train --config " RMOE_SOURCE_DIR "/configs/tiny.ini --train-iters 1 --save " +
                            dir,
                        &out),
            0)
      << out;
  EXPECT_EQ(run_command(bin + "/rmoe_eval --load " + dir + " --micro-batch-size 10000000", &out), 2) << out;
  EXPECT_NE(out.find("rmoe_eval: this run needs about"), std::string::npos) << out;
  EXPECT_NE(out.find("lower --micro-batch-size"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rmoe
