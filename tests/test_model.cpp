// test_model.cpp — the whole model's backward against finite differences in
// double (3 layers so the router state crosses layers), for every router;
// router_detach cuts exactly the recurrent path (and its gradient equals
// finite differences with the router state held, set_freeze_router_state);
// the cosine routers' parameters; bitwise determinism; the statistics reducer
// seam; backward by loss term into a router-only store (--log-router-grads):
// repeated backwards on one forward, the parts add up to the router gradient,
// the norms' grouping.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <utility>

#include "rmoe/core/rng.h"
#include "rmoe/model/model.h"
#include "rmoe/model/router_grads.h"

using namespace rmoe;

namespace {

ModelConfig tiny(RouterType r) {
  ModelConfig c;
  c.num_layers = 3;
  c.hidden_size = 12;
  c.num_heads = 2;
  c.num_experts = 4;
  c.topk = 2;
  c.ffn_hidden_size = 10;
  c.router_dim = 6;
  c.vocab_size = 11;
  c.seq_length = 5;
  c.router_type = r;
  c.aux_loss_coeff = 0.5;  // large, so the aux-loss path is a real part of the check
  c.z_loss_coeff = 0.05;
  return c;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};
Batch make_batch(const ModelConfig& c, int B, uint64_t seed) {
  Batch b;
  for (int i = 0; i < B * c.seq_length; ++i) {
    b.tokens.push_back(int32_t(random_bits(seed, 1, i) % c.vocab_size));
    b.targets.push_back(int32_t(random_bits(seed, 2, i) % c.vocab_size));
  }
  return b;
}

// Larger-than-default init so attention and routing are far from uniform.
template <class T>
void init_model(Model<T>& m, uint64_t seed) {
  m.params().init(seed, 0.4);
  for (const auto& s : m.params().specs()) {
    if (s.init == Init::normal) continue;
    T* p = m.params().data_of(s);
    for (int64_t i = 0; i < s.numel(); ++i)
      p[i] += T(0.2 * random_normal(seed + 7, hash_name(s.name), i));  // norms and biases off their 1/0
  }
}

void fd_check(ModelConfig c) {
  const int B = 2;
  Model<double> m(c, B);
  init_model(m, 42);
  Batch b = make_batch(c, B, 9);
  m.forward(b.tokens.data(), b.targets.data(), B);
  m.grads().zero();
  m.backward(1.0);
  m.set_freeze_routing(true);  // FD with the top-k choice held fixed
  // Detached: the backward holds h_{l-1} constant, so the FD forwards do too.
  m.set_freeze_router_state(c.router_detach);
  std::mt19937 rng(3);
  int checked = 0;
  double worst = 0;
  for (const auto& s : m.params().specs()) {
    double* p = m.params().data_of(s);
    const double* g = m.grads().data_of(s);
    if (s.frozen) {  // the random router's gate: no gradient at all (FD would see one)
      for (int64_t i = 0; i < s.numel(); ++i) ASSERT_EQ(g[i], 0.0) << s.name << "[" << i << "]";
      continue;
    }
    std::uniform_int_distribution<int64_t> pick(0, s.numel() - 1);
    for (int r = 0; r < 4; ++r) {
      const int64_t i = pick(rng);
      const double eps = 1e-5, keep = p[i];
      p[i] = keep + eps;
      const double lp = m.forward(b.tokens.data(), b.targets.data(), B).total;
      p[i] = keep - eps;
      const double lm = m.forward(b.tokens.data(), b.targets.data(), B).total;
      p[i] = keep;
      const double fd = (lp - lm) / (2 * eps);
      const double err = std::abs(fd - g[i]) / std::max(1e-3, std::abs(fd) + std::abs(g[i]));
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-6) << s.name << "[" << i << "] analytic " << g[i] << " fd " << fd;
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
  ::testing::Test::RecordProperty("worst_rel_err", std::to_string(worst));
}

}  // namespace

TEST(ModelFD, Linear) { fd_check(tiny(RouterType::linear)); }
TEST(ModelFD, Mlp) { fd_check(tiny(RouterType::mlp)); }
TEST(ModelFD, MlpTanh) { fd_check(tiny(RouterType::mlp_tanh)); }
TEST(ModelFD, Gru) { fd_check(tiny(RouterType::gru)); }
TEST(ModelFD, Rnn) { fd_check(tiny(RouterType::rnn)); }
TEST(ModelFD, GruNp) { fd_check(tiny(RouterType::gru_np)); }
TEST(ModelFD, Random) { fd_check(tiny(RouterType::random)); }  // gate frozen, the rest checked
// The cosine routers (r = 5 < d = 12 for xmoe, gru-xmoe; cosine uses d).
ModelConfig tiny_cosine(RouterType r) {
  ModelConfig c = tiny(r);
  c.xmoe_dim = 5;
  return c;
}
TEST(ModelFD, Cosine) { fd_check(tiny_cosine(RouterType::cosine)); }
TEST(ModelFD, Xmoe) { fd_check(tiny_cosine(RouterType::xmoe)); }
TEST(ModelFD, GruXmoe) { fd_check(tiny_cosine(RouterType::gru_xmoe)); }
// With router_detach the gradient is that of the loss with every h_{l-1}
// held at its value (set_freeze_router_state), not that of the forward's loss.
ModelConfig detached(ModelConfig c) {
  c.router_detach = true;
  return c;
}
TEST(ModelFD, GruXmoeDetach) { fd_check(detached(tiny_cosine(RouterType::gru_xmoe))); }
TEST(ModelFD, GruDetach) { fd_check(detached(tiny(RouterType::gru))); }
TEST(ModelFD, RnnDetach) { fd_check(detached(tiny(RouterType::rnn))); }
// The frozen state is what makes those checks: without it finite differences
// see the recurrent path the detached backward leaves out. Only the top
// layer's parameters reach the loss by no cut path and still agree.
TEST(ModelFD, GruXmoeDetachDiffersFromTheForwardsGradient) {
  auto c = detached(tiny_cosine(RouterType::gru_xmoe));
  Model<double> m(c, 2);
  init_model(m, 42);
  Batch b = make_batch(c, 2, 9);
  m.forward(b.tokens.data(), b.targets.data(), 2);
  m.grads().zero();
  m.backward(1.0);
  m.set_freeze_routing(true);
  auto fd_of = [&](const char* name, int64_t i) {
    double* p = m.params().data_of(*m.params().find(name));
    const double keep = p[i], eps = 1e-5;
    p[i] = keep + eps;
    const double lp = m.forward(b.tokens.data(), b.targets.data(), 2).total;
    p[i] = keep - eps;
    const double lm = m.forward(b.tokens.data(), b.targets.data(), 2).total;
    p[i] = keep;
    return (lp - lm) / (2 * eps);
  };
  auto grad_of = [&](const char* name, int64_t i) { return m.grads().data_of(*m.params().find(name))[i]; };
  EXPECT_GT(std::abs(fd_of("layers/00/router/proj_w", 3) - grad_of("layers/00/router/proj_w", 3)), 1e-6);
  EXPECT_NEAR(fd_of("layers/02/router/expert_emb", 3), grad_of("layers/02/router/expert_emb", 3), 1e-8);
}

// The LM head by chunks (lm_head.cpp): 3 rows of logits at a time over 10
// tokens (chunks 3, 3, 3, 1) computes what one chunk does: the same losses,
// every gradient to rounding, finite differences; logits(first, n) gives any
// rows, recomputed when the head does not hold them.
TEST(ModelHead, ChunkedHeadIsTheWholeHead) {
  const int B = 2;
  ModelConfig c = tiny(RouterType::gru);
  Model<double> whole(c, B);
  c.head_chunk_elements = 3 * c.vocab_size;
  Model<double> chunked(c, B);
  ASSERT_EQ(chunked.head_chunk_rows(), 3);
  ASSERT_EQ(whole.head_chunk_rows(), B * c.seq_length);
  init_model(whole, 42);
  init_model(chunked, 42);
  Batch b = make_batch(c, B, 9);
  const ForwardResult a = whole.forward(b.tokens.data(), b.targets.data(), B);
  const ForwardResult z = chunked.forward(b.tokens.data(), b.targets.data(), B);
  EXPECT_NEAR(a.ce, z.ce, 1e-14);
  const Tensor<double> all = whole.logits(0, B * c.seq_length);
  for (int64_t first : {0, 4, 7, 9})
    for (int64_t n : {1, 3}) {
      if (first + n > B * c.seq_length) continue;
      const Tensor<double> part = chunked.logits(first, n);
      for (int64_t i = 0; i < n * c.vocab_size; ++i)
        ASSERT_NEAR(part.data[i], all.data[first * c.vocab_size + i], 1e-13) << "rows " << first << "+" << n;
    }
  EXPECT_THROW(chunked.logits(0, 4), Error);  // more than a chunk
  whole.grads().zero();
  chunked.grads().zero();
  whole.backward(1.0);
  chunked.backward(1.0);  // after logits() moved the held rows: it recomputes what it needs
  auto max_err = [](const std::vector<double>& x, const std::vector<double>& y) {
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e = std::max(e, std::abs(x[i] - y[i]));
    return e;
  };
  EXPECT_LT(max_err(whole.grads().replicated(), chunked.grads().replicated()), 1e-12);
  EXPECT_LT(max_err(whole.grads().expert(), chunked.grads().expert()), 1e-12);
}
TEST(ModelFD, GruChunkedHead) {
  ModelConfig c = tiny(RouterType::gru);
  c.head_chunk_elements = 4 * c.vocab_size;
  fd_check(c);
}

// --moe-expert-capacity-factor: with routing (and so the drops) held fixed,
// the gradient of what is left is exact; CapacityDropCounts shows this shape
// drops slots.
ModelConfig capped(RouterType r, double capacity_factor) {
  ModelConfig c = tiny(r);
  c.capacity_factor = capacity_factor;
  return c;
}
TEST(ModelFD, GruCapacity) { fd_check(capped(RouterType::gru, 0.6)); }
TEST(ModelFD, LinearCapacity) { fd_check(capped(RouterType::linear, 0.6)); }

// Each layer drops exactly sum_e max(0, count_e - ceil(C T k / E)) slots of
// the router's choice (counts before the drop); C >= E / k can drop nothing
// and then gives the dropless model bit for bit.
TEST(ModelCapacity, CapacityDropCounts) {
  const int B = 2;
  for (double C : {0.25, 0.6, 1.0, 2.0}) {
    SCOPED_TRACE("C=" + std::to_string(C));
    const ModelConfig c = capped(RouterType::gru, C);
    Model<double> m(c, B);
    init_model(m, 42);
    Batch b = make_batch(c, B, 9);
    const ForwardResult r = m.forward(b.tokens.data(), b.targets.data(), B);
    const int64_t T = int64_t(B) * c.seq_length, cap = expert_capacity(C, T, c.topk, c.num_experts);
    EXPECT_EQ(r.slots_global, T * c.topk);
    int64_t all = 0;
    for (int l = 0; l < c.num_layers; ++l) {
      int64_t want = 0;
      for (int e = 0; e < c.num_experts; ++e)
        want += std::max<int64_t>(0, r.expert_counts[size_t(l) * c.num_experts + e] - cap);
      EXPECT_EQ(r.dropped_slots[size_t(l)], want) << "layer " << l;
      all += r.dropped_slots[size_t(l)];
    }
    if (C < 1) {
      EXPECT_GT(all, 0) << "this shape should overflow some expert";
    }
    if (C >= double(c.num_experts) / c.topk) {
      EXPECT_EQ(all, 0);
    }
  }
}

TEST(ModelCapacity, NoDropGivesTheDroplessModelExactly) {
  const int B = 2;
  ModelConfig c = tiny(RouterType::gru);
  Model<double> free_model(c, B);
  c.capacity_factor = double(c.num_experts) / c.topk;  // capacity T: never full
  Model<double> capped_model(c, B);
  init_model(free_model, 42);
  init_model(capped_model, 42);
  Batch b = make_batch(c, B, 9);
  const ForwardResult a = free_model.forward(b.tokens.data(), b.targets.data(), B);
  const ForwardResult z = capped_model.forward(b.tokens.data(), b.targets.data(), B);
  EXPECT_EQ(a.total, z.total);
  free_model.grads().zero();
  capped_model.grads().zero();
  free_model.backward(1.0);
  capped_model.backward(1.0);
  EXPECT_TRUE(std::equal(free_model.grads().replicated().begin(), free_model.grads().replicated().end(),
                         capped_model.grads().replicated().begin()));
  EXPECT_TRUE(std::equal(free_model.grads().expert().begin(), free_model.grads().expert().end(),
                         capped_model.grads().expert().begin()));
}

TEST(ModelFD, Lstm) { fd_check(tiny(RouterType::lstm)); }  // gradient through h and c across layers
TEST(ModelFD, GruSharedProj) {
  auto c = tiny(RouterType::gru);
  c.router_shared_proj = true;
  fd_check(c);
}
TEST(ModelFD, MlpSharedProj) {
  auto c = tiny(RouterType::mlp);
  c.router_shared_proj = true;
  fd_check(c);
}

// --router-logit-residual: the gradient through logits_{i-1} recurs over all
// layers below (3 layers: 2 -> 1 -> 0); every router type takes it.
TEST(ModelFD, GruLogitResidual) {
  auto c = tiny(RouterType::gru);
  c.router_logit_residual = 0.7;
  fd_check(c);
}
TEST(ModelFD, LinearLogitResidual) {
  auto c = tiny(RouterType::linear);
  c.router_logit_residual = -0.6;
  fd_check(c);
}
TEST(ModelFD, LstmLogitResidual) {
  auto c = tiny(RouterType::lstm);
  c.router_logit_residual = 0.5;
  fd_check(c);
}
// With the detach switch the forward is the same and the gradient is that of
// the residual terms held constant: FD (which sees them move) does not apply
// to the layers below the top, but it does to the top layer's router, whose
// logits feed no residual; golden_gru_logit_residual_detach.h5 checks the
// whole detached gradient against PyTorch's .detach().
TEST(ModelFD, LogitResidualDetachTopLayer) {
  auto c = tiny(RouterType::linear);
  c.router_logit_residual = 0.7;
  c.router_logit_residual_detach = true;
  const int B = 2;
  Model<double> m(c, B);
  init_model(m, 42);
  Batch b = make_batch(c, B, 9);
  m.forward(b.tokens.data(), b.targets.data(), B);
  m.grads().zero();
  m.backward(1.0);
  m.set_freeze_routing(true);
  const ParamSpec s = *m.params().find("layers/02/router/gate_w");
  double* p = m.params().data_of(s);
  const double* g = m.grads().data_of(s);
  for (int64_t i = 0; i < s.numel(); i += 5) {
    const double eps = 1e-5, keep = p[i];
    p[i] = keep + eps;
    const double lp = m.forward(b.tokens.data(), b.targets.data(), B).total;
    p[i] = keep - eps;
    const double lm = m.forward(b.tokens.data(), b.targets.data(), B).total;
    p[i] = keep;
    const double fd = (lp - lm) / (2 * eps);
    EXPECT_LT(std::abs(fd - g[i]) / std::max(1e-3, std::abs(fd) + std::abs(g[i])), 1e-6)
        << s.name << "[" << i << "] analytic " << g[i] << " fd " << fd;
  }
}

// The detach switch cuts exactly the residual path: the same losses; the top
// layer's gate and experts get bit-identical gradients; the lowest layer's
// gate (which reaches the upper logits through the residual) differs. Without
// a residual (A = 0) the model is the plain one, bit for bit.
TEST(ModelRouter, LogitResidualDetachCutsOnlyTheResidualPath) {
  auto c = tiny(RouterType::linear);
  Batch b = make_batch(c, 2, 5);
  std::vector<double> g[3];
  double loss[3];
  for (int run = 0; run < 3; ++run) {
    ModelConfig rc = c;
    rc.router_logit_residual = run == 0 ? 0.0 : 0.7;
    rc.router_logit_residual_detach = run == 2;
    Model<double> m(rc, 2);
    init_model(m, 42);
    loss[run] = m.forward(b.tokens.data(), b.targets.data(), 2).total;
    m.grads().zero();
    m.backward(1.0);
    g[run] = m.grads().replicated();
    if (run == 0) {  // A = 0 is the model without the option
      Model<double> plain(c, 2);
      init_model(plain, 42);
      EXPECT_EQ(plain.forward(b.tokens.data(), b.targets.data(), 2).total, loss[0]);
      plain.grads().zero();
      plain.backward(1.0);
      EXPECT_EQ(plain.grads().replicated(), g[0]);
    }
  }
  EXPECT_NE(loss[0], loss[1]);
  EXPECT_EQ(loss[1], loss[2]);
  Model<double> names(c, 2);
  auto maxdiff = [&](const char* name) {
    const ParamSpec s = *names.params().find(name);
    double m = 0;
    for (int64_t i = 0; i < s.numel(); ++i) m = std::max(m, std::abs(g[1][s.offset + i] - g[2][s.offset + i]));
    return m;
  };
  EXPECT_EQ(maxdiff("layers/02/router/gate_w"), 0.0);
  EXPECT_GT(maxdiff("layers/00/router/gate_w"), 1e-8);
  EXPECT_GT(maxdiff("layers/01/router/gate_w"), 1e-8);
}

// --router-shared-proj is the per-layer model with every layer's projection
// equal: the same forward, bit for bit, and the shared tensor's gradient is the
// sum over layers of the per-layer gradients (layers added in the order the
// backward visits them, top first); every other gradient is the same.
TEST(ModelRouter, SharedProjIsTiedPerLayerProjections) {
  for (RouterType r : {RouterType::gru, RouterType::lstm, RouterType::mlp}) {
    SCOPED_TRACE(router_type_name(r));
    auto c = tiny(r);
    Batch b = make_batch(c, 2, 5);
    Model<double> per(c, 2);
    c.router_shared_proj = true;
    Model<double> shared(c, 2);
    init_model(shared, 42);
    init_model(per, 42);
    for (const auto& s : shared.params().specs()) {  // everything else: the same values
      if (s.name.rfind("router/proj_", 0) == 0) continue;
      const double* from = shared.params().data_of(s);
      std::copy(from, from + s.numel(), per.params().data_of(*per.params().find(s.name)));
    }
    for (int l = 0; l < c.num_layers; ++l)
      for (const char* t : {"proj_w", "proj_b"}) {
        const ParamSpec& s = *shared.params().find(std::string("router/") + t);
        char name[64];
        std::snprintf(name, sizeof name, "layers/%02d/router/%s", l, t);
        ASSERT_EQ(shared.params().find(name), nullptr) << name;
        const double* from = shared.params().data_of(s);
        std::copy(from, from + s.numel(), per.params().data_of(*per.params().find(name)));
      }
    EXPECT_EQ(shared.forward(b.tokens.data(), b.targets.data(), 2).total,
              per.forward(b.tokens.data(), b.targets.data(), 2).total);
    shared.grads().zero();
    per.grads().zero();
    shared.backward(1.0);
    per.backward(1.0);
    for (const auto& s : shared.params().specs()) {
      const double* gs = shared.grads().data_of(s);
      if (s.name.rfind("router/proj_", 0) == 0) {
        const std::string t = s.name.substr(std::string("router/").size());
        double worst = 0, norm = 0;
        for (int64_t i = 0; i < s.numel(); ++i) {
          double sum = 0;
          for (int l = c.num_layers - 1; l >= 0; --l) {
            char name[64];
            std::snprintf(name, sizeof name, "layers/%02d/router/%s", l, t.c_str());
            sum += per.grads().data_of(*per.params().find(name))[i];
          }
          worst = std::max(worst, std::abs(gs[i] - sum));
          norm = std::max(norm, std::abs(sum));
        }
        EXPECT_GT(norm, 1e-6) << s.name;
        EXPECT_LE(worst, 1e-13 * norm) << s.name;
      } else {
        const double* gp = per.grads().data_of(*per.params().find(s.name));
        EXPECT_EQ(std::memcmp(gs, gp, sizeof(double) * s.numel()), 0) << s.name;
      }
    }
  }
}

// The random router is the linear router with its gate frozen: the same
// forward, and the same gradient everywhere except the gate's, which is 0.
TEST(ModelRouter, RandomIsLinearWithAFrozenGate) {
  auto c = tiny(RouterType::linear);
  Batch b = make_batch(c, 2, 5);
  Model<double> lin(c, 2);
  c.router_type = RouterType::random;
  Model<double> rnd(c, 2);
  init_model(lin, 42);
  init_model(rnd, 42);
  EXPECT_EQ(lin.forward(b.tokens.data(), b.targets.data(), 2).total, rnd.forward(b.tokens.data(), b.targets.data(), 2).total);
  lin.grads().zero();
  rnd.grads().zero();
  lin.backward(1.0);
  rnd.backward(1.0);
  int frozen = 0;
  for (const auto& s : rnd.params().specs()) {
    const double* gl = lin.grads().data_of(*lin.params().find(s.name));
    const double* gr = rnd.grads().data_of(s);
    const bool gate = s.name.find("router/gate_w") != std::string::npos;
    EXPECT_EQ(s.frozen, gate) << s.name;
    EXPECT_EQ(s.decay, !gate && s.init == Init::normal) << s.name;
    frozen += s.frozen;
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < s.numel(); ++i) {
      diff = std::max(diff, std::abs(gl[i] - gr[i]));
      norm = std::max(norm, std::abs(gr[i]));
    }
    if (gate)
      EXPECT_EQ(norm, 0.0) << s.name;
    else
      EXPECT_EQ(diff, 0.0) << s.name;
  }
  EXPECT_EQ(frozen, c.num_layers);
}
TEST(ModelFD, GruTied) {
  auto c = tiny(RouterType::gru);
  c.tie_embeddings = true;
  fd_check(c);
}

