// config.cpp — ModelConfig::validate and the router-type names.
//
// Messages use the CLI flag names (train/config.h maps flags to fields), so a
// user sees e.g. "--moe-router-topk=5 must be <= --num-experts=4".
// Tested by tests/test_config.cpp.
#include "rmoe/model/config.h"

#include <cfloat>
#include <cmath>

#include "rmoe/core/error.h"
#include "rmoe/core/format.h"

namespace rmoe {

namespace {

void require_at_least(const char* flag, int64_t value, int64_t min) {
  if (value < min)
    usage_fail(std::string(flag) + "=" + std::to_string(value) + " must be >= " + std::to_string(min));
}

void require_nonneg(const char* flag, double value) {
  if (!std::isfinite(value) || value < 0)
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be a finite number >= 0");
}

void require_positive(const char* flag, double value) {
  if (!std::isfinite(value) || value <= 0)
    usage_fail(std::string(flag) + "=" + shortest_text(value) + " must be a finite number > 0");
}

}  // namespace

void check_float_range(const char* flag, double value) {
  const double a = std::fabs(value);
  if (value == 0 || (a >= double(FLT_MIN) && a <= double(FLT_MAX))) return;
  usage_fail(std::string(flag) + "=" + shortest_text(value) + " is outside the range of 32-bit float, which rmoe " +
             "computes in (it would be " + (a > double(FLT_MAX) ? "inf" : "0") +
             "): give 0 or a magnitude from 1.1755e-38 to 3.4028e+38");
}

RouterType parse_router_type(const std::string& s) {
  if (s == "linear") return RouterType::linear;
  if (s == "mlp") return RouterType::mlp;
  if (s == "gru") return RouterType::gru;
  if (s == "rnn") return RouterType::rnn;
  usage_fail("--moe-router-type=" + s + ": unknown router type; allowed: linear, mlp, gru, rnn");
}

const char* router_type_name(RouterType r) {
  switch (r) {
    case RouterType::linear: return "linear";
    case RouterType::mlp: return "mlp";
    case RouterType::gru: return "gru";
    case RouterType::rnn: return "rnn";
  }
  return "unknown";
}

void ModelConfig::validate() const {
  require_at_least("--num-layers", num_layers, 1);
  require_at_least("--hidden-size", hidden_size, 1);
  require_at_least("--num-attention-heads", num_heads, 1);
  if (hidden_size % num_heads != 0)
    usage_fail("--hidden-size=" + std::to_string(hidden_size) + " must be a multiple of --num-attention-heads=" +
               std::to_string(num_heads));
  if (head_dim() % 2 != 0)
    usage_fail("--hidden-size=" + std::to_string(hidden_size) + " / --num-attention-heads=" +
               std::to_string(num_heads) + " gives head dim " + std::to_string(head_dim()) +
               "; it must be even (RoPE rotates pairs)");
  require_at_least("--ffn-hidden-size", ffn_hidden_size, 1);
  require_at_least("--num-experts", num_experts, 1);
  require_at_least("--moe-router-topk", topk, 1);
  if (topk > num_experts)
    usage_fail("--moe-router-topk=" + std::to_string(topk) + " must be <= --num-experts=" +
               std::to_string(num_experts));
  require_at_least("--router-dim", router_dim, 1);
  require_at_least("--vocab-size", vocab_size, 2);
  require_at_least("--seq-length", seq_length, 1);
  if (router_type != RouterType::linear && router_type != RouterType::mlp && router_type != RouterType::gru &&
      router_type != RouterType::rnn)
    usage_fail("--moe-router-type=" + std::to_string(static_cast<int>(router_type)) +
               ": unknown router type; allowed: linear, mlp, gru, rnn");
  require_nonneg("--moe-aux-loss-coeff", aux_loss_coeff);
  require_nonneg("--moe-z-loss-coeff", z_loss_coeff);
  require_positive("--init-method-std", init_std);
  require_positive("rms_eps", rms_eps);        // not a flag: fixed by MODEL.md
  require_positive("rope_theta", rope_theta);  // not a flag: fixed by MODEL.md
  check_float_range("--moe-aux-loss-coeff", aux_loss_coeff);
  check_float_range("--moe-z-loss-coeff", z_loss_coeff);
  check_float_range("--init-method-std", init_std);
  check_float_range("rms_eps", rms_eps);
  check_float_range("rope_theta", rope_theta);
}

}  // namespace rmoe
