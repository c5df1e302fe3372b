// router_grads.h — the router's parameters, and the norms of a gradient's
// router part (rmoe_train --log-router-grads, docs/MODEL.md "Router gradient
// by loss term").
//
// Router parameters: per layer every tensor under layers/LL/router/, and the
// tensors shared by all layers, counted apart from every layer (the "cell"
// group): the cell router/cell/* (gru, gru-np, rnn, gru-xmoe, lstm) and, with
// --router-shared-proj, the projection router/proj_*. All are replicated
// (never expert tensors).
// Tested by tests/test_model.cpp (ModelRouterGrads.*).
#pragma once
#include <string>
#include <vector>

#include "rmoe/model/config.h"
#include "rmoe/model/params.h"

namespace rmoe {

// Where `name` sits among the router parameters: its layer L for
// "layers/LL/router/...", kRouterCell for "router/..." (shared), kNotRouter for
// every other parameter.
constexpr int kRouterCell = -1;
constexpr int kNotRouter = -2;
int router_param_layer(const std::string& name);

// The router parameters of model_param_specs(cfg), in its order (a
// ParamStore of them gets its own offsets).
std::vector<ParamSpec> router_param_specs(const ModelConfig& cfg);

// L2 norms of the router tensors of a gradient store (the whole model's, or
// one of router_param_specs): squares in double, summed per group.
struct RouterGradNorms {
  std::vector<double> layers;  // [L] over layers/LL/router/*
  double cell = 0;             // over router/* (the shared cell and projection; 0 without them)
  double total = 0;            // over every router tensor: sqrt(sum_l layers[l]^2 + cell^2)
};
template <class T>
RouterGradNorms router_grad_norms(ParamStore<T>& grads, int num_layers);

}  // namespace rmoe
