// ops_dispatch.cpp — rmoe::ops: every op of the table (ops.h), routed to the
// backend of its device view's device.
//
// Model code calls only rmoe::ops; it never names a backend. The cpu backend
// has every op; the CUDA backend (when built) those whose cuda column says
// yes; any other op on a cuda view throws, naming the op.
#include "instantiate.h"
#include "rmoe/core/error.h"
#include "rmoe/core/profile.h"
#include "rmoe/kernels/ops.h"
#ifdef RMOE_WITH_CUDA
#include "rmoe/kernels/cuda_ops.h"
#endif

namespace rmoe::ops {

[[noreturn]] static void no_backend(const char* op, Device dev) {
  RMOE_CHECK(false, "op " << op << " has no implementation for device " << (dev == Device::cuda ? "cuda" : "?")
                          << " in this build; use --device cpu");
  __builtin_unreachable();
}

#ifdef RMOE_WITH_CUDA
#define RMOE_DISPATCH_CUDA_yes(call)                                    \
  if (dev == Device::cuda) return cuda::call;
#else
#define RMOE_DISPATCH_CUDA_yes(call)
#endif
#define RMOE_DISPATCH_CUDA_no(call)

// One wrapper per row: cpu, then cuda where the row says so, else an error.
// Each call is timed under --profile (profile.h; otherwise one atomic load).
#define RMOE_DISPATCH(kind, name, cuda, device_view, params, args)      \
  RMOE_OP_TEMPLATE_##kind void name params {                            \
    profile::OpTimer op_timer(#name);                                   \
    const Device dev = op_device device_view;                           \
    if (dev == Device::cpu) return cpu::name RMOE_OP_TARGS_##kind args; \
    RMOE_DISPATCH_CUDA_##cuda(name RMOE_OP_TARGS_##kind args)           \
    no_backend(#name, dev);                                             \
  }

RMOE_OPS(RMOE_DISPATCH)

RMOE_INSTANTIATE_OPS(RMOE_OPS)

}  // namespace rmoe::ops
