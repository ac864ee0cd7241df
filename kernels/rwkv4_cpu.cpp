// One decode step of RWKV-4's whole body on the CPU, float32, in one call: what the model's recurrent mode
// does with ~60 small PyTorch ops per layer (token shift mixes, the WKV step, gates, residuals) is done
// here in plain loops over channels, leaving to ATen only the layer norms and the matrix-vector products
// (which must stream every weight once and are what a step costs). Same formulas as rwkv4.py's recurrent
// mode; the WKV step is wkv_step.h's, the one the parallel kernel runs.
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "wkv_step.h"

namespace {

// the model's state rows per layer (rwkv4.py): ATT_SHIFT, AA, BB, PP, FFN_SHIFT
enum Row { kAttShift = 0, kAA = 1, kBB = 2, kPP = 3, kFfnShift = 4 };

// the order of each layer's tensors in the list the caller passes (rwkv_bench/ops/rwkv4_step.py)
enum Param {
  kLn1W, kLn1B, kLn2W, kLn2B, kTimeDecay, kTimeFirst, kAttMixK, kAttMixV, kAttMixR,
  kAttKey, kAttValue, kAttReceptance, kAttOutput, kFfnMixK, kFfnMixR, kFfnKey, kFfnReceptance, kFfnValue,
  kParamsPerLayer
};

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

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

const float* ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

// x (B, C): the layer's input, updated in place to its output. S: this layer's state (5, B, C).
void time_mix(torch::Tensor& x, float* S, const torch::Tensor* p, double eps) {
  const int64_t B = x.size(0), C = x.size(1), BC = B * C;
  auto xa = at::layer_norm(x, {C}, p[kLn1W], p[kLn1B], eps);
  auto mixed = torch::empty({3, B, C}, x.options());
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

void channel_mix(torch::Tensor& x, float* S, const torch::Tensor* p, double eps) {
  const int64_t B = x.size(0), C = x.size(1), BC = B * C;
  auto xf = at::layer_norm(x, {C}, p[kLn2W], p[kLn2B], eps);
  auto mixed = torch::empty({2, B, C}, x.options());
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
torch::Tensor body_step(torch::Tensor x, torch::Tensor state, std::vector<torch::Tensor> params, double eps) {
  const int64_t L = state.size(0);
  TORCH_CHECK(static_cast<int64_t>(params.size()) == L * kParamsPerLayer, "rwkv4 step: expected ",
              L * kParamsPerLayer, " parameter tensors, got ", params.size());
  TORCH_CHECK(state.is_contiguous() && state.scalar_type() == torch::kFloat32, "rwkv4 step: state must be float32");
  x = x.to(torch::kFloat32).contiguous().clone();
  TORCH_CHECK(x.dim() == 2 && state.size(2) == x.size(0) && state.size(3) == x.size(1), "rwkv4 step: shapes");
  for (const auto& t : params) {
    TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous(), "rwkv4 step: float32 contiguous weights");
  }
  float* S = state.data_ptr<float>();
  const int64_t layer_stride = state.stride(0);
  for (int64_t l = 0; l < L; ++l) {
    time_mix(x, S + l * layer_stride, &params[l * kParamsPerLayer], eps);
    channel_mix(x, S + l * layer_stride, &params[l * kParamsPerLayer], eps);
  }
  return x;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("body_step", &body_step, "RWKV-4: one recurrent step through every block (CPU, float32)");
}
