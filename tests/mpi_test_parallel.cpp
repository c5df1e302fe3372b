// mpi_test_parallel.cpp — expert parallelism under mpiexec -n 1, 2, 4:
// the dispatcher moves every row exactly once and back; every layout (P, EP)
// gives the one-process loss and gradients; repeated runs are bit-identical;
// a multi-rank training run learns like one process; the router gradient's
// parts by loss term (--log-router-grads) have the one-process norms.
// Collectives are reached by every rank whatever the assertions say.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "rmoe/parallel/comm.h"
#include "rmoe/parallel/grad_sync.h"
#include "rmoe/parallel/mpi_dispatcher.h"
#include "rmoe/core/rng.h"
#include "rmoe/model/model.h"
#include "rmoe/train/trainer.h"

using namespace rmoe;

namespace {

// Exposes the dispatcher's moves for the round-trip test.
struct ProbeDispatcher : MpiExpertDispatcher<double> {
  using MpiExpertDispatcher<double>::MpiExpertDispatcher;
  using MpiExpertDispatcher<double>::plan;
  using MpiExpertDispatcher<double>::to_experts;
  using MpiExpertDispatcher<double>::from_experts;
  const std::vector<int64_t>& eoff(int l) { return state(l).eoff; }
};

std::vector<int> valid_eps(int P, int E) {
  std::vector<int> v;
  for (int ep = 1; ep <= P; ++ep)
    if (P % ep == 0 && E % ep == 0) v.push_back(ep);
  return v;
}

}  // namespace

// Rows carry (source rank, global expert, slot) as exact integers. Routing is
// random and skewed: every third expert gets nothing, and rank 1 sends nothing.
// The capacity's key exchange: rank r sends 2 (r + 1) values (keys are rows
// of two); every rank gets all of them in rank order and its own first row.
// Checked on every rank and the verdict reduced, so all ranks return together.
TEST(SlotGatherer, GathersPiecesOfDifferentLengthsInRankOrder) {
  auto world = mpi_world();
  const int P = world->size(), me = world->rank();
  std::vector<double> mine(size_t(2 * (me + 1)));
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = 1000.0 * me + double(i);
  std::vector<double> all;
  int64_t first = 0;
  const SlotGatherer gather = world_slot_gatherer(*world);
  if (gather) {
    first = gather(Tensor<const double>(mine.data(), {int64_t(mine.size() / 2), 2}), all);
  } else {
    all = mine;  // one process: nothing to gather
  }
  std::vector<double> want;
  int64_t want_first = 0;
  for (int r = 0; r < P; ++r) {
    if (r == me) want_first = int64_t(want.size()) / 2;
    for (int i = 0; i < 2 * (r + 1); ++i) want.push_back(1000.0 * r + i);
  }
  int64_t wrong = (all == want && first == want_first) ? 0 : 1;
  world->allreduce_sum(&wrong, 1);
  EXPECT_EQ(wrong, 0) << "ranks with a wrong gather (this one: first " << first << ", want " << want_first << ")";
}

