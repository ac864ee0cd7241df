// The WKV-4 CUDA kernels' launchers, defined in wkv_cuda.cu (for float, c10::Half and c10::BFloat16) and
// called by wkv_cuda_host.cpp. A launch only queues the kernel on `stream`; the caller checks for launch errors.
#pragma once

#include <cuda_runtime_api.h>

#include "wkv_args.h"

namespace wkv {

template <typename scalar_t>
void launch_forward(const ForwardArgs& a, cudaStream_t stream);

template <typename scalar_t>
void launch_backward(const BackwardArgs& a, cudaStream_t stream);

}  // namespace wkv
