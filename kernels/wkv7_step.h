// The WKV-7 recurrence for one row of one head's state, shared by the CPU (wkv7_cpu.cpp) and the CUDA
// (wkv7_cuda.cu) kernels. Row i of the N x N state S holds what value channel i remembers per key channel;
// one token updates it as
//
//   S_i <- S_i * w + (S_i . a) b + v_i k          and outputs   y_i = S_i . r
//
// (the row form of S <- S diag(w) + (S a) b^T + v k^T, y = S r). A row depends on no other row, so rows are
// the unit of parallel work: a CUDA thread owns one row in registers, the CPU walks the rows of a head whose
// state stays in L1. Everything is float32.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define WKV7_HD __host__ __device__ __forceinline__
#else
#define WKV7_HD inline
#endif

namespace wkv7 {

// One token through row `s` (n floats; n = N when N > 0 is known at compile time). Returns y_i.
template <int N>
WKV7_HD float row_step(float* __restrict__ s, const float* __restrict__ w, const float* __restrict__ k,
                       const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ r,
                       float v, int n_runtime) {
  const int n = N > 0 ? N : n_runtime;
  float sa = 0.0f;
#if defined(_OPENMP) && !defined(__CUDACC__)
#pragma omp simd reduction(+ : sa)
#endif
  for (int j = 0; j < n; ++j) sa += s[j] * a[j];
  float y = 0.0f;
#if defined(_OPENMP) && !defined(__CUDACC__)
#pragma omp simd reduction(+ : y)
#endif
  for (int j = 0; j < n; ++j) {
    const float x = s[j] * w[j] + sa * b[j] + v * k[j];
    s[j] = x;
    y += x * r[j];
  }
  return y;
}

}  // namespace wkv7
