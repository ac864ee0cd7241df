// WKV on CUDA: one thread per (sequence, channel), walking the sequence with the arithmetic of wkv_step.h
// (the same functions the CPU kernel vectorises, so the CPU tests exercise it). k, v, y and their gradients
// are float32, bfloat16 or float16 in memory; every operation and the state are float32.
//
// No compile-time limit on T: the forward keeps the state in registers and (only when a backward will
// follow) writes it to the scratch tensor, the backward reads it back from there, so T is bounded only by
// memory. Consecutive threads own consecutive channels, so every load and store of a time step is coalesced.
#include "wkv_host.h"

// c10's headers only (not ATen/cuda/CUDAContext.h, which pulls in cuSPARSE/cuBLAS headers that a bare
// nvcc install lacks), so the file compiles wherever nvcc and torch's headers are
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace wkv {
namespace {

constexpr int kThreads = 128;

template <typename scalar_t>
__device__ __forceinline__ float load(const void* p, int64_t i) {
  return static_cast<float>(static_cast<const scalar_t*>(p)[i]);
}

template <typename scalar_t>
__device__ __forceinline__ void store(void* p, int64_t i, float x) {
  static_cast<scalar_t*>(p)[i] = static_cast<scalar_t>(x);
}

template <typename scalar_t>
__global__ void forward_kernel(const ForwardArgs a) {
  const Dims d = a.d;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= d.B * d.C) return;
  const int64_t b = idx / d.C, c = idx % d.C;
  const float w = a.w[c], u = a.u[c];
  float aa = a.state0[state_offset(d, b, 0) + c];
  float bb = a.state0[state_offset(d, b, 1) + c];
  float pp = initial_pp(bb, a.state0[state_offset(d, b, 2) + c]);
  int64_t i = b * d.T * d.C + c;
  for (int64_t t = 0; t < d.T; ++t, i += d.C) {
    if (a.scratch) {
      a.scratch[scratch_offset(d, b, t, 0) + c] = aa;
      a.scratch[scratch_offset(d, b, t, 1) + c] = bb;
      a.scratch[scratch_offset(d, b, t, 2) + c] = pp;
    }
    float y;
    forward_step(w, u, load<scalar_t>(a.k, i), load<scalar_t>(a.v, i), aa, bb, pp, y);
    store<scalar_t>(a.y, i, y);
  }
  a.state1[state_offset(d, b, 0) + c] = aa;
  a.state1[state_offset(d, b, 1) + c] = bb;
  a.state1[state_offset(d, b, 2) + c] = pp;
  if (a.scratch) {
    a.scratch[scratch_offset(d, b, d.T, 0) + c] = aa;
    a.scratch[scratch_offset(d, b, d.T, 1) + c] = bb;
    a.scratch[scratch_offset(d, b, d.T, 2) + c] = pp;
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const BackwardArgs a) {
  const Dims d = a.d;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= d.B * d.C) return;
  const int64_t b = idx / d.C, c = idx % d.C;
  const float w = a.w[c], u = a.u[c];
  float GA, GB, h, gw = 0.0f, gu = 0.0f;
  final_state_grad(a.scratch[scratch_offset(d, b, d.T, 0) + c], a.scratch[scratch_offset(d, b, d.T, 1) + c],
                   a.gstate1[state_offset(d, b, 0) + c], a.gstate1[state_offset(d, b, 1) + c],
                   a.gstate1[state_offset(d, b, 2) + c], GA, GB, h);
  for (int64_t t = d.T - 1; t >= 0; --t) {
    const int64_t i = (b * d.T + t) * d.C + c;
    float gk, gv;
    backward_step(w, u, load<scalar_t>(a.k, i), load<scalar_t>(a.v, i), a.scratch[scratch_offset(d, b, t, 0) + c],
                  a.scratch[scratch_offset(d, b, t, 1) + c], a.scratch[scratch_offset(d, b, t, 2) + c],
                  load<scalar_t>(a.gy, i), GA, GB, h, gw, gu, gk, gv);
    store<scalar_t>(a.gk, i, gk);
    store<scalar_t>(a.gv, i, gv);
  }
  initial_state_grad(a.scratch[scratch_offset(d, b, 0, 0) + c], a.scratch[scratch_offset(d, b, 0, 1) + c], GA, GB,
                     h, a.gstate0[state_offset(d, b, 0) + c], a.gstate0[state_offset(d, b, 1) + c],
                     a.gstate0[state_offset(d, b, 2) + c]);
  // per-sequence partial sums; the host sums them over the batch (no atomics, deterministic)
  a.gw[b * d.C + c] = gw;
  a.gu[b * d.C + c] = gu;
}

unsigned int blocks_for(const Dims& d) { return static_cast<unsigned int>((d.B * d.C + kThreads - 1) / kThreads); }

struct CudaBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
  static constexpr bool kHalfTypes = true;
  static constexpr const char* kName = "cuda";
  struct Guard {
    explicit Guard(const at::Tensor& t) : guard(t.device()) {}
    c10::cuda::CUDAGuard guard;
  };

  template <typename scalar_t>
  static void forward(const ForwardArgs& a) {
    forward_kernel<scalar_t><<<blocks_for(a.d), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t>
  static void backward(const BackwardArgs& a) {
    backward_kernel<scalar_t><<<blocks_for(a.d), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace wkv

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { wkv::host::bind<wkv::CudaBackend>(m); }
