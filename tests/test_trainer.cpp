// test_trainer.cpp — the whole loop: it learns the synthetic Markov source to
// near its entropy rate; two runs with one seed are bit-identical (every
// parameter, experts included, and the AdamW moments); gradient accumulation
// over micro-batches equals one large batch; a non-finite step is skipped
// (nothing changes but the step), counted, and ends the run after
// max_skipped_steps in a row; an update that overflows ends it at once; the
// token count is a running sum over steps of any batch size; splitting the
// router gradient by loss term (train_step(true)) leaves every bit of
// training as it was.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

#include "rmoe/train/trainer.h"

extern "C" int openblas_get_num_threads(void);
extern "C" void openblas_set_num_threads(int);
#include "test_util.h"

using namespace rmoe;

namespace {

TrainConfig small_run(RouterType router) {
  TrainConfig c = testutil::parse_args({});
  c.model.num_layers = 2;
  c.model.hidden_size = 32;
  c.model.num_heads = 2;
  c.model.num_experts = 4;
  c.model.topk = 2;
  c.model.ffn_hidden_size = 32;
  c.model.router_dim = 16;
  c.model.vocab_size = 32;
  c.model.seq_length = 32;
  c.model.router_type = router;
  c.micro_batch_size = 8;
  c.global_batch_size = 8;
  c.lr = 1e-2;
  c.min_lr = 1e-3;
  c.lr_warmup_iters = 10;
  c.train_iters = 150;
  c.lr_decay_iters = 150;
  c.seed = 7;
  validate_train_config(c);
  return c;
}

}  // namespace

// Bound: after 150 steps of 256 tokens the validation loss is within 0.25
// nats/token of the chain's entropy rate (log V = 3.47 at the start; an
// untrained model sits near it), and below 0.75 of log V.
TEST(Trainer, LearnsMarkovSourceNearEntropyRate) {
  for (RouterType r : {RouterType::gru, RouterType::linear}) {
    TrainConfig c = small_run(r);
    Trainer t(c);
    const double before = t.evaluate(4);
    while (t.step() < c.train_iters) t.train_step();
    const double after = t.evaluate(4), best = t.source().entropy_rate_nats();
    EXPECT_GT(before, best + 1.0) << router_type_name(r);
    EXPECT_LT(after, best + 0.25) << router_type_name(r) << " entropy rate " << best;
    EXPECT_LT(after, 0.75 * std::log(32.0)) << router_type_name(r);
  }
}

// The cosine routers train as well (same bound): the learned temperature,
// the expert embeddings and the projections all move.
TEST(Trainer, CosineRoutersLearnMarkovSource) {
  for (RouterType r : {RouterType::cosine, RouterType::xmoe, RouterType::gru_xmoe}) {
    TrainConfig c = small_run(r);
    c.model.xmoe_dim = 8;
    c.weight_decay = 0.1;
    Trainer t(c);
    const float s0 = t.model().params().get("layers/00/router/log_scale").data[0];
    while (t.step() < c.train_iters) t.train_step();
    const double after = t.evaluate(4), best = t.source().entropy_rate_nats();
    EXPECT_LT(after, best + 0.25) << router_type_name(r) << " entropy rate " << best;
    EXPECT_NE(t.model().params().get("layers/00/router/log_scale").data[0], s0) << router_type_name(r);
  }
}

// Everything a step changes: parameters (replicated and experts) and the four moment vectors.
std::vector<std::vector<float>> whole_state(Trainer& t) {
  TrainState s = t.state();
  return {s.params->replicated(), s.params->expert(), *s.m_rep, *s.v_rep, *s.m_exp, *s.v_exp};
}

bool bitwise_equal(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0)
      return false;
  return true;
}

