// The host side of the WKV-7 CUDA extension: argument checks, the output, dtype dispatch and the binding around
// wkv7_cuda.cu's kernel, on r's device and torch's current stream there. Built by the C++ compiler, not nvcc
// (see wkv_cuda.cu).
//
// c10's CUDA headers only (not ATen/cuda/CUDAContext.h, which needs cuBLAS/cuSPARSE headers a bare nvcc install
// lacks), so the file compiles wherever the CUDA runtime's and torch's headers are.
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>

#include "torch_binding.h"
#include "wkv7_cuda.h"

namespace wkv7 {
namespace {

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
  TORCH_CHECK(N == kCudaHeadSize && state.size(3) == N && H * N == C && state.size(0) == B,
              "wkv7: the CUDA kernel takes head size 64 and a state (B, C / 64, 64, 64)");
  TORCH_CHECK(state.stride(3) == 1 && state.stride(2) == N && state.stride(1) == N * N,
              "wkv7: each sequence's state must be one contiguous (H, N, N) block");
  const c10::cuda::CUDAGuard guard(r.device());
  at::Tensor y = at::empty_like(r);
  if (B * H == 0 || T == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (r.scalar_type() == at::kFloat) {
    launch_forward<float>(B, T, C, H, r.data_ptr<float>(), w.data_ptr<float>(), k.data_ptr<float>(),
                          v.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(),
                          state.data_ptr<float>(), state.stride(0), stream);
  } else {
    using bf16 = c10::BFloat16;
    launch_forward<bf16>(B, T, C, H, r.data_ptr<bf16>(), w.data_ptr<float>(), k.data_ptr<bf16>(), v.data_ptr<bf16>(),
                         a.data_ptr<bf16>(), b.data_ptr<bf16>(), y.data_ptr<bf16>(), state.data_ptr<float>(),
                         state.stride(0), stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace
}  // namespace wkv7

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &wkv7::forward, "WKV-7 over (B, T, C) float32/bf16 on CUDA; updates the float32 state in place");
}