TEST(Dispatcher, RoundTripMovesEveryRowOnceAndBack) {
  auto world = mpi_world();
  const int P = world->size(), rank = world->rank();
  for (int E : {P, 2 * P, 3 * P}) {
    ProcessGroups g = make_process_groups(mpi_world(), P, E);
    ProbeDispatcher disp(1, E, *g.ep);
    const int64_t d = 3;
    const int64_t N = (rank == 1) ? 0 : 5 + 7 * rank;
    std::vector<int> expert_of(N);
    for (int64_t s = 0; s < N; ++s) {
      int e = int(random_bits(99 + E, rank, s) % E);
      if (e % 3 == 2) e = (e + 1) % E;  // experts 2, 5, ... stay empty (when E > 2)
      expert_of[s] = e;
    }
    std::sort(expert_of.begin(), expert_of.end());
    std::vector<int64_t> offsets(E + 1, 0);
    for (int e : expert_of) offsets[e + 1]++;
    for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
    std::vector<double> x(N * d);
    for (int64_t s = 0; s < N; ++s) {
      x[s * d] = rank;
      x[s * d + 1] = expert_of[s];
      x[s * d + 2] = double(s);
    }
    const int64_t R = disp.plan(0, offsets.data(), N);
    std::vector<double> xe(std::max<int64_t>(R, 1) * d), back(std::max<int64_t>(N, 1) * d, -1.0);
    disp.to_experts(0, Tensor<const double>(x.data(), {N, d}), Tensor<double>(xe.data(), {R, d}));
    // Bytes sent count exactly the rows that left this rank.
    int64_t away = 0;
    for (int64_t s = 0; s < N; ++s)
      if (expert_of[s] / (E / P) != g.ep->rank()) away += d * int64_t(sizeof(double));
    EXPECT_EQ(disp.bytes_sent(), away);
    // What should arrive: rows routed to my experts by every rank.
    std::vector<int64_t> sent(size_t(P) * E, 0);  // [src, expert] counts, all-reduced
    for (int e : expert_of) sent[size_t(rank) * E + e]++;
    world->allreduce_sum(sent.data(), int64_t(sent.size()));
    const int El = disp.num_local_experts(), e0 = disp.first_local_expert();
    int64_t expect_rows = 0;
    for (int r = 0; r < P; ++r)
      for (int j = 0; j < El; ++j) expect_rows += sent[size_t(r) * E + e0 + j];
    EXPECT_EQ(R, expect_rows) << "E=" << E;
    const auto& eoff = disp.eoff(0);
    for (int j = 0; j < El; ++j) {
      double last_src = -1;
      for (int64_t i = eoff[j]; i < eoff[j + 1]; ++i) {
        EXPECT_EQ(xe[i * d + 1], double(e0 + j)) << "row " << i << " is in expert " << e0 + j << "'s block";
        EXPECT_GE(xe[i * d], last_src) << "source ranks in order within an expert";
        last_src = xe[i * d];
      }
    }
    disp.from_experts(0, Tensor<const double>(xe.data(), {R, d}), Tensor<double>(back.data(), {N, d}));
    // The verdict is reduced over ranks before anything is asserted (as
    // nccl-tests does): an early return on one rank would leave the others
    // waiting in the next E's collectives.
    int64_t wrong = 0, first_wrong = -1;
    for (int64_t i = 0; i < N * d; ++i)
      if (back[i] != x[i] && wrong++ == 0) first_wrong = i;
    EXPECT_EQ(wrong, 0) << "E=" << E << ": rank " << rank << " got back " << wrong << " wrong elements, first "
                        << first_wrong;
    int64_t wrong_anywhere = wrong;
    world->allreduce_sum(&wrong_anywhere, 1);
    if (wrong_anywhere != 0) {
      ADD_FAILURE() << "E=" << E << ": " << wrong_anywhere << " elements came back wrong over all ranks";
      return;  // every rank returns here together
    }
  }
}

