// The WKV-7 CUDA kernel's launcher, defined in wkv7_cuda.cu (for float and c10::BFloat16) and called by
// wkv7_cuda_host.cpp: one block of kCudaHeadSize threads per (sequence, head) on `stream`. The caller checks
// the arguments before and for launch errors after.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace wkv7 {

constexpr int kCudaHeadSize = 64;   // N: the head size of every published RWKV-7 model

template <typename scalar_t>
void launch_forward(int64_t B, int64_t T, int64_t C, int64_t H, const scalar_t* r, const float* w,
                    const scalar_t* k, const scalar_t* v, const scalar_t* a, const scalar_t* b, scalar_t* y,
                    float* state, int64_t state_batch_stride, cudaStream_t stream);

}  // namespace wkv7
