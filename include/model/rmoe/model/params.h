// params.h — the parameter registry: names, shapes, init, and flat buffers.
//
// Every parameter is a named view into one of two flat buffers: replicated
// (everything but the experts) and expert (the local experts' weights). The
// optimizer, gradient all-reduce, clipping and checkpoint I/O each work on a
// buffer as one (pointer, length) pair plus this name table. Gradients use a
// second ParamStore with the same layout. Names and shapes: docs/MODEL.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rmoe/core/tensor.h"
#include "rmoe/model/config.h"

namespace rmoe {

enum class Init { normal, ones, zeros, uniform, constant };  // uniform: in [-bound, bound); constant: value

struct ParamSpec {
  std::string name;            // e.g. "layers/03/attn/wq"
  std::vector<int64_t> shape;  // expert tensors: [E_local, ...]
  Init init = Init::normal;
  bool decay = true;           // AdamW weight decay (matrices only)
  bool expert = false;         // lives in the expert buffer
  int64_t offset = 0;          // into its buffer
  bool frozen = false;         // never trained: no gradient, AdamW skips it (the random router's gate)
  double bound = 0;            // Init::uniform's half-width
  double value = 0;            // Init::constant's value (the cosine routers' log_scale)
  int64_t numel() const;
};

// The ordered parameter list of a model. first_expert/num_local_experts select
// this rank's slice of the experts (all of them in one process).
std::vector<ParamSpec> model_param_specs(const ModelConfig& cfg, int first_expert = 0,
                                         int num_local_experts = -1);

template <class T>
class ParamStore {
 public:
  ParamStore() = default;
  explicit ParamStore(std::vector<ParamSpec> specs);

  Tensor<T> get(const std::string& name);             // throws if absent
  const ParamSpec* find(const std::string& name) const;  // null if absent
  const std::vector<ParamSpec>& specs() const { return specs_; }
  std::vector<T>& replicated() { return replicated_; }
  std::vector<T>& expert() { return expert_; }
  T* data_of(const ParamSpec& s) { return (s.expert ? expert_.data() : replicated_.data()) + s.offset; }
  void zero();
  // Initialises every tensor from (seed, name, global element index)
  // (normal: std; uniform: the spec's bound):
  // independent of rank count and creation order. first_expert offsets the
  // element index of expert tensors so a slice equals the same rows of the whole.
  void init(uint64_t seed, double std, int first_expert = 0);

 private:
  std::vector<ParamSpec> specs_;
  std::vector<T> replicated_, expert_;
};

}  // namespace rmoe
