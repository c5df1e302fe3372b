// cuda_ops.h — the CUDA backend's entry points (declared without any CUDA
// header, so host code can call them; defined in src/kernels/cuda/*.cu, built
// only with RMOE_WITH_CUDA). ops_dispatch.cpp routes cuda views here.
#pragma once
#include <cstddef>

#include "rmoe/kernels/ops.h"

namespace rmoe::cuda {

// Element-wise ops implemented so far (same signatures and semantics as ops.h).
template <class T> void swiglu_forward(Tensor<T> h, In<T> a, In<T> b);
template <class T> void swiglu_backward(Tensor<T> da, Tensor<T> db, In<T> dh, In<T> a, In<T> b);
template <class T> void gru_forward(Tensor<T> hnew, Tensor<T> gates, In<T> gi, In<T> gh, In<T> h);

// Device memory and the device count (0 when no GPU or no driver).
int device_count();
void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);

}  // namespace rmoe::cuda
