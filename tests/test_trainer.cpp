// test_trainer.cpp — the whole loop: it learns the synthetic Markov source to
// near its entropy rate; two runs with one seed are bit-identical; gradient
// accumulation over micro-batches equals one large batch.
#include <gtest/gtest.h>

#include <cmath>

#include "rmoe/train/trainer.h"
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

TEST(Trainer, TwoRunsWithOneSeedAreBitIdentical) {
  TrainConfig c = small_run(RouterType::gru);
  c.train_iters = 8;
  std::vector<double> losses[2];
  std::vector<float> params[2];
  for (int run = 0; run < 2; ++run) {
    Trainer t(c);
    while (t.step() < c.train_iters) losses[run].push_back(t.train_step().loss);
    params[run] = t.model().params().replicated();
  }
  for (size_t i = 0; i < losses[0].size(); ++i) EXPECT_EQ(losses[0][i], losses[1][i]) << "step " << i;
  EXPECT_EQ(params[0], params[1]);
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
