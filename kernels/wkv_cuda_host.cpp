// The host side of the WKV-4 CUDA extension: wkv_host.h's checks, allocation, dispatch and bindings around the
// kernels of wkv_cuda.cu, on the device of k and torch's current stream there. Built by the C++ compiler, not
// nvcc (see wkv_cuda.cu).
//
// c10's CUDA headers only (not ATen/cuda/CUDAContext.h, which pulls in cuSPARSE/cuBLAS headers that a bare
// nvcc install lacks), so the file compiles wherever the CUDA runtime's and torch's headers are.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "wkv_cuda.h"
#include "wkv_host.h"

namespace wkv {
namespace {

struct CudaBackend {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
  static constexpr bool kHalfTypes = true;
  static constexpr const char* kName = "cuda";
  struct Guard {
    explicit Guard(const at::Tensor& t) : guard(t.device()) {}
    c10::cuda::CUDAGuard guard;
  };

  template <typename scalar_t>
  static void forward(const ForwardArgs& a) {
    launch_forward<scalar_t>(a, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t>
  static void backward(const BackwardArgs& a) {
    launch_backward<scalar_t>(a, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace wkv

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { wkv::host::bind<wkv::CudaBackend>(m); }
