// WKV on the CPU, float32: the arithmetic of wkv_step.h applied to a block of kBlock contiguous channels
// at a time (the inner loop, which the compiler vectorises: build with -O3 -march=native), the blocks of
// every sequence spread over threads with at::parallel_for. The state of a block lives in small stack
// arrays for the whole sequence, so a pass reads k and v and writes y once, whatever T is.
#include "wkv_host.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <atomic>

namespace wkv {
namespace {

// 64 channels = 4 AVX-512 vectors: enough independent work to hide the latency of the divide and the
// exps, small enough that the arrays stay in L1, and 12 blocks per sequence at C = 768 for the threads.
constexpr int kBlock = 64;

// One block of channels [c0, c0 + n) of sequence b. N > 0 fixes n at compile time (full blocks), N == 0
// takes it at run time (the last, partial block).
template <int N, bool Save>
void forward_block(const ForwardArgs& a, int64_t b, int64_t c0, int n_runtime) {
  const int n = N > 0 ? N : n_runtime;
  const Dims& d = a.d;
  const float* __restrict__ k = static_cast<const float*>(a.k) + b * d.T * d.C + c0;
  const float* __restrict__ v = static_cast<const float*>(a.v) + b * d.T * d.C + c0;
  float* __restrict__ y = static_cast<float*>(a.y) + b * d.T * d.C + c0;
  alignas(64) float w[kBlock], u[kBlock], aa[kBlock], bb[kBlock], pp[kBlock];
  const float* s0 = a.state0 + c0;
  for (int i = 0; i < n; ++i) {
    w[i] = a.w[c0 + i];
    u[i] = a.u[c0 + i];
    aa[i] = s0[state_offset(d, b, 0) + i];
    bb[i] = s0[state_offset(d, b, 1) + i];
    pp[i] = initial_pp(bb[i], s0[state_offset(d, b, 2) + i]);
  }
  for (int64_t t = 0; t < d.T; ++t) {
    if (Save) {
      float* __restrict__ sc = a.scratch + c0;
      std::copy(aa, aa + n, sc + scratch_offset(d, b, t, 0));
      std::copy(bb, bb + n, sc + scratch_offset(d, b, t, 1));
      std::copy(pp, pp + n, sc + scratch_offset(d, b, t, 2));
    }
    const float* __restrict__ kt = k + t * d.C;
    const float* __restrict__ vt = v + t * d.C;
    float* __restrict__ yt = y + t * d.C;
#pragma GCC ivdep
    for (int i = 0; i < n; ++i) {
      float a_ = aa[i], b_ = bb[i], p_ = pp[i], y_;
      forward_step(w[i], u[i], kt[i], vt[i], a_, b_, p_, y_);
      aa[i] = a_;
      bb[i] = b_;
      pp[i] = p_;
      yt[i] = y_;
    }
  }
  float* s1 = a.state1 + c0;
  std::copy(aa, aa + n, s1 + state_offset(d, b, 0));
  std::copy(bb, bb + n, s1 + state_offset(d, b, 1));
  std::copy(pp, pp + n, s1 + state_offset(d, b, 2));
  if (Save) {
    float* sc = a.scratch + c0;
    std::copy(aa, aa + n, sc + scratch_offset(d, b, d.T, 0));
    std::copy(bb, bb + n, sc + scratch_offset(d, b, d.T, 1));
    std::copy(pp, pp + n, sc + scratch_offset(d, b, d.T, 2));
  }
}

template <int N>
void backward_block(const BackwardArgs& a, int64_t b, int64_t c0, int n_runtime) {
  const int n = N > 0 ? N : n_runtime;
  const Dims& d = a.d;
  const int64_t base = b * d.T * d.C + c0;
  const float* __restrict__ k = static_cast<const float*>(a.k) + base;
  const float* __restrict__ v = static_cast<const float*>(a.v) + base;
  const float* __restrict__ gy = static_cast<const float*>(a.gy) + base;
  float* __restrict__ gk = static_cast<float*>(a.gk) + base;
  float* __restrict__ gv = static_cast<float*>(a.gv) + base;
  const float* __restrict__ sc = a.scratch + c0;
  alignas(64) float w[kBlock], u[kBlock], GA[kBlock], GB[kBlock], h[kBlock], gw[kBlock], gu[kBlock];
  {
    const float* g1 = a.gstate1 + c0;
    const float* aaT = sc + scratch_offset(d, b, d.T, 0);
    const float* bbT = sc + scratch_offset(d, b, d.T, 1);
    for (int i = 0; i < n; ++i) {
      w[i] = a.w[c0 + i];
      u[i] = a.u[c0 + i];
      gw[i] = 0.0f;
      gu[i] = 0.0f;
      final_state_grad(aaT[i], bbT[i], g1[state_offset(d, b, 0) + i], g1[state_offset(d, b, 1) + i],
                       g1[state_offset(d, b, 2) + i], GA[i], GB[i], h[i]);
    }
  }
  for (int64_t t = d.T - 1; t >= 0; --t) {
    const float* __restrict__ aa = sc + scratch_offset(d, b, t, 0);
    const float* __restrict__ bb = sc + scratch_offset(d, b, t, 1);
    const float* __restrict__ pp = sc + scratch_offset(d, b, t, 2);
    const float* __restrict__ kt = k + t * d.C;
    const float* __restrict__ vt = v + t * d.C;
    const float* __restrict__ gyt = gy + t * d.C;
    float* __restrict__ gkt = gk + t * d.C;
    float* __restrict__ gvt = gv + t * d.C;
#pragma GCC ivdep
    for (int i = 0; i < n; ++i) {
      float ga_ = GA[i], gb_ = GB[i], h_ = h[i], gw_ = gw[i], gu_ = gu[i], gk_, gv_;
      backward_step(w[i], u[i], kt[i], vt[i], aa[i], bb[i], pp[i], gyt[i], ga_, gb_, h_, gw_, gu_, gk_, gv_);
      GA[i] = ga_;
      GB[i] = gb_;
      h[i] = h_;
      gw[i] = gw_;
      gu[i] = gu_;
      gkt[i] = gk_;
      gvt[i] = gv_;
    }
  }
  const float* aa0 = sc + scratch_offset(d, b, 0, 0);
  const float* bb0 = sc + scratch_offset(d, b, 0, 1);
  float* g0 = a.gstate0 + c0;
  for (int i = 0; i < n; ++i) {
    initial_state_grad(aa0[i], bb0[i], GA[i], GB[i], h[i], g0[state_offset(d, b, 0) + i],
                       g0[state_offset(d, b, 1) + i], g0[state_offset(d, b, 2) + i]);
    a.gw[b * d.C + c0 + i] = gw[i];
    a.gu[b * d.C + c0 + i] = gu[i];
  }
}

// Threads: a parallel region wakes every thread of torch's OpenMP pool and waits for the slowest at its
// end. On a busy machine a thread that is not scheduled costs a whole time slice (milliseconds): on the
// project's 2-core CPU with two other busy processes, T = 256 (B = 1, C = 768) took 32 ms with 2 threads
// against 0.28 ms with 1. Work is therefore only split when every thread gets at least kMinStepsPerThread
// channel-steps (~1-2 ms on one core, so a lost time slice costs at most about the work itself, not
// 100x), and never into more chunks than at::get_num_threads(), i.e. torch.get_num_threads() (the
// extension links the libgomp.so.1 torch has already loaded: one pool). A decode step (T = 1) and short
// prefills stay on the calling thread.
constexpr int64_t kMinStepsPerThread = int64_t{1} << 20;

// Runs chunk(begin, end) over the (sequence, channel block) jobs [0, B * nblocks), in parallel when the
// work is large enough (see above).
template <class F>
void parallel_jobs(const Dims& d, const F& chunk) {
  const int64_t nblocks = (d.C + kBlock - 1) / kBlock;
  const int64_t steps_per_job = std::max<int64_t>(d.T, 1) * kBlock;
  // at::parallel_for runs serially unless jobs > grain, else in min(threads, ceil(jobs / grain)) chunks
  const int64_t grain = std::max<int64_t>(1, (kMinStepsPerThread + steps_per_job - 1) / steps_per_job);
  at::parallel_for(0, d.B * nblocks, grain, chunk);
}

// Runs fn(b, c0, n) for every (sequence, channel block).
template <class F>
void for_each_block(const Dims& d, const F& fn) {
  const int64_t nblocks = (d.C + kBlock - 1) / kBlock;
  parallel_jobs(d, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / nblocks, c0 = (job % nblocks) * kBlock;
      fn(b, c0, static_cast<int>(std::min<int64_t>(kBlock, d.C - c0)));
    }
  });
}

