// WKV-7 on the CPU, float32. A job is one (sequence, head): its N x N state is copied, transposed, into an
// aligned local array (16 KB at N = 64, so it stays in L1 for the whole chunk), every token goes through
// wkv7_step.h's token_step (vectorised over the rows: build with -O3 -march=native), and the state is written
// back at the end. Jobs are spread over threads with at::parallel_for, but only when each
// thread gets enough work (see kMinWorkPerThread): a decode step stays on the calling thread.
//
// Layouts: r, w, k, v, a, b, y (B, T, C) contiguous, C = H * N; state (B, H, N, N) float32, updated in place,
// each sequence's H * N * N block contiguous but the batch stride free (the model's state tensor packs the
// token-shift rows next to it).
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "torch_binding.h"
#include "wkv7_step.h"

namespace wkv7 {
namespace {

struct Args {
  int64_t B, T, C, H, N;
  const float* r;
  const float* w;
  const float* k;
  const float* v;
  const float* a;
  const float* b;
  float* y;
  float* state;
  int64_t state_batch_stride;
};

// Splitting work wakes every thread of torch's pool and waits for the slowest: on a busy 2-core machine a
// thread that is not scheduled costs a time slice (milliseconds). So each thread must get at least this
// many state-element updates (about a millisecond of work) before the jobs are split.
constexpr int64_t kMinWorkPerThread = int64_t{1} << 21;

template <int NT>
void head_job(const Args& d, int64_t bsel, int64_t h, float* st) {
  const int64_t N = d.N;
  float* global = d.state + bsel * d.state_batch_stride + h * N * N;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) st[j * N + i] = global[i * N + j];
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t base = (bsel * d.T + t) * d.C + h * N;
    token_step<NT>(st, d.w + base, d.k + base, d.a + base, d.b + base, d.r + base, d.v + base, d.y + base,
                   static_cast<int>(N));
  }
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) global[i * N + j] = st[j * N + i];
}

int64_t grain_for(int64_t T, int64_t N) {
  const int64_t work_per_job = std::max<int64_t>(T, 1) * N * N;
  return std::max<int64_t>(1, (kMinWorkPerThread + work_per_job - 1) / work_per_job);
}

void run(const Args& d) {
  at::parallel_for(0, d.B * d.H, grain_for(d.T, d.N), [&](int64_t begin, int64_t end) {
    std::vector<float, std::allocator<float>> buffer(d.N * d.N + 16);
    // 64-byte aligned rows for the vector loads
    float* s = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t{63});
    for (int64_t job = begin; job < end; ++job) {
      const int64_t bsel = job / d.H, h = job % d.H;
      if (d.N == 64) head_job<64>(d, bsel, h, s); else head_job<0>(d, bsel, h, s);
    }
  });
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "wkv7: ", name,
              " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(t.sizes() == like.sizes(), "wkv7: ", name, " has shape ", t.sizes(), ", r has ", like.sizes());
}

at::Tensor forward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& a, const at::Tensor& b, at::Tensor state) {
  TORCH_CHECK(r.dim() == 3, "wkv7: r must be (B, T, C)");
  check(r, "r", r);
  check(w, "w", r);
  check(k, "k", r);
  check(v, "v", r);
  check(a, "a", r);
  check(b, "b", r);
  TORCH_CHECK(state.dim() == 4 && state.scalar_type() == at::kFloat && state.device().is_cpu(),
              "wkv7: state must be a float32 CPU tensor (B, H, N, N)");
  const int64_t B = r.size(0), T = r.size(1), C = r.size(2), H = state.size(1), N = state.size(2);
  TORCH_CHECK(state.size(0) == B && state.size(3) == N && H * N == C, "wkv7: state ", state.sizes(),
              " does not fit r ", r.sizes());
  TORCH_CHECK(N <= 256, "wkv7: head sizes up to 256");
  TORCH_CHECK(state.stride(3) == 1 && state.stride(2) == N && state.stride(1) == N * N,
              "wkv7: each sequence's state must be one contiguous (H, N, N) block");
  at::Tensor y = at::empty_like(r);
  Args d{B, T, C, H, N, r.data_ptr<float>(), w.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
         a.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(), state.data_ptr<float>(), state.stride(0)};
  run(d);
  return y;
}

// How many chunks (threads) a forward over B sequences of T tokens with H heads of N splits into (for tests).
int64_t chunks_for(int64_t B, int64_t T, int64_t H, int64_t N) {
  std::atomic<int64_t> chunks{0};
  at::parallel_for(0, B * H, grain_for(T, N), [&](int64_t, int64_t) { chunks.fetch_add(1); });
  return chunks.load();
}

}  // namespace
}  // namespace wkv7

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &wkv7::forward, "WKV-7 over (B, T, C) float32; updates the (B, H, N, N) state in place");
  m.def("chunks_for", &wkv7::chunks_for, "threads a forward over (B, T, H, N) uses (for tests)");
}
