// What every extension here needs from torch: the Tensor class (with its methods), TORCH_CHECK, and pybind11
// with torch's type casters for Tensor, so PYBIND11_MODULE can bind functions on tensors.
//
// Not <torch/extension.h>: that is the whole C++ frontend (nn, optim, serialization, ...); on the project's
// 2-core Xeon a trivial file took 21 s to compile with it, 5.6 s with these. Nor <ATen/ATen.h> (every
// operator, 5.9 s alone): a source includes the per-operator header (<ATen/ops/empty.h>, ...) of each at::
// function it calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/utils/pybind.h>
