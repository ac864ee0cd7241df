// One time step of RWKV-4's WKV, forward and backward, for ONE channel of ONE sequence.
//
// Included by both wkv_cpu.cpp (host, where gcc vectorises a loop over contiguous channels that calls
// these functions) and wkv_cuda.cu (one thread per channel), so the CPU tests exercise the arithmetic the
// GPU runs. Everything here is branch-free (selects only) so that the compiler can vectorise it.
//
// Notation (see rwkv_bench/ops/wkv_reference.py): w < 0 is the per-step log decay, u the bonus of the
// current token. The state (aa, bb, pp) stands for a = aa*e^pp, b = bb*e^pp, pp the running max exponent.
//
//   y_t     = (a_t + e^(u+k_t) v_t) / (b_t + e^(u+k_t))
//   a_{t+1} = e^w a_t + e^(k_t) v_t,   b_{t+1} = e^w b_t + e^(k_t),   pp_{t+1} = max(w + pp_t, k_t)
//
// Each max-stabilised pair (e1, e2) = (e^(x-m), e^(y-m)), m = max(x, y), has one member equal to
// e^0 = 1, so one exp(-|x - y|) and a select give both: two exps per forward step instead of four.
#pragma once

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__CUDACC__)
#define WKV_HD __host__ __device__ __forceinline__
#else
#define WKV_HD inline __attribute__((always_inline))
#endif

namespace wkv {

// ---------------------------------------------------------------------------------------------------
// exp(x) in float32 without libm: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial,
// times 2^n built in the exponent bits. Flushes to 0 for x < -87 (so -inf and -1e38 give exactly 0),
// saturates at x = 88 (e^88 ~ 1.65e38 < FLT_MAX), propagates NaN. Exact at 0: exp(0) == 1.
// The polynomial (constant term 1, minimax in relative error on [-ln2/2, ln2/2], fitted by
// iteratively reweighted least squares) is accurate to 2e-9 in exact arithmetic; evaluated in float32
// the result is within ~2 ulp of the correctly rounded exp (tests/test_wkv.py checks it).
// ---------------------------------------------------------------------------------------------------
WKV_HD float bits_as_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

WKV_HD float exp_poly(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // n = round(x / ln2) with the 1.5*2^23 trick (valid for |x/ln2| < 2^22; rounding mode to nearest)
  const float magic = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + magic) - magic;
  // r = x - n*ln2 with ln2 split in two (Cody-Waite) so that r is exact to float32 precision
  const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.384365372e-03f;
  p = p * r + 8.374155499e-03f;
  p = p * r + 4.166800156e-02f;
  p = p * r + 1.666643173e-01f;
  p = p * r + 4.999999404e-01f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n for n in [-126, 127]: biased exponent n + 127 in [1, 254]
  const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
  const float e = p * bits_as_float(bits);
  return x < -87.0f ? 0.0f : e;
}

// ---------------------------------------------------------------------------------------------------
// The initial state. An empty state is aa = bb = 0, pp = kEmptyPP (wkv_reference.EMPTY_PP), which loses
// every max. Contract: any state with bb = 0 holds no past (b = bb e^pp = 0, and so a = 0) and is read as
// the empty one whatever its pp, in the kernels and the reference alike; its aa and pp get no gradient.
// Without this, a finite pp more than 87 above the first token's exponent flushes the token's weight to
// 0 (exp_poly) and y = 0/0, where exact arithmetic gives y = v.
// ---------------------------------------------------------------------------------------------------
constexpr float kEmptyPP = -1e38f;

WKV_HD float initial_pp(float bb, float pp) { return bb == 0.0f ? kEmptyPP : pp; }

// ---------------------------------------------------------------------------------------------------
// Forward step: reads the state before the token, writes y_t and the state after it.
// Same formulas as wkv_reference.wkv_step; only the exp rounding differs.
// ---------------------------------------------------------------------------------------------------
// (e^(x - m), e^(y - m)) with m = max(x, y), from a single exp: the winner's member is e^0 = 1.
WKV_HD void max_pair(float x, float y, float& ex, float& ey) {
  const float e = exp_poly(-fabsf(x - y));
  const bool x_wins = x >= y;
  ex = x_wins ? 1.0f : e;
  ey = x_wins ? e : 1.0f;
}