// The random router's gates never move (AdamW skips them; weight decay is on),
// everything else trains; a checkpoint holds them like any tensor.
TEST(Trainer, RandomRouterGateStaysAsInitialised) {
  TrainConfig c = small_run(RouterType::random);
  c.weight_decay = 0.1;
  c.train_iters = 3;
  Trainer t(c);
  ASSERT_GT(c.weight_decay, 0.0);
  const std::vector<float> before = t.model().params().replicated();
  while (t.step() < c.train_iters) t.train_step();
  const std::vector<float>& after = t.model().params().replicated();
  int frozen = 0;
  for (const auto& s : t.model().params().specs()) {
    if (s.expert) continue;
    bool same = true;
    for (int64_t i = 0; i < s.numel(); ++i) same = same && before[s.offset + i] == after[s.offset + i];
    if (s.frozen) {
      EXPECT_TRUE(same) << s.name;
      ++frozen;
    } else if (s.init == Init::normal) {
      EXPECT_FALSE(same) << s.name;
    }
  }
  EXPECT_EQ(frozen, c.model.num_layers);
}

TEST(Trainer, TwoRunsWithOneSeedAreBitIdentical) {
  TrainConfig c = small_run(RouterType::gru);
  c.train_iters = 8;
  std::vector<double> losses[2];
  std::vector<std::vector<float>> state[2];
  for (int run = 0; run < 2; ++run) {
    Trainer t(c);
    while (t.step() < c.train_iters) losses[run].push_back(t.train_step().loss);
    state[run] = whole_state(t);
  }
  for (size_t i = 0; i < losses[0].size(); ++i) EXPECT_EQ(losses[0][i], losses[1][i]) << "step " << i;
  const char* names[] = {"replicated parameters", "expert parameters", "m_rep", "v_rep", "m_exp", "v_exp"};
  ASSERT_EQ(state[0].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_FALSE(state[0][i].empty()) << names[i];
    EXPECT_EQ(state[0][i], state[1][i]) << names[i];
  }
  // The comparison sees the experts: another seed changes them.
  c.seed = 8;
  Trainer other(c);
  other.train_step();
  EXPECT_NE(whole_state(other)[1], state[0][1]);
}

// --log-router-grads: the extra backwards write only their own stores, so
// training with the router gradient split on every step is bit-identical to
// training without (parameters, experts, moments, losses), with gradient
// accumulation (2 micro-steps) and a z-loss. The split is there: the parts are
// non-zero, full is the training gradient's router part and, the gradient
// being their sum, no longer than the parts together; the z part exists only
// with a z coefficient, the cell only for routers that have one.
TEST(Trainer, RouterGradSplitLeavesTrainingBitIdentical) {
  TrainConfig c = small_run(RouterType::gru);
  c.micro_batch_size = 4;
  c.model.z_loss_coeff = 0.01;
  c.train_iters = 5;
  std::vector<double> losses[2], norms[2];
  std::vector<std::vector<float>> state[2];
  for (int run = 0; run < 2; ++run) {
    Trainer t(c);
    while (t.step() < c.train_iters) {
      const StepStats st = t.train_step(run == 1);
      losses[run].push_back(st.loss);
      norms[run].push_back(st.grad_norm);
      const RouterGradSplit& rg = st.router_grads;
      EXPECT_EQ(rg.measured, run == 1);
      if (run == 0) continue;
      EXPECT_TRUE(rg.has_z);
      EXPECT_TRUE(rg.has_cell);
      ASSERT_EQ(rg.lm.layers.size(), size_t(c.model.num_layers));
      EXPECT_GT(rg.lm.total, 0.0);
      EXPECT_GT(rg.lb.total, 0.0);
      EXPECT_GT(rg.z.total, 0.0);
      EXPECT_GT(rg.lm.cell, 0.0);
      EXPECT_GT(rg.full.total, 0.0);
      EXPECT_LE(rg.full.total, (rg.lm.total + rg.lb.total + rg.z.total) * (1 + 1e-6));
      EXPECT_LE(rg.full.total, st.grad_norm * (1 + 1e-6));  // a part of the whole gradient
      EXPECT_GT(st.router_grads_seconds, 0.0);
    }
    state[run] = whole_state(t);
  }
  for (size_t i = 0; i < losses[0].size(); ++i) {
    EXPECT_EQ(losses[0][i], losses[1][i]) << "step " << i;
    EXPECT_EQ(norms[0][i], norms[1][i]) << "step " << i;
  }
  EXPECT_TRUE(bitwise_equal(state[0], state[1]));
  // No z coefficient: no z part; a linear router: no cell.
  c.model.z_loss_coeff = 0;
  c.model.router_type = RouterType::linear;
  Trainer t(c);
  const RouterGradSplit rg = t.train_step(true).router_grads;
  EXPECT_FALSE(rg.has_z);
  EXPECT_FALSE(rg.has_cell);
  EXPECT_EQ(rg.z.total, 0.0);
  EXPECT_EQ(rg.lm.cell, 0.0);
  EXPECT_GT(rg.lb.total, 0.0);
}

