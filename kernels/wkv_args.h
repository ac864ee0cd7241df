// The WKV-4 kernels' arguments: sizes, pointers and the scratch/state layouts, without torch, so that the CUDA
// kernels (wkv_cuda.cu) compile with nvcc from this and wkv_step.h alone. wkv_host.h fills them from tensors.
//
// Layouts (all contiguous): w, u (C); k, v, y, gy, gk, gv (B, T, C) in scalar_t; state (B, 3, C) with
// rows aa, bb, pp; scratch (B, T + 1, 3, C) holding the state before each token and the final state;
// per-batch partial gradients of w and u (B, C), summed over the batch by the host. Everything but k, v, y
// and their gradients is float32.
#pragma once

#include <stdint.h>

#include "wkv_step.h"

namespace wkv {

struct Dims {
  int64_t B, T, C;
};

struct ForwardArgs {
  Dims d;
  const float* w;
  const float* u;
  const void* k;         // scalar_t (B, T, C)
  const void* v;         // scalar_t (B, T, C)
  const float* state0;   // (B, 3, C)
  void* y;               // scalar_t (B, T, C)
  float* state1;         // (B, 3, C)
  float* scratch;        // (B, T + 1, 3, C), or nullptr when no backward will follow
};

struct BackwardArgs {
  Dims d;
  const float* w;
  const float* u;
  const void* k;         // scalar_t (B, T, C)
  const void* v;         // scalar_t (B, T, C)
  const float* scratch;  // (B, T + 1, 3, C) from the forward
  const void* gy;        // scalar_t (B, T, C)
  const float* gstate1;  // (B, 3, C): upstream gradient of the returned state
  float* gw;             // (B, C) per-batch partial sums
  float* gu;             // (B, C)
  void* gk;              // scalar_t (B, T, C)
  void* gv;              // scalar_t (B, T, C)
  float* gstate0;        // (B, 3, C)
};

// Offsets into the (B, T + 1, 3, C) scratch and the (B, 3, C) state.
WKV_HD int64_t scratch_offset(const Dims& d, int64_t b, int64_t t, int row) {
  return ((b * (d.T + 1) + t) * 3 + row) * d.C;
}
WKV_HD int64_t state_offset(const Dims& d, int64_t b, int row) { return (b * 3 + row) * d.C; }

}  // namespace wkv
