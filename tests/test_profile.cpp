// --profile's accounting (core/profile.h): ops are counted in the region they
// run in, nested regions are charged apart, paused and foreign-thread work is
// not recorded, and a model step's op counts are what its layers call.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "rmoe/core/profile.h"
#include "rmoe/kernels/ops.h"
#include "rmoe/train/config.h"
#include "rmoe/train/trainer.h"

using namespace rmoe;
using profile::Region;

namespace {

int64_t calls_of(Region r, const std::string& op) {
  for (const auto& o : profile::op_times())
    if (o.region == r && o.op == op) return o.calls;
  return 0;
}

double seconds_of(Region r) {
  for (const auto& rt : profile::region_times())
    if (rt.region == r) return rt.seconds;
  return -1;
}

// Busy work of roughly the given length (no sleeping: a sleep is no CPU time
// but is wall time, which is what regions measure, so either would do).
void spin(double seconds) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
  }
}

}  // namespace

TEST(Profile, OpsAreCountedInTheirRegionAndNestedRegionsApart) {
  std::vector<float> buf(64);
  Tensor<float> t(buf.data(), {64});
  profile::enable(true);
  const auto t0 = Clock::now();
  {
    profile::RegionScope outer(Region::attention);
    ops::fill(t, 1.0);
    ops::fill(t, 2.0);
    spin(0.02);
    {
      profile::RegionScope inner(Region::router);
      ops::fill(t, 3.0);
      spin(0.05);
    }
  }
  ops::fill(t, 4.0);  // outside every region
  const double wall = seconds_since(t0);
  profile::pause();
  ops::fill(t, 5.0);  // paused: not counted
  std::thread([&] {
    profile::RegionScope r(Region::experts);
    ops::fill(t, 6.0);  // another thread: not counted
  }).join();
  profile::resume();
  EXPECT_EQ(calls_of(Region::attention, "fill"), 2);
  EXPECT_EQ(calls_of(Region::router, "fill"), 1);
  EXPECT_EQ(calls_of(Region::other, "fill"), 1);
  EXPECT_EQ(calls_of(Region::experts, "fill"), 0);
  // The inner region's 50 ms are the router's, not the attention's too.
  EXPECT_GE(seconds_of(Region::router), 0.05);
  EXPECT_GE(seconds_of(Region::attention), 0.02);
  EXPECT_LT(seconds_of(Region::attention), seconds_of(Region::router));
  double sum = 0;
  for (const auto& rt : profile::region_times()) sum += rt.seconds;
  EXPECT_LE(sum, wall);
  const std::string rep = profile::report(1, wall);
  EXPECT_NE(rep.find("router"), std::string::npos) << rep;
  EXPECT_NE(rep.find("fill"), std::string::npos) << rep;
  profile::reset();
  EXPECT_EQ(calls_of(Region::attention, "fill"), 0);
  profile::enable(false);
  ops::fill(t, 7.0);
  EXPECT_TRUE(profile::op_times().empty());
}

// One training step: every layer's attention runs its four projections and
// one attention forward per micro-batch, in the attention region.
TEST(Profile, ATrainingStepCountsEachLayersOps) {
  TrainConfig cfg;
  cfg.model.num_layers = 2;
  cfg.model.hidden_size = 16;
  cfg.model.num_heads = 2;
  cfg.model.num_experts = 4;
  cfg.model.topk = 2;
  cfg.model.ffn_hidden_size = 16;
  cfg.model.vocab_size = 32;
  cfg.model.seq_length = 8;
  cfg.micro_batch_size = 2;
  cfg.global_batch_size = 6;  // 3 micro-batches
  cfg.train_iters = 4;
  Trainer trainer(cfg);
  profile::enable(true);
  trainer.train_step();
  profile::pause();
  const int64_t micro = 3, L = 2;
  EXPECT_EQ(calls_of(Region::attention, "attention_forward"), micro * L);
  EXPECT_EQ(calls_of(Region::attention, "attention_backward"), micro * L);
  EXPECT_EQ(calls_of(Region::attention, "linear_forward"), micro * L * 4);  // q, k, v, o
  EXPECT_EQ(calls_of(Region::experts, "experts_forward"), micro * L);
  EXPECT_EQ(calls_of(Region::head, "cross_entropy"), 2 * micro);  // the loss, then its gradient
  EXPECT_EQ(calls_of(Region::embedding, "embedding_backward"), micro);
  EXPECT_GT(seconds_of(Region::optimizer), 0);
  profile::enable(false);
}