namespace {

ModelConfig tiny_model() {
  ModelConfig c;
  c.num_layers = 3;
  c.hidden_size = 12;
  c.num_heads = 2;
  c.num_experts = 4;
  c.topk = 2;
  c.ffn_hidden_size = 10;
  c.router_dim = 6;
  c.vocab_size = 11;
  c.seq_length = 6;
  c.router_type = RouterType::gru;
  c.aux_loss_coeff = 0.5;
  c.z_loss_coeff = 0.05;
  return c;
}

template <class T>
void init_params(ParamStore<T>& p, int first_expert) {
  p.init(42, 0.4, first_expert);
  for (const auto& s : p.specs()) {
    if (s.init == Init::normal) continue;
    T* v = p.data_of(s);
    for (int64_t i = 0; i < s.numel(); ++i) v[i] += T(0.2 * random_normal(49, hash_name(s.name), i));
  }
}

struct Grads {
  ForwardResult r;
  double ce_global = 0;
  std::vector<double> rep, exp;
};

// One optimizer-free step of the global batch (G sequences) on layout (P, ep).
template <class T>
Grads parallel_step(const ModelConfig& c, int G, int ep, const std::vector<int32_t>& tok,
                    const std::vector<int32_t>& tgt) {
  ProcessGroups g = make_process_groups(mpi_world(), ep, c.num_experts);
  const int P = g.world->size(), r = g.world->rank(), B = G / P;
  auto disp = std::make_shared<MpiExpertDispatcher<T>>(c.num_layers, c.num_experts, *g.ep);
  Model<T> m(c, B, disp, world_stats_reducer(*g.world), world_slot_gatherer(*g.world));
  init_params(m.params(), g.first_local_expert);
  Grads out;
  out.r = m.forward(tok.data() + size_t(r) * B * c.seq_length, tgt.data() + size_t(r) * B * c.seq_length, B);
  m.grads().zero();
  m.backward(1.0);
  auto& gr = m.grads().replicated();
  auto& ge = m.grads().expert();
  g.world->allreduce_sum(gr.data(), int64_t(gr.size()));
  g.edp->allreduce_sum(ge.data(), int64_t(ge.size()));
  out.ce_global = out.r.ce / P;
  g.world->allreduce_sum(&out.ce_global, 1);
  out.rep.assign(gr.begin(), gr.end());
  out.exp.assign(ge.begin(), ge.end());
  return out;
}

double norm_err(const std::vector<double>& a, const double* b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

// Tolerance: 1e-11 normalised max error in double, 3e-5 in float (the only
// differences are summation orders across ranks). capacity_factor > 0: the
// capacity decides over all ranks' slots, so every layout drops the slots one
// process drops.
template <class T>
void check_equivalence(double tol, const ModelConfig& c = tiny_model()) {
  auto world = mpi_world();
  const int P = world->size();
  const int G = 4;
  std::vector<int32_t> tok(G * c.seq_length), tgt(G * c.seq_length);
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int32_t(random_bits(5, 1, i) % c.vocab_size);
    tgt[i] = int32_t(random_bits(5, 2, i) % c.vocab_size);
  }
  // Reference: the whole global batch in this one process.
  Model<T> ref(c, G);
  init_params(ref.params(), 0);
  ForwardResult rr = ref.forward(tok.data(), tgt.data(), G);
  ref.grads().zero();
  ref.backward(1.0);
  std::vector<double> ref_rep(ref.grads().replicated().begin(), ref.grads().replicated().end());
  std::vector<double> ref_exp(ref.grads().expert().begin(), ref.grads().expert().end());
  int64_t ref_dropped = 0;
  for (int64_t d : rr.dropped_slots) ref_dropped += d;
  if (c.capacity_factor > 0) {
    EXPECT_GT(ref_dropped, 0) << "the capacity drops nothing: the test would not test it";
  }
  for (int ep : valid_eps(P, c.num_experts)) {
    SCOPED_TRACE("P=" + std::to_string(P) + " EP=" + std::to_string(ep));
    Grads g = parallel_step<T>(c, G, ep, tok, tgt);
    EXPECT_NEAR(g.ce_global, rr.ce, tol * 10);
    EXPECT_NEAR(g.r.lb, rr.lb, tol * 10);
    EXPECT_NEAR(g.r.z, rr.z, tol * 10 * std::max(1.0, rr.z));
    EXPECT_EQ(g.r.expert_counts, rr.expert_counts);
    EXPECT_EQ(g.r.dropped_slots, rr.dropped_slots);
    EXPECT_EQ(g.r.slots_global, rr.slots_global);
    EXPECT_LT(norm_err(g.rep, ref_rep.data(), ref_rep.size()), tol) << "replicated gradients";
    // This rank's experts are rows [first, first + El) of every expert tensor.
    ProcessGroups layout = make_process_groups(mpi_world(), ep, c.num_experts);
    ParamStore<double> whole(model_param_specs(c));
    ParamStore<double> slice(model_param_specs(c, layout.first_local_expert, layout.num_local_experts));
    for (const auto& s : slice.specs()) {
      if (!s.expert) continue;
      const ParamSpec* w = whole.find(s.name);
      const int64_t per = s.numel() / s.shape[0];
      std::vector<double> got(g.exp.begin() + s.offset, g.exp.begin() + s.offset + s.numel());
      EXPECT_LT(norm_err(got, ref_exp.data() + w->offset + layout.first_local_expert * per, size_t(s.numel())), tol)
          << s.name;
    }
  }
}

}  // namespace

TEST(Equivalence, EveryLayoutGivesTheOneProcessGradientsDouble) { check_equivalence<double>(1e-11); }
TEST(Equivalence, EveryLayoutGivesTheOneProcessGradientsFloat) { check_equivalence<float>(3e-5); }
TEST(Equivalence, WithCapacityEveryLayoutGivesTheOneProcessGradientsDouble) {
  ModelConfig c = tiny_model();
  c.capacity_factor = 0.75;
  check_equivalence<double>(1e-11, c);
}
TEST(Equivalence, WithCapacityEveryLayoutGivesTheOneProcessGradientsFloat) {
  ModelConfig c = tiny_model();
  c.capacity_factor = 0.75;
  check_equivalence<float>(3e-5, c);
}
// The cosine head's log_scale and expert_emb sum their gradient over every
// token: over ranks too.
TEST(Equivalence, EveryLayoutGivesTheOneProcessGradientsGruXmoe) {
  ModelConfig c = tiny_model();
  c.router_type = RouterType::gru_xmoe;
  c.xmoe_dim = 5;
  check_equivalence<double>(1e-11, c);
}
// The router ablations are per token: the lstm's (h, c), one projection shared
// by all layers, and the logit residual over depth.
TEST(Equivalence, EveryLayoutGivesTheOneProcessGradientsRouterAblations) {
  ModelConfig c = tiny_model();
  c.router_type = RouterType::lstm;
  c.router_shared_proj = true;
  c.router_logit_residual = 0.5;
  check_equivalence<double>(1e-11, c);
}