// The aux loss's gradient reaches the shared cell and the projections: the
// cell's gradient changes with the aux coefficient (CE unchanged).
TEST(ModelRouter, AuxLossGradientReachesCellAndProjection) {
  auto c = tiny(RouterType::gru);
  Batch b = make_batch(c, 2, 5);
  std::vector<double> grads[2];
  for (int run = 0; run < 2; ++run) {
    c.aux_loss_coeff = run == 0 ? 0.0 : 1.0;
    c.z_loss_coeff = 0.0;
    Model<double> m(c, 2);
    init_model(m, 42);
    m.forward(b.tokens.data(), b.targets.data(), 2);
    m.grads().zero();
    m.backward(1.0);
    grads[run] = m.grads().replicated();
    auto spec_w = *m.params().find("router/cell/w_ih");
    auto spec_p = *m.params().find("layers/00/router/proj_w");
    double dw = 0, dp = 0;
    if (run == 1) {
      for (int64_t i = 0; i < spec_w.numel(); ++i)
        dw = std::max(dw, std::abs(grads[1][spec_w.offset + i] - grads[0][spec_w.offset + i]));
      for (int64_t i = 0; i < spec_p.numel(); ++i)
        dp = std::max(dp, std::abs(grads[1][spec_p.offset + i] - grads[0][spec_p.offset + i]));
      EXPECT_GT(dw, 1e-6);
      EXPECT_GT(dp, 1e-6);
    }
  }
}

