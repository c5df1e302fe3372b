// instantiate.h — a backend's explicit instantiations, from the op table.
//
// At the end of a backend source file, inside the backend's namespace:
//   RMOE_INSTANTIATE_OPS(RMOE_OPS_DENSE)       every op of that table section
//   RMOE_INSTANTIATE_CUDA_OPS(RMOE_OPS_DENSE)  the ops of it with cuda = yes
// Each emits functions that store the addresses of the section's ops for
// every element type of their kind (real: float, double; any: also int32_t,
// int64_t), which makes the compiler emit those specialisations of the
// templates this file defines. Index ops are plain functions: nothing to do.
#pragma once
#include "rmoe/kernels/ops.h"

#define RMOE_OP_ADDR_REAL_real(name) (const void*)&name<T>,
#define RMOE_OP_ADDR_REAL_any(name) (const void*)&name<T>,
#define RMOE_OP_ADDR_REAL_index(name)
#define RMOE_OP_ADDR_INT_real(name)
#define RMOE_OP_ADDR_INT_any(name) (const void*)&name<T>,
#define RMOE_OP_ADDR_INT_index(name)

#define RMOE_OP_ADDR_REAL(kind, name, cuda, dev, params, args) RMOE_OP_ADDR_REAL_##kind(name)
#define RMOE_OP_ADDR_INT(kind, name, cuda, dev, params, args) RMOE_OP_ADDR_INT_##kind(name)
#define RMOE_OP_ADDR_REAL_CUDA(kind, name, cuda, dev, params, args)         \
  RMOE_OP_IF_CUDA_##cuda(RMOE_OP_ADDR_REAL_##kind(name))
#define RMOE_OP_ADDR_INT_CUDA(kind, name, cuda, dev, params, args)          \
  RMOE_OP_IF_CUDA_##cuda(RMOE_OP_ADDR_INT_##kind(name))

// fn<T1>() and fn<T2>() return the addresses ADDR picks from SECTION.
#define RMOE_INSTANTIATE_FOR(fn, SECTION, ADDR, T1, T2)                     \
  template <class T>                                                        \
  const void* const* fn() {                                                 \
    static const void* const fns[] = {SECTION(ADDR) nullptr};               \
    return fns;                                                             \
  }                                                                         \
  template const void* const* fn<T1>();                                     \
  template const void* const* fn<T2>();

#define RMOE_INSTANTIATE_WITH(fn, SECTION, REAL, INT)                       \
  RMOE_INSTANTIATE_FOR(fn##_real, SECTION, REAL, float, double)             \
  RMOE_INSTANTIATE_FOR(fn##_int, SECTION, INT, int32_t, int64_t)

#define RMOE_INSTANTIATE_OPS(SECTION)                                       \
  RMOE_INSTANTIATE_WITH(instantiate_##SECTION, SECTION, RMOE_OP_ADDR_REAL, RMOE_OP_ADDR_INT)
#define RMOE_INSTANTIATE_CUDA_OPS(SECTION)                                  \
  RMOE_INSTANTIATE_WITH(instantiate_cuda_##SECTION, SECTION, RMOE_OP_ADDR_REAL_CUDA, RMOE_OP_ADDR_INT_CUDA)