// How many chunks (threads) a forward over (B, T, C) splits into, for the tests.
int64_t chunks_for(int64_t B, int64_t T, int64_t C) {
  std::atomic<int64_t> chunks{0};
  parallel_jobs(Dims{B, T, C}, [&](int64_t, int64_t) { chunks.fetch_add(1); });
  return chunks.load();
}

struct CpuBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  static constexpr bool kHalfTypes = false;  // bf16/fp16/fp64 are cast to float32 in Python
  static constexpr const char* kName = "cpu";
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };

  template <typename scalar_t>
  static void forward(const ForwardArgs& a) {
    static_assert(std::is_same<scalar_t, float>::value, "the CPU kernel is float32 only");
    for_each_block(a.d, [&](int64_t b, int64_t c0, int n) {
      if (a.scratch) {
        if (n == kBlock) forward_block<kBlock, true>(a, b, c0, n); else forward_block<0, true>(a, b, c0, n);
      } else {
        if (n == kBlock) forward_block<kBlock, false>(a, b, c0, n); else forward_block<0, false>(a, b, c0, n);
      }
    });
  }

  template <typename scalar_t>
  static void backward(const BackwardArgs& a) {
    static_assert(std::is_same<scalar_t, float>::value, "the CPU kernel is float32 only");
    for_each_block(a.d, [&](int64_t b, int64_t c0, int n) {
      if (n == kBlock) backward_block<kBlock>(a, b, c0, n); else backward_block<0>(a, b, c0, n);
    });
  }
};

// exp_poly on a float32 tensor, for the accuracy test of the polynomial.
at::Tensor exp_poly_tensor(const at::Tensor& x_) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && x_.device().is_cpu(), "exp_poly: float32 CPU tensor");
  const at::Tensor x = x_.contiguous();
  at::Tensor out = at::empty_like(x);
  const float* __restrict__ src = x.data_ptr<float>();
  float* __restrict__ dst = out.data_ptr<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = exp_poly(src[i]);
  return out;
}

}  // namespace
}  // namespace wkv

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  wkv::host::bind<wkv::CpuBackend>(m);
  m.def("exp_poly", &wkv::exp_poly_tensor, "the kernels' polynomial exp, elementwise (for tests)");
  m.def("chunks_for", &wkv::chunks_for, "how many threads a forward over (B, T, C) uses (for tests)");
}
