// WKV-7 on CUDA, forward only (the harness runs inference). One block per (sequence, head), one thread per
// row of the head's N x N state: thread i keeps row i in registers for the whole sequence and applies
// wkv7_step.h's row_step to it, token by token; the token's w, k, a, b, r (N values each, shared by every
// row) are staged in shared memory. r, w, k, v, a, b, y are float32 or bfloat16 in memory; the state and all
// arithmetic are float32. N = 64 (every published RWKV-7 model); the Python side uses the reference otherwise.
//
// Layouts as in wkv7_cpu.cpp: (B, T, C) contiguous, state (B, H, N, N) float32 updated in place, the batch
// stride free.
//
// Device code and its launcher only, as in wkv_cuda.cu: the checks and the bindings are wkv7_cuda_host.cpp's.
#include <c10/util/BFloat16.h>

#include "wkv7_cuda.h"
#include "wkv7_step.h"

namespace wkv7 {
namespace {

constexpr int kN = kCudaHeadSize;

template <typename scalar_t>
__device__ __forceinline__ float load(const scalar_t* p, int64_t i) {
  return static_cast<float>(p[i]);
}

template <typename scalar_t>
__global__ void forward_kernel(int64_t T, int64_t C, int64_t H, const scalar_t* __restrict__ r,
                               const float* __restrict__ w, const scalar_t* __restrict__ k,
                               const scalar_t* __restrict__ v, const scalar_t* __restrict__ a,
                               const scalar_t* __restrict__ b, scalar_t* __restrict__ y,
                               float* __restrict__ state, int64_t state_batch_stride) {
  const int64_t bsel = blockIdx.x / H, h = blockIdx.x % H;
  const int i = threadIdx.x;
  __shared__ float sw[kN], sk[kN], sa[kN], sb[kN], sr[kN];
  float* row_ptr = state + bsel * state_batch_stride + (h * kN + i) * kN;
  float s[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j) s[j] = row_ptr[j];
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = (bsel * T + t) * C + h * kN;
    __syncthreads();  // the previous token's values are no longer read
    sw[i] = w[base + i];
    sk[i] = load(k, base + i);
    sa[i] = load(a, base + i);
    sb[i] = load(b, base + i);
    sr[i] = load(r, base + i);
    const float vi = load(v, base + i);
    __syncthreads();
    y[base + i] = static_cast<scalar_t>(row_step<kN>(s, sw, sk, sa, sb, sr, vi, kN));
  }
#pragma unroll
  for (int j = 0; j < kN; ++j) row_ptr[j] = s[j];
}

}  // namespace

template <typename scalar_t>
void launch_forward(int64_t B, int64_t T, int64_t C, int64_t H, const scalar_t* r, const float* w,
                    const scalar_t* k, const scalar_t* v, const scalar_t* a, const scalar_t* b, scalar_t* y,
                    float* state, int64_t state_batch_stride, cudaStream_t stream) {
  forward_kernel<scalar_t><<<B * H, kN, 0, stream>>>(T, C, H, r, w, k, v, a, b, y, state, state_batch_stride);
}

template void launch_forward<float>(int64_t, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                                    const float*, const float*, const float*, float*, float*, int64_t,
                                    cudaStream_t);
using bf16 = c10::BFloat16;
template void launch_forward<bf16>(int64_t, int64_t, int64_t, int64_t, const bf16*, const float*, const bf16*,
                                   const bf16*, const bf16*, const bf16*, bf16*, float*, int64_t, cudaStream_t);

}  // namespace wkv7