// --moe-aux-loss-coeff 0: the load-balance part is exactly 0 (computed, not assumed).
TEST(Trainer, NoAuxCoefficientGivesAZeroLoadBalancePart) {
  TrainConfig c = small_run(RouterType::gru);
  c.model.aux_loss_coeff = 0;
  Trainer t(c);
  const RouterGradSplit rg = t.train_step(true).router_grads;
  EXPECT_EQ(rg.lb.total, 0.0);
  for (double n : rg.lb.layers) EXPECT_EQ(n, 0.0);
  EXPECT_GT(rg.lm.total, 0.0);
}

// rmoe's thread count changes nothing, bit for bit: OpenMP loops split work
// only over independent elements (or run serially below worth_threads), the
// experts run concurrently at 2 threads (8 experts, for_each_expert) and in
// order at 1, and reductions have a fixed order. Shapes large enough that
// the threaded paths are taken. OpenBLAS stays at one thread: its own threads
// split a GEMM in ways that round differently on some kernels (Haswell, Zen,
// Sandybridge; not SkylakeX), which is OpenBLAS's business, not rmoe's.
TEST(Trainer, ThreadCountDoesNotChangeBits) {
  TrainConfig c = small_run(RouterType::gru);
  c.model.hidden_size = 128;
  c.model.ffn_hidden_size = 128;
  c.model.num_experts = 8;
  c.model.seq_length = 64;
  c.train_iters = 3;
  std::vector<double> losses[2];
  std::vector<std::vector<float>> state[2];
  const int saved_omp = omp_get_max_threads(), saved_blas = openblas_get_num_threads();
  for (int run = 0; run < 2; ++run) {
    omp_set_num_threads(run + 1);
    openblas_set_num_threads(1);
    Trainer t(c);
    while (t.step() < c.train_iters) losses[run].push_back(t.train_step().loss);
    state[run] = whole_state(t);
  }
  omp_set_num_threads(saved_omp);
  openblas_set_num_threads(saved_blas);
  for (size_t i = 0; i < losses[0].size(); ++i) EXPECT_EQ(losses[0][i], losses[1][i]) << "step " << i;
  for (size_t i = 0; i < state[0].size(); ++i) EXPECT_EQ(state[0][i], state[1][i]) << "state part " << i;
}

// 4 micro-batches of 2 give the same step as 1 micro-batch of 8, to fp32
// rounding of the summation order.
TEST(Trainer, AccumulationEqualsOneBatch) {
  TrainConfig a = small_run(RouterType::gru);
  a.train_iters = 3;
  a.clip_grad = 0;
  TrainConfig b = a;
  b.micro_batch_size = 2;
  Trainer ta(a), tb(b);
  for (int s = 0; s < 3; ++s) {
    const StepStats sa = ta.train_step(), sb = tb.train_step();
    EXPECT_NEAR(sa.loss, sb.loss, 1e-5);
    EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-4 * sa.grad_norm);
  }
}