// router_detach cuts exactly the recurrent path: the same losses; the top
// layer's router tensors `top` (nothing above them) and experts get
// bit-identical gradients; the lowest layer's projection and the cell's w_hh,
// reached through the state from the layers above only without detach, differ.
static void expect_detach_cuts_only_the_recurrent_path(ModelConfig c, std::initializer_list<const char*> top) {
  Batch b = make_batch(c, 2, 5);
  Model<double> full(c, 2);
  c.router_detach = true;
  Model<double> det(c, 2);
  init_model(full, 42);
  init_model(det, 42);
  EXPECT_EQ(full.forward(b.tokens.data(), b.targets.data(), 2).total,
            det.forward(b.tokens.data(), b.targets.data(), 2).total);
  full.grads().zero();
  det.grads().zero();
  full.backward(1.0);
  det.backward(1.0);
  auto maxdiff = [&](const char* name) {
    auto s = *full.params().find(name);
    double m = 0;
    for (int64_t i = 0; i < s.numel(); ++i)
      m = std::max(m, std::abs(full.grads().data_of(s)[i] - det.grads().data_of(s)[i]));
    return m;
  };
  for (const char* name : top) EXPECT_EQ(maxdiff(name), 0.0) << name;
  EXPECT_EQ(maxdiff("layers/02/experts/w1"), 0.0);
  EXPECT_GT(maxdiff("layers/00/router/proj_w"), 1e-8);
  EXPECT_GT(maxdiff("router/cell/w_hh"), 1e-8);
}