WKV_HD void forward_step(float w, float u, float k, float v, float& aa, float& bb, float& pp, float& y) {
  // output: mix the state (exponent pp) with the current token (exponent u + k)
  float e1, e2;
  max_pair(pp, u + k, e1, e2);
  y = (e1 * aa + e2 * v) / (e1 * bb + e2);
  // state update: decay the past (exponent w + pp), add the token (exponent k)
  const float ws = w + pp;
  float f1, f2;
  max_pair(ws, k, f1, f2);
  aa = f1 * aa + f2 * v;
  bb = f1 * bb + f2;
  pp = ws >= k ? ws : k;
}

// ---------------------------------------------------------------------------------------------------
// Backward step, t from T-1 down to 0. (aa, bb, pp) is the saved state BEFORE token t.
//
// Unstabilised, with ga, gb = dL/da_{t+1}, dL/db_{t+1} and D_t = b_t + e^(u+k_t):
//   gk_t = gy e^(u+k)(v - y)/D + e^k (ga v + gb),   gv_t = gy e^(u+k)/D + e^k ga,
//   gu  += gy e^(u+k)(v - y)/D,                      gw  += e^w (ga a_t + gb b_t),
//   ga  <- e^w ga + gy/D,                            gb  <- e^w gb - gy y/D.
// The gradients are kept log-scaled as ga = GA e^(-pp_{t+1}), gb = GB e^(-pp_{t+1}), i.e. GA, GB are
// the gradients with respect to aa, bb at fixed pp. Then every factor is an exponential of a
// non-positive argument that the forward already forms:
//   e^k ga             = GA e^(k - pp_{t+1})             = GA f2
//   e^w ga a_t         = GA aa e^(w + pp_t - pp_{t+1})   = GA aa f1
//   gy e^(u+k)/D       = gy e2 / (e1 bb + e2)            (e1, e2 as in the output mix)
//   gy e^(pp_t)/D      = gy e1 / (e1 bb + e2)            (-> GA at step t, scaled by e^(pp_t))
// so a backward step costs two exps as well. GA, GB stay O(T * |gy|) at most: e1/(e1 bb + e2) <= 1/bb
// and bb >= 1 after the first token.
//
// h is the extra gradient of pp at fixed aa, bb (zero unless an upstream gradient reaches the returned
// state's pp, or the aa/bb gradients there are not consistent with it). pp_{t+1} = max(w + pp_t, k_t),
// so h goes to k_t if the token won, else to w and on to pp_t; at an exact tie it is split in halves,
// as torch.maximum's backward does, so the result matches autograd through the reference exactly.
// ---------------------------------------------------------------------------------------------------
WKV_HD void backward_step(float w, float u, float k, float v, float aa, float bb, float pp, float gy,
                          float& GA, float& GB, float& h, float& gw, float& gu, float& gk, float& gv) {
  // recompute the output mix and y_t
  float e1, e2;
  max_pair(pp, u + k, e1, e2);
  const float inv = 1.0f / (e1 * bb + e2);
  const float y = (e1 * aa + e2 * v) * inv;
  const float gyd = gy * inv;
  const float q = gyd * e2;          // gy e^(u+k) / D
  const float qk = q * (v - y);      // gy e^(u+k) (v - y) / D
  gu += qk;
  // recompute the state-update pair
  const float ws = w + pp;
  float f1, f2;
  max_pair(ws, k, f1, f2);
  // the max chain: the token's share of h
  const float hk = ws > k ? 0.0f : (ws == k ? 0.5f * h : h);
  gk = qk + f2 * (GA * v + GB) + hk;
  gv = q + f2 * GA;
  h -= hk;
  gw += f1 * (GA * aa + GB * bb) + h;
  // gradients with respect to the state before token t
  const float r = gyd * e1;          // gy e^(pp_t) / D
  GA = f1 * GA + r;
  GB = f1 * GB - r * y;
}

// Gradient of the initial state from the (GA, GB, h) left after step 0. A state with bb0 = 0 was read
// as the empty one (initial_pp), so its pp gets none.
WKV_HD void initial_state_grad(float aa0, float bb0, float GA, float GB, float h,
                               float& g_aa, float& g_bb, float& g_pp) {
  g_aa = GA;
  g_bb = GB;
  g_pp = bb0 == 0.0f ? 0.0f : GA * aa0 + GB * bb0 + h;
}

// (GA, GB, h) at the end of the sequence from the upstream gradient of the returned state.
WKV_HD void final_state_grad(float aaT, float bbT, float g_aa, float g_bb, float g_pp,
                             float& GA, float& GB, float& h) {
  GA = g_aa;
  GB = g_bb;
  h = g_pp - g_aa * aaT - g_bb * bbT;
}

}  // namespace wkv
