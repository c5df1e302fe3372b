// checks.h — the cpu backend's index checks (ops.h: an index outside its
// range throws, naming the op, the index and the bound). Each is one serial
// pass over the indices, run before the op writes anything (an exception
// cannot leave an OpenMP region).
#pragma once
#include <cstdint>

#include "rmoe/core/error.h"
#include "rmoe/core/tensor.h"
#include "rmoe/core/threads.h"  // worth_threads

namespace rmoe::cpu {


// Every v[i] in [0, bound); `what` names the input, `bound_is` what the bound is.
template <class I>
void check_indices(Tensor<const I> v, int64_t bound, const char* op, const char* what, const char* bound_is) {
  const int64_t n = v.numel();
  for (int64_t i = 0; i < n; ++i)
    RMOE_CHECK(v.data[i] >= 0 && v.data[i] < bound, "cpu::" << op << ": " << what << "[" << i << "] = " << v.data[i]
                                                            << " is outside [0, " << bound << ") (" << bound_is << ")");
}

// slot_of[N,k] of moe_route_plan: every entry a row in [0, rows), or -1 for a
// slot dropped by the capacity.
inline void check_slots(Tensor<const int32_t> slot_of, int64_t rows, const char* op, const char* rows_are) {
  const int64_t n = slot_of.numel();
  for (int64_t i = 0; i < n; ++i)
    RMOE_CHECK(slot_of.data[i] >= -1 && slot_of.data[i] < rows,
               "cpu::" << op << ": slot_of[" << i << "] = " << slot_of.data[i] << " is outside [0, " << rows << ") ("
                       << rows_are << ") and not -1 (dropped)");
}

// offsets[E+1] of rows sorted by expert: 0 = offsets[0] <= ... <= offsets[E] = N.
inline void check_offsets(Tensor<const int64_t> offsets, int64_t E, int64_t N, const char* op) {
  RMOE_CHECK(offsets.numel() == E + 1,
             "cpu::" << op << ": offsets is " << offsets.shape_str() << ", want " << E + 1 << " (experts + 1)");
  RMOE_CHECK(offsets.data[0] == 0 && offsets.data[E] == N, "cpu::" << op << ": offsets run " << offsets.data[0]
                                                                    << ".." << offsets.data[E] << ", want 0.." << N
                                                                    << " (the rows)");
  for (int64_t e = 0; e < E; ++e)
    RMOE_CHECK(offsets.data[e] <= offsets.data[e + 1], "cpu::" << op << ": offsets[" << e << "] = " << offsets.data[e]
                                                               << " > offsets[" << e + 1 << "] = " << offsets.data[e + 1]
                                                               << ": rows of [0, " << N << ") must be sorted by expert");
}

}  // namespace rmoe::cpu
