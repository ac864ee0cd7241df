// Host side of the WKV extensions, shared by the CPU (wkv_cpu.cpp) and the CUDA (wkv_cuda_host.cpp) module:
// argument checks, output allocation, dtype dispatch and the Python bindings. A backend only supplies
//
//   struct Backend {
//     static constexpr c10::DeviceType kDevice;   // where its tensors live
//     static constexpr bool kHalfTypes;           // whether it takes bf16/fp16 k, v (else float32 only)
//     static constexpr const char* kName;
//     template <typename scalar_t> static void forward(const ForwardArgs&);
//     template <typename scalar_t> static void backward(const BackwardArgs&);
//     struct Guard { explicit Guard(const at::Tensor&); };   // e.g. a CUDA device guard
//   };
//
// The layouts and argument structs are wkv_args.h's.
#pragma once

#include <ATen/ops/empty.h>

#include <vector>

#include "torch_binding.h"
#include "wkv_args.h"

namespace wkv {
namespace host {

inline void check_common(const char* what, const at::Tensor& w, const at::Tensor& u, const at::Tensor& k,
                         const at::Tensor& v, c10::DeviceType device, const char* backend) {
  TORCH_CHECK(k.dim() == 3, what, ": k must be (B, T, C), got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), what, ": v ", v.sizes(), " and k ", k.sizes(), " differ in shape");
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), what, ": v and k differ in dtype");
  const int64_t C = k.size(2);
  for (const at::Tensor* p : {&w, &u}) {
    TORCH_CHECK(p->dim() == 1 && p->size(0) == C, what, ": w and u must be (C,) = (", C, "), got ", p->sizes());
    TORCH_CHECK(p->scalar_type() == at::kFloat, what, ": w and u must be float32");
  }
  for (const at::Tensor* p : {&w, &u, &v}) {
    TORCH_CHECK(p->device() == k.device(), what, ": all tensors must be on ", k.device());
  }
  TORCH_CHECK(k.device().type() == device, what, ": the ", backend, " kernel takes ", device, " tensors, got ",
              k.device());
}

inline void check_state(const char* what, const char* name, const at::Tensor& s, const at::Tensor& k) {
  TORCH_CHECK(s.dim() == 3 && s.size(0) == k.size(0) && s.size(1) == 3 && s.size(2) == k.size(2), what, ": ",
              name, " must be (B, 3, C) = (", k.size(0), ", 3, ", k.size(2), "), got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == at::kFloat, what, ": ", name, " must be float32");
  TORCH_CHECK(s.device() == k.device(), what, ": ", name, " must be on ", k.device());
}

// Calls Backend::F<scalar_t>(args) for k's dtype.
template <class Backend, bool Forward, class Args>
void dispatch(at::ScalarType dtype, const Args& args) {
  switch (dtype) {
    case at::kFloat:
      if constexpr (Forward) Backend::template forward<float>(args); else Backend::template backward<float>(args);
      return;
    case at::kHalf:
      if constexpr (Backend::kHalfTypes) {
        if constexpr (Forward) Backend::template forward<at::Half>(args);
        else Backend::template backward<at::Half>(args);
        return;
      }
      break;
    case at::kBFloat16:
      if constexpr (Backend::kHalfTypes) {
        if constexpr (Forward) Backend::template forward<at::BFloat16>(args);
        else Backend::template backward<at::BFloat16>(args);
        return;
      }
      break;
    default:
      break;
  }
  TORCH_CHECK(false, "wkv: the ", Backend::kName, " kernel does not take ", dtype, " inputs (cast them to float32)");
}

// forward(w, u, k, v, state, save) -> [y, new_state, scratch (only if save)]
template <class Backend>
std::vector<at::Tensor> forward(const at::Tensor& w_, const at::Tensor& u_, const at::Tensor& k_,
                                const at::Tensor& v_, const at::Tensor& state_, bool save) {
  check_common("wkv forward", w_, u_, k_, v_, Backend::kDevice, Backend::kName);
  check_state("wkv forward", "state", state_, k_);
  typename Backend::Guard guard(k_);
  const at::Tensor w = w_.contiguous(), u = u_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor state = state_.contiguous();
  const Dims d{k.size(0), k.size(1), k.size(2)};
  const auto f32 = k.options().dtype(at::kFloat);
  at::Tensor y = at::empty({d.B, d.T, d.C}, k.options());
  at::Tensor state1 = at::empty({d.B, 3, d.C}, f32);
  at::Tensor scratch = save ? at::empty({d.B, d.T + 1, 3, d.C}, f32) : at::Tensor();
  if (d.B * d.C > 0) {
    const ForwardArgs a{d, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(), v.data_ptr(),
                        state.data_ptr<float>(), y.data_ptr(), state1.data_ptr<float>(),
                        save ? scratch.data_ptr<float>() : nullptr};
    dispatch<Backend, true>(k.scalar_type(), a);
  }
  if (save) return {y, state1, scratch};
  return {y, state1};
}

// backward(w, u, k, v, scratch, gy, gstate) -> [gw, gu, gk, gv, gstate0]
template <class Backend>
std::vector<at::Tensor> backward(const at::Tensor& w_, const at::Tensor& u_, const at::Tensor& k_,
                                 const at::Tensor& v_, const at::Tensor& scratch_, const at::Tensor& gy_,
                                 const at::Tensor& gstate_) {
  check_common("wkv backward", w_, u_, k_, v_, Backend::kDevice, Backend::kName);
  check_state("wkv backward", "gstate", gstate_, k_);
  TORCH_CHECK(gy_.sizes() == k_.sizes() && gy_.scalar_type() == k_.scalar_type() && gy_.device() == k_.device(),
              "wkv backward: gy must match k in shape, dtype and device");
  TORCH_CHECK(scratch_.dim() == 4 && scratch_.size(0) == k_.size(0) && scratch_.size(1) == k_.size(1) + 1 &&
                  scratch_.size(2) == 3 && scratch_.size(3) == k_.size(2) && scratch_.scalar_type() == at::kFloat &&
                  scratch_.device() == k_.device(),
              "wkv backward: scratch must be the float32 (B, T + 1, 3, C) tensor saved by forward");
  typename Backend::Guard guard(k_);
  const at::Tensor w = w_.contiguous(), u = u_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor scratch = scratch_.contiguous(), gy = gy_.contiguous(), gstate = gstate_.contiguous();
  const Dims d{k.size(0), k.size(1), k.size(2)};
  const auto f32 = k.options().dtype(at::kFloat);
  at::Tensor gw = at::empty({d.B, d.C}, f32), gu = at::empty({d.B, d.C}, f32);
  at::Tensor gk = at::empty({d.B, d.T, d.C}, k.options()), gv = at::empty({d.B, d.T, d.C}, k.options());
  at::Tensor gstate0 = at::empty({d.B, 3, d.C}, f32);
  if (d.B * d.C > 0) {
    const BackwardArgs a{d, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(), v.data_ptr(),
                         scratch.data_ptr<float>(), gy.data_ptr(), gstate.data_ptr<float>(),
                         gw.data_ptr<float>(), gu.data_ptr<float>(), gk.data_ptr(), gv.data_ptr(),
                         gstate0.data_ptr<float>()};
    dispatch<Backend, false>(k.scalar_type(), a);
  }
  // w and u are shared by the batch: their gradient is the sum of the per-sequence ones
  return {gw.sum(0), gu.sum(0), gk, gv, gstate0};
}

template <class Backend>
void bind(pybind11::module& m) {
  m.def("forward", &forward<Backend>, "WKV forward: (w, u, k, v, state, save) -> [y, state, scratch if save]",
        pybind11::arg("w"), pybind11::arg("u"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("state"),
        pybind11::arg("save"));
  m.def("backward", &backward<Backend>,
        "WKV backward: (w, u, k, v, scratch, gy, gstate) -> [gw, gu, gk, gv, gstate0]", pybind11::arg("w"),
        pybind11::arg("u"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("scratch"), pybind11::arg("gy"),
        pybind11::arg("gstate"));
  m.attr("backend") = Backend::kName;
}

}  // namespace host
}  // namespace wkv
