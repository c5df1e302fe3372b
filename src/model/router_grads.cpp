// router_grads.cpp — see router_grads.h.
#include "rmoe/model/router_grads.h"

#include <cmath>
#include <cstdlib>

#include "rmoe/core/error.h"
#include "rmoe/kernels/ops.h"

namespace rmoe {

int router_param_layer(const std::string& name) {
  // Shared by all layers: the cell router/cell/*, and router/proj_* with --router-shared-proj.
  if (name.rfind("router/", 0) == 0) return kRouterCell;
  // "layers/LL/router/...": LL is two digits (docs/MODEL.md), more from 100 layers on.
  const std::string layers = "layers/";
  if (name.rfind(layers, 0) != 0) return kNotRouter;
  const size_t slash = name.find('/', layers.size());
  if (slash == std::string::npos || name.compare(slash, 8, "/router/") != 0) return kNotRouter;
  return std::atoi(name.c_str() + layers.size());
}

std::vector<ParamSpec> router_param_specs(const ModelConfig& cfg) {
  std::vector<ParamSpec> out;
  for (const ParamSpec& s : model_param_specs(cfg))
    if (router_param_layer(s.name) != kNotRouter) out.push_back(s);
  return out;
}

template <class T>
RouterGradNorms router_grad_norms(ParamStore<T>& grads, int num_layers) {
  std::vector<double> layer_sq(size_t(num_layers), 0.0);
  double cell_sq = 0;
  for (const ParamSpec& s : grads.specs()) {
    const int l = router_param_layer(s.name);
    if (l == kNotRouter) continue;
    RMOE_CHECK(!s.expert && l < num_layers, "router tensor " << s.name << " in a model of " << num_layers << " layers");
    double sq = 0;
    ops::sum_squares<T>(Tensor<double>(&sq, {1}), Tensor<const T>(grads.data_of(s), {s.numel()}));
    (l == kRouterCell ? cell_sq : layer_sq[size_t(l)]) += sq;
  }
  RouterGradNorms n;
  double total_sq = cell_sq;
  for (double sq : layer_sq) {
    n.layers.push_back(std::sqrt(sq));
    total_sq += sq;
  }
  n.cell = std::sqrt(cell_sq);
  n.total = std::sqrt(total_sq);
  return n;
}

template RouterGradNorms router_grad_norms<float>(ParamStore<float>&, int);
template RouterGradNorms router_grad_norms<double>(ParamStore<double>&, int);

}  // namespace rmoe
