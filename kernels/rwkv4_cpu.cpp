// RWKV-4's elementwise work on the CPU, float32, fused (rwkv_bench/ops/rwkv4_fused.py says when it runs):
//  * body_step: one decode step through every block in one call. What the model's recurrent mode does with
//    ~60 small PyTorch ops per layer (token shift mixes, the WKV step, gates, residuals) is done here in
//    loops over channels, leaving to ATen only the layer norms and the matrix-vector products (which must
//    stream every weight once, and are what a step costs). The WKV step is wkv_step.h's, as in the
//    parallel kernel.
//  * shift_mix, relu_square_, sigmoid_mul_: the parallel forward's token shift and mixes, squared ReLU and
//    receptance gate, each one pass over memory instead of two or three.
// Same formulas as rwkv4.py.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "torch_binding.h"
#include "wkv_step.h"

namespace {

// the model's state rows per layer (rwkv4.py): ATT_SHIFT, AA, BB, PP, FFN_SHIFT
enum Row { kAttShift = 0, kAA = 1, kBB = 2, kPP = 3, kFfnShift = 4 };

// the order of each layer's tensors in the list the caller passes (rwkv_bench/ops/rwkv4_fused.py)
enum Param {
  kLn1W, kLn1B, kLn2W, kLn2B, kTimeDecay, kTimeFirst, kAttMixK, kAttMixV, kAttMixR,
  kAttKey, kAttValue, kAttReceptance, kAttOutput, kFfnMixK, kFfnMixR, kFfnKey, kFfnReceptance, kFfnValue,
  kParamsPerLayer
};

// with wkv_step.h's exp (within ~2 ulp, branch-free), so that loops of it vectorise as libm's expf does not
inline float sigmoid(float x) { return 1.0f / (1.0f + wkv::exp_poly(-x)); }

// out[i] = shifted + (x - shifted) * mu_i for each mix i, then the shift row takes x (this token)
void mix_and_shift(const float* x, float* shift, const std::vector<const float*>& mus, float* out,
                   int64_t B, int64_t C) {
  const int64_t n = static_cast<int64_t>(mus.size());
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      const float xs = x[b * C + c], s = shift[b * C + c], d = xs - s;
      for (int64_t i = 0; i < n; ++i) out[(i * B + b) * C + c] = s + d * mus[i][c];
      shift[b * C + c] = xs;
    }
  }
}

const float* ptr(const at::Tensor& t) { return t.data_ptr<float>(); }

// x (B, C): the layer's input, updated in place to its output. S: this layer's state (5, B, C).
void time_mix(at::Tensor& x, float* S, const at::Tensor* p, double eps) {
  const int64_t B = x.size(0), C = x.size(1), BC = B * C;
  auto xa = at::layer_norm(x, {C}, p[kLn1W], p[kLn1B], eps);
  auto mixed = at::empty({3, B, C}, x.options());
  mix_and_shift(ptr(xa), S + kAttShift * BC, {ptr(p[kAttMixK]), ptr(p[kAttMixV]), ptr(p[kAttMixR])},
                mixed.data_ptr<float>(), B, C);
  auto k = at::linear(mixed[0], p[kAttKey]);
  auto v = at::linear(mixed[1], p[kAttValue]);
  auto r = at::linear(mixed[2], p[kAttReceptance]);
  const float *td = ptr(p[kTimeDecay]), *u = ptr(p[kTimeFirst]);
  const float *kp = ptr(k), *vp = ptr(v);
  float* rp = r.data_ptr<float>();   // becomes sigmoid(r) * y, the output projection's input
  float *aa = S + kAA * BC, *bb = S + kBB * BC, *pp = S + kPP * BC;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = b * C + c;
      float y, a = aa[i], bs = bb[i], ps = wkv::initial_pp(bb[i], pp[i]);
      wkv::forward_step(-std::exp(td[c]), u[c], kp[i], vp[i], a, bs, ps, y);
      aa[i] = a, bb[i] = bs, pp[i] = ps;
      rp[i] = sigmoid(rp[i]) * y;
    }
  }
  x.add_(at::linear(r, p[kAttOutput]));
}

void channel_mix(at::Tensor& x, float* S, const at::Tensor* p, double eps) {
  const int64_t B = x.size(0), C = x.size(1), BC = B * C;
  auto xf = at::layer_norm(x, {C}, p[kLn2W], p[kLn2B], eps);
  auto mixed = at::empty({2, B, C}, x.options());
  mix_and_shift(ptr(xf), S + kFfnShift * BC, {ptr(p[kFfnMixK]), ptr(p[kFfnMixR])}, mixed.data_ptr<float>(), B, C);
  auto k = at::linear(mixed[0], p[kFfnKey]);
  float* kp = k.data_ptr<float>();
  for (int64_t i = 0, n = k.numel(); i < n; ++i) kp[i] = kp[i] > 0.0f ? kp[i] * kp[i] : 0.0f;  // relu^2
  auto r = at::linear(mixed[1], p[kFfnReceptance]);
  auto kv = at::linear(k, p[kFfnValue]);
  float* xp = x.data_ptr<float>();
  const float *rp = ptr(r), *kvp = ptr(kv);
  for (int64_t i = 0; i < BC; ++i) xp[i] += sigmoid(rp[i]) * kvp[i];
}

