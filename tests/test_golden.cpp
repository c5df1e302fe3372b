// test_golden.cpp — the C++ model against an independent PyTorch model.
//
// tests/torch_ref/make_golden.py writes, per router, float32 weights, a batch,
// and float64 logits, losses, top-k choices and every gradient. Here the same
// weights are loaded into Model<double> (must agree to ~1e-9: same math, only
// summation order differs) and Model<float> (fp32 rounding: ~1e-4).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "rmoe/core/h5.h"
#include "rmoe/model/model.h"

using namespace rmoe;

namespace {

ModelConfig config_from(const h5::File& f) {
  ModelConfig c;
  c.num_layers = int(f.attr_int("num_layers"));
  c.hidden_size = int(f.attr_int("hidden_size"));
  c.num_heads = int(f.attr_int("num_heads"));
  c.num_experts = int(f.attr_int("num_experts"));
  c.topk = int(f.attr_int("topk"));
  c.ffn_hidden_size = int(f.attr_int("ffn_hidden_size"));
  c.router_dim = int(f.attr_int("router_dim"));
  c.vocab_size = int(f.attr_int("vocab_size"));
  c.seq_length = int(f.attr_int("seq_length"));
  c.router_type = parse_router_type(f.attr_string("router_type"));
  c.router_detach = f.attr_int("router_detach") != 0;
  c.tie_embeddings = f.attr_int("tie_embeddings") != 0;
  // Attributes newer than the first golden files: their default when absent.
  c.router_shared_proj = f.has_attr("router_shared_proj") && f.attr_int("router_shared_proj") != 0;
  c.router_logit_residual = f.has_attr("router_logit_residual") ? f.attr_double("router_logit_residual") : 0.0;
  c.router_logit_residual_detach =
      f.has_attr("router_logit_residual_detach") && f.attr_int("router_logit_residual_detach") != 0;
  c.aux_loss_coeff = f.attr_double("aux_loss_coeff");
  c.z_loss_coeff = f.attr_double("z_loss_coeff");
  c.rms_eps = f.attr_double("rms_eps");
  c.rope_theta = f.attr_double("rope_theta");
  if (f.has_attr("capacity_factor")) c.capacity_factor = f.attr_double("capacity_factor");  // older files: dropless
  if (f.has_attr("xmoe_dim")) c.xmoe_dim = int(f.attr_int("xmoe_dim"));  // the cosine routers' files only
  return c;
}

// max|got - want| / max|want|, with the first mismatches printed.
double normalised_error(const std::string& what, const std::vector<double>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    EXPECT_TRUE(std::isfinite(got[i])) << what << "[" << i << "] is not finite";
    num = std::max(num, std::abs(got[i] - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return num / den;
}

template <class T>
void check_case(const std::string& name, double tol) {
  SCOPED_TRACE(name);
  h5::File f(std::string(RMOE_SOURCE_DIR) + "/tests/golden/" + name + ".h5", h5::File::readonly);
  const ModelConfig c = config_from(f);
  std::vector<int64_t> tshape;
  auto tokens = f.read<int32_t>("/inputs/tokens", &tshape);
  auto targets = f.read<int32_t>("/inputs/targets");
  const int B = int(tshape[0]);
  ASSERT_EQ(tshape[1], c.seq_length);
  Model<T> m(c, B);
  for (const auto& s : m.params().specs()) {
    auto v = f.read<float>("/params/" + s.name);
    ASSERT_EQ(int64_t(v.size()), s.numel()) << s.name;
    std::copy(v.begin(), v.end(), m.params().data_of(s));
  }
  ForwardResult r = m.forward(tokens.data(), targets.data(), B);
  m.grads().zero();
  m.backward(1.0);

  const double scalar_tol = tol * 10;
  for (auto [key, got] : {std::pair<const char*, double>{"ce", r.ce}, {"lb", r.lb}, {"z", r.z}, {"total", r.total}}) {
    const double want = f.read<double>(std::string("/outputs/") + key)[0];
    EXPECT_NEAR(got, want, scalar_tol * std::max(1.0, std::abs(want))) << key;
  }
  for (int l = 0; l < c.num_layers; ++l) {
    char path[64];
    std::snprintf(path, sizeof path, "/outputs/topk_idx/%02d", l);
    auto want = f.read<int32_t>(path);
    auto got = m.topk_idx(l);
    ASSERT_EQ(int64_t(want.size()), got.numel());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got.data[i], want[i]) << "top-k layer " << l << " slot " << i;
  }
  if (f.exists("/outputs/dropped")) {  // the capacity's drops per layer
    auto want = f.read<int64_t>("/outputs/dropped");
    ASSERT_EQ(int64_t(want.size()), c.num_layers);
    for (int l = 0; l < c.num_layers; ++l) EXPECT_EQ(r.dropped_slots[size_t(l)], want[size_t(l)]) << "layer " << l;
  }
  auto logits = m.logits(0, int64_t(B) * c.seq_length);
  std::vector<double> got_logits(logits.data, logits.data + int64_t(B) * c.seq_length * c.vocab_size);
  EXPECT_LT(normalised_error("logits", got_logits, f.read<double>("/outputs/logits")), tol);
  int checked = 0;
  for (const auto& s : m.grads().specs()) {
    const T* g = m.grads().data_of(s);
    std::vector<double> got(g, g + s.numel());
    const double err = normalised_error(s.name, got, f.read<double>("/grads/" + s.name));
    EXPECT_LT(err, tol) << "gradient of " << s.name;
    ++checked;
  }
  EXPECT_EQ(checked, int(m.grads().specs().size()));
}

const char* kCases[] = {"golden_linear", "golden_mlp", "golden_mlp_tanh", "golden_gru", "golden_rnn", "golden_gru_detach",
                        "golden_gru_tied", "golden_gru_np", "golden_gru_capacity",
                        "golden_cosine", "golden_xmoe", "golden_gru_xmoe", "golden_gru_xmoe_detach",
                        "golden_lstm", "golden_lstm_detach",
                        "golden_gru_shared_proj",
                        "golden_gru_logit_residual", "golden_gru_logit_residual_detach"};

}  // namespace

TEST(Golden, DoubleMatchesTorch) {
  for (const char* c : kCases) check_case<double>(c, 1e-9);
}
TEST(Golden, FloatMatchesTorch) {
  for (const char* c : kCases) check_case<float>(c, 2e-4);
}
