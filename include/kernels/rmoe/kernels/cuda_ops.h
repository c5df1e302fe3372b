// cuda_ops.h — the CUDA backend's entry points (declared without any CUDA
// header, so host code can call them; defined in src/kernels/cuda/*.cu, built
// only with RMOE_WITH_CUDA). The ops are those of the table (ops.h) whose cuda
// column says yes, with the table's signatures and semantics;
// ops_dispatch.cpp routes cuda views to them.
#pragma once
#include <cstddef>

#include "rmoe/kernels/ops.h"

#define RMOE_OP_DECLARE_CUDA(kind, name, cuda, dev, params, args) \
  RMOE_OP_IF_CUDA_##cuda(RMOE_OP_DECLARE(kind, name, cuda, dev, params, args))

namespace rmoe::cuda {

RMOE_OPS(RMOE_OP_DECLARE_CUDA)

// Device memory and the device count (0 when no GPU or no driver).
int device_count();
void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);

}  // namespace rmoe::cuda