// x (B, C) float32: the embedded token after block 0's ln0. state (L, 5, B, C) float32, updated in place.
// params: kParamsPerLayer float32 contiguous tensors per layer. Returns the last block's output (B, C).
at::Tensor body_step(at::Tensor x, at::Tensor state, std::vector<at::Tensor> params, double eps) {
  const int64_t L = state.size(0);
  TORCH_CHECK(static_cast<int64_t>(params.size()) == L * kParamsPerLayer, "rwkv4 step: expected ",
              L * kParamsPerLayer, " parameter tensors, got ", params.size());
  TORCH_CHECK(state.is_contiguous() && state.scalar_type() == at::kFloat, "rwkv4 step: state must be float32");
  x = x.to(at::kFloat).contiguous().clone();
  TORCH_CHECK(x.dim() == 2 && state.size(2) == x.size(0) && state.size(3) == x.size(1), "rwkv4 step: shapes");
  for (const auto& t : params) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(), "rwkv4 step: float32 contiguous weights");
  }
  float* S = state.data_ptr<float>();
  const int64_t layer_stride = state.stride(0);
  for (int64_t l = 0; l < L; ++l) {
    time_mix(x, S + l * layer_stride, &params[l * kParamsPerLayer], eps);
    channel_mix(x, S + l * layer_stride, &params[l * kParamsPerLayer], eps);
  }
  return x;
}

// ---------------------------------------------------------------------------------- parallel forward
// positions per parallel_for task: enough work per task to amortise the scheduling
int64_t grain(int64_t row) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row, 1)); }

// x (B, T, C), last (B, C): the position before x[:, 0]; mus (n, C). Returns (n, B, T, C) with
// out[i, b, t] = s + (x[b, t] - s) * mus[i], s = x[b, t - 1] (last[b] at t = 0): token shift and mixes.
at::Tensor shift_mix(at::Tensor x, at::Tensor last, at::Tensor mus) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat, "shift_mix: x must be (B, T, C) float32");
  x = x.contiguous(), last = last.to(at::kFloat).contiguous(), mus = mus.contiguous();
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), n = mus.size(0);
  TORCH_CHECK(last.sizes() == at::IntArrayRef({B, C}) && mus.size(1) == C, "shift_mix: shapes");
  auto out = at::empty({n, B, T, C}, x.options());
  const float *xp = ptr(x), *lp = ptr(last), *mp = ptr(mus);
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * T, grain(C), [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      const float* xs = xp + bt * C;
      const float* sh = t == 0 ? lp + b * C : xs - C;
      for (int64_t i = 0; i < n; ++i) {
        float* o = op + (i * B * T + bt) * C;
        const float* mu = mp + i * C;
        for (int64_t c = 0; c < C; ++c) o[c] = sh[c] + (xs[c] - sh[c]) * mu[c];
      }
    }
  });
  return out;
}

// k = relu(k)^2, in place
void relu_square_(at::Tensor k) {
  TORCH_CHECK(k.is_contiguous() && k.scalar_type() == at::kFloat, "relu_square_: float32 contiguous");
  float* kp = k.data_ptr<float>();
  at::parallel_for(0, k.numel(), 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) kp[i] = kp[i] > 0.0f ? kp[i] * kp[i] : 0.0f;
  });
}

// r = sigmoid(r) * v, in place in r
void sigmoid_mul_(at::Tensor r, at::Tensor v) {
  TORCH_CHECK(r.is_contiguous() && r.scalar_type() == at::kFloat && r.sizes() == v.sizes(),
              "sigmoid_mul_: float32 contiguous, same shapes");
  v = v.to(at::kFloat).contiguous();
  float* rp = r.data_ptr<float>();
  const float* vp = ptr(v);
  at::parallel_for(0, r.numel(), 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) rp[i] = sigmoid(rp[i]) * vp[i];
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("body_step", &body_step, "RWKV-4: one recurrent step through every block (CPU, float32)");
  m.def("shift_mix", &shift_mix, "token shift and mixes: (n, B, T, C) from x (B, T, C), last (B, C), mus (n, C)");
  m.def("relu_square_", &relu_square_, "k = relu(k)^2 in place");
  m.def("sigmoid_mul_", &sigmoid_mul_, "r = sigmoid(r) * v in place");
}
