// metrics_writer.h — rmoe_train's --metrics-file: one JSON object per line
// (JSON Lines), appended, flushed after every record so a crashed or
// requeued run keeps what it wrote. Records (keys sorted):
//   {"aux_lb":..,"consumed_tokens":..,"grad_norm":..,"layer_max_load":[..],"loss":..,"lr":..,
//    "max_load":..,"skipped_steps":..,"step":N,"tokens_per_s":..,"type":"train","worst_layer":..,"z":..}
//       with --log-router-grads also "router_grad_norm":{"full":N,"lb":N,"lm":N[,"z":N]} (each N =
//       {"cell":..,"layers":[..],"total":..}; "cell" only for gru, gru-np, rnn) and "router_grad_seconds"
//       (trainer.h RouterGradSplit: full = the training gradient's router part, lm its CE part, lb
//       the load-balance part, z the z-loss part when --moe-z-loss-coeff is not 0)
//   {"step":N,"type":"eval","val_loss":..}
//   {"grad_norm":..,"loss":..,"lr":..,"skipped_in_a_row":..,"skipped_steps":..,"step":N,"type":"skip"}
//       step N had a non-finite loss or gradient norm (null in JSON) and no update
//   {"changed":{"lr":{"from":"0.01","to":"0.005"},..},"from":PATH,"step":N,"type":"resume"}
//       a run resumed from PATH at step N; the options that differ from the checkpoint's
// scripts/plot_metrics.py reads them. Header-only: each app is one source file.
#pragma once
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/trainer.h"

namespace rmoe {

class MetricsWriter {
 public:
  // Writes nothing when `path` is empty or !enabled (ranks other than 0).
  MetricsWriter(const std::string& path, bool enabled) {
    if (!enabled || path.empty()) return;
    out_.open(path, std::ios::app);
    RMOE_CHECK(out_, "--metrics-file=" << path << ": cannot open for writing");
  }

  // Step st.step + 1 done; tokens_per_s over the steps since the last record.
  void train(const StepStats& st, double tokens_per_s) {
    if (!out_.is_open()) return;
    nlohmann::json r = {{"type", "train"},       {"step", st.step + 1},         {"loss", st.loss},
                        {"lr", st.lr},           {"grad_norm", st.grad_norm},   {"aux_lb", st.lb},
                        {"z", st.z},             {"tokens_per_s", tokens_per_s}, {"max_load", st.max_load},
                        {"worst_layer", st.worst_layer}, {"layer_max_load", st.layer_load},
                        {"skipped_steps", st.skipped_steps}, {"consumed_tokens", st.consumed_tokens}};
    if (!st.layer_drop.empty()) {  // --moe-expert-capacity-factor: fraction of slots dropped
      r["drop"] = st.drop;
      r["layer_drop"] = st.layer_drop;
    }
    if (const RouterGradSplit& rg = st.router_grads; rg.measured) {
      auto norms = [&rg](const RouterGradNorms& n) {
        nlohmann::json j = {{"total", n.total}, {"layers", n.layers}};
        if (rg.has_cell) j["cell"] = n.cell;
        return j;
      };
      nlohmann::json parts = {{"full", norms(rg.full)}, {"lm", norms(rg.lm)}, {"lb", norms(rg.lb)}};
      if (rg.has_z) parts["z"] = norms(rg.z);
      r["router_grad_norm"] = parts;
      r["router_grad_seconds"] = st.router_grads_seconds;
    }
    write(r);
  }

  // Step st.step + 1 was skipped (non-finite loss or gradient norm).
  void skip(const StepStats& st) {
    if (!out_.is_open()) return;
    write({{"type", "skip"},          {"step", st.step + 1},
           {"loss", st.loss},         {"grad_norm", st.grad_norm},
           {"lr", st.lr},             {"skipped_in_a_row", st.skipped_in_a_row},
           {"skipped_steps", st.skipped_steps}});
  }

  // A run resumed from `path` at `step`; `changed`: the options that differ from the checkpoint's.
  void resume(int64_t step, const std::string& path, const std::vector<ConfigChange>& changed) {
    if (!out_.is_open()) return;
    nlohmann::json c = nlohmann::json::object();
    for (const ConfigChange& x : changed) c[x.key] = {{"from", x.from}, {"to", x.to}};
    write({{"type", "resume"}, {"step", step}, {"from", path}, {"changed", c}});
  }

  void eval(int64_t step, double val_loss) {
    if (out_.is_open()) write({{"type", "eval"}, {"step", step}, {"val_loss", val_loss}});
  }

 private:
  void write(const nlohmann::json& record) { out_ << record.dump() << "\n" << std::flush; }
  std::ofstream out_;
};

}  // namespace rmoe