TEST(Equivalence, RepeatedRunsAreBitIdentical) {
  auto world = mpi_world();
  const ModelConfig c = tiny_model();
  const int G = 4;
  std::vector<int32_t> tok(G * c.seq_length), tgt(G * c.seq_length);
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int32_t(random_bits(8, 1, i) % c.vocab_size);
    tgt[i] = int32_t(random_bits(8, 2, i) % c.vocab_size);
  }
  Grads a = parallel_step<float>(c, G, world->size(), tok, tgt);
  Grads b = parallel_step<float>(c, G, world->size(), tok, tgt);
  EXPECT_EQ(a.ce_global, b.ce_global);
  EXPECT_EQ(a.rep, b.rep);
  EXPECT_EQ(a.exp, b.exp);
}

// Bound: after 100 steps the multi-rank validation loss is within 0.05
// nats/token of the one-process run's (same global batches). The first step
// (same weights, same batch) has the same loss and the same clipped-or-not
// global gradient norm: every parameter is counted exactly once.
TEST(Training, MultiRankRunLearnsLikeOneProcess) {
  const char* argv[] = {"rmoe_train", "--config", RMOE_SOURCE_DIR "/configs/tiny.ini"};
  TrainConfig cfg = parse_train_config(3, argv);
  cfg.micro_batch_size = 1;
  cfg.global_batch_size = 8;
  double val[2];
  StepStats first[2];
  for (int run = 0; run < 2; ++run) {
    auto groups = std::make_shared<ProcessGroups>(
        make_process_groups(run == 0 ? make_self_comm() : mpi_world(), 0, cfg.model.num_experts));
    Trainer t(cfg, groups);
    first[run] = t.train_step();
    while (t.step() < cfg.train_iters) t.train_step();
    val[run] = t.evaluate(8);
  }
  EXPECT_NEAR(first[1].loss, first[0].loss, 1e-5);
  EXPECT_NEAR(first[1].grad_norm, first[0].grad_norm, 1e-5 * first[0].grad_norm);
  EXPECT_LT(std::abs(val[1] - val[0]), 0.05) << "one process " << val[0] << ", all ranks " << val[1];
}

// --log-router-grads under data parallelism: each rank's part of each loss
// term's router gradient is summed over the ranks before the norms are taken,
// so P ranks report the one-process norms (per layer, cell, total; full, lm,
// lb, z). The same objective needs the same micro-steps: the load-balance
// statistics cover one micro-step on all ranks (docs/MODEL.md), so one
// micro-step per step, P ranks x 4/P sequences against one process x 4.
// The extra backwards (with the dispatcher's all-to-alls again) leave the
// multi-rank step bit-identical to one without them.
TEST(RouterGrads, NormsOverRanksEqualOneProcess) {
  const char* argv[] = {"rmoe_train", "--config", RMOE_SOURCE_DIR "/configs/tiny.ini"};
  TrainConfig cfg = parse_train_config(3, argv);
  const int P = mpi_world()->size();
  cfg.global_batch_size = 4;
  cfg.model.aux_loss_coeff = 0.1;
  cfg.model.z_loss_coeff = 0.01;
  RouterGradSplit split[2];
  double grad_norm[3];
  std::vector<float> params[3];  // replicated, then this rank's experts
  for (int run = 0; run < 3; ++run) {  // one process; all ranks; all ranks without the split
    cfg.micro_batch_size = run == 0 ? 4 : 4 / P;
    auto groups = std::make_shared<ProcessGroups>(
        make_process_groups(run == 0 ? make_self_comm() : mpi_world(), 0, cfg.model.num_experts));
    Trainer t(cfg, groups);
    const StepStats st = t.train_step(run < 2);
    if (run < 2) split[run] = st.router_grads;
    grad_norm[run] = st.grad_norm;
    params[run] = t.model().params().replicated();
    params[run].insert(params[run].end(), t.model().params().expert().begin(), t.model().params().expert().end());
  }
  EXPECT_NEAR(grad_norm[1], grad_norm[0], 1e-5 * grad_norm[0]);
  EXPECT_EQ(grad_norm[1], grad_norm[2]);
  EXPECT_EQ(params[1], params[2]) << "the split changed the multi-rank update";
  auto same = [](const RouterGradNorms& got, const RouterGradNorms& want, const char* part) {
    SCOPED_TRACE(part);
    const double tol = 2e-5 * want.total;  // float, summation order over ranks
    EXPECT_GT(want.total, 0.0);
    EXPECT_NEAR(got.total, want.total, tol);
    EXPECT_NEAR(got.cell, want.cell, tol);
    ASSERT_EQ(got.layers.size(), want.layers.size());
    for (size_t l = 0; l < want.layers.size(); ++l) EXPECT_NEAR(got.layers[l], want.layers[l], tol) << "layer " << l;
  };
  ASSERT_TRUE(split[1].measured && split[1].has_z);
  same(split[1].full, split[0].full, "full");
  same(split[1].lm, split[0].lm, "lm");
  same(split[1].lb, split[0].lb, "lb");
  same(split[1].z, split[0].z, "z");
}