// A NaN in one parameter makes the loss non-finite: the step is skipped (no
// parameter or moment changes, bit for bit), but it counts: the step and the
// token count advance (the batch is consumed). Once the NaN is gone the next
// step is applied and the run of skipped steps ends.
TEST(TrainerNonFinite, StepIsSkippedAndCounted) {
  TrainConfig c = small_run(RouterType::gru);
  c.train_iters = 10;
  Trainer t(c);
  const int64_t step_tokens = int64_t(c.global_batch_size) * c.model.seq_length;
  const StepStats first = t.train_step();
  EXPECT_FALSE(first.skipped);
  EXPECT_EQ(first.consumed_tokens, step_tokens);
  float& w = t.model().params().replicated()[0];
  const float kept = w;
  w = NAN;
  const auto before = whole_state(t);
  for (int i = 1; i <= 2; ++i) {
    const StepStats st = t.train_step();
    EXPECT_TRUE(st.skipped);
    EXPECT_EQ(st.skipped_in_a_row, i);
    EXPECT_EQ(st.skipped_steps, i);
    EXPECT_EQ(st.step, i);
    EXPECT_FALSE(std::isfinite(st.loss) && std::isfinite(st.grad_norm));
    EXPECT_EQ(st.consumed_tokens, (i + 1) * step_tokens);
    EXPECT_TRUE(bitwise_equal(whole_state(t), before)) << "a skipped step changed the state";
  }
  EXPECT_EQ(t.step(), 3);
  EXPECT_EQ(t.state().skipped_steps, 2);
  EXPECT_EQ(t.state().skipped_in_a_row, 2);
  w = kept;
  const StepStats good = t.train_step();
  EXPECT_FALSE(good.skipped);
  EXPECT_EQ(good.skipped_in_a_row, 0);
  EXPECT_EQ(good.skipped_steps, 2);
  EXPECT_TRUE(std::isfinite(good.loss));
  EXPECT_FALSE(bitwise_equal(whole_state(t), before));
  EXPECT_EQ(t.state().skipped_in_a_row, 0);
  EXPECT_EQ(t.state().consumed_tokens, 4 * step_tokens);
}

// After max_skipped_steps non-finite steps in a row, the next one throws,
// naming the step as the log counts it (from 1), and changes nothing.
TEST(TrainerNonFinite, StopsAfterMaxSkippedStepsInARow) {
  for (int64_t max_skipped : {0, 3}) {
    TrainConfig c = small_run(RouterType::linear);
    c.max_skipped_steps = max_skipped;
    Trainer t(c);
    t.train_step();
    t.model().params().expert()[5] = INFINITY;  // an expert weight: the experts' output overflows
    for (int64_t i = 0; i < max_skipped; ++i) EXPECT_TRUE(t.train_step().skipped);
    const auto before = whole_state(t);
    const int64_t step = t.step();
    try {
      t.train_step();
      ADD_FAILURE() << "no error after " << max_skipped << " skipped steps";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("step " + std::to_string(step + 1) + ": loss"), std::string::npos) << msg;
      EXPECT_NE(msg.find("--max-skipped-steps=" + std::to_string(max_skipped)), std::string::npos) << msg;
      EXPECT_NE(msg.find("the " + std::to_string(max_skipped) + " step(s) before it"), std::string::npos) << msg;
    }
    EXPECT_EQ(t.step(), step);
    EXPECT_TRUE(bitwise_equal(whole_state(t), before));
  }
}

// A learning rate a float cannot hold (1e300 -> inf) turns finite gradients
// into non-finite weights: the step throws at once, naming it.
TEST(TrainerNonFinite, UpdateThatOverflowsStopsAtOnce) {
  TrainConfig c = small_run(RouterType::gru);
  c.lr = 1e300;
  c.min_lr = 0;
  Trainer t(c);
  try {
    t.train_step();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("step 1: the AdamW update"), std::string::npos) << msg;
    EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  }
}

// consumed_tokens is a running sum: 8 steps at global batch 8 and 8 more at
// 16 (S = 32) are 8 x 8 x 32 + 8 x 16 x 32 = 6144 tokens, not 16 x 16 x 32.
TEST(Trainer, ConsumedTokensAreARunningSumOverBatchSizes) {
  TrainConfig a = small_run(RouterType::linear);
  a.train_iters = 16;
  Trainer ta(a);
  while (ta.step() < 8) ta.train_step();
  EXPECT_EQ(ta.state().consumed_tokens, 8 * 8 * 32);
  TrainConfig b = a;
  b.global_batch_size = 16;
  Trainer tb(b);
  tb.restore(ta.state());
  EXPECT_EQ(tb.step(), 8);
  EXPECT_EQ(tb.run_id(), ta.run_id());
  while (tb.step() < 16) tb.train_step();
  EXPECT_EQ(tb.state().consumed_tokens, 8 * 8 * 32 + 8 * 16 * 32);
  EXPECT_EQ(tb.state().run_id, ta.run_id());
  EXPECT_EQ(tb.state().tokenizer_fingerprint, "synthetic:markov:seed=7:vocab=32");
}