TEST(ModelRouter, DetachCutsOnlyTheRecurrentPath) {
  expect_detach_cuts_only_the_recurrent_path(tiny(RouterType::gru), {"layers/02/router/gate_w"});
}
// gru-xmoe's state runs between layers as gru's; its top head is the cosine one.
TEST(ModelRouter, GruXmoeDetachCutsOnlyTheRecurrentPath) {
  expect_detach_cuts_only_the_recurrent_path(
      tiny_cosine(RouterType::gru_xmoe),
      {"layers/02/router/expert_emb", "layers/02/router/xmoe_proj", "layers/02/router/log_scale"});
}
// lstm: router_detach cuts both d/dh_{l-1} and d/dc_{l-1}. The detached
// gradient itself is checked against PyTorch's .detach() by golden_lstm_detach.h5.
TEST(ModelRouter, LstmDetachCutsOnlyTheRecurrentPath) {
  expect_detach_cuts_only_the_recurrent_path(tiny(RouterType::lstm), {"layers/02/router/gate_w"});
}

// The cosine head's parameters: names and shapes of docs/MODEL.md, no decay,
// log_scale at log(1/0.07) under both inits; the head's constants.
TEST(ModelParams, CosineHeadTable) {
  EXPECT_DOUBLE_EQ(kMaxLogScale, std::log(100.0));
  EXPECT_DOUBLE_EQ(kInitLogScale, -std::log(0.07));
  for (RouterType r : {RouterType::cosine, RouterType::xmoe, RouterType::gru_xmoe})
    for (RouterInit init : {RouterInit::normal, RouterInit::torch}) {
      SCOPED_TRACE(std::string(router_type_name(r)) + " " + router_init_name(init));
      auto c = tiny_cosine(r);
      c.router_init = init;
      ParamStore<double> st(model_param_specs(c));
      st.init(5, 0.02);
      const int64_t d = c.hidden_size, p = c.router_dim, E = c.num_experts, rr = r == RouterType::cosine ? d : 5;
      std::map<std::string, std::vector<int64_t>> want = {{"expert_emb", {E, rr}}, {"log_scale", {1}}};
      if (r != RouterType::cosine) want["xmoe_proj"] = {rr, r == RouterType::gru_xmoe ? p : d};
      if (r == RouterType::gru_xmoe) want["proj_w"] = {p, d}, want["proj_b"] = {p};
      for (int l = 0; l < c.num_layers; ++l) {
        char pre[32];
        std::snprintf(pre, sizeof pre, "layers/%02d/router/", l);
        int found = 0;
        for (const auto& sp : st.specs())
          if (sp.name.rfind(pre, 0) == 0) {
            const std::string key = sp.name.substr(std::strlen(pre));
            ASSERT_TRUE(want.count(key)) << sp.name << " is not a tensor of this router";
            EXPECT_EQ(sp.shape, want[key]) << sp.name;
            EXPECT_EQ(sp.decay, key == "proj_w") << sp.name;  // only the gru part's matrix decays
            ++found;
          }
        EXPECT_EQ(found, int(want.size()));
        const ParamSpec* ls = st.find(std::string(pre) + "log_scale");
        ASSERT_TRUE(ls);
        EXPECT_EQ(st.data_of(*ls)[0], kInitLogScale);
        const ParamSpec* emb = st.find(std::string(pre) + "expert_emb");
        if (init == RouterInit::torch) {  // as nn.Linear(r, E)'s weight; xmoe_proj as nn.Linear(in, r)'s
          EXPECT_EQ(emb->init, Init::uniform);
          EXPECT_DOUBLE_EQ(emb->bound, 1 / std::sqrt(double(rr)));
          if (const ParamSpec* xp = st.find(std::string(pre) + "xmoe_proj")) {
            EXPECT_DOUBLE_EQ(xp->bound, 1 / std::sqrt(double(r == RouterType::gru_xmoe ? p : d)));
          }
        } else {
          EXPECT_EQ(emb->init, Init::normal);
        }
      }
      EXPECT_EQ(st.find("router/cell/w_ih") != nullptr, r == RouterType::gru_xmoe);
    }
}

