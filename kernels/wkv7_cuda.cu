// WKV-7 on CUDA, forward only (the harness runs inference). One block per (sequence, head), one thread per
// row of the head's N x N state: thread i keeps row i in registers for the whole sequence and applies
// wkv7_step.h's row_step to it, token by token; the token's w, k, a, b, r (N values each, shared by every
// row) are staged in shared memory. r, w, k, v, a, b, y are float32 or bfloat16 in memory; the state and all
// arithmetic are float32. N = 64 (every published RWKV-7 model); the Python side uses the reference otherwise.
//
// Layouts as in wkv7_cpu.cpp: (B, T, C) contiguous, state (B, H, N, N) float32 updated in place, the batch
// stride free.
#include <torch/extension.h>

// c10's headers only (not ATen/cuda/CUDAContext.h, which needs cuBLAS/cuSPARSE headers a bare nvcc install
// lacks), so the file compiles wherever nvcc and torch's headers are
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>

#include "wkv7_step.h"

namespace wkv7 {
namespace {

constexpr int kN = 64;

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

at::Tensor forward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& a, const at::Tensor& b, at::Tensor state) {
  TORCH_CHECK(r.dim() == 3 && r.is_cuda(), "wkv7: r must be a CUDA tensor (B, T, C)");
  for (const at::Tensor* t : {&k, &v, &a, &b}) {
    TORCH_CHECK(t->sizes() == r.sizes() && t->scalar_type() == r.scalar_type() && t->is_contiguous() &&
                t->device() == r.device(), "wkv7: r, k, v, a, b must share shape, dtype and device");
  }
  TORCH_CHECK(w.sizes() == r.sizes() && w.scalar_type() == at::kFloat && w.is_contiguous() && w.device() == r.device(),
              "wkv7: w must be float32, contiguous, shaped and placed like r");
  TORCH_CHECK(r.is_contiguous(), "wkv7: r must be contiguous");
  TORCH_CHECK(r.scalar_type() == at::kFloat || r.scalar_type() == at::kBFloat16,
              "wkv7: the CUDA kernel takes float32 or bfloat16 inputs");
  TORCH_CHECK(state.dim() == 4 && state.scalar_type() == at::kFloat && state.device() == r.device(),
              "wkv7: state must be float32 (B, H, N, N) on r's device");
  const int64_t B = r.size(0), T = r.size(1), C = r.size(2), H = state.size(1), N = state.size(2);
  TORCH_CHECK(N == kN && state.size(3) == N && H * N == C && state.size(0) == B,
              "wkv7: the CUDA kernel takes head size 64 and a state (B, C / 64, 64, 64)");
  TORCH_CHECK(state.stride(3) == 1 && state.stride(2) == N && state.stride(1) == N * N,
              "wkv7: each sequence's state must be one contiguous (H, N, N) block");
  const c10::cuda::CUDAGuard guard(r.device());
  at::Tensor y = at::empty_like(r);
  if (B * H == 0 || T == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (r.scalar_type() == at::kFloat) {
    forward_kernel<float><<<B * H, kN, 0, stream>>>(
        T, C, H, r.data_ptr<float>(), w.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
        a.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(), state.data_ptr<float>(), state.stride(0));
  } else {
    using bf16 = c10::BFloat16;
    forward_kernel<bf16><<<B * H, kN, 0, stream>>>(
        T, C, H, r.data_ptr<bf16>(), w.data_ptr<float>(), k.data_ptr<bf16>(), v.data_ptr<bf16>(),
        a.data_ptr<bf16>(), b.data_ptr<bf16>(), y.data_ptr<bf16>(), state.data_ptr<float>(), state.stride(0));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace
}  // namespace wkv7

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &wkv7::forward, "WKV-7 over (B, T, C) float32/bf16 on CUDA; updates the float32 state in place");
}
