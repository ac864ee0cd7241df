// The WKV-7 recurrence for one row of one head's state, shared by the CPU (wkv7_cpu.cpp) and the CUDA
// (wkv7_cuda.cu) kernels. Row i of the N x N state S holds what value channel i remembers per key channel;
// one token updates it as
//
//   S_i <- S_i * w + (S_i . a) b + v_i k          and outputs   y_i = S_i . r
//
// (the row form of S <- S diag(w) + (S a) b^T + v k^T, y = S r). A row depends on no other row, so rows are
// the unit of parallel work: a CUDA thread owns one row in registers (row_step). The CPU instead keeps a head's
// state transposed, one key channel j per line, and updates all rows at once along each line (token_step):
// the same arithmetic, vectorised over rows, with no horizontal sums. Everything is float32.
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

// One token through a whole head whose state is stored transposed: st[j * N + i] = S_ij. Writes y (N values).
template <int N>
WKV7_HD void token_step(float* __restrict__ st, const float* __restrict__ w, const float* __restrict__ k,
                        const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ r,
                        const float* __restrict__ v, float* __restrict__ y, int n_runtime) {
  const int n = N > 0 ? N : n_runtime;
  float sa[N > 0 ? N : 256];  // S a, one value per row (the runtime path takes head sizes up to 256)
  for (int i = 0; i < n; ++i) sa[i] = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float aj = a[j];
    const float* __restrict__ line = st + j * n;
    for (int i = 0; i < n; ++i) sa[i] += line[i] * aj;
  }
  float acc[N > 0 ? N : 256];  // y, accumulated here: a local array the compiler keeps out of memory's way
  for (int i = 0; i < n; ++i) acc[i] = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float wj = w[j], bj = b[j], kj = k[j], rj = r[j];
    float* __restrict__ line = st + j * n;
    for (int i = 0; i < n; ++i) {
      const float x = line[i] * wj + sa[i] * bj + v[i] * kj;
      line[i] = x;
      acc[i] += x * rj;
    }
  }
  for (int i = 0; i < n; ++i) y[i] = acc[i];
}

}  // namespace wkv7
