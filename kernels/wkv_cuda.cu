// WKV on CUDA: one thread per (sequence, channel), walking the sequence with the arithmetic of wkv_step.h
// (the same functions the CPU kernel vectorises, so the CPU tests exercise it). k, v, y and their gradients
// are float32, bfloat16 or float16 in memory; every operation and the state are float32.
//
// No compile-time limit on T: the forward keeps the state in registers and (only when a backward will
// follow) writes it to the scratch tensor, the backward reads it back from there, so T is bounded only by
// memory. Consecutive threads own consecutive channels, so every load and store of a time step is coalesced.
//
// Device code and its launchers only, with no torch header beyond c10's two 16-bit float types: nvcc parses
// every header of a .cu at least three times (host and device front ends, then the host compiler), so the
// tensor checks and the bindings live in wkv_cuda_host.cpp, which the C++ compiler builds once.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "wkv_cuda.h"

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

}  // namespace

template <typename scalar_t>
void launch_forward(const ForwardArgs& a, cudaStream_t stream) {
  forward_kernel<scalar_t><<<blocks_for(a.d), kThreads, 0, stream>>>(a);
}

template <typename scalar_t>
void launch_backward(const BackwardArgs& a, cudaStream_t stream) {
  backward_kernel<scalar_t><<<blocks_for(a.d), kThreads, 0, stream>>>(a);
}

template void launch_forward<float>(const ForwardArgs&, cudaStream_t);
template void launch_forward<c10::Half>(const ForwardArgs&, cudaStream_t);
template void launch_forward<c10::BFloat16>(const ForwardArgs&, cudaStream_t);
template void launch_backward<float>(const BackwardArgs&, cudaStream_t);
template void launch_backward<c10::Half>(const BackwardArgs&, cudaStream_t);
template void launch_backward<c10::BFloat16>(const BackwardArgs&, cudaStream_t);

}  // namespace wkv