// s above log 100 is clamped: the forward equals that at s = log 100 exactly,
// and s gets no gradient (the rest still does).
TEST(ModelRouter, LogScaleClampStopsItsGradient) {
  auto c = tiny_cosine(RouterType::xmoe);
  Batch b = make_batch(c, 2, 5);
  double loss[2];
  for (int run = 0; run < 2; ++run) {
    Model<double> m(c, 2);
    init_model(m, 42);
    auto ls = *m.params().find("layers/01/router/log_scale");
    m.params().data_of(ls)[0] = run == 0 ? kMaxLogScale : kMaxLogScale + 0.5;
    loss[run] = m.forward(b.tokens.data(), b.targets.data(), 2).total;
    m.grads().zero();
    m.backward(1.0);
    const double g = m.grads().data_of(ls)[0];
    if (run == 0)
      EXPECT_NE(g, 0.0);  // at the bound the gradient still passes (as torch.clamp)
    else
      EXPECT_EQ(g, 0.0);
    EXPECT_NE(m.grads().data_of(*m.params().find("layers/01/router/expert_emb"))[0], 0.0);
  }
  EXPECT_EQ(loss[0], loss[1]);
}

// gru-np carries no state between layers, so there is no recurrent path for
// router_detach to cut: detached and not, every gradient is bit-identical;
// and it is a different model from gru (the lowest layer's projection sees
// no gradient from the routers above it).
TEST(ModelRouter, GruNpHasNoRecurrentPath) {
  auto c = tiny(RouterType::gru_np);
  Batch b = make_batch(c, 2, 5);
  std::vector<double> g[3];
  double loss[3];
  for (int run = 0; run < 3; ++run) {
    ModelConfig rc = c;
    rc.router_detach = run == 1;
    if (run == 2) rc.router_type = RouterType::gru;  // same parameter table
    Model<double> m(rc, 2);
    init_model(m, 42);
    loss[run] = m.forward(b.tokens.data(), b.targets.data(), 2).total;
    m.grads().zero();
    m.backward(1.0);
    g[run] = m.grads().replicated();
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(g[0], g[1]);
  EXPECT_NE(loss[0], loss[2]);
}

// router_probs(l) is the full softmax the top-k was taken from: rows of E
// positive probabilities summing to 1, the chosen experts the k largest in
// descending order, for the tokens of the last forward only.
TEST(ModelRouter, RouterProbsAreTheFullSoftmaxBehindTopk) {
  for (RouterType r : {RouterType::linear, RouterType::gru}) {
    const ModelConfig c = tiny(r);
    Model<double> m(c, 3);
    init_model(m, 4);
    Batch b = make_batch(c, 2, 9);
    m.forward(b.tokens.data(), b.targets.data(), 2);
    const int64_t T = 2 * c.seq_length, E = c.num_experts, K = c.topk;
    for (int l = 0; l < c.num_layers; ++l) {
      const Tensor<double> p = m.router_probs(l);
      const Tensor<int32_t> idx = m.topk_idx(l);
      ASSERT_EQ(p.shape[0], T);
      ASSERT_EQ(p.shape[1], E);
      for (int64_t t = 0; t < T; ++t) {
        double sum = 0;
        for (int64_t e = 0; e < E; ++e) {
          EXPECT_GT(p.data[t * E + e], 0);
          sum += p.data[t * E + e];
        }
        EXPECT_NEAR(sum, 1.0, 1e-12) << "layer " << l << " token " << t;
        for (int64_t j = 0; j + 1 < K; ++j)
          EXPECT_GE(p.data[t * E + idx.data[t * K + j]], p.data[t * E + idx.data[t * K + j + 1]]);
        const double kth = p.data[t * E + idx.data[t * K + K - 1]];
        for (int64_t e = 0; e < E; ++e) {
          bool chosen = false;
          for (int64_t j = 0; j < K; ++j) chosen |= idx.data[t * K + j] == e;
          if (!chosen) {
            EXPECT_LE(p.data[t * E + e], kth) << "layer " << l << " token " << t << " expert " << e;
          }
        }
      }
    }
  }
}

TEST(ModelDeterminism, TwoRunsBitIdentical) {
  auto c = tiny(RouterType::gru);
  c.seq_length = 16;
  Batch b = make_batch(c, 3, 5);
  std::vector<float> g[2];
  double loss[2];
  for (int run = 0; run < 2; ++run) {
    Model<float> m(c, 3);
    m.params().init(1, 0.1);
    loss[run] = m.forward(b.tokens.data(), b.targets.data(), 3).total;
    m.grads().zero();
    m.backward(1.0);
    g[run] = m.grads().replicated();
    g[run].insert(g[run].end(), m.grads().expert().begin(), m.grads().expert().end());
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(0, std::memcmp(g[0].data(), g[1].data(), g[0].size() * sizeof(float)));
}

// --router-init torch: each router tensor uniform in +-1/sqrt(fan_in) (biases
// too; the cell's fan-in is p as nn.GRUCell's hidden size), decay as before
// (matrices only); every other tensor is exactly the normal init's.
TEST(ModelParams, TorchRouterInitIsPytorchsUniform) {
  const std::pair<RouterType, bool> cases[] = {{RouterType::linear, false}, {RouterType::random, false},
                                               {RouterType::mlp, false},    {RouterType::gru, false},
                                               {RouterType::rnn, false},    {RouterType::lstm, false},
                                               {RouterType::gru, true}};  // true: --router-shared-proj
  for (const auto& [r, shared_proj] : cases) {
    SCOPED_TRACE(std::string(router_type_name(r)) + (shared_proj ? " shared-proj" : ""));
    auto c = tiny(r);
    c.router_shared_proj = shared_proj;
    ParamStore<double> normal(model_param_specs(c));
    c.router_init = RouterInit::torch;
    ParamStore<double> torch(model_param_specs(c));
    normal.init(5, 0.02);
    torch.init(5, 0.02);
    ASSERT_EQ(normal.specs().size(), torch.specs().size());
    int router = 0;
    for (size_t k = 0; k < torch.specs().size(); ++k) {
      const ParamSpec &s = torch.specs()[k], &n = normal.specs()[k];
      ASSERT_EQ(s.name, n.name);
      EXPECT_EQ(s.decay, n.decay) << s.name;
      EXPECT_EQ(s.frozen, n.frozen) << s.name;
      const double* t = torch.data_of(s);
      if (s.name.find("router/") == std::string::npos) {
        EXPECT_EQ(s.init, n.init) << s.name;
        EXPECT_EQ(std::memcmp(t, normal.data_of(n), sizeof(double) * s.numel()), 0) << s.name;
        continue;
      }
      ++router;
      const bool cell = s.name.rfind("router/cell/", 0) == 0;
      const bool from_p = cell || (r != RouterType::linear && r != RouterType::random &&
                                   s.name.find("router/gate_") != std::string::npos);
      const double bound = 1 / std::sqrt(double(from_p ? c.router_dim : c.hidden_size));
      EXPECT_EQ(s.init, Init::uniform) << s.name;
      EXPECT_DOUBLE_EQ(s.bound, bound) << s.name;
      double lo = 0, hi = 0, mean = 0;
      for (int64_t i = 0; i < s.numel(); ++i) {
        lo = std::min(lo, t[i]);
        hi = std::max(hi, t[i]);
        mean += t[i] / double(s.numel());
      }
      EXPECT_GE(lo, -bound) << s.name;
      EXPECT_LT(hi, bound) << s.name;
      if (s.numel() >= 40) {  // spread over the interval, not normal(0, 0.02)
        EXPECT_LT(lo, -0.5 * bound) << s.name;
        EXPECT_GT(hi, 0.5 * bound) << s.name;
        EXPECT_LT(std::abs(mean), 0.3 * bound) << s.name;
      }
    }
    EXPECT_GT(router, 0);
  }
}

// Expert init depends on the global expert index, not on how experts are split.
TEST(ModelParams, ExpertSliceInitEqualsRowsOfWhole) {
  auto c = tiny(RouterType::gru);
  ParamStore<float> whole(model_param_specs(c));
  whole.init(5, 0.02);
  ParamStore<float> slice(model_param_specs(c, 2, 2));
  slice.init(5, 0.02, 2);
  auto w = whole.get("layers/01/experts/w2");
  auto s = slice.get("layers/01/experts/w2");
  const int64_t per = w.numel() / w.size(0);
  ASSERT_EQ(s.size(0), 2);
  for (int64_t i = 0; i < 2 * per; ++i) ASSERT_EQ(s.data[i], w.data[2 * per + i]);
  EXPECT_EQ(whole.get("embed/wte").data[3], slice.get("embed/wte").data[3]);
}

// The statistics reducer (the data-parallel seam): called once per forward
// with every layer's router_stats [L, 2E+2]. A reducer that doubles them is
// two identical ranks: the aux losses are the same, the expert counts double,
// and this rank's part of the gradient of the global loss is exactly half.
TEST(ModelStats, ReducerSumsEveryLayerOncePerForward) {
  auto c = tiny(RouterType::gru);
  Batch b = make_batch(c, 2, 5);
  int calls = 0;
  auto twice = [&](Tensor<double> stats) {
    ++calls;
    EXPECT_EQ(stats.ndim, 2);
    EXPECT_EQ(stats.size(0), c.num_layers);
    EXPECT_EQ(stats.size(1), 2 * c.num_experts + 2);
    for (int64_t i = 0; i < stats.numel(); ++i) stats.data[i] *= 2;
  };
  Model<double> one(c, 2), two(c, 2, nullptr, twice);
  init_model(one, 42);
  init_model(two, 42);
  const ForwardResult r1 = one.forward(b.tokens.data(), b.targets.data(), 2);
  const ForwardResult r2 = two.forward(b.tokens.data(), b.targets.data(), 2);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r2.ce, r1.ce);  // this rank's own tokens
  EXPECT_EQ(r2.lb, r1.lb);
  EXPECT_EQ(r2.z, r1.z);
  for (size_t i = 0; i < r1.expert_counts.size(); ++i) EXPECT_EQ(r2.expert_counts[i], 2 * r1.expert_counts[i]);
  one.grads().zero();
  two.grads().zero();
  one.backward(1.0);
  two.backward(1.0);
  const auto& g1 = one.grads().replicated();
  const auto& g2 = two.grads().replicated();
  for (size_t i = 0; i < g1.size(); ++i) ASSERT_EQ(2 * g2[i], g1[i]) << "replicated gradient " << i;
  for (size_t i = 0; i < one.grads().expert().size(); ++i)
    ASSERT_EQ(2 * two.grads().expert()[i], one.grads().expert()[i]) << "expert gradient " << i;
}

// ---- backward by loss term (--log-router-grads) ----------------------------

namespace {

template <class T>
std::vector<T> every_grad(Model<T>& m) {  // replicated, then expert
  std::vector<T> g = m.grads().replicated();
  g.insert(g.end(), m.grads().expert().begin(), m.grads().expert().end());
  return g;
}

constexpr LossTerms kCeOnly{true, false, false}, kLbOnly{false, true, false}, kZOnly{false, false, true};

}  // namespace

// Backward never writes an activation: a second full backward on the same
// forward, after backwards of single terms into a router-only store, gives
// the first one's bits.
TEST(ModelBackward, RepeatedBackwardOnOneForwardIsBitIdentical) {
  for (RouterType r : {RouterType::gru, RouterType::linear, RouterType::mlp, RouterType::rnn}) {
    SCOPED_TRACE(router_type_name(r));
    auto c = tiny(r);
    c.seq_length = 16;
    Batch b = make_batch(c, 3, 5);
    Model<float> m(c, 3);
    m.params().init(1, 0.3);
    m.forward(b.tokens.data(), b.targets.data(), 3);
    m.grads().zero();
    m.backward(1.0);
    const std::vector<float> first = every_grad(m);
    ParamStore<float> parts(router_param_specs(c));
    for (LossTerms t : {kCeOnly, kLbOnly, kZOnly}) m.backward(0.5, t, parts);
    EXPECT_EQ(0, std::memcmp(first.data(), every_grad(m).data(), first.size() * sizeof(float)))
        << "a backward into another store changed grads()";
    m.grads().zero();
    m.backward(1.0);
    const std::vector<float> second = every_grad(m);
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(0, std::memcmp(first.data(), second.data(), first.size() * sizeof(float)));
  }
}

// The gradient is linear in the loss terms: the CE, load-balance and z-loss
// parts (each its own backward into a router-only store) add up to the router
// gradient of the whole loss, tensor by tensor, to double rounding; each part
// is really there; and the CE part equals, bit for bit, a CE-only backward
// into grads() (the null views of the other weights change nothing).
TEST(ModelRouterGrads, LossTermPartsAddUpToTheRouterGradient) {
  std::vector<ModelConfig> configs;
  for (RouterType r : {RouterType::gru, RouterType::gru_np, RouterType::rnn, RouterType::mlp, RouterType::mlp_tanh,
                       RouterType::linear, RouterType::random, RouterType::lstm, RouterType::cosine, RouterType::xmoe,
                       RouterType::gru_xmoe})
    configs.push_back(tiny_cosine(r));  // xmoe_dim 5; the others ignore it
  configs.push_back(tiny(RouterType::gru));
  configs.back().router_shared_proj = true;  // router/proj_* counted with the cell
  configs.push_back(tiny(RouterType::gru));
  configs.back().router_logit_residual = 0.5;
  configs.push_back(tiny(RouterType::gru));
  configs.back().capacity_factor = 0.6;
  for (const ModelConfig& c : configs) {
    const RouterType r = c.router_type;
    SCOPED_TRACE(std::string(router_type_name(r)) + (c.router_shared_proj ? " shared-proj" : "") +
                 (c.router_logit_residual != 0 ? " logit-residual" : "") + (c.capacity_factor > 0 ? " capacity" : ""));
    Batch b = make_batch(c, 2, 5);
    Model<double> m(c, 2);
    init_model(m, 42);
    m.forward(b.tokens.data(), b.targets.data(), 2);
    const double scale = 0.7;
    m.grads().zero();
    m.backward(scale);
    ParamStore<double> lm(router_param_specs(c)), lb(router_param_specs(c)), z(router_param_specs(c));
    if (c.router_shared_proj) {
      EXPECT_NE(lm.find("router/proj_w"), nullptr) << "the shared projection is a router parameter";
    }
    m.backward(scale, kCeOnly, lm);
    m.backward(scale, kLbOnly, lb);
    m.backward(scale, kZOnly, z);
    double lm_max = 0, lb_max = 0, z_max = 0;
    ASSERT_FALSE(lm.specs().empty());
    for (const ParamSpec& s : lm.specs()) {
      const double* full = m.grads().get(s.name).data;
      const double *a = lm.get(s.name).data, *l = lb.get(s.name).data, *zz = z.get(s.name).data;
      double err = 0, big = 0;
      for (int64_t i = 0; i < s.numel(); ++i) {
        err = std::max(err, std::abs(a[i] + l[i] + zz[i] - full[i]));
        big = std::max(big, std::abs(full[i]));
        lm_max = std::max(lm_max, std::abs(a[i]));
        lb_max = std::max(lb_max, std::abs(l[i]));
        z_max = std::max(z_max, std::abs(zz[i]));
      }
      // No gradient: the random router's frozen gate; gru-np's w_hh (its h_{l-1} is always 0).
      if (s.frozen || (r == RouterType::gru_np && s.name == "router/cell/w_hh")) {
        EXPECT_EQ(big, 0.0) << s.name;
        EXPECT_EQ(err, 0.0) << s.name;
      } else {
        EXPECT_GT(big, 0.0) << s.name;
        EXPECT_LE(err, 1e-13 * big) << s.name << ": lm + lb + z - full";
      }
    }
    if (r != RouterType::random) {  // the random router has no router gradient at all
      EXPECT_GT(lm_max, 1e-6);
      EXPECT_GT(lb_max, 1e-6);
      EXPECT_GT(z_max, 1e-6);
    }
    m.grads().zero();
    m.backward(scale, kCeOnly, m.grads());
    for (const ParamSpec& s : lm.specs())
      EXPECT_EQ(0, std::memcmp(lm.get(s.name).data, m.grads().get(s.name).data, size_t(s.numel()) * sizeof(double)))
          << s.name;
  }
}

// With --moe-aux-loss-coeff 0 the load-balance part is exactly zero (and the
// rest is the CE and z parts).
TEST(ModelRouterGrads, NoAuxCoefficientMeansAnExactlyZeroLoadBalancePart) {
  auto c = tiny(RouterType::gru);
  c.aux_loss_coeff = 0;
  Batch b = make_batch(c, 2, 5);
  Model<float> m(c, 2);
  m.params().init(3, 0.3);
  m.forward(b.tokens.data(), b.targets.data(), 2);
  ParamStore<float> lm(router_param_specs(c)), lb(router_param_specs(c));
  m.backward(1.0, kCeOnly, lm);
  m.backward(1.0, kLbOnly, lb);
  for (float g : lb.replicated()) ASSERT_EQ(g, 0.0f);
  EXPECT_EQ(router_grad_norms(lb, c.num_layers).total, 0.0);
  EXPECT_GT(router_grad_norms(lm, c.num_layers).total, 0.0);
}

// Which tensors are the router's, and how the norms group them: per layer
// (layers/LL/router/*), the shared cell apart, the total over both; nothing
// else counts.
TEST(ModelRouterGrads, NormsGroupLayersAndTheCell) {
  EXPECT_EQ(router_param_layer("layers/02/router/gate_w"), 2);
  EXPECT_EQ(router_param_layer("layers/10/router/proj_b"), 10);
  EXPECT_EQ(router_param_layer("router/cell/w_hh"), kRouterCell);
  EXPECT_EQ(router_param_layer("layers/02/moe_norm"), kNotRouter);
  EXPECT_EQ(router_param_layer("layers/02/experts/w1"), kNotRouter);
  EXPECT_EQ(router_param_layer("embed/wte"), kNotRouter);
  auto c = tiny(RouterType::gru);
  std::vector<std::string> names;
  for (const ParamSpec& s : router_param_specs(c)) names.push_back(s.name);
  EXPECT_EQ(names.size(), size_t(4 + 4 * c.num_layers));
  ParamStore<double> g(model_param_specs(c));
  double layer1 = 0, cell = 0;
  for (const ParamSpec& s : g.specs()) {
    const int l = router_param_layer(s.name);
    const double v = l == 1 ? 1.0 : l == kRouterCell ? 2.0 : l == kNotRouter ? 100.0 : 0.0;
    for (int64_t i = 0; i < s.numel(); ++i) g.data_of(s)[i] = v;
    if (l == 1) layer1 += double(s.numel());
    if (l == kRouterCell) cell += 4.0 * double(s.numel());
  }
  const RouterGradNorms n = router_grad_norms(g, c.num_layers);
  ASSERT_EQ(n.layers.size(), size_t(c.num_layers));
  EXPECT_EQ(n.layers[0], 0.0);
  EXPECT_DOUBLE_EQ(n.layers[1], std::sqrt(layer1));
  EXPECT_EQ(n.layers[2], 0.0);
  EXPECT_DOUBLE_EQ(n.cell, std::sqrt(cell));
  EXPECT_DOUBLE_EQ(n.total, std::sqrt(layer1 + cell));
}

// A store holding a tensor the model does not have (or of another shape) is refused.
TEST(ModelRouterGrads, BackwardIntoAForeignStoreIsRefused) {
  auto c = tiny(RouterType::gru);
  Batch b = make_batch(c, 1, 5);
  Model<float> m(c, 1);
  m.params().init(3, 0.3);
  m.forward(b.tokens.data(), b.targets.data(), 1);
  auto other = tiny(RouterType::gru);
  other.router_dim = 8;
  ParamStore<float> wrong(router_param_specs(other));
  EXPECT_THROW(m.backward(1.0, kCeOnly, wrong), Error);
}
